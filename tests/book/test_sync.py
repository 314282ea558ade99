"""Sequencer property tests: random streams with faults, per venue rule, against a reference exchange.

The reference exchange keeps a dict book and remembers it at every id it emitted.
Whatever the faults, whenever the sequencer says LIVE its book must equal the
reference book at the sequencer's ``last_id``: that is "never applies a delta
out of order" made checkable.  After the faults stop, a fresh snapshot must bring
it back to LIVE and equal to the reference.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggbook.book.sync import (
    BookSync,
    Delta,
    FirstAfterSnapshot,
    Reason,
    SequenceRule,
    Snapshot,
    SyncState,
)
from aggbook.feeds.binance import BINANCE_FUTURES, BINANCE_SPOT
from aggbook.feeds.btse import BTSE
from aggbook.feeds.gzip_mbp import MBP_100MS, MBP_TICK
from aggbook.feeds.mexc import MEXC
from aggbook.feeds.registry import venue_specs

# every rule some venue declares, so a new venue's rule is fuzzed here without editing this file
ALL_RULES = sorted({rule for spec in venue_specs().values() for rule in spec.rules}, key=lambda r: r.name)


def test_every_rule_named_here_is_declared_by_a_venue() -> None:
    assert {BINANCE_SPOT, BINANCE_FUTURES, MEXC, MBP_TICK, MBP_100MS, BTSE} <= set(ALL_RULES)


class RefExchange:
    """Emits deltas numbered the way ``rule``'s venue numbers them."""

    def __init__(self, rule: SequenceRule, seed: int) -> None:
        self.rule = rule
        self.rng = random.Random(seed)
        self.bids: dict[Decimal, str] = {}
        self.asks: dict[Decimal, str] = {}
        self.cur = 1000
        self.history: dict[int, tuple[dict, dict]] = {self.cur: ({}, {})}

    def step(self) -> Delta:
        rng = self.rng
        b, a = [], []
        for _ in range(rng.randint(0, 5)):
            is_bid = rng.random() < 0.5
            # bids 1..50, asks 51..100: never crossed
            price = Decimal(rng.randint(1, 50) + (0 if is_bid else 50))
            size = "0" if rng.random() < 0.3 else str(rng.randint(1, 9))
            text = str(price) if rng.random() < 0.5 else f"{price}.0"
            (b if is_bid else a).append([text, size])
            side = self.bids if is_bid else self.asks
            if size == "0":
                side.pop(price, None)
            else:
                side[price] = size
        prev = self.cur
        if self.rule.contiguous_ids:
            first = last = self.cur + 1  # BTSE: seqNum == prevSeqNum + 1
        elif self.rule.first is FirstAfterSnapshot.PREV_IS_SNAPSHOT:
            first = last = self.cur + rng.randint(1, 5)  # mbp: seqNum jumps; prevSeqNum chains
        else:
            first, last = self.cur + 1, self.cur + rng.randint(1, 4)  # U..u covering several ids
        self.cur = last
        self.history[last] = (dict(self.bids), dict(self.asks))
        return Delta(first, last, prev, b, a)

    def snapshot(self, at: int | None = None) -> Snapshot:
        at = self.cur if at is None else at
        bids, asks = self.history[at]
        return Snapshot(at, [[str(p), s] for p, s in bids.items()], [[str(p), s] for p, s in asks.items()])


def book_state(sync: BookSync) -> tuple[dict, dict]:
    bids, asks = sync.book.as_decimal()
    return ({p: s for p, s in bids.items()}, {p: s for p, s in asks.items()})


def ref_state(ex: RefExchange, at: int) -> tuple[dict, dict]:
    bids, asks = ex.history[at]
    return ({p: Decimal(s) for p, s in bids.items()}, {p: Decimal(s) for p, s in asks.items()})


OPS = st.lists(
    st.sampled_from(["step"] * 6 + ["snapshot", "snapshot", "gap", "duplicate", "reorder", "stale_snapshot"]),
    min_size=5,
    max_size=80,
)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.name)
@given(ops=OPS, seed=st.integers(0, 10_000))
@settings(max_examples=120, deadline=None)
def test_random_faults_never_corrupt_and_recover(rule: SequenceRule, ops: list[str], seed: int) -> None:
    ex = RefExchange(rule, seed)
    sync = BookSync(rule, venue="v", symbol="S")
    held: Delta | None = None
    applied_order: list[int] = []

    class Spy:
        def on_transition(self, s, t):
            pass

        def on_update(self, s, changed):
            applied_order.append(s.last_id)

    spy = Spy()
    sync.attach(spy, spy)

    def deliver(d: Delta) -> None:
        sync.on_delta(d)

    def check() -> None:
        if sync.live:
            assert book_state(sync) == ref_state(ex, sync.last_id)

    for op in ops:
        if op == "step":
            d = ex.step()
            if held is not None:  # complete a reorder: newer first, then the held one
                deliver(d)
                deliver(held)
                held = None
            else:
                deliver(d)
        elif op == "gap":
            ex.step()  # emitted by the venue, never delivered
        elif op == "duplicate":
            d = ex.step()
            deliver(d)
            deliver(d)
        elif op == "reorder":
            if held is None:
                held = ex.step()
        elif op in ("snapshot", "stale_snapshot") and sync.wants_snapshot():
            sync.snapshot_requested()
            if rule.snapshot_in_stream:
                # an in-stream snapshot is the current book, followed by deltas from there
                sync.on_snapshot(ex.snapshot())
            elif op == "stale_snapshot" and len(ex.history) > 3:
                older = sorted(ex.history)[-4]
                sync.on_snapshot(ex.snapshot(older))
            else:
                sync.on_snapshot(ex.snapshot())
        check()

    # faults stop: deliver anything held, then run clean until live
    if held is not None:
        deliver(held)
        check()
    for _ in range(6):
        if sync.wants_snapshot():
            sync.snapshot_requested()
            sync.on_snapshot(ex.snapshot())
        deliver(ex.step())
        check()
    assert sync.state is SyncState.LIVE, (sync.state, sync.reason)
    assert sync.last_id == ex.cur
    assert book_state(sync) == ref_state(ex, ex.cur)
    # ids applied while live only ever increase (between resyncs the book is cleared)
    assert all(a is not None for a in applied_order)


def test_binance_spot_boundary_first_event_u_equals_L_plus_1_is_applied():
    sync = BookSync(BINANCE_SPOT)
    sync.on_delta(Delta(101, 105, None, [["1", "1"]], None))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(100, [], [["2", "1"]]))
    assert sync.live and sync.last_id == 105
    assert sync.book.best_bid() == ("1", "1")


def test_binance_spot_stale_snapshot_is_refetched():
    sync = BookSync(BINANCE_SPOT)
    sync.on_delta(Delta(150, 160, None, [["1", "1"]], None))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(100, [["1", "5"]], []))  # L < U - 1: older than the stream
    assert not sync.live and sync.reason is Reason.STALE_SNAPSHOT
    assert sync.wants_snapshot()
    assert sync.counters.stale_snapshots == 1


def test_binance_futures_keeps_event_with_u_equal_L_and_checks_pu():
    sync = BookSync(BINANCE_FUTURES)
    sync.on_delta(Delta(90, 100, 80, [["1", "1"]], None))  # u == L survives the futures drop rule
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(100, [["1", "1"]], []))
    assert sync.live and sync.last_id == 100
    sync.on_delta(Delta(101, 110, 100, [["2", "1"]], None))
    assert sync.live and sync.last_id == 110
    sync.on_delta(Delta(115, 120, 112, [["3", "1"]], None))  # wrong pu
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.GAP
    assert sync.book.best_bid() is None  # never left half-valid


def test_mexc_overlap_in_steady_state_is_a_resync():
    sync = BookSync(MEXC)
    sync.on_delta(Delta(11, 12, None, [], []))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(10, [["1", "1"]], [["2", "1"]]))
    assert sync.live and sync.last_id == 12
    sync.on_delta(Delta(12, 14, None, [], []))  # from <= local < to
    assert sync.reason is Reason.GAP


def test_mexc_duplicate_is_ignored():
    sync = BookSync(MEXC)
    sync.on_delta(Delta(11, 12, None, [], []))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(10, [["1", "1"]], [["2", "1"]]))
    sync.on_delta(Delta(11, 12, None, [["1", "7"]], []))
    assert sync.live and sync.book.best_bid() == ("1", "1")
    assert sync.counters.dropped == 1


def test_gzip_mbp_straddle_only_for_tick_by_tick():
    for rule, expect_live in ((MBP_TICK, True), (MBP_100MS, False)):
        sync = BookSync(rule)
        sync.on_delta(Delta(110, 110, 100, [["1", "1"]], None))
        sync.snapshot_requested()
        sync.on_snapshot(Snapshot(105, [["1", "1"]], [["2", "1"]]))  # prev 100 < S 105 < 110
        assert sync.live is expect_live, rule.name


def test_btse_duplicate_and_bad_increment_resync():
    sync = BookSync(BTSE)
    sync.on_delta(Delta(5, 5, 4, [["1", "1"]], None))
    assert sync.counters.dropped_before_snapshot == 1
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(10, [["1", "1"]], [["2", "1"]]))
    sync.on_delta(Delta(11, 11, 10, [], []))
    assert sync.live
    sync.on_delta(Delta(11, 11, 10, [], []))
    assert sync.reason is Reason.GAP and sync.wants_snapshot()
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(500, [["1", "1"]], [["2", "1"]]))
    sync.on_delta(Delta(503, 503, 500, [], []))  # seqNum != prevSeqNum + 1
    assert sync.reason is Reason.GAP


def test_crossed_book_resyncs():
    sync = BookSync(BINANCE_SPOT)
    sync.on_delta(Delta(11, 11, None, [], []))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(10, [["1", "1"]], [["2", "1"]]))
    sync.on_delta(Delta(12, 12, None, [["2", "1"]], None))
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.CROSSED_BOOK


def test_decode_error_in_delta_resyncs_without_touching_reference():
    sync = BookSync(BINANCE_SPOT)
    sync.on_delta(Delta(11, 11, None, [], []))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(10, [["1", "1"]], [["2", "1"]]))
    sync.on_delta(Delta(12, 12, None, [["1", "NaN"]], None))
    assert sync.reason is Reason.DECODE_ERROR and not sync.live
    assert sync.counters.resyncs[Reason.DECODE_ERROR] == 1


def test_buffer_is_bounded():
    sync = BookSync(MEXC, max_buffer=10)
    for i in range(25):
        sync.on_delta(Delta(i + 1, i + 1, None, [], []))
    assert sync.buffered <= 10
    assert sync.counters.resyncs[Reason.BUFFER_OVERFLOW] >= 1


def test_invalid_symbol_stops_without_retry():
    sync = BookSync(BTSE)
    sync.invalidate("1000 market pair not supported")
    assert sync.state is SyncState.INVALID
    assert not sync.wants_snapshot()
    sync.on_delta(Delta(1, 1, 0, [], []))
    assert sync.state is SyncState.INVALID


def test_revive_leaves_invalid_for_waiting_and_syncs_again():
    """The feed's listing re-check revives an invalid (or delisted) book; it then loads as a new one."""
    seen = []

    class L:
        def on_transition(self, s, t):
            seen.append((t.old, t.new, t.reason))

    sync = BookSync(MEXC)
    sync.attach(L(), None)
    sync.on_snapshot(Snapshot(10, [("100", "1")], [("101", "1")]))
    sync.invalidate("-1121 invalid symbol")
    sync.invalidate("not in the symbol list", Reason.DELISTED)
    assert sync.state is SyncState.INVALID and sync.reason is Reason.DELISTED
    assert sync.book.bids() == [] and sync.last_id is None
    sync.revive("re-check 1: listed again")
    assert sync.state is SyncState.WAITING and sync.reason is Reason.REVIVED
    assert not sync.wants_snapshot() and sync.wants_snapshot(allow_empty_buffer=True)
    sync.on_delta(Delta(21, 21, None, [("100", "2")], None))
    sync.on_snapshot(Snapshot(20, [("100", "1")], [("101", "1")]))
    assert sync.live and sync.last_id == 21 and sync.book.bids() == [("100", "2")]
    sync.revive("a second revive of a live book changes nothing")
    assert sync.live
    assert seen == [
        (SyncState.WAITING, SyncState.LIVE, Reason.SNAPSHOT),
        (SyncState.LIVE, SyncState.INVALID, Reason.INVALID_SYMBOL),
        (SyncState.INVALID, SyncState.INVALID, Reason.DELISTED),
        (SyncState.INVALID, SyncState.WAITING, Reason.REVIVED),
        (SyncState.WAITING, SyncState.LIVE, Reason.SNAPSHOT),
    ]
    assert not sync.counters.resyncs  # none of it is a resync


def test_transitions_carry_reasons():
    seen = []

    class L:
        def on_transition(self, s, t):
            seen.append((t.old, t.new, t.reason))

        def on_update(self, s, c):
            pass

    sync = BookSync(BINANCE_FUTURES)
    sync.attach(L(), None)
    sync.on_delta(Delta(1, 5, 0, [], []))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(3, [], []))
    sync.fail(Reason.DISCONNECT, "socket closed")
    assert seen == [
        (SyncState.WAITING, SyncState.LIVE, Reason.SNAPSHOT),
        (SyncState.LIVE, SyncState.RESYNCING, Reason.DISCONNECT),
    ]


def test_binance_futures_repeated_event_is_a_gap():
    sync = BookSync(BINANCE_FUTURES)
    sync.on_delta(Delta(95, 105, 90, [["1", "1"]], None))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(100, [["1", "1"]], []))
    sync.on_delta(Delta(106, 110, 105, [["2", "1"]], None))
    assert sync.live and sync.last_id == 110
    sync.on_delta(Delta(106, 110, 105, [["2", "1"]], None))  # the same event again
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.GAP


def test_snapshot_drops_contained_deltas_anywhere_in_the_buffer():
    """A late delta behind a newer one in the buffer is covered by the snapshot: dropped, not a gap."""
    sync = BookSync(BINANCE_FUTURES)
    sync.on_delta(Delta(111, 120, 110, [["3", "1"]], None))
    sync.on_delta(Delta(101, 110, 100, [["2", "1"]], None))  # arrived late
    sync.on_delta(Delta(121, 130, 120, [["4", "1"]], None))
    sync.snapshot_requested()
    sync.on_snapshot(Snapshot(115, [["1", "1"]], []))
    assert sync.live and sync.last_id == 130
    assert sync.counters.dropped == 1 and not sync.counters.resyncs
    assert [p for p, _ in sync.book.bids()] == ["4", "3", "1"]
