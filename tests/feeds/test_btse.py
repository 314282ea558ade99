"""BtseFeed against the simulated BTSE venue over real sockets on 127.0.0.1.

Every fault the simulated venue implements is injected while the market is paused and stepped by
hand, then the feed must come back to a book equal to the truth, with the resync counted under the
right reason.  BTSE gives every subscription its own seq base, so truth is compared in the numbering
of the venue-side connection that carries the topic (``venue.truth_for``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from aggbook.book.sync import Reason, SyncState
from aggbook.feeds.base import FrameError
from aggbook.feeds.btse import BtseFeed, symbol_of_topic, topic_for
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import feed_class
from aggbook.simulator.btse import BtseVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import book_matches, describe_mismatch, wait_for
from tests.feeds.recording import RecordingMetrics

BTC, ETH, SOL = "BTC-USDT", "ETH-USDT", "SOL-USDT"
SPECS = {spec.canonical: spec for spec in DEFAULT_SYMBOLS}

# Timers shortened so a stale socket or a missing snapshot is noticed within a second.
FAST = {
    "ping_interval": 0.1,
    "pong_timeout": 0.4,
    "silence_timeout": 3.0,
    "snapshot_wait": 1.0,
    "backoff_base": 0.02,
    "backoff_cap": 0.5,
}


@dataclass
class Harness:
    venue: BtseVenue
    feed: BtseFeed
    metrics: RecordingMetrics
    requests: list[tuple[float, int, dict]] = field(default_factory=list)  # (when, venue conn id, request)

    def sync(self, canonical: str):
        return self.feed.current_syncs()[canonical]

    def live(self, *symbols: str) -> bool:
        syncs = self.feed.current_syncs()
        return all(s in syncs and syncs[s].live for s in symbols)

    def state(self, canonical: str) -> SyncState | None:
        sync = self.feed.current_syncs().get(canonical)
        return sync.state if sync is not None else None

    def subscribes(self, canonical: str) -> int:
        """Subscribe requests the venue received that named ``canonical``'s topic."""
        topic = topic_for(canonical)
        return sum(1 for _, _, req in self.requests if req.get("op") == "subscribe" and topic in req["args"])

    def matches(self, canonical: str) -> bool:
        """Live and equal to the truth in the seq numbering of the venue connection carrying the topic."""
        sync = self.feed.current_syncs().get(canonical)
        if sync is None:
            return False
        topic = topic_for(canonical)
        for cid, conn in list(self.venue.connections.items()):
            if conn.closed or topic not in conn.subscriptions:
                continue
            try:
                truth = self.venue.truth_for(cid, canonical)
            except KeyError:
                continue
            if book_matches(sync, truth):
                return True
        return False

    def mismatch(self, canonical: str) -> str:
        cids = [c for c, conn in self.venue.connections.items() if topic_for(canonical) in conn.subscriptions]
        if not cids:
            return f"{canonical}: no venue connection subscribed; state={self.sync(canonical).state}"
        return describe_mismatch(self.sync(canonical), self.venue.truth_for(cids[-1], canonical))

    async def converge(self, *symbols: str, timeout: float = 8.0) -> None:
        """Pause the market and wait until every book equals the truth."""
        self.venue.pause()
        symbols = symbols or tuple(self.feed.config.symbols)
        try:
            await wait_for(lambda: all(self.matches(s) for s in symbols), timeout, f"{symbols} = truth")
        except BaseException:
            for s in symbols:
                print(self.mismatch(s))
            raise


@contextlib.asynccontextmanager
async def running(symbols: tuple[str, ...] = (BTC, ETH), *, extra: dict[str, str] | None = None,
                  options: dict | None = None, before_start=None, **venue_kwargs) -> AsyncIterator[Harness]:
    """A BTSE venue and a BtseFeed connected to it; every request the venue receives is recorded."""
    venue_kwargs.setdefault("rate", 50.0)
    venue_kwargs.setdefault("idle_timeout", 1.0)
    venue = BtseVenue([SPECS[s] for s in symbols], seed=11, **venue_kwargs)
    requests: list[tuple[float, int, dict]] = []
    original = venue._on_request

    async def recording(conn, text: str, oss: bool) -> None:
        with contextlib.suppress(orjson.JSONDecodeError):
            requests.append((time.monotonic(), conn.id, orjson.loads(text)))
        await original(conn, text, oss)

    venue._on_request = recording  # type: ignore[method-assign]
    await venue.start()
    mapping = {s: s for s in symbols} | (extra or {})
    config = VenueConfig("btse", "btse", mapping, options={**FAST, **(options or {})}, **venue.urls())
    metrics = RecordingMetrics()
    feed = BtseFeed(config, metrics=metrics)
    harness = Harness(venue, feed, metrics, requests)
    if before_start is not None:
        before_start(harness)
    try:
        await feed.start()
        yield harness
    finally:
        await feed.stop()
        await venue.stop()


def resyncs(sync) -> dict[str, int]:
    return {str(reason): n for reason, n in sync.counters.resyncs.items() if n}


# ---------------------------------------------------------------------- plain behaviour
def test_topics_route_with_or_without_grouping_suffix() -> None:
    assert topic_for("BTC-USD") == "update:BTC-USD_0"
    assert symbol_of_topic("update:BTC-USD_0") == "BTC-USD"
    assert symbol_of_topic("update:BTC-USD") == "BTC-USD"
    assert symbol_of_topic("snapshotL1:BTC-USD") is None
    assert feed_class("btse") is BtseFeed


async def test_happy_path_equals_truth_and_pings_keep_the_session() -> None:
    """Three symbols at 100 steps/s: live, no resync (a quarter of deltas carry the bare topic),
    the venue's 1 s idle timeout never fires, and the books equal the truth."""
    started = time.monotonic()
    async with running((BTC, ETH, SOL), rate=100.0) as h:
        await wait_for(lambda: h.live(BTC, ETH, SOL), 5.0, "all books live")
        to_live = time.monotonic() - started
        first_conns = set(h.venue.connections)
        await wait_for(lambda: all(h.sync(s).counters.applied >= 250 for s in (BTC, ETH, SOL)), 10.0,
                       "250 deltas applied per symbol")
        await h.converge()
        for s in (BTC, ETH, SOL):
            assert resyncs(h.sync(s)) == {}, (s, resyncs(h.sync(s)))
            assert h.sync(s).counters.dropped_before_snapshot == 0
        assert h.feed.reconnects == 0 and set(h.venue.connections) == first_conns
        assert all(h.subscribes(s) == 1 for s in (BTC, ETH, SOL))
        for s in (BTC, ETH, SOL):  # steps learned from market_summary at start-up
            rules = h.venue.specs[h.venue.resolve_symbol(s)]  # the venue's own grid, which its book is on
            assert (h.feed.tick_sizes[s], h.feed.lot_sizes[s]) == (rules.tick, rules.lot)
        # gap -> live again, measured on a running market
        h.venue.resume()
        gap_at = time.monotonic()
        h.venue.inject(Fault.GAP, BTC)
        await wait_for(lambda: h.sync(BTC).counters.resyncs[Reason.GAP] == 1, 5.0, "gap detected")
        await wait_for(lambda: h.sync(BTC).live, 5.0, "live after gap")
        gap_to_live = time.monotonic() - gap_at
        await h.converge()
        resync_ttl = [sec for sym, sec, after in h.metrics.ttl if sym == BTC and after == "resync"]
        print(f"\nBTSE time to live: start -> all 3 books live {to_live * 1000:.0f} ms; "
              f"gap injected -> live {gap_to_live * 1000:.0f} ms "
              f"(book down -> live {resync_ttl[-1] * 1000:.0f} ms)")
        assert resync_ttl and h.subscribes(BTC) == 2


# ---------------------------------------------------------------------- stream faults
STREAM_FAULTS = [
    pytest.param(Fault.GAP, {}, Reason.GAP, id="gap"),
    pytest.param(Fault.DUPLICATE, {}, Reason.GAP, id="duplicate"),
    pytest.param(Fault.REORDER, {}, Reason.GAP, id="reorder"),
    pytest.param(Fault.CROSSED, {}, Reason.CROSSED_BOOK, id="crossed"),
    pytest.param(Fault.CROSSED, {"lock": True, "side": "ask"}, Reason.CROSSED_BOOK, id="locked"),
    pytest.param(Fault.BUFFER_FULL, {"drop": 3}, Reason.VENUE_ERROR, id="buffer_full_1007"),
    pytest.param(Fault.MALFORMED, {}, Reason.DECODE_ERROR, id="malformed"),
]


@pytest.mark.parametrize(("fault", "params", "reason"), STREAM_FAULTS)
async def test_stream_fault_resubscribes_and_recovers(fault: Fault, params: dict, reason: Reason) -> None:
    async with running() as h:
        await h.converge()
        btc, eth = h.sync(BTC), h.sync(ETH)
        applied_before = btc.counters.applied
        h.venue.inject(fault, BTC, **params)
        await h.venue.step_all(4)
        await wait_for(lambda: btc.counters.resyncs[reason] == 1, 5.0, f"{reason} counted")
        await h.converge()
        assert h.sync(BTC) is btc, "a stream fault must be repaired on the same socket"
        assert h.feed.reconnects == 0
        assert resyncs(btc) == {str(reason): 1}
        assert h.subscribes(BTC) == 2  # initial subscribe + one resubscribe
        unsub = [req for _, _, req in h.requests if req.get("op") == "unsubscribe"]
        assert unsub and all(req["args"] == [topic_for(BTC)] for req in unsub[:1])
        if fault is Fault.MALFORMED:  # a frame nobody could read may have been anyone's
            assert h.metrics.decode_errors == 1
            assert resyncs(eth) == {str(Reason.DECODE_ERROR): 1}
        else:
            assert resyncs(eth) == {} and h.subscribes(ETH) == 1
        # the repaired stream keeps applying
        await h.venue.step_all(20)
        await h.converge()
        assert btc.counters.applied > applied_before


# ---------------------------------------------------------------------- connection faults
@pytest.mark.parametrize("fault", [Fault.DISCONNECT, Fault.SILENT, Fault.SERVER_CLOSE])
async def test_connection_fault_reconnects_and_recovers(fault: Fault) -> None:
    async with running() as h:
        await h.converge()
        old_btc, old_eth = h.sync(BTC), h.sync(ETH)
        h.venue.inject(fault, BTC)
        await h.venue.step_all(2)
        await wait_for(lambda: h.feed.reconnects == 1, 5.0, "reconnect")
        await h.converge()
        for old in (old_btc, old_eth):
            assert old.state is not SyncState.LIVE
            assert resyncs(old) == {str(Reason.DISCONNECT): 1}
        assert h.sync(BTC) is not old_btc and resyncs(h.sync(BTC)) == {}
        assert h.subscribes(BTC) == 2 and h.subscribes(ETH) == 2
        if fault is Fault.SILENT:
            assert h.feed.pong_timeouts == 1  # the pong deadline found the stale socket
        await h.venue.step_all(10)
        await h.converge()


# ---------------------------------------------------------------------- venue errors
async def test_unsupported_pair_is_invalid_without_a_retry_loop() -> None:
    """Error 1000 on subscribe marks the pair invalid; until its listing re-check, neither resyncs nor
    reconnects ask again.  A configured symbol absent from market_summary is delisted before any
    subscribe.  (The re-check bringing a pair back: tests/feeds/test_listing.py.)"""

    def arm(h: Harness) -> None:
        h.venue.inject(Fault.UNKNOWN_SYMBOL, ETH)

    async with running(extra={"FOO-USDT": "FOO-USDT"}, before_start=arm,
                       options={"listing_check_base": 60.0}) as h:
        await wait_for(lambda: h.state(ETH) is SyncState.INVALID, 5.0, "ETH invalid")
        await h.converge(BTC)
        assert "1000" in h.feed.invalid[ETH]
        assert h.sync("FOO-USDT").state is SyncState.INVALID and h.sync("FOO-USDT").reason is Reason.DELISTED
        assert h.sync(ETH).reason is Reason.INVALID_SYMBOL
        assert "market_summary" in h.feed.invalid["FOO-USDT"]
        # a resync of BTC and a reconnect do not bring ETH back into play
        h.venue.inject(Fault.GAP, BTC)
        await h.venue.step_all(3)
        await wait_for(lambda: h.sync(BTC).counters.resyncs[Reason.GAP] == 1, 5.0, "BTC gap")
        await h.converge(BTC)
        h.venue.inject(Fault.DISCONNECT, BTC)
        await h.venue.step_all(2)
        await wait_for(lambda: h.feed.reconnects == 1, 5.0, "reconnect")
        await h.converge(BTC)
        await h.venue.step_all(10)
        await h.converge(BTC)
        assert h.sync(ETH).state is SyncState.INVALID
        assert h.subscribes(ETH) == 1
        assert h.subscribes("FOO-USDT") == 0
        assert h.subscribes(BTC) == 3
        assert h.feed.status()["invalid_symbols"].keys() == {ETH, "FOO-USDT"}
        checks = h.feed.status()["listing_checks"]
        assert {c: v["reason"] for c, v in checks.items()} == {ETH: "invalid_symbol", "FOO-USDT": "delisted"}
        assert all(v["next_check_at"] > time.time() and v["checks"] == 0 for v in checks.values())


async def test_error_1008_session_close_reconnects() -> None:
    """With one failed attempt allowed, the 1000 rejection is followed by 1008 and a close."""

    def arm(h: Harness) -> None:
        h.venue.inject(Fault.UNKNOWN_SYMBOL, ETH)

    async with running(max_failed_attempts=1, before_start=arm) as h:
        await wait_for(lambda: h.feed.reconnects == 1, 5.0, "reconnect after 1008")
        await h.converge(BTC)
        assert h.sync(ETH).state is SyncState.INVALID
        assert h.subscribes(ETH) == 1 and h.subscribes(BTC) == 2
        await h.venue.step_all(10)
        await h.converge(BTC)
        assert h.feed.reconnects == 1


# ---------------------------------------------------------------------- snapshot guard and pacing
async def test_missing_snapshot_is_requested_again_then_reconnects() -> None:
    """A subscribe whose snapshot never comes is retried after ``snapshot_wait``; after
    ``max_snapshot_failures`` misses in a row the connection is replaced."""
    swallowed = {"left": 3}

    def swallow_eth_snapshots(h: Harness) -> None:
        original = h.venue._snapshot_frame

        def frame(sub) -> str:
            if sub.symbol == ETH and swallowed["left"] > 0:
                swallowed["left"] -= 1
                return orjson.dumps({"event": "noop"}).decode()
            return original(sub)

        h.venue._snapshot_frame = frame  # type: ignore[method-assign]

    options = {"snapshot_wait": 0.3, "max_snapshot_failures": 3}
    async with running(options=options, before_start=swallow_eth_snapshots) as h:
        await wait_for(lambda: h.feed.reconnects == 1, 8.0, "reconnect after missed snapshots")
        await h.converge()
        assert swallowed["left"] == 0
        assert h.feed.snapshot_timeouts == 3
        assert h.subscribes(ETH) == 4  # subscribe, two resubscribes, then the new connection
        assert h.metrics.snapshots[(ETH, False)] == 3


async def test_repeated_breakage_backs_off_resubscribes() -> None:
    """A book that breaks again right after each resync keeps its backoff step, so resubscribes
    slow down instead of following the breakage as fast as snapshots arrive."""
    async with running(options={"resync_stable_after": 60.0, "backoff_base": 0.02}) as h:
        await h.converge()
        rounds = 5
        for i in range(rounds):
            h.venue.inject(Fault.GAP, BTC)
            await h.venue.step_all(2)
            await wait_for(lambda n=i + 1: h.sync(BTC).counters.resyncs[Reason.GAP] == n, 5.0, "gap")
            await h.converge(BTC)
        pacer = h.feed.resync_pacers[h.sync(BTC)]
        assert pacer.step == rounds
        times = [t for t, _, req in h.requests
                 if req.get("op") == "subscribe" and topic_for(BTC) in req["args"]]
        gaps = [f"{(b - a) * 1000:.0f}" for a, b in zip(times, times[1:], strict=False)]
        print(f"\nBTSE resubscribe spacing under repeated gaps (ms): {', '.join(gaps)}")
        assert h.subscribes(BTC) == rounds + 1


async def test_book_frames_outside_the_schema_resync_only_their_symbol() -> None:
    """A book frame breaking its schema counts a decode error and resyncs that symbol alone; a frame
    that is not JSON at all is a FrameError (every book on the socket resyncs)."""
    metrics = RecordingMetrics()
    feed = BtseFeed(VenueConfig("btse", "btse", {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"}),
                    metrics=metrics)
    conn = feed.new_connection(["BTC-USD", "ETH-USD"], publish_when_live=False)

    def frame(symbol: str, kind: str, seq: int, **extra: object) -> aiohttp.WSMessage:
        data = {"bids": [["100.5", "1"]], "asks": [["101.5", "2"]], "seqNum": seq, "prevSeqNum": seq - 1,
                "type": kind, "timestamp": 1565135165600, "symbol": symbol, **extra}
        text = orjson.dumps({"topic": f"update:{symbol}_0", "data": data}).decode()
        return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None)

    for symbol in ("BTC-USD", "ETH-USD"):
        conn.syncs[symbol].snapshot_requested()
        await feed.handle(conn, frame(symbol, "snapshot", 5))
        await feed.handle(conn, frame(symbol, "delta", 6))
        assert conn.syncs[symbol].live and conn.syncs[symbol].counters.applied == 1
    for broken in ({"seqNum": "7"}, {"bids": [["100.5"]]}, {"type": "partial"}, {"prevSeqNum": None}):
        await feed.handle(conn, frame("BTC-USD", "delta", 7, **broken))
        assert not conn.syncs["BTC-USD"].live and conn.syncs["BTC-USD"].reason is Reason.DECODE_ERROR
    assert metrics.decode_errors == 4 and conn.syncs["ETH-USD"].live
    with pytest.raises(FrameError):
        await feed.handle(conn, aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, '{"topic":"update:BTC-U', None))


async def test_error_and_unknown_frames_are_logged_and_counted() -> None:
    """The documents list error codes but show no error frame: whatever shape an error or an unknown
    frame takes, it is counted (status) and leaves the socket and the other books alone."""
    feed = BtseFeed(VenueConfig("btse", "btse", {"BTC-USD": "BTC-USD"}), metrics=RecordingMetrics())
    conn = feed.new_connection(["BTC-USD"], publish_when_live=False)
    sync = conn.syncs["BTC-USD"]
    sync.snapshot_requested()
    snap = {"topic": "update:BTC-USD_0", "data": {"bids": [["100.5", "1"]], "asks": [["101.5", "2"]],
            "seqNum": 5, "type": "snapshot", "timestamp": 1565135165600, "symbol": "BTC-USD"}}

    def text(obj: object) -> aiohttp.WSMessage:
        return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, orjson.dumps(obj).decode(), None)

    await feed.handle(conn, text(snap))
    assert sync.live
    for frame in ({"errors": {"code": 1002, "message": "Invalid request"}},  # not a list
                  {"errors": ["1002"]},
                  {"errors": [{"arg": "update:DOGE-USD_0", "error": {"code": 1005, "message": "no topic"}}]},
                  {"event": "error", "code": 1001, "message": "Operation not supported"},
                  {"code": 1002, "msg": "Invalid request"},
                  {"event": "subscribe", "channel": "update:BTC-USD_0"},  # an ack shaped otherwise
                  {"hello": "world"}):
        await feed.handle(conn, text(frame))
    assert feed.venue_errors == {"1002": 2, "?": 1, "1005": 1, "1001": 1}
    assert feed.unrecognised_frames == 2
    assert feed.status()["venue_errors"]["1005"] == 1 and feed.status()["unrecognised_frames"] == 2
    assert sync.live  # none of them concerned the book
    await feed.handle(conn, text({"errors": [{"arg": "update:BTC-USD_0", "error": {"code": 1002}}]}))
    assert not sync.live and sync.reason is Reason.VENUE_ERROR and feed.venue_errors["1002"] == 3
