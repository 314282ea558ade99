"""The MEXC feed against the simulated MEXC venue, over real sockets on 127.0.0.1.

Each test starts ``simulator.mexc.MexcVenue`` directly with shortened timers and
points ``feeds.mexc.MexcFeed`` at its URLs.  The market is paused and stepped by the
test (``venue.step_all``) so every fault lands on a known diff; a book counts as
recovered only when it is live at the venue's current version and equal to the
venue's truth.  Reasons are read from recorded transitions and metrics, since a
reconnect replaces the BookSync objects.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from decimal import Decimal

import aiohttp
import pytest

from aggbook.book.sync import BookSync, Reason, SyncState, Transition
from aggbook.feeds.base import Connection, FrameError
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.mexc import MexcFeed
from aggbook.feeds.registry import feed_class
from aggbook.proto import mexc_push_pb2 as pb
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS, SymbolSpec, extra_symbol
from aggbook.simulator.mexc import UNKNOWN_FIELD_99, MexcVenue, truncate_frame
from aggbook.simulator.mexc_wire import length_delimited
from tests.conftest import book_matches, describe_mismatch, wait_for
from tests.feeds.recording import RecordingMetrics

SYMBOLS = DEFAULT_SYMBOLS[:3]  # BTC-USDT, ETH-USDT, SOL-USDT
TARGET = "BTC-USDT"
OTHERS = [s.canonical for s in SYMBOLS if s.canonical != TARGET]

# Production timers are minutes; these keep every test a second or two.
FAST = {
    "backoff_base": 0.05,
    "backoff_cap": 0.5,
    "snapshot_rate": 200.0,
    "snapshot_burst": 200.0,
    "ping_interval": 0.3,
    # generous: the venue shares the process, which a loaded machine can leave unscheduled for more
    # than a second; the SILENT case sets the short deadline that finds its silent socket
    "pong_timeout": 5.0,
    "ack_timeout": 2.0,
    "silence_timeout": 10.0,  # silence is caught by the PONG deadline, not this
    "control_rate": 100.0,
    # the depth channel's subscription bookkeeping is what these tests count; the book-ticker
    # cross-check has its own tests (tests/feeds/test_crosscheck.py)
    "bbo_check": False,
}


class Recorder(RecordingMetrics):
    """Feed metrics plus every transition of every BookSync the feed publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.transitions: list[tuple[str, Transition]] = []

    def attach(self, feed: MexcFeed) -> None:
        current: dict[str, BookSync] = {}

        def on_sync(canonical: str, sync: BookSync) -> None:
            old = current.get(canonical)
            if old is not None:
                old.detach()  # retired, as the service's aggregator does: its later transitions are not ours
            current[canonical] = sync
            sync.attach(_TransitionLog(self, canonical), None)

        feed.on_sync(on_sync)

    def reasons(self, canonical: str, new: SyncState | None = None) -> Counter:
        return Counter(t.reason for c, t in self.transitions
                       if c == canonical and (new is None or t.new is new))


class _TransitionLog:
    def __init__(self, recorder: Recorder, canonical: str) -> None:
        self.recorder = recorder
        self.canonical = canonical

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        self.recorder.transitions.append((self.canonical, transition))

    def on_update(self, sync: BookSync, changed: int) -> None:
        pass


def venue_symbol(spec: SymbolSpec) -> str:
    return f"{spec.base}{spec.quote}"


@asynccontextmanager
async def running(
    symbols: Iterable[SymbolSpec] = SYMBOLS,
    *,
    extra: dict[str, str] | None = None,
    venue_kwargs: dict | None = None,
    options: dict | None = None,
    faults: list[tuple[Fault, dict]] = (),
    paused: bool = True,
    delisted: Iterable[str] = (),
) -> AsyncIterator[tuple[MexcVenue, MexcFeed, Recorder]]:
    """A venue and a started feed; ``faults`` are armed on TARGET and ``delisted`` symbols taken off
    the venue's list before the feed starts."""
    symbols = list(symbols)
    venue = MexcVenue(symbols, seed=7, rate=50.0, **(venue_kwargs or {}))
    await venue.start()
    if paused:
        venue.pause()
    for fault, params in faults:
        venue.inject(fault, TARGET, **params)
    for symbol in delisted:
        venue.delist(symbol)
    mapping = {s.canonical: venue_symbol(s) for s in symbols} | (extra or {})
    config = VenueConfig("mexc", "mexc", mapping, **venue.urls(), options={**FAST, **(options or {})})
    feed = feed_class("mexc")(config, metrics=(recorder := Recorder()))
    assert isinstance(feed, MexcFeed)
    recorder.attach(feed)
    try:
        await feed.start()
        yield venue, feed, recorder
    finally:
        await feed.stop()
        await venue.stop()


async def converge(
    venue: MexcVenue, feed: MexcFeed, canonicals: Iterable[str], timeout: float = 10.0
) -> float:
    """Step the paused market while a book is not live, until every book equals the truth.

    Returns the seconds it took.  Books that wait for a snapshot need a buffered diff
    before they ask for one, hence the stepping.
    """
    canonicals = list(canonicals)
    start = time.monotonic()
    deadline = start + timeout
    while True:
        syncs = feed.current_syncs()
        if all(c in syncs and book_matches(syncs[c], venue.truth(c)) for c in canonicals):
            return time.monotonic() - start
        if time.monotonic() > deadline:
            detail = "\n".join(f"{c}: {describe_mismatch(syncs[c], venue.truth(c))}"
                               for c in canonicals if c in syncs)
            pytest.fail(f"books did not converge in {timeout}s:\n{detail}")
        if not all(c in syncs and syncs[c].live for c in canonicals):
            await venue.step_all(1)
        await asyncio.sleep(0.01)


def feed_alive(feed: MexcFeed) -> bool:
    return feed.running


def sim_channels(venue: MexcVenue) -> list[set[str]]:
    """The depth channels each venue-side connection serves."""
    return [set(conn.state.get("channels", {})) for conn in venue.connections.values()]


# ---------------------------------------------------------------------- happy path
@pytest.mark.parametrize("drift", [False, True], ids=["plain", "schema-drift"])
async def test_happy_path_equals_truth(drift: bool) -> None:
    """Snapshot + diffs reproduce the truth; 2026 fields, field #99 and string ids tolerated."""
    venue_kwargs = {}
    if drift:
        venue_kwargs = {"fields_2026": True, "unknown_fields": True, "snapshot_id_as_string": True,
                        "empty_push_probability": 0.5, "max_versions_per_push": 50}
    names = [s.canonical for s in SYMBOLS]
    async with running(venue_kwargs=venue_kwargs) as (venue, feed, rec):
        started = time.monotonic()
        await converge(venue, feed, names)
        print(f"\nmexc {len(names)} symbols: start to all live {time.monotonic() - started:.3f}s")
        for _ in range(3):  # a stretch of live diffs, compared after each burst
            await venue.step_all(20)
            await converge(venue, feed, names)
        syncs = feed.current_syncs()
        assert all(syncs[c].counters.applied >= 60 for c in names)
        assert not any(rec.reasons(c) - Counter({Reason.SNAPSHOT: 1}) for c in names)  # no resync
        assert rec.decode_errors == 0 and feed.reconnects == 0
        assert feed.tick_sizes["BTC-USDT"] == Decimal("0.01")
        assert feed.lot_sizes["BTC-USDT"] == Decimal("0.000001") == venue.specs["BTCUSDT"].lot  # MEXC's lot
        assert sim_channels(venue) == [{f"spot@public.aggre.depth.v3.api.pb@100ms@{venue_symbol(s)}"
                                        for s in SYMBOLS}]


# ---------------------------------------------------------------------- stream and connection faults
STREAM_FAULTS = [
    # (fault, params, reason of TARGET's resync or None, whole connection affected)
    (Fault.GAP, {}, Reason.GAP, False),
    (Fault.DUPLICATE, {}, None, False),
    (Fault.REORDER, {}, Reason.GAP, False),
    (Fault.MALFORMED, {}, Reason.DECODE_ERROR, True),
    (Fault.CROSSED, {}, Reason.CROSSED_BOOK, False),
    (Fault.DISCONNECT, {}, Reason.DISCONNECT, True),
    (Fault.SILENT, {}, Reason.DISCONNECT, True),
    (Fault.SERVER_CLOSE, {}, Reason.DISCONNECT, True),
]


@pytest.mark.parametrize(("fault", "params", "reason", "whole"), STREAM_FAULTS,
                         ids=[f[0].value for f in STREAM_FAULTS])
async def test_stream_fault_recovers(fault: Fault, params: dict, reason: Reason | None, whole: bool) -> None:
    names = [s.canonical for s in SYMBOLS]
    # only the PONG deadline finds a silent socket; every fault there resyncs the whole connection
    options = {"pong_timeout": 0.4} if fault is Fault.SILENT else None
    async with running(options=options) as (venue, feed, rec):
        await converge(venue, feed, names)
        await venue.step_all(2)  # past the first-diff-after-snapshot rule: a gap now is a gap
        await converge(venue, feed, names)
        before = feed.current_syncs()[TARGET]
        dropped = before.counters.dropped
        venue.inject(fault, TARGET, **params)
        injected = time.monotonic()
        await venue.step_all(3)  # the faulty diff and two after it (a gap shows on the next one)
        took = await converge(venue, feed, names)
        ttl = [f"{secs:.3f}s" for c, secs, after in rec.ttl if c == TARGET and after == "resync"]
        print(f"\nmexc {fault.value}: back to live and equal {time.monotonic() - injected:.3f}s "
              f"(converge {took:.3f}s); time_to_live(resync) metric {ttl}")
        assert venue.faults.pending(fault) == 0, "the fault never fired"
        resyncs = rec.reasons(TARGET, SyncState.RESYNCING)
        if reason is None:  # a repeated diff is dropped, not a resync
            assert not resyncs
            assert feed.current_syncs()[TARGET] is before and before.counters.dropped > dropped
        else:
            assert resyncs[reason] >= 1, resyncs
        for other in OTHERS:  # only a connection-wide fault touches the other books
            assert bool(rec.reasons(other, SyncState.RESYNCING)) == whole
        if fault is Fault.MALFORMED:
            assert rec.decode_errors >= 1
        if fault in (Fault.DISCONNECT, Fault.SILENT, Fault.SERVER_CLOSE):
            assert feed.reconnects >= 1 and rec.reconnects >= 1
        if fault is Fault.SILENT:
            assert feed.pong_timeouts >= 1
        assert feed_alive(feed)
        # the stream keeps flowing correctly afterwards
        await venue.step_all(10)
        await converge(venue, feed, names)


# ---------------------------------------------------------------------- snapshot faults
SNAPSHOT_FAULTS = [
    (Fault.STALE_SNAPSHOT, {}),
    (Fault.SNAPSHOT_429, {"retry_after": 0.2}),
    (Fault.SNAPSHOT_418, {"retry_after": 0.3}),
    (Fault.SLOW_SNAPSHOT, {"delay": 0.5}),
]


@pytest.mark.parametrize(("fault", "params"), SNAPSHOT_FAULTS, ids=[f[0].value for f in SNAPSHOT_FAULTS])
async def test_snapshot_fault_recovers(fault: Fault, params: dict) -> None:
    """Armed before start: TARGET's first snapshot hits the fault, then the book still syncs."""
    names = [s.canonical for s in SYMBOLS]
    async with running(faults=[(fault, params)]) as (venue, feed, rec):
        started = time.monotonic()
        await converge(venue, feed, names)
        print(f"\nmexc {fault.value}: start to all live {time.monotonic() - started:.3f}s")
        assert venue.faults.pending(fault) == 0, "the fault never fired"
        sync = feed.current_syncs()[TARGET]
        if fault is Fault.STALE_SNAPSHOT:
            assert sync.counters.resyncs[Reason.STALE_SNAPSHOT] >= 1
            assert sync.counters.stale_snapshots >= 1 and sync.counters.snapshots >= 2
        elif fault in (Fault.SNAPSHOT_429, Fault.SNAPSHOT_418):
            assert rec.failures(TARGET) >= 1 and feed.pacer.penalties >= 1
        else:  # slow: the diffs stepped meanwhile were buffered, then dropped as covered
            assert sync.counters.dropped >= 2
        assert all(rec.failures(c) == 0 for c in OTHERS)
        assert feed_alive(feed)


async def test_snapshots_are_asked_at_the_acknowledgement_and_a_stale_one_is_never_served_live() -> None:
    """The cold start asks for snapshots as soon as the venue acknowledges the depth channels (the
    pacer's budget is not left waiting for first diffs), and a snapshot that comes before any diff
    waits for one: a stale REST answer is found out then, never served live meanwhile."""
    async with running(faults=[(Fault.STALE_SNAPSHOT, {})]) as (venue, feed, rec):
        # the market is paused: no diff has been sent, yet every book's snapshot is fetched
        def parked() -> set[str]:
            return {c for conn in feed.connections.values() for c in conn.parked}

        await wait_for(lambda: parked() == {s.canonical for s in SYMBOLS}, 5, "every snapshot parked")
        assert venue.faults.pending(Fault.STALE_SNAPSHOT) == 0  # TARGET's snapshot was the stale one
        await asyncio.sleep(0.2)
        syncs = feed.current_syncs()
        assert not any(sync.live for sync in syncs.values())  # none without a diff to continue it
        await venue.step_all(1)  # the first diffs: the fresh snapshots fit, the stale one does not
        await wait_for(lambda: all(feed.current_syncs()[c].live for c in OTHERS), 5, "OTHERS live")
        assert syncs[TARGET].counters.resyncs[Reason.STALE_SNAPSHOT] == 1
        assert all(syncs[c].counters.snapshots == 1 for c in OTHERS)  # asked once, at the acknowledgement
        stale = [t for c, t in rec.transitions if c == TARGET and t.reason is Reason.STALE_SNAPSHOT]
        assert [t.old for t in stale] == [SyncState.WAITING]  # found out before it was ever live
        await converge(venue, feed, [s.canonical for s in SYMBOLS])


async def test_unknown_symbol_waits_for_its_listing_recheck() -> None:
    """-1121 from the depth endpoint stops that book until its re-check; others are unaffected.

    While the re-check is pending, more diffs and a reconnect do not re-request or resubscribe it.
    """
    options = {"listing_check_base": 60.0}  # the re-check stays pending for the whole test
    async with running(faults=[(Fault.UNKNOWN_SYMBOL, {})], options=options) as (venue, feed, rec):
        await converge(venue, feed, OTHERS)
        await wait_for(lambda: feed.current_syncs()[TARGET].state is SyncState.INVALID, 5, "TARGET invalid")
        assert rec.reasons(TARGET, SyncState.INVALID)[Reason.INVALID_SYMBOL] == 1
        assert TARGET in feed.invalid and rec.failures(TARGET) == 1
        assert feed.status()["listing_checks"][TARGET]["reason"] == "invalid_symbol"
        venue.inject(Fault.SERVER_CLOSE, OTHERS[0])
        await venue.step_all(3)
        await wait_for(lambda: feed.reconnects >= 1, 5, "reconnect")
        await converge(venue, feed, OTHERS)
        assert rec.failures(TARGET) == 1 and rec.snapshot_count(True, TARGET) == 0
        assert feed.current_syncs()[TARGET].state is SyncState.INVALID
        assert all(f"spot@public.aggre.depth.v3.api.pb@100ms@{venue_symbol(SYMBOLS[0])}" not in chans
                   for chans in sim_channels(venue))
        assert feed.listing.counts == Counter() and feed_alive(feed)


async def test_unknown_symbol_comes_back_after_its_recheck() -> None:
    """-1121 once: exchangeInfo still lists the symbol, so the book asks again and goes live."""
    async with running(faults=[(Fault.UNKNOWN_SYMBOL, {})], options={"listing_check_base": 0.05}) as (
            venue, feed, rec):
        await converge(venue, feed, [s.canonical for s in SYMBOLS])  # steps the paused market
        assert venue.faults.fired[Fault.UNKNOWN_SYMBOL.value] == 1
        assert rec.reasons(TARGET, SyncState.INVALID)[Reason.INVALID_SYMBOL] == 1
        assert rec.reasons(TARGET, SyncState.WAITING)[Reason.REVIVED] == 1
        assert rec.failures(TARGET) == 1 and feed.listing.counts == Counter(listed=1)
        assert TARGET not in feed.invalid and feed.reconnects == 0 and feed_alive(feed)


async def test_parked_connection_resumes_when_its_symbol_is_relisted() -> None:
    """The only symbol's channel rejected (delisted): the connection parks; once the venue lists the
    symbol again, the re-check ends the park and the new connection subscribes it."""
    options = {"validate_at_start": False, "listing_check_base": 0.05, "listing_check_cap": 0.2}
    async with running(SYMBOLS[:1], options=options, delisted=[TARGET]) as (venue, feed, rec):
        await wait_for(lambda: any(c.state == "idle" for c in feed.connections.values()), 5, "parked")
        await wait_for(lambda: feed.current_syncs()[TARGET].reason is Reason.DELISTED, 5, "delisted")
        reconnects = feed.reconnects
        venue.relist(TARGET)
        await converge(venue, feed, [TARGET])
        assert feed.reconnects == reconnects + 1  # the parked connection was replaced once
        assert feed.listing.counts["listed"] == 1 and TARGET not in feed.invalid and feed_alive(feed)


# ---------------------------------------------------------------------- decoding (no sockets)
async def test_decoding_routes_by_oneof_member_and_tolerates_drift() -> None:
    """Only member 313 reaches the book; unknown members and fields are skipped; truncation is an error."""
    feed = MexcFeed(VenueConfig("mexc", "mexc", {TARGET: "BTCUSDT"}))
    conn = Connection([TARGET], {TARGET: feed.new_sync(TARGET)}, feed.new_connection_state())
    conn.venue_state.by_venue["BTCUSDT"] = TARGET
    sync = conn.syncs[TARGET]

    def binary(data: bytes) -> aiohttp.WSMessage:
        return aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, data, None)

    wrapper = pb.PushDataV3ApiWrapper(channel="spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT",
                                      symbol="BTCUSDT", sendTime=1736411507002)
    body = wrapper.publicAggreDepths
    body.fromVersion, body.toVersion = "10589632359", "10589632361"
    body.bids.add(price="92877.58", quantity="0.00000000")
    diff = wrapper.SerializeToString() + UNKNOWN_FIELD_99 + length_delimited(308, b"\x0a\x04Min1")
    await feed.handle(conn, binary(diff))
    assert sync.buffered == 1

    kline = pb.PushDataV3ApiWrapper(channel="spot@public.kline.v3.api.pb@BTCUSDT@Min1", symbol="BTCUSDT")
    limit = pb.PushDataV3ApiWrapper(channel="spot@public.limit.depth.v3.api.pb@BTCUSDT@5", symbol="BTCUSDT")
    limit.publicLimitDepths.version = "10589632362"
    other = pb.PushDataV3ApiWrapper(channel="x", symbol="ETHUSDT")
    other.publicAggreDepths.fromVersion = other.publicAggreDepths.toVersion = "1"
    for data in (kline.SerializeToString() + length_delimited(308, b"\x0a\x04Min1"),
                 limit.SerializeToString(), other.SerializeToString()):
        await feed.handle(conn, binary(data))
    assert sync.buffered == 1

    with pytest.raises(FrameError):
        await feed.handle(conn, binary(truncate_frame(diff)))
    await feed.handle(conn, aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, "not json", None))
    await feed.handle(conn, aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, '{"id":0,"code":0,"msg":"PONG"}', None))
    assert conn.venue_state.pongs == 1


# ---------------------------------------------------------------------- control protocol
async def test_rejected_subscription_marks_symbol_invalid() -> None:
    """A channel the venue blocks (code 0, different msg) invalidates only that symbol; exchangeInfo
    does not list either spelling, so the re-check reports them delisted, without resubscribing."""
    extra = {"FOO-USDT": "FOOUSDT", "BTC-LOWER": "btcusdt"}
    options = {"validate_at_start": False, "listing_check_base": 0.05, "listing_check_cap": 0.1}
    async with running(extra=extra, options=options) as (venue, feed, rec):
        await converge(venue, feed, [s.canonical for s in SYMBOLS])
        await wait_for(lambda: all(feed.current_syncs()[c].state is SyncState.INVALID for c in extra),
                       5, "rejected symbols invalid")
        for canonical in extra:
            assert rec.reasons(canonical, SyncState.INVALID)[Reason.INVALID_SYMBOL] == 1
        await wait_for(lambda: feed.listing.counts["delisted"] >= 4, 5, "two re-checks each")
        for canonical in extra:
            assert feed.current_syncs()[canonical].reason is Reason.DELISTED
            assert rec.reasons(canonical, SyncState.INVALID)[Reason.INVALID_SYMBOL] == 1  # not asked again
        assert feed.listing.counts["listed"] == 0
        assert feed.reconnects == 0 and feed_alive(feed)


async def test_connection_without_valid_symbols_parks() -> None:
    """All symbols of a connection rejected: it closes and stays idle instead of reconnecting in a loop."""
    symbols: list[SymbolSpec] = []
    extra = {"FOO-USDT": "FOOUSDT"}
    async with running(symbols, extra=extra, options={"validate_at_start": False}) as (venue, feed, rec):
        await wait_for(lambda: any(c.state == "idle" for c in feed.connections.values()), 5, "parked")
        assert feed.reconnects == 1  # the rejecting connection closed; its replacement parked
        assert feed.current_syncs()["FOO-USDT"].state is SyncState.INVALID
        await wait_for(lambda: not venue.connections, 5, "no socket held at the venue")
        assert feed.reconnects == 1 and feed_alive(feed)


async def test_exchange_info_validation_at_start() -> None:
    """Symbols exchangeInfo does not list are rejected before any subscription is sent."""
    async with running(extra={"FOO-USDT": "FOOUSDT"}) as (venue, feed, rec):
        await converge(venue, feed, [s.canonical for s in SYMBOLS])
        assert feed.current_syncs()["FOO-USDT"].state is SyncState.INVALID
        assert "not listed" in feed.invalid["FOO-USDT"]
        assert not any("FOOUSDT" in ch for chans in sim_channels(venue) for ch in chans)


async def test_subscriptions_beyond_venue_limit_are_detected() -> None:
    """Channels the venue silently leaves out of its ack (over its limit) are marked invalid."""
    symbols = DEFAULT_SYMBOLS  # 5 symbols on one connection; the venue serves 3
    options = {"max_symbols_per_connection": 5, "channels_per_subscribe": 2}
    async with running(symbols, venue_kwargs={"max_subscriptions": 3}, options=options) as (venue, feed, rec):
        served = [s.canonical for s in symbols[:3]]
        dropped = [s.canonical for s in symbols[3:]]
        await converge(venue, feed, served)
        await wait_for(lambda: all(feed.current_syncs()[c].state is SyncState.INVALID for c in dropped),
                       5, "unacknowledged symbols invalid")
        assert all("not acknowledged" in feed.invalid[c] for c in dropped)
        assert feed.reconnects == 0


async def test_pings_keep_a_quiet_connection_open() -> None:
    """No market data for several idle timeouts: the PINGs (answered by PONGs) keep the socket."""
    venue_kwargs = {"idle_timeout": 0.5}
    async with running(venue_kwargs=venue_kwargs, options={"ping_interval": 0.1}) as (venue, feed, rec):
        await converge(venue, feed, [s.canonical for s in SYMBOLS])
        conn = next(iter(feed.connections.values()))
        (sim_conn,) = venue.connections.values()
        await wait_for(lambda: conn.venue_state.pongs >= 15, 5, "15 PONGs (3 idle timeouts)")
        assert feed.reconnects == 0 and not sim_conn.closed and feed.pong_timeouts == 0


async def test_rollover_before_venue_lifetime() -> None:
    """At max_connection_age a replacement connection goes live before the old one is closed."""
    names = [s.canonical for s in SYMBOLS]
    async with running(options={"max_connection_age": 0.8}, paused=False) as (venue, feed, rec):
        await wait_for(lambda: len(feed.current_syncs()) == 3
                       and all(s.live for s in feed.current_syncs().values()), 5, "live")
        first = set(feed.current_syncs().values())
        await wait_for(lambda: feed.reconnects >= 1 and not (set(feed.current_syncs().values()) & first)
                       and all(s.live for s in feed.current_syncs().values()), 5, "rolled over")
        venue.pause()
        await converge(venue, feed, names)
        # the published books never left LIVE: the old ones were retired while still live
        assert not any(t.new is not SyncState.LIVE and t.old is SyncState.LIVE for _, t in rec.transitions)


# ---------------------------------------------------------------------- many symbols
async def test_fifty_symbols_sharded_over_connections() -> None:
    """50 symbols exceed MEXC's 30 subscriptions per connection: two connections of 25, all equal."""
    symbols = [extra_symbol(i) for i in range(50)]
    names = [s.canonical for s in symbols]
    options = {"snapshot_rate": 50.0, "snapshot_burst": 10.0, "control_rate": 10.0}
    async with running(symbols, options=options) as (venue, feed, rec):
        started = time.monotonic()
        await converge(venue, feed, names, timeout=20)
        print(f"\nmexc 50 symbols: start to all live {time.monotonic() - started:.3f}s, "
              f"snapshot queue wait {feed.pacer.waited:.3f}s")
        channels = sim_channels(venue)
        assert sorted(len(c) for c in channels) == [25, 25]
        assert set().union(*channels) == {f"spot@public.aggre.depth.v3.api.pb@100ms@{venue_symbol(s)}"
                                          for s in symbols}
        assert len(feed.connections) == 2 and not feed.invalid
        assert feed.pacer.waited > 0  # 50 snapshots through a burst of 10: queued, not stampeded
        await venue.step_all(5)
        await converge(venue, feed, names)


# ---------------------------------------------------------------------- acknowledgements
async def test_an_ack_of_unknown_shape_is_counted_and_data_acknowledges() -> None:
    """The documents never state the ack's shape: an unrecognised one is counted, data acknowledges the
    channel, and the connection is never dropped for it."""
    names = [s.canonical for s in SYMBOLS]
    odd_ack = {"ack_msg": "success"}
    async with running(venue_kwargs=odd_ack, options={"ack_timeout": 0.3}) as (venue, feed, rec):
        await wait_for(lambda: feed.unrecognised_replies >= 1, 5, "the odd ack counted")
        venue.resume()
        await wait_for(lambda: all(s.live for s in feed.current_syncs().values()), 10, "books live")
        venue.pause()
        await converge(venue, feed, names)
        assert feed.reconnects == 0 and rec.reconnects == 0
        assert feed.status()["unrecognised_replies"] >= 1
        conn = next(iter(feed.connections.values()))
        assert conn.venue_state.batches == []  # every channel acknowledged by its data
        assert not feed.invalid


async def test_a_channel_neither_acknowledged_nor_served_is_subscribed_again() -> None:
    """No ack we recognise and no data (a paused market): the SUBSCRIPTION is sent again on the same
    socket with a growing wait, never a reconnect."""
    async with running(venue_kwargs={"ack_msg": "success"}, options={"ack_timeout": 0.1}) as (venue, feed, _):
        await wait_for(lambda: feed.resubscribes >= 3, 10, "subscriptions sent again")
        assert feed.reconnects == 0
        venue.resume()
        await wait_for(lambda: all(s.live for s in feed.current_syncs().values()), 10, "books live")
