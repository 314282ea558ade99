"""The top-of-book cross-check against each venue's best bid/offer stream, over real sockets.

SILENT_LOSS leaves a top-moving level change out of a delta while the sequence ids stay
contiguous: no sequence check can see it, the venue's truth has the change and the client's book
does not.  Each venue's bbo stream (served by the simulator in the venue's wire shape) must
reveal it: the book resyncs with reason ``bbo_mismatch`` and returns equal to the truth.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import AsyncIterator

import pytest

from aggbook.book.sync import BookSync, Delta, Reason, Snapshot, Transition
from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.crosscheck import Bbo, TopCrossCheck
from aggbook.feeds.mexc import MEXC
from aggbook.feeds.registry import create_feed
from aggbook.simulator.exchange import venue_classes
from aggbook.simulator.faults import Fault
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.venue import VenueServer
from tests.conftest import describe_mismatch, wait_for
from tests.feeds.fleet import equal_to_truth, truth_seen_by_feed

SPECS = DEFAULT_SYMBOLS[:2]
SYM = "BTC-USDT"
ALLOWANCE = 0.5  # seconds an id-less bbo may disagree with the book (the option's default is 2)
# audits off: they would find the lost change too (tests/feeds/test_audit.py), and this is the bbo's test
FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "bbo_allowance": ALLOWANCE, "audit_interval": 0.0}
VENUES = ["binance", "binance-futures", "binance-coinm", "mexc", "btse", "nhex", "bitv"]


class Transitions:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Transition]] = []

    def __call__(self, canonical: str, sync: BookSync) -> None:
        sync.attach(self, None)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        self.seen.append((sync.symbol, transition))

    def reasons(self, symbol: str) -> list[Reason]:
        return [t.reason for s, t in self.seen if s == symbol]


@contextlib.asynccontextmanager
async def running(kind: str, options: dict | None = None) -> AsyncIterator[tuple[VenueServer, VenueFeed,
                                                                                  Transitions]]:
    venue = venue_classes()[kind](SPECS, seed=11, rate=20.0)
    await venue.start()
    symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
    feed = create_feed(VenueConfig(name=kind, kind=kind, symbols=symbols, options={**FAST, **(options or {})},
                                   **venue.urls()))
    seen = Transitions()
    feed.on_sync(seen)
    try:
        await feed.start()
        yield venue, feed, seen
    finally:
        await feed.stop()
        await venue.stop()


async def lose_a_top_change(venue: VenueServer) -> None:
    """Step the paused market until SILENT_LOSS has dropped a top-moving change from a delta."""
    for _ in range(200):
        await venue.step_all()
        if isinstance(venue, GzipMbpVenue):
            await venue.interval_tick()  # mbp.150 pushes on its 100 ms timer: push this step now
        if venue.faults.fired[Fault.SILENT_LOSS.value]:
            return


def live_and_true(venue: VenueServer, feed: VenueFeed) -> bool:
    syncs = feed.current_syncs()
    return len(syncs) == len(SPECS) and all(equal_to_truth(venue, s, c) for c, s in syncs.items())


@pytest.mark.parametrize("kind", VENUES)
async def test_silent_loss_is_caught_by_the_bbo_cross_check(kind: str) -> None:
    async with running(kind) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed) and feed.crosscheck.counters.bbos > 0, 15,
                       "books live and bbos flowing")
        assert Reason.BBO_MISMATCH not in seen.reasons(SYM)  # the running market raises no false alarm
        # drive the market by hand: the step that loses a top-moving change is the last one, so the
        # wrong top persists and only the cross-check can notice it
        venue.pause()
        venue.inject(Fault.SILENT_LOSS, symbol=SYM)
        await lose_a_top_change(venue)
        assert venue.faults.fired[Fault.SILENT_LOSS.value] == 1
        lost_at = time.monotonic()
        await wait_for(lambda: Reason.BBO_MISMATCH in seen.reasons(SYM), 10, "a bbo_mismatch resync")
        caught_after = time.monotonic() - lost_at
        counters = feed.crosscheck.counters
        assert counters.mismatches >= 1 and counters.resyncs == 1
        # no sequence check saw anything: the only resync is the cross-check's
        resync_reasons = [r for r in seen.reasons(SYM) if r not in (Reason.START, Reason.SNAPSHOT)]
        assert resync_reasons == [Reason.BBO_MISMATCH]
        venue.resume()  # a request-based venue asks for its snapshot once a delta is buffered
        await wait_for(lambda: feed.current_syncs()[SYM].live, 10, "the book live again")
        venue.pause()
        try:
            await wait_for(lambda: live_and_true(venue, feed), 10, "books equal to the truth")
        except BaseException:
            sync = feed.current_syncs()[SYM]
            print(describe_mismatch(sync, truth_seen_by_feed(venue, SYM)))
            raise
        print(f"[bbo cross-check] {kind}: {counters.mismatches} mismatch(es), {counters.compared} "
              f"comparisons, resync {caught_after * 1000:.1f} ms after the lost change "
              f"(first disagreement to resync {counters.seconds_to_resync or 0.0:.3f} s)")


@pytest.mark.parametrize("kind", VENUES)
async def test_bbo_check_can_be_turned_off(kind: str) -> None:
    async with running(kind, {"bbo_check": False}) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed), 15, "books live")
        venue.pause()
        venue.inject(Fault.SILENT_LOSS, symbol=SYM)
        await lose_a_top_change(venue)
        assert venue.faults.fired[Fault.SILENT_LOSS.value] == 1
        # nothing subscribed, nothing compared: the lost change stays unseen (the reason the check exists)
        assert not any("bookTicker" in s or "bbo" in s or "L1" in s or "Ticker" in s
                       for c in venue.connections.values() for s in c.subscriptions)
        assert feed.crosscheck.counters.bbos == 0
        sync = feed.current_syncs()[SYM]

        def wrong_at_the_truths_id() -> bool:
            truth = truth_seen_by_feed(venue, SYM)
            return sync.live and sync.last_id == truth.seq and not equal_to_truth(venue, sync, SYM)

        await wait_for(wrong_at_the_truths_id, 10, "the book live at the venue's id, without the lost change")
        assert seen.reasons(SYM) == [Reason.SNAPSHOT]


# ---------------------------------------------------------------------------- the comparison itself
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _live_book(clock: Clock) -> BookSync:
    sync = BookSync(MEXC, venue="v", symbol=SYM, clock=clock)
    sync.on_snapshot(Snapshot(10, [["100", "1"]], [["200", "1"]]))
    return sync


def _delta(sync: BookSync, n: int, bids: list | None = None, asks: list | None = None) -> None:
    sync.on_delta(Delta(n, n, None, bids, asks))


def test_by_id_compares_only_at_the_same_book_id() -> None:
    clock = Clock()
    resyncs: list[str] = []
    check = TopCrossCheck(lambda s, d: resyncs.append(d), allowance=1.0, clock=clock)
    sync = _live_book(clock)
    check.on_bbo(sync, Bbo(("100", "2"), ("200", "1"), book_id=11))  # ahead of the book: kept
    assert check.counters.compared == 0
    _delta(sync, 11, [["100", "2"]])
    check.after_book(sync)
    assert (check.counters.compared, resyncs) == (1, [])
    check.on_bbo(sync, Bbo(("100", "9"), ("200", "1"), book_id=10))  # behind the book: not comparable
    assert check.counters.compared == 1
    check.on_bbo(sync, Bbo(("100.0", "2.00"), ("200", "1"), book_id=11))  # same numbers, other text
    assert (check.counters.compared, resyncs) == (2, [])
    check.on_bbo(sync, Bbo(("100", "3"), ("200", "1"), book_id=11))  # the same state, another top: proof
    assert len(resyncs) == 1 and check.counters.mismatches == 1


def test_by_time_allows_for_streams_out_of_step_but_not_for_a_lasting_disagreement() -> None:
    clock = Clock()
    resyncs: list[str] = []
    check = TopCrossCheck(lambda s, d: resyncs.append(d), allowance=1.0, clock=clock)
    sync = _live_book(clock)
    # the bbo stream runs one step ahead of the book's, a step every 0.3 s, for far longer than the
    # allowance: the two never agree when compared, yet each top the book shows was a recent bbo
    for i in range(1, 30):
        clock.now += 0.3
        check.on_bbo(sync, Bbo((str(100 + i), "1"), (str(200 + i), "1")))
        _delta(sync, 10 + i, [[str(99 + i), "1"], [str(98 + i), "0"]],
               [[str(199 + i), "1"], [str(198 + i), "0"]])
        check.after_book(sync)
    assert resyncs == [] and check.counters.mismatches > 50
    # then the book misses a change: the bbo says size 5, the book keeps 1, and nothing explains it
    _delta(sync, 40, [["129", "1"], ["128", "0"]], [["229", "1"], ["228", "0"]])
    check.after_book(sync)  # the book catches up with the bbo: they agree
    assert resyncs == []
    clock.now += 0.1
    check.on_bbo(sync, Bbo(("129", "5"), ("229", "1")))
    for _ in range(3):  # looked at every 0.3 s (the timer's job in a running loop)
        clock.now += 0.3
        check.on_bbo(sync, Bbo(("129", "5"), ("229", "1")))
    assert resyncs == []  # 0.9 s: within the allowance
    # a stall of the event loop: the first look after it proves nothing, the count starts again
    clock.now += 3.0
    check.on_bbo(sync, Bbo(("129", "5"), ("229", "1")))
    assert resyncs == []
    for _ in range(4):
        clock.now += 0.3
        check.on_bbo(sync, Bbo(("129", "5"), ("229", "1")))
    assert len(resyncs) == 1 and "disagree for 1.200s" in resyncs[0]


def test_by_time_notes_each_top_the_book_returns_to() -> None:
    # deltas below the top leave the book's top as the last one noted (no new comparison); a top that
    # returns to a level the book held before is noted again, so the disagreement it ends is seen
    clock = Clock()
    resyncs: list[str] = []
    check = TopCrossCheck(lambda s, d: resyncs.append(d), allowance=1.0, clock=clock)
    sync = _live_book(clock)
    check.on_bbo(sync, Bbo(("100", "1"), ("200", "1")))
    compared = check.counters.compared
    _delta(sync, 11, [["99", "1"]], [["201", "1"]])  # deeper levels only
    check.after_book(sync)
    assert check.counters.compared == compared
    clock.now += 0.1
    _delta(sync, 12, [["101", "1"]])  # a better bid the bbo does not show: a disagreement begins
    check.after_book(sync)
    assert check.counters.compared == compared + 1 and check.counters.mismatches == 1
    clock.now += 0.1
    _delta(sync, 13, [["101", "0"]])  # back to the level it held: the book agrees with the bbo again
    check.after_book(sync)
    assert check.counters.compared == compared + 2 and check.counters.mismatches == 1
    for _ in range(10):  # long past the allowance: nothing disagrees any more
        clock.now += 0.3
        check.on_bbo(sync, Bbo(("100", "1"), ("200", "1")))
    assert resyncs == [] and check.counters.mismatches == 1


def test_a_retired_book_takes_its_check_with_it() -> None:
    clock = Clock()
    check = TopCrossCheck(lambda s, d: None, allowance=1.0, clock=clock)
    kept, retired = _live_book(clock), _live_book(clock)
    check.on_bbo(kept, Bbo(("100", "1"), ("200", "1")))
    check.on_bbo(retired, Bbo(("100", "1"), ("200", "1")))
    assert len(check.checks) == 2
    del retired
    gc.collect()
    assert len(check.checks) == 1
    _delta(kept, 11, [["101", "1"]])
    check.after_book(kept)  # the survivor's check is still found: its new top is compared
    assert check.counters.compared == 3
