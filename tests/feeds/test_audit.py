"""Book audits (feeds/audit.py): every level compared with a fresh snapshot at the book's own id.

The unit part drives :class:`BookAudit` with real books; the venue part runs each simulated venue
over real sockets with its bbo cross-check turned off, so that a change the venue leaves out of a
delta (SILENT_LOSS, ids contiguous) can only be found by an audit, which must find and repair it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from aggbook.book.sync import BookSync, Delta, Reason, Snapshot, SyncState
from aggbook.feeds.audit import INCONCLUSIVE, MATCH, MISMATCH, BookAudit
from aggbook.feeds.binance import BINANCE_FUTURES
from aggbook.feeds.btse import BTSE
from aggbook.feeds.gzip_mbp import MBP_100MS
from aggbook.simulator.faults import Fault
from tests.conftest import describe_mismatch, wait_for
from tests.feeds.fleet import truth_seen_by_feed
from tests.feeds.recording import RecordingMetrics
from tests.feeds.test_crosscheck import SYM, live_and_true, lose_a_top_change, running

BIDS = [("100", "1"), ("99", "2"), ("98", "3")]
ASKS = [("101", "1"), ("102", "2")]


class Seen:
    def __init__(self) -> None:
        self.transitions: list[tuple[SyncState, SyncState, Reason]] = []

    def on_transition(self, sync: BookSync, t: object) -> None:
        self.transitions.append((t.old, t.new, t.reason))  # type: ignore[attr-defined]


def audit_of() -> tuple[BookAudit, RecordingMetrics]:
    metrics = RecordingMetrics()
    return BookAudit(SimpleNamespace(metrics=metrics, venue="v", audit_interval=1.0)), metrics  # type: ignore[arg-type]


def live_book(rule=MBP_100MS, at: int = 5) -> tuple[BookSync, Seen]:
    sync = BookSync(rule, venue="v", symbol="S")
    seen = Seen()
    sync.attach(seen, None)
    sync.on_snapshot(Snapshot(at, BIDS, ASKS))
    assert sync.live and sync.last_id == at
    seen.transitions.clear()
    return sync, seen


def test_a_snapshot_at_the_books_id_that_agrees_is_a_match() -> None:
    audit, metrics = audit_of()
    sync, seen = live_book()
    audit.consider(sync, Snapshot(5, [("100.0", "1"), *BIDS[1:]], ASKS))
    assert audit.outcomes[MATCH] == 1 and metrics.audits[MATCH] == 1
    assert seen.transitions == [] and not audit.waiting


def test_a_snapshot_ahead_is_compared_when_the_book_lands_on_its_id() -> None:
    audit, _ = audit_of()
    sync, _ = live_book()
    audit.consider(sync, Snapshot(7, [("100", "4"), *BIDS[1:]], ASKS))
    assert audit.waiting
    sync.on_delta(Delta(6, 6, 5, [("100", "4")], None))
    audit.after_book(sync)
    assert audit.waiting and not audit.outcomes  # at 6: not there yet
    sync.on_delta(Delta(7, 7, 6, None, None))
    audit.after_book(sync)
    assert audit.outcomes == {MATCH: 1} and not audit.waiting


def test_a_book_that_passes_the_id_or_is_past_it_makes_the_audit_inconclusive() -> None:
    audit, _ = audit_of()
    sync, _ = live_book()
    audit.consider(sync, Snapshot(4, BIDS, ASKS))  # older than the book
    audit.consider(sync, Snapshot(6, BIDS, ASKS))
    sync.on_delta(Delta(8, 8, 5, None, None))  # one 100 ms push from 5 to 8: 6 was never a state
    audit.after_book(sync)
    assert audit.outcomes == {INCONCLUSIVE: 2} and not audit.waiting


@pytest.mark.parametrize("rule", [MBP_100MS, BINANCE_FUTURES], ids=lambda r: r.name)
def test_a_difference_repairs_the_book_which_the_stream_then_continues(rule) -> None:
    audit, metrics = audit_of()
    sync, seen = live_book(rule)
    truth_bids = [("100", "1"), ("99", "7"), ("98", "3")]  # the venue's size at 99 never reached the book
    audit.consider(sync, Snapshot(5, truth_bids, ASKS))
    assert audit.outcomes == {MISMATCH: 1} and metrics.audits[MISMATCH] == 1
    assert seen.transitions == [(SyncState.LIVE, SyncState.RESYNCING, Reason.AUDIT_MISMATCH),
                                (SyncState.RESYNCING, SyncState.LIVE, Reason.SNAPSHOT)]
    assert sync.counters.resyncs[Reason.AUDIT_MISMATCH] == 1
    assert sync.live and sync.last_id == 5 and sync.book.bids() == truth_bids
    sync.on_delta(Delta(6, 6, 5, [("100", "2")], None))  # the next delta continues the repaired book
    assert sync.live and sync.last_id == 6 and sync.book.best_bid() == ("100", "2")


def test_an_in_stream_snapshot_of_an_audit_is_compared_then_becomes_the_base() -> None:
    audit, _ = audit_of()
    sync, seen = live_book(BTSE, at=40)
    audit._in_stream[id(sync)] = sync  # as ``audit`` does before it resubscribes
    audit.waiting = True
    assert audit.in_stream_snapshot(sync, Snapshot(900, BIDS, ASKS))  # a new stream's seq space
    assert audit.outcomes == {MATCH: 1} and sync.last_id == 900 and not audit.waiting
    audit._in_stream[id(sync)] = sync
    audit.waiting = True
    assert audit.in_stream_snapshot(sync, Snapshot(950, BIDS[:2], ASKS))
    assert audit.outcomes[MISMATCH] == 1 and sync.last_id == 950 and sync.book.bids() == BIDS[:2]
    assert seen.transitions[-2][2] is Reason.AUDIT_MISMATCH
    assert not audit.in_stream_snapshot(sync, Snapshot(990, BIDS, ASKS))  # not an audit's: left alone


AUDITED = ["binance", "binance-futures", "mexc", "btse", "nhex", "bitv"]
FAST_AUDITS = {"bbo_check": False, "audit_interval": 0.5}


@pytest.mark.parametrize("kind", AUDITED)
async def test_a_lost_change_the_top_check_cannot_see_is_found_and_repaired_by_an_audit(kind: str) -> None:
    async with running(kind, FAST_AUDITS) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed), 15, "books live")
        venue.pause()
        venue.inject(Fault.SILENT_LOSS, symbol=SYM)
        await lose_a_top_change(venue)
        assert venue.faults.fired[Fault.SILENT_LOSS.value] == 1
        await wait_for(lambda: Reason.AUDIT_MISMATCH in seen.reasons(SYM), 15, "an audit_mismatch repair")
        assert feed.audit.outcomes[MISMATCH] == 1
        try:
            await wait_for(lambda: live_and_true(venue, feed), 10, "books equal to the truth")
        except BaseException:
            sync = feed.current_syncs()[SYM]
            print(describe_mismatch(sync, truth_seen_by_feed(venue, SYM), sync.book.max_depth))
            raise
        # no sequence check saw anything: the audit's repair is the only resync
        assert [r for r in seen.reasons(SYM) if r not in (Reason.START, Reason.SNAPSHOT)] == [
            Reason.AUDIT_MISMATCH]
        assert feed.status()["audits"][MISMATCH] == 1


@pytest.mark.parametrize("kind", AUDITED)
async def test_audits_of_a_running_market_agree_with_its_books(kind: str) -> None:
    async with running(kind, FAST_AUDITS) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed), 15, "books live")
        await wait_for(lambda: feed.audit.outcomes[MATCH] >= 4, 30, "audits that match")
        assert feed.audit.outcomes[MISMATCH] == 0
        assert all(r in (Reason.START, Reason.SNAPSHOT) for s in (SYM,) for r in seen.reasons(s))


async def test_audits_wait_while_a_book_of_the_feed_waits_for_its_snapshot() -> None:
    """A cold start or a resync must not queue behind audits; a book that never gets its snapshot
    must not stop the audits of the others either (they wait one interval at most)."""
    sync, _ = live_book()
    sync._first_pending = False  # confirmed: the stream continued the snapshot
    asked: list[float] = []

    async def fetch_snapshot(conn: object, canonical: str) -> Snapshot:
        asked.append(asyncio.get_running_loop().time())
        return Snapshot(5, BIDS, ASKS)

    class Pacer:
        async def acquire(self, weight: float = 1.0) -> None:
            pass

    feed = SimpleNamespace(metrics=RecordingMetrics(), venue="v", audit_interval=0.4, snapshot_timeout=5,
                           snapshots=SimpleNamespace(active=1, pacer=Pacer()), fetch_snapshot=fetch_snapshot,
                           snapshot_weight=lambda canonical: 1.0)
    conn = SimpleNamespace(open=True, symbols=["S"], syncs={"S": sync})
    audit = BookAudit(feed)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(audit.run(conn))  # type: ignore[arg-type]
    try:
        await wait_for(lambda: len(asked) >= 2, 10, "audits despite a book that never gets its snapshot")
        # the first waited for its turn (0.4 s) plus one interval of deferral; none came earlier
        assert asked[0] - started >= 0.8 - 0.05
        feed.snapshots.active = 0
        count = len(asked)
        await wait_for(lambda: len(asked) >= count + 2, 10, "audits at their own pace")
        assert audit.outcomes[MATCH] >= 3 and not audit.outcomes[MISMATCH]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
