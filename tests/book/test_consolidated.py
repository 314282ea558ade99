"""Consolidated book against a brute-force merge of the venues' books."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aggbook.book.consolidated import ConsolidatedBook, Freshness
from aggbook.book.sync import BookSync, Delta, Liveness, Reason, Snapshot
from aggbook.feeds.binance import BINANCE_SPOT

VENUES = ["a", "b", "c"]
FEES = {"a": Decimal("10"), "b": Decimal("2.5"), "c": Decimal("0")}


def wire(cb: ConsolidatedBook, sync: BookSync, fee_bps: str | int = 0) -> None:
    """What the service's aggregator does for each venue: add the book, then tell it every change."""
    cb.add_venue(sync, fee_bps)
    sync.attach(cb, cb)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def brute_force(syncs: dict[str, BookSync], now: float, stale_after: float, fees: bool):
    """Best bid/ask over included venues, by looking at every book."""
    bids, asks = [], []
    for v, s in syncs.items():
        if not s.live or s.updated_at is None or now - s.updated_at > stale_after:
            continue
        bb, ba = s.book.best_bid(), s.book.best_ask()
        if bb:
            p = Decimal(bb[0]) * ((10000 - FEES[v]) / Decimal(10000) if fees else 1)
            bids.append((p, v, Decimal(bb[1])))
        if ba:
            p = Decimal(ba[0]) * ((10000 + FEES[v]) / Decimal(10000) if fees else 1)
            asks.append((p, v, Decimal(ba[1])))
    best_bid = max((b[0] for b in bids), default=None)
    best_ask = min((a[0] for a in asks), default=None)
    bid = None if best_bid is None else (best_bid, sorted(v for p, v, _ in bids if p == best_bid),
                                         sum(s for p, _, s in bids if p == best_bid))
    ask = None if best_ask is None else (best_ask, sorted(v for p, v, _ in asks if p == best_ask),
                                         sum(s for p, _, s in asks if p == best_ask))
    return bid, ask


price = st.integers(90, 110).map(str)
size = st.sampled_from(["0", "1", "2.5", "0.001", "7"])


class ConsolidatedMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.clock = Clock()
        self.cb = ConsolidatedBook("X-Y", stale_after=5.0, clock=self.clock)
        self.syncs: dict[str, BookSync] = {}
        self.ids: dict[str, int] = {}
        for v in VENUES:
            s = BookSync(BINANCE_SPOT, venue=v, symbol="X-Y", clock=self.clock)
            self.syncs[v] = s
            wire(self.cb, s, FEES[v])
            self.ids[v] = 0

    def _no_cross(self, v: str, bids, asks):
        """Keep each venue's own book uncrossed: bids <= 100, asks >= 101."""
        return [[p, q] for p, q in bids if int(p) <= 100], [[p, q] for p, q in asks if int(p) >= 101]

    @rule(v=st.sampled_from(VENUES), b=st.lists(st.tuples(price, size), max_size=4),
          a=st.lists(st.tuples(price, size), max_size=4))
    def go_live(self, v, b, a):
        s = self.syncs[v]
        b, a = self._no_cross(v, b, a)
        if not s.live:
            self.ids[v] += 10
            s.on_delta(Delta(self.ids[v] + 1, self.ids[v] + 1, None, [], []))
            s.snapshot_requested()
            s.on_snapshot(Snapshot(self.ids[v], b, a))
            self.ids[v] += 1

    @rule(v=st.sampled_from(VENUES), b=st.lists(st.tuples(price, size), max_size=4),
          a=st.lists(st.tuples(price, size), max_size=4))
    def update(self, v, b, a):
        s = self.syncs[v]
        if s.live:
            b, a = self._no_cross(v, b, a)
            self.ids[v] += 1
            s.on_delta(Delta(self.ids[v], self.ids[v], None, b, a))

    @rule(v=st.sampled_from(VENUES))
    def disconnect(self, v):
        self.syncs[v].fail(Reason.DISCONNECT, "test")

    @rule(dt=st.floats(0, 4))
    def time_passes(self, dt):
        self.clock.now += dt

    @invariant()
    def matches_brute_force(self):
        if not hasattr(self, "cb"):
            return
        for fees in (False, True):
            q = self.cb.quote(fees=fees)
            bid, ask = brute_force(self.syncs, self.clock.now, 5.0, fees)
            if bid is None:
                assert q.bid is None
            else:
                assert Decimal(q.bid.price) == bid[0]
                assert sorted(v.venue for v in q.bid.venues) == bid[1]
                assert Decimal(q.bid.size) == bid[2]
            if ask is None:
                assert q.ask is None
            else:
                assert Decimal(q.ask.price) == ask[0]
                assert sorted(v.venue for v in q.ask.venues) == ask[1]
                assert Decimal(q.ask.size) == ask[2]
            if bid and ask:
                assert q.crossed == (bid[0] > ask[0]) and q.locked == (bid[0] == ask[0])

    @invariant()
    def ladder_matches_brute_force(self):
        if not hasattr(self, "cb"):
            return
        lad = self.cb.ladder(depth=5)
        merged: dict[Decimal, Decimal] = {}
        for v in lad.venues:
            for p, q in self.syncs[v].book.bids(5):
                merged[Decimal(p)] = merged.get(Decimal(p), Decimal(0)) + Decimal(q)
        exp = sorted(merged.items(), reverse=True)[:5]
        assert [(Decimal(lv.price), Decimal(lv.size)) for lv in lad.bids] == exp
        for v, why in self.cb.eligible().items():
            assert (v in lad.venues) == (why is None)


TestConsolidated = ConsolidatedMachine.TestCase
TestConsolidated.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


def _live(venue: str, clock: Clock, bids, asks) -> BookSync:
    s = BookSync(BINANCE_SPOT, venue=venue, symbol="X-Y", clock=clock)
    s.on_delta(Delta(11, 11, None, [], []))
    s.snapshot_requested()
    s.on_snapshot(Snapshot(10, bids, asks))
    return s


def test_update_below_top_does_not_scan():
    clock = Clock()
    cb = ConsolidatedBook("X-Y", clock=clock)
    syncs = [_live(v, clock, [["100", "1"], ["99", "1"]], [["101", "1"], ["102", "1"]]) for v in VENUES]
    for s in syncs:
        wire(cb, s)
    cb.quote()
    scans = cb.scans
    for i in range(50):
        syncs[0].on_delta(Delta(12 + i, 12 + i, None, [["98", str(i + 1)]], [["103", "2"]]))
    cb.quote()
    assert cb.scans == scans  # nothing below the top reached the consolidated book
    syncs[1].on_delta(Delta(12, 12, None, [["100.5", "3"]], None))  # new best: O(1), still no scan
    q = cb.quote()
    assert cb.scans == scans and q.bid.price == "100.5" and q.bid.venues[0].venue == "b"
    syncs[1].on_delta(Delta(13, 13, None, [["100.5", "0"]], None))  # best venue worsens: one rescan
    q = cb.quote()
    assert cb.scans == scans + 1 and q.bid.price == "100" and len(q.bid.venues) == 3


def test_stale_and_not_live_venues_are_excluded_and_reported():
    clock = Clock()
    cb = ConsolidatedBook("X-Y", stale_after=5, clock=clock)
    a = _live("a", clock, [["100", "1"]], [["101", "1"]])
    wire(cb, a)
    clock.now += 3
    b = _live("b", clock, [["99", "1"]], [["100.5", "2"]])
    wire(cb, b)
    clock.now += 3  # a is now 6 s old
    q = cb.quote()
    assert q.bid.price == "99" and q.ask.price == "100.5"
    assert q.excluded == {"a": "stale"}
    b.fail(Reason.GAP, "test")
    q = cb.quote()
    assert q.bid is None and q.excluded["b"].startswith("resyncing")


def test_locked_and_crossed_across_venues():
    clock = Clock()
    cb = ConsolidatedBook("X-Y", clock=clock)
    wire(cb, _live("a", clock, [["100", "1"]], [["101", "1"]]))
    wire(cb, _live("b", clock, [["101", "1"]], [["102", "1"]]))
    q = cb.quote()
    assert q.locked and not q.crossed and q.spread == "0"


def test_fee_adjusted_prices_are_exact():
    clock = Clock()
    cb = ConsolidatedBook("X-Y", clock=clock)
    wire(cb, _live("a", clock, [["0.3", "1"]], [["0.4", "1"]]), fee_bps="10")
    q = cb.quote(fees=True)
    assert q.bid.price == "0.2997" and q.ask.price == "0.4004"
    assert q.bid.venues[0].price == "0.3"


def test_a_quiet_book_stays_included_while_its_connection_is_heard() -> None:
    """Liveness per connection, staleness per book: fresh -> quiet (included) -> stale (excluded)."""
    clock = Clock()
    cb = ConsolidatedBook("X", stale_after=10, clock=clock)
    quiet, bare = (BookSync(BINANCE_SPOT, venue=v, clock=clock) for v in ("quiet", "bare"))
    connection = Liveness(timeout=25.0, heard_at=clock.now)
    quiet.liveness = connection
    for sync in (quiet, bare):
        wire(cb, sync)
        sync.on_delta(Delta(5, 5, None, [("100", "1")], [("101", "1")]))
        sync.on_snapshot(Snapshot(4, [("100", "1")], [("101", "1")]))
    assert cb.freshness("quiet") is Freshness.FRESH and cb.eligible() == {"quiet": None, "bare": None}
    for _ in range(10):  # a heartbeat every 20 s for 200 s; the books never change
        clock.now += 20
        quiet.touch()  # a heartbeat marks the connection, not the book
        assert connection.heard_at == clock.now and quiet.updated_at == 1000.0
        assert cb.freshness("quiet") is Freshness.QUIET and cb.eligible()["quiet"] is None
        assert cb.eligible()["bare"] == "stale"  # no liveness: its age is all it has
    venue = next(v for v in cb.quote().venues if v.venue == "quiet")
    assert venue.included and venue.freshness == "quiet" and venue.age == 200.0
    clock.now += 25.5  # the connection silent past its timeout
    assert cb.freshness("quiet") is Freshness.STALE and cb.eligible()["quiet"] == "stale"
    assert cb.quote().bid is None
    quiet.fail(Reason.DISCONNECT, "dropped")
    assert cb.freshness("quiet") is None
