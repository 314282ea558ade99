"""Binance Spot, USDⓈ-M and COIN-M Futures feeds against the simulated venues over real sockets.

Each test starts a simulated venue that pings every 0.3 s, starts the feed on its URLs, and
checks after the fact that every book is live at the venue's sequence id and equal to its truth,
and that each fault was counted with its reason.  Times from start to live and from a resync to
live are printed.

The deadlines that only a fault may trip (the venue's pong deadline, the feed's silence timeout)
are generous: the venue and the feed share one process, which a loaded machine can leave
unscheduled for more than a second, and the venue sends nothing meanwhile.  That pings are
answered is checked by counting the answers at the venue, not by a deadline that did not fire.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
import orjson
import pytest

from aggbook.book.sync import BookSync, Reason, SyncState, Transition
from aggbook.feeds.base import Connection, FeedError, FrameError, VenueFeed
from aggbook.feeds.binance import BinanceCoinMFeed, BinanceFuturesFeed, BinanceSpotFeed
from aggbook.feeds.config import VenueConfig
from aggbook.simulator.binance import BinanceCoinMVenue, BinanceFuturesVenue, BinanceSpotVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS, SymbolSpec, extra_symbol
from aggbook.simulator.venue import VenueServer
from tests.conftest import book_matches, describe_mismatch, wait_for
from tests.feeds.recording import RecordingMetrics

SPECS = DEFAULT_SYMBOLS[:2]  # BTC-USDT, ETH-USDT
SYM = "BTC-USDT"
OTHER = "ETH-USDT"

# fast retries so the tests spend their time on the protocol, not on backoff
FAST_OPTIONS = {"backoff_base": 0.05, "backoff_cap": 0.5, "silence_timeout": 10.0}
FAST_VENUE = {"ping_interval": 0.3, "pong_timeout": 10.0}


@dataclass(frozen=True)
class Market:
    kind: str
    venue_cls: type[VenueServer]
    feed_cls: type[VenueFeed]


SPOT = Market("binance", BinanceSpotVenue, BinanceSpotFeed)
FUTURES = Market("binance-futures", BinanceFuturesVenue, BinanceFuturesFeed)
COINM = Market("binance-coinm", BinanceCoinMVenue, BinanceCoinMFeed)
MARKETS = [pytest.param(SPOT, id="spot"), pytest.param(FUTURES, id="futures"),
           pytest.param(COINM, id="coinm")]


# ---------------------------------------------------------------------------- harness
class Recorder:
    """``feed.on_sync`` callback: keeps every sync ever published and the transitions it saw."""

    def __init__(self) -> None:
        self.syncs: dict[str, list[BookSync]] = {}
        self.transitions: list[tuple[str, Transition]] = []

    def __call__(self, canonical: str, sync: BookSync) -> None:
        for old in self.syncs.setdefault(canonical, []):
            old.detach()  # retired, as the service's aggregator does: its later transitions are not ours
        self.syncs[canonical].append(sync)
        sync.attach(self, None)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        self.transitions.append((sync.symbol, transition))

    def resyncs(self, canonical: str) -> Counter:
        """Resyncs by reason over every sync the symbol has had (a reconnect makes new ones)."""
        total: Counter = Counter()
        for sync in self.syncs.get(canonical, []):
            total.update(sync.counters.resyncs)
        return total

    def dropped(self, canonical: str) -> int:
        return sum(s.counters.dropped for s in self.syncs.get(canonical, []))


@dataclass
class Harness:
    venue: VenueServer
    feed: VenueFeed
    metrics: RecordingMetrics
    recorder: Recorder
    started: float
    fetches: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, canonical)

    def sync(self, canonical: str) -> BookSync:
        return self.feed.current_syncs()[canonical]

    def fetch_count(self, canonical: str) -> int:
        return sum(1 for _, c in self.fetches if c == canonical)

    def expected(self) -> list[str]:
        return [c for c in self.feed.config.symbols if c not in self.feed.invalid]

    def all_live(self) -> bool:
        syncs = self.feed.current_syncs()
        return all(c in syncs and syncs[c].live for c in self.expected())

    async def wait_all_live(self, timeout: float = 10.0) -> float:
        """Wait for every book to be live; returns the seconds since the feed was started."""
        await wait_for(self.all_live, timeout, "all books live")
        return time.monotonic() - self.started

    def matches(self) -> bool:
        syncs = self.feed.current_syncs()
        return all(book_matches(syncs[c], self.venue.truth(c)) for c in self.expected())

    async def settle(self, timeout: float = 10.0) -> None:
        """Pause the market and wait until every book is live at the truth's id and equal to it."""
        self.venue.pause()
        try:
            await wait_for(self.matches, timeout, "books equal to the truth")
        except BaseException:
            for c in self.expected():
                print(c, describe_mismatch(self.sync(c), self.venue.truth(c)))
            raise


def symbols_of(venue: VenueServer, specs: tuple[SymbolSpec, ...] | list[SymbolSpec]) -> dict[str, str]:
    return {spec.canonical: venue.venue_symbol(spec) for spec in specs}


@contextlib.asynccontextmanager
async def running(
    market: Market,
    *,
    specs: tuple[SymbolSpec, ...] | list[SymbolSpec] = SPECS,
    rate: float = 50.0,
    venue_kw: dict | None = None,
    options: dict | None = None,
    depth: int | None = None,
    extra_symbols: dict[str, str] | None = None,
    before_start: Callable[[Harness], None] | None = None,
) -> AsyncIterator[Harness]:
    """A venue and a feed on it; fetch_snapshot is wrapped to count REST snapshot requests."""
    venue = market.venue_cls(specs, seed=7, rate=rate, **{**FAST_VENUE, **(venue_kw or {})})
    await venue.start()
    metrics, recorder = RecordingMetrics(), Recorder()
    symbols = {**symbols_of(venue, specs), **(extra_symbols or {})}
    config = VenueConfig(name=market.kind, kind=market.kind, symbols=symbols, depth=depth,
                         options={**FAST_OPTIONS, **(options or {})}, **venue.urls())
    started = time.monotonic()
    feed = market.feed_cls(config, metrics=metrics)
    feed.on_sync(recorder)
    h = Harness(venue, feed, metrics, recorder, started)
    fetch = feed.fetch_snapshot

    async def counted(conn, canonical):  # type: ignore[no-untyped-def]
        h.fetches.append((time.monotonic(), canonical))
        return await fetch(conn, canonical)

    feed.fetch_snapshot = counted  # type: ignore[method-assign]
    if before_start is not None:
        before_start(h)
    try:
        await feed.start()
        yield h
    finally:
        await feed.stop()
        await venue.stop()


def report(label: str, h: Harness, start_to_live: float | None = None) -> None:
    resync = h.metrics.resync_ttl()
    parts = [f"[time-to-live] {h.feed.venue} {label}:"]
    if start_to_live is not None:
        parts.append(f"start->all live {start_to_live * 1000:.1f} ms")
    if resync:
        parts.append("resync->live " + ", ".join(f"{s * 1000:.1f} ms" for s in resync))
    print(" ".join(parts))


# ---------------------------------------------------------------------------- happy paths
@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("combined", [True, False], ids=["combined", "raw"])
async def test_happy_path_books_equal_truth(market: Market, combined: bool) -> None:
    speed = "100ms" if combined else ""
    async with running(market, options={"combined": combined, "stream_speed": speed}) as h:
        start_to_live = await h.wait_all_live()
        # let a good number of live deltas through before comparing
        await wait_for(lambda: all(h.sync(c).counters.applied >= 20 for c in h.expected()), 10,
                       "20 deltas applied per book")
        (conn,) = h.venue.connections.values()
        await wait_for(lambda: conn.state["pings_answered"] >= 3, 10, "three of the venue's pings answered")
        await h.settle()
        report(f"happy path ({'combined' if combined else 'raw'})", h, start_to_live)

        feed = h.feed
        assert isinstance(feed, (BinanceSpotFeed, BinanceFuturesFeed, BinanceCoinMFeed))
        lower = feed.config.symbols[SYM].lower()  # btcusdt; COIN-M btcusd_perp
        stream = f"{lower}@depth@100ms" if combined else f"{lower}@depth"
        assert h.venue.connections == {conn.id: conn}
        assert conn.path.startswith("/public/" if market is FUTURES else "/")
        assert ("/stream?streams=" if combined else "/ws/") in conn.path
        assert stream in conn.subscriptions
        rules = h.venue.specs[h.venue.resolve_symbol(SYM)]  # the grid the venue's book is on
        # learned from exchangeInfo
        assert (feed.tick_sizes[SYM], feed.lot_sizes[SYM]) == (rules.tick, rules.lot)
        assert feed.tick_sizes[SYM] == Decimal("0.01" if market is SPOT else "0.1")
        if market is COINM:  # sizes are whole contracts
            assert feed.config.symbols[SYM] == "BTCUSD_PERP" and feed.lot_sizes[SYM] == 1
        assert feed.symbol_status == {SYM: "TRADING", OTHER: "TRADING"}
        assert feed.reconnects == 0
        assert h.fetch_count(SYM) == 1 and h.fetch_count(OTHER) == 1
        assert (h.metrics.snapshot_count(True), h.metrics.snapshot_count(False)) == (2, 0)
        assert h.metrics.messages >= 40 and h.metrics.nbytes > 0 and h.metrics.lags
        assert [after for _, _, after in h.metrics.ttl] == ["start", "start"]
        assert all(not h.recorder.resyncs(c) for c in h.expected())
        # the weight header was read: exchangeInfo plus two snapshots at limit 1000
        snap = 50 if market is SPOT else 20
        info = 20 if market is SPOT else 1
        assert feed.weight_used == h.venue.limiter.used == info + 2 * snap  # type: ignore[attr-defined]


async def test_futures_feed_echoes_ping_payloads() -> None:
    """Against the changelog's futures rule (a pong must echo the ping's payload) the feed stays up."""
    async with running(FUTURES, venue_kw={"pong_must_echo": True}) as h:
        await h.wait_all_live()
        (sim_conn,) = h.venue.connections.values()
        # only a pong that echoes its ping's payload counts as its answer
        await wait_for(lambda: sim_conn.state["pings_answered"] >= 5, 10, "five server pings answered")
        assert h.venue.connections.get(sim_conn.id) is sim_conn and not sim_conn.closed
        assert h.feed.reconnects == 0
        await h.settle()


@pytest.mark.parametrize("market", MARKETS)
async def test_unlisted_symbol_rejected_at_start(market: Market) -> None:
    """exchangeInfo validation: a symbol the venue does not list is delisted and never fetched; its
    listing is re-checked (exchangeInfo?symbol=, -1121) without a snapshot request."""
    options = {"listing_check_base": 0.05, "listing_check_cap": 0.1}
    async with running(market, extra_symbols={"FOO-USDT": "FOOUSDT"}, options=options) as h:
        await h.wait_all_live()
        foo = h.sync("FOO-USDT")
        assert foo.state is SyncState.INVALID and foo.reason is Reason.DELISTED
        assert "FOO-USDT" in h.feed.invalid
        await wait_for(lambda: h.feed.listing.counts["delisted"] >= 2, 5, "re-checked twice")
        assert h.sync("FOO-USDT").reason is Reason.DELISTED and h.feed.listing.counts["listed"] == 0
        assert h.fetch_count("FOO-USDT") == 0
        await h.settle()


# ---------------------------------------------------------------------------- faults
@dataclass(frozen=True)
class Case:
    """How to provoke a fault and what the feed must have counted afterwards."""

    fault: Fault
    params: dict = field(default_factory=dict)
    with_gap: bool = False  # snapshot faults: a GAP forces the resync whose snapshot meets the fault
    reasons: tuple[Reason, ...] = ()  # resync reasons that must be counted for SYM
    fetches: int | None = None  # REST snapshots for SYM after the fault
    options: dict = field(default_factory=dict)


CASES = [
    Case(Fault.GAP, reasons=(Reason.GAP,), fetches=1),
    Case(Fault.DUPLICATE, fetches=0),
    Case(Fault.REORDER, reasons=(Reason.GAP,), fetches=1),
    Case(Fault.MALFORMED, reasons=(Reason.DECODE_ERROR,), fetches=1),
    Case(Fault.CROSSED, reasons=(Reason.CROSSED_BOOK,), fetches=1),
    Case(Fault.DISCONNECT, reasons=(Reason.DISCONNECT,), fetches=1),
    # the feed's own silence timeout is what finds the silent socket: shorter than the harness's,
    # still longer than the stalls of a loaded machine
    Case(Fault.SILENT, reasons=(Reason.DISCONNECT,), fetches=1, options={"silence_timeout": 3.0}),
    # reasons depend on the market (see the test); the simulator swallows the frame the fault fires
    # on, so the old spot connection may also resync a gap during its grace period
    Case(Fault.SERVER_CLOSE),
    Case(Fault.STALE_SNAPSHOT, with_gap=True, reasons=(Reason.GAP, Reason.STALE_SNAPSHOT), fetches=2),
    Case(Fault.SNAPSHOT_429, {"retry_after": 1}, with_gap=True, reasons=(Reason.GAP,), fetches=2),
    Case(Fault.SNAPSHOT_418, {"retry_after": 1}, with_gap=True, reasons=(Reason.GAP,), fetches=2),
    Case(Fault.SLOW_SNAPSHOT, {"delay": 0.5}, with_gap=True, reasons=(Reason.GAP,), fetches=1),
    # refused once, the listing re-check finds it listed, and the revived book fetches again
    Case(Fault.UNKNOWN_SYMBOL, with_gap=True, reasons=(Reason.GAP,), fetches=2,
         options={"listing_check_base": 0.05}),
]


# futures restarts on any event whose pu is not the last u, a repeated one included
FUTURES_CASES = {Fault.DUPLICATE: Case(Fault.DUPLICATE, reasons=(Reason.GAP,), fetches=1)}


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("case", CASES, ids=[c.fault.value for c in CASES])
async def test_fault_recovers_to_truth(market: Market, case: Case) -> None:
    if market is not SPOT:
        case = FUTURES_CASES.get(case.fault, case)
    async with running(market, options=case.options) as h:
        start_to_live = await h.wait_all_live()
        await wait_for(lambda: h.sync(SYM).counters.applied >= 3, 5, "a few live deltas")
        first_sync = h.sync(SYM)
        fetches_before = h.fetch_count(SYM)
        dropped_before = h.recorder.dropped(SYM)
        penalties_before = h.feed.pacer.penalties

        h.venue.inject(case.fault, SYM, **case.params)
        if case.with_gap:
            h.venue.inject(Fault.GAP, SYM)
        await wait_for(lambda: h.venue.faults.fired[case.fault.value] >= 1, 5, f"{case.fault} fired")

        fault = case.fault
        if fault is Fault.UNKNOWN_SYMBOL:
            await wait_for(lambda: any(t.reason is Reason.INVALID_SYMBOL for _, t in h.recorder.transitions),
                           5, "symbol invalidated")
            # all_live leaves out symbols awaiting a re-check: wait for this one to be back itself
            await wait_for(lambda: SYM not in h.feed.invalid and h.sync(SYM).live, 10, "symbol back live")
        elif fault is Fault.DUPLICATE and not case.reasons:
            await wait_for(lambda: h.recorder.dropped(SYM) > dropped_before, 5, "duplicate dropped")
        elif fault is Fault.SERVER_CLOSE:
            await wait_for(lambda: h.sync(SYM) is not first_sync and h.all_live(), 5, "replacement live")
        else:
            await wait_for(lambda: all(h.recorder.resyncs(SYM)[r] >= 1 for r in case.reasons), 10,
                           f"resync counted as {[r.value for r in case.reasons]}")
        await wait_for(h.all_live, 10, "books live again after the fault")
        await h.settle()
        report(f"{fault.value}", h, start_to_live)

        resyncs = h.recorder.resyncs(SYM)
        for reason in case.reasons:
            assert resyncs[reason] >= 1, (reason, resyncs)
        if case.fetches is not None:
            assert h.fetch_count(SYM) - fetches_before == case.fetches
        # only what the fault explains: a gap is not reported as anything else
        explained = set(case.reasons)
        if fault in (Fault.DISCONNECT, Fault.SILENT, Fault.SERVER_CLOSE):
            explained.add(Reason.DISCONNECT)
        if fault is Fault.SERVER_CLOSE:
            explained.add(Reason.GAP)
        assert set(resyncs) <= explained, resyncs

        if fault is Fault.DUPLICATE and not case.reasons:
            assert not resyncs and h.sync(SYM) is first_sync
        if fault is Fault.MALFORMED:
            assert h.metrics.decode_errors == 1
            assert h.recorder.resyncs(OTHER)[Reason.DECODE_ERROR] == 1  # every book on the socket
        if fault in (Fault.DISCONNECT, Fault.SILENT, Fault.SERVER_CLOSE):
            assert h.feed.reconnects == 1 and h.metrics.reconnects == 1
            assert h.sync(SYM) is not first_sync
        else:
            assert h.feed.reconnects == 0
        if fault is Fault.SERVER_CLOSE:
            if market is SPOT:
                # serverShutdown: make-before-break; the old books were retired before their socket
                # closed, so the disconnect is counted on them but never published as a transition
                await wait_for(lambda: first_sync.counters.resyncs[Reason.DISCONNECT] == 1, 5,
                               "old connection closed after the switch")
                assert not any(t.reason is Reason.DISCONNECT for _, t in h.recorder.transitions)
            else:
                # futures sends no notice: an orderly close without warning is a disconnect
                assert resyncs[Reason.DISCONNECT] >= 1
        if fault is Fault.STALE_SNAPSHOT:
            assert h.sync(SYM).counters.stale_snapshots == 1
        if fault in (Fault.SNAPSHOT_429, Fault.SNAPSHOT_418):
            assert h.feed.pacer.penalties == penalties_before + 1  # Retry-After closed the gate
            assert h.metrics.snapshots[(SYM, False)] == 1
        if fault is Fault.UNKNOWN_SYMBOL:
            # back without a restart: one refusal, one re-check that found it listed, one revival
            reasons = [t.reason for s, t in h.recorder.transitions if s == SYM]
            assert reasons.count(Reason.INVALID_SYMBOL) == 1 and reasons.count(Reason.REVIVED) == 1
            assert SYM not in h.feed.invalid and h.feed.listing.counts["listed"] == 1


# ---------------------------------------------------------------------------- rate limits
async def test_weight_header_slows_snapshots_before_the_budget() -> None:
    """X-MBX-USED-WEIGHT-1M near the exchangeInfo budget holds the snapshot pacer back; no 429 seen.

    exchangeInfo alone (20) reaches a quarter of the 100 a 2 s window allows, so the header watch,
    not the pacer, is what holds the second snapshot back.
    """
    async with running(SPOT, depth=100, venue_kw={"weight_limit": 100, "weight_window": 2.0},
                       options={"weight_headroom": 0.25, "weight_reserve": 0}) as h:
        await h.wait_all_live()
        feed = h.feed
        assert isinstance(feed, BinanceSpotFeed)
        assert (feed.weight_budget, feed.weight_window) == (100, 2.0)  # learned from exchangeInfo rateLimits
        assert feed.snapshot_weight(SYM) == 5
        assert h.venue.limiter.used == 20 + 2 * 5  # type: ignore[attr-defined]
        assert feed.weight_used in (25, 30)
        assert feed.weight_slowdowns >= 1 and feed.pacer.penalties >= 1
        assert h.metrics.snapshot_count(False) == 0
        await h.settle()


@pytest.mark.parametrize("paced", [True, False], ids=["budget", "fixed-rate"])
async def test_cold_start_of_many_books_stays_within_the_published_budget(paced: bool) -> None:
    """80 books at weight 5 on a venue publishing 300 weight per 2 s: all go live, the venue never refuses.

    Counted on the venue's side: one exchangeInfo and one snapshot request per book, and no window
    ever charged more than the budget.  The fixed-rate control (the former 50 weight/s with a burst
    of 250, blind to the published budget) runs into 429s at once.
    """
    specs = [extra_symbol(i) for i in range(80)]
    # snapshot pacing is the subject: the 80 bookTicker streams would only add load to a busy machine
    options: dict = {"bbo_check": False}
    venue_kw = {"weight_limit": 300, "weight_window": 2.0, "ban_seconds": 1.0}
    if not paced:
        options |= {"snapshot_rate": 50.0, "snapshot_burst": 250.0}
        # a window that outlasts the cold start: a loaded machine that handles fewer than 30 requests
        # a second would spread them over several 2 s windows, and the venue would have no cause to refuse
        venue_kw["weight_window"] = 60.0
    async with running(SPOT, specs=specs, rate=5.0, depth=100, options=options, venue_kw=venue_kw) as h:
        feed, limiter = h.feed, h.venue.limiter  # type: ignore[attr-defined]
        assert isinstance(feed, BinanceSpotFeed)
        if not paced:
            await wait_for(lambda: limiter.refused > 0, 30, "the venue refusing requests")
            return
        await h.wait_all_live(timeout=30)
        assert (feed.weight_budget, feed.weight_window) == (300, 2.0)  # from exchangeInfo
        rate, burst = feed.budget.pacing(5)
        assert (feed.pacer.rate, feed.pacer.burst) == (rate, burst) and burst + rate * 2.0 == 200
        assert limiter.refused == 0 and h.metrics.snapshot_count(False) == 0
        assert limiter.requests == 1 + len(specs)  # exchangeInfo, then one snapshot per book
        assert limiter.charged == 20 + 5 * len(specs)
        assert limiter.peak <= limiter.limit
        assert len(h.fetches) == len(specs)
        # the cold start needed more than one window: the budget, not the burst, paced it
        assert limiter.charged > 2 * burst


async def test_without_exchange_info_the_documented_budget_paces() -> None:
    """The symbol endpoint down: the feed starts anyway, paced at spot's documented 6000 per minute."""

    def no_exchange_info(h: Harness) -> None:
        async def down() -> dict[str, str]:
            raise aiohttp.ClientConnectionError("exchangeInfo unreachable")

        h.feed.validate_symbols = down  # type: ignore[method-assign]

    async with running(SPOT, depth=100, venue_kw={"weight_limit": 300, "weight_window": 2.0},
                       before_start=no_exchange_info) as h:
        await h.wait_all_live()
        feed = h.feed
        assert isinstance(feed, BinanceSpotFeed)
        assert (feed.weight_budget, feed.weight_window) == (6000, 60.0)
        assert (feed.pacer.rate, feed.pacer.burst) == feed.budget.pacing(5)
        await h.settle()


@pytest.mark.parametrize(("market", "depth", "weight"), [
    (SPOT, 100, 5), (SPOT, 101, 25), (SPOT, 1000, 50), (SPOT, 5000, 250),
    (FUTURES, 50, 2), (FUTURES, 100, 5), (FUTURES, 500, 10), (FUTURES, 1000, 20),
    (COINM, 5, 2), (COINM, 100, 5), (COINM, 500, 10), (COINM, 1000, 20),
])
def test_snapshot_weight_follows_the_limit(market: Market, depth: int, weight: int) -> None:
    config = VenueConfig(name=market.kind, kind=market.kind, symbols={SYM: "BTCUSDT"}, depth=depth)
    assert market.feed_cls(config).snapshot_weight(SYM) == weight


@pytest.mark.parametrize(("market", "depth"), [(SPOT, 0), (SPOT, 5001), (FUTURES, 200), (FUTURES, 5000),
                                                (COINM, 200), (COINM, 5000)])
def test_bad_depth_is_a_config_error(market: Market, depth: int) -> None:
    with pytest.raises(ValueError, match="depth"):
        market.feed_cls(VenueConfig(name="b", kind=market.kind, symbols={SYM: "BTCUSDT"}, depth=depth))


# ---------------------------------------------------------------------------- control frames
@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
async def test_subscribe_frames_respect_five_per_second(paced: bool) -> None:
    """Streams beyond the URL go in SUBSCRIBE frames paced under spot's 5 incoming frames/s.

    The unpaced control shows the limit is real: seven frames at once get the connection dropped.
    """
    specs = [extra_symbol(i) for i in range(8)]
    options = {"url_max_streams": 1, "subscribe_batch": 1}
    if not paced:
        options.update(control_rate=1000.0, control_burst=1000.0)
    # pings slow enough that pongs do not count much against the 5/s budget
    async with running(SPOT, specs=specs, rate=20.0, options=options, depth=100,
                       venue_kw={"ping_interval": 5.0, "pong_timeout": 10.0}) as h:
        if not paced:
            await wait_for(lambda: h.feed.reconnects >= 1, 10, "venue drops the unpaced connection")
            return
        await h.wait_all_live()
        (conn,) = h.feed.connections.values()
        (sim_conn,) = h.venue.connections.values()
        feed = h.feed
        assert isinstance(feed, BinanceSpotFeed)
        streams = feed.streams(conn)  # 8 depth streams, then 8 bookTicker streams
        assert len(streams) == 16
        # the books can go live before the last SUBSCRIBE frames (the bookTickers) went out
        await wait_for(lambda: sim_conn.subscriptions == set(streams), 15, "every stream subscribed")
        await wait_for(lambda: conn.venue_state.pending == {}, 5, "every SUBSCRIBE answered with result null")
        assert conn.venue_state.pacer.waited > 0
        assert h.feed.reconnects == 0 and h.venue.connections == {sim_conn.id: sim_conn}
        await h.settle()


def _most_frames_in_one_second(rate: float, burst: float, frames: int = 200) -> int:
    """A sender that leaves a frame the moment the token bucket allows: most frames in any [t, t+1)."""
    times, tokens, now = [], burst, 0.0
    for _ in range(frames):
        if tokens < 1.0:
            now += (1.0 - tokens) / rate
            tokens = 1.0
        tokens -= 1.0
        times.append(now)
        tokens = min(burst, tokens)
    return max(sum(1 for t in times if start <= t < start + 1.0 - 1e-9) for start in times)


@pytest.mark.parametrize(("market", "limit"), [(SPOT, 5), (FUTURES, 10), (COINM, 10)])
def test_control_pacing_leaves_room_for_a_pong(market: Market, limit: int) -> None:
    """Pings, pongs and control frames share the incoming limit: paced frames plus one pong fit."""
    feed = market.feed_cls(VenueConfig(name=market.kind, kind=market.kind, symbols={SYM: "BTCUSDT"}))
    assert isinstance(feed, (BinanceSpotFeed, BinanceFuturesFeed, BinanceCoinMFeed))
    assert _most_frames_in_one_second(feed.control_rate, feed.control_burst) + 1 <= limit
    assert _most_frames_in_one_second(4.0, 2.0) + 1 > 5  # the old spot pacing did not leave room


async def test_subscribe_error_reply_drops_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    """An error reply to our own SUBSCRIBE is logged and treated as a broken connection."""
    specs = list(DEFAULT_SYMBOLS)
    caplog.set_level(logging.ERROR, logger="aggbook.feeds.binance")
    async with running(SPOT, specs=specs, options={"url_max_streams": 1, "subscribe_batch": 4},
                       venue_kw={"max_streams": 3}) as h:
        await wait_for(lambda: h.feed.reconnects >= 1, 10, "reconnect after the error reply")
        feed = h.feed
        assert isinstance(feed, BinanceSpotFeed)
        assert feed.control_errors >= 1
        assert any("rejected" in r.getMessage() and "too many streams" in r.getMessage()
                   for r in caplog.records)
        assert all(s.state is not SyncState.INVALID for s in feed.current_syncs().values())


def test_unknown_option_and_speed_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        BinanceSpotFeed(VenueConfig(name="b", kind="binance", symbols={SYM: "BTCUSDT"},
                                    options={"no_such_knob": 1}))
    with pytest.raises(ValueError, match="stream_speed"):
        BinanceSpotFeed(VenueConfig(name="b", kind="binance", symbols={SYM: "BTCUSDT"},
                                    options={"stream_speed": "250ms"}))


@pytest.mark.parametrize(("market", "speed"), [(SPOT, "1000ms"), (SPOT, "500ms"), (FUTURES, "250ms"),
                                               (FUTURES, "1000ms"), (COINM, "250ms")])
def test_undocumented_stream_speed_is_a_config_error(market: Market, speed: str) -> None:
    """Only the documented names: spot <sym>@depth[@100ms], futures <sym>@depth[@500ms|@100ms]."""
    with pytest.raises(ValueError, match="stream_speed"):
        market.feed_cls(VenueConfig(name="b", kind=market.kind, symbols={SYM: "BTCUSDT"},
                                    options={"stream_speed": speed}))


@pytest.mark.parametrize("market", MARKETS)
@pytest.mark.parametrize("reply", [
    {"error": {"code": 2, "msg": "Invalid request: too many parameters"}, "id": 5},
    {"code": 2, "msg": "Invalid request: too many parameters", "id": 5},  # the docs' error table
], ids=["nested", "flat"])
async def test_error_reply_to_subscribe_is_seen_in_either_shape(market: Market, reply: dict) -> None:
    """Both shapes of an error reply to our SUBSCRIBE fail the connection; result null does not."""
    feed = market.feed_cls(VenueConfig(name=market.kind, kind=market.kind, symbols={SYM: "BTCUSDT"}))
    assert isinstance(feed, (BinanceSpotFeed, BinanceFuturesFeed, BinanceCoinMFeed))
    conn = Connection(symbols=[SYM], syncs={}, venue_state=feed.new_connection_state())
    conn.venue_state.pending = {5: ["btcusdt@depth@100ms"], 6: ["ethusdt@depth@100ms"]}
    ok = aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, '{"result":null,"id":6}', None)
    await feed.handle(conn, ok)
    assert conn.venue_state.pending == {5: ["btcusdt@depth@100ms"]} and feed.control_errors == 0
    bad = aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, orjson.dumps(reply).decode(), None)
    with pytest.raises(FeedError, match="too many parameters"):
        await feed.handle(conn, bad)
    assert conn.venue_state.pending == {} and feed.control_errors == 1


@pytest.mark.parametrize("market", MARKETS)
async def test_depth_frames_outside_the_schema_are_frame_errors(market: Market) -> None:
    """A depth event that breaks its schema (or is not JSON) is a FrameError; a valid one is buffered,
    a raw event on the combined socket too, and a well-formed shutdown notice asks for a rollover."""
    feed = market.feed_cls(VenueConfig(name=market.kind, kind=market.kind, symbols={SYM: "BTCUSDT"}))
    conn = feed.new_connection([SYM], publish_when_live=False)
    sync = conn.syncs[SYM]
    good = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 10, "u": 11, "pu": 9,
            "b": [["100.0", "1"]], "a": [["101.0", "2"]]}

    def text(obj: object) -> aiohttp.WSMessage:
        data = obj if isinstance(obj, str) else orjson.dumps(obj).decode()
        return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, data, None)

    await feed.handle(conn, text({"stream": "btcusdt@depth@100ms", "data": good}))
    await feed.handle(conn, text({**good, "U": 12, "u": 13, "pu": 11}))  # unwrapped
    assert sync.buffered == 2
    broken = [{**good, "U": "12"}, {**good, "b": [["100.0"]]}, {**good, "a": None},
              {k: v for k, v in good.items() if k != "u"}]
    for event in broken:
        with pytest.raises(FrameError, match="bad depthUpdate"):
            await feed.handle(conn, text({"stream": "btcusdt@depth@100ms", "data": event}))
    with pytest.raises(FrameError, match="invalid JSON"):
        await feed.handle(conn, text('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUp'))
    assert sync.buffered == 2
    await feed.handle(conn, text({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": 1}}))
    assert conn.rollover.is_set()


# ---------------------------------------------------------------------------- RPI book (USD-M)
def rpi_matches(h: Harness) -> bool:
    syncs = h.feed.current_syncs()
    venue = h.venue
    assert isinstance(venue, BinanceFuturesVenue)
    return all(c in syncs and book_matches(syncs[c], venue.rpi_truth(c)) for c in h.expected())


def rpi_differs(venue: BinanceFuturesVenue) -> bool:
    """RPI orders are in the RPI book: it is not the ordinary book (so matching it proves something)."""
    rpi, plain = venue.rpi_truth(SYM), venue.truth(SYM)
    return (rpi.bids, rpi.asks) != (plain.bids, plain.asks)


async def test_rpi_option_keeps_the_book_with_rpi_orders() -> None:
    async with running(FUTURES, options={"rpi": True}) as h:
        venue = h.venue
        assert isinstance(venue, BinanceFuturesVenue)
        await h.wait_all_live()
        await wait_for(lambda: all(h.sync(c).counters.applied >= 20 for c in h.expected()), 10,
                       "20 RPI deltas applied per book")
        await wait_for(lambda: rpi_differs(venue), 10, "RPI orders resting in the book")
        venue.pause()
        await wait_for(lambda: rpi_matches(h), 10, "books equal to the RPI truth")
        (conn,) = venue.connections.values()
        # no bookTicker: it leaves RPI orders out
        assert set(conn.subscriptions) == {"btcusdt@rpiDepth@500ms", "ethusdt@rpiDepth@500ms"}
        assert rpi_differs(venue) and not book_matches(h.sync(SYM), venue.truth(SYM))
        assert h.feed.depth == 1000 and not h.feed.bbo_check
        assert all(not h.recorder.resyncs(c) for c in h.expected())


async def test_rpi_gap_resyncs_from_the_rpi_snapshot() -> None:
    async with running(FUTURES, options={"rpi": True}) as h:
        venue = h.venue
        assert isinstance(venue, BinanceFuturesVenue)
        await h.wait_all_live()
        await wait_for(lambda: h.sync(SYM).counters.applied >= 3, 5, "a few RPI deltas")
        fetches = h.fetch_count(SYM)
        venue.inject(Fault.GAP, SYM)
        await wait_for(lambda: h.recorder.resyncs(SYM)[Reason.GAP] >= 1, 5, "gap resync counted")
        await wait_for(h.all_live, 10, "live again")
        venue.pause()
        await wait_for(lambda: rpi_matches(h), 10, "books equal to the RPI truth")
        assert h.fetch_count(SYM) - fetches == 1


@pytest.mark.parametrize(("market", "depth", "options", "error"), [
    (SPOT, None, {"rpi": True}, "publishes no RPI book"),
    (COINM, None, {"rpi": True}, "publishes no RPI book"),
    (FUTURES, 500, {"rpi": True}, "only 1000"),
    (FUTURES, None, {"rpi": True, "bbo_check": True}, "bbo_check"),
])
def test_rpi_config_errors(market: Market, depth: int | None, options: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        market.feed_cls(VenueConfig(name="b", kind=market.kind, symbols={SYM: "BTCUSDT"}, depth=depth,
                                    options=options))
