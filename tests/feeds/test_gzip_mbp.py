"""NHEX and BitV feeds against the simulated venues over real sockets on 127.0.0.1.

Every test runs once per venue.  The simulated venue's per-topic truth (``topic_truth(sym, levels)``,
the top-N book as last pushed on ``market.<sym>.mbp.<levels>``, at its seqNum) is what a book must
equal, compared with :func:`tests.conftest.book_matches` at the topic's depth.  Faults are injected
through the simulator; a test waits for the fault to fire and for the resync to be counted with its
reason, then pauses the market and waits for the book to equal the truth again.
"""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from aggbook.book.sync import BookSync, Reason, SyncState
from aggbook.feeds.base import FrameError
from aggbook.feeds.bitv import FAST_SYMBOLS, BitvFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.gzip_mbp import (
    INVALID_SYMBOL,
    INVALID_TOPIC,
    TOO_MANY,
    GzipMbpFeed,
    decode_frame,
    exact_levels,
)
from aggbook.feeds.nhex import NhexFeed
from aggbook.service.metrics.books import RESYNC_REASONS
from aggbook.simulator.bitv import BitvVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.nhex import NhexVenue
from tests.conftest import book_matches, describe_mismatch, wait_for
from tests.feeds.recording import RecordingMetrics

pytestmark = pytest.mark.integration

# generous: the simulated venue gzips every push in the test's own process, which a loaded 2-core
# machine has left a tenth of a core for seconds at a time; a condition met sooner ends the wait
WAIT = 20.0
FINE = "BTC-USDT"  # the simulator's first symbol: sizes with 18 significant decimals; on BitV's 5/20 list
PLAIN = "ETH-USDT"  # on BitV's 5/20 list
UNLISTED = "SOL-USDT"  # not on BitV's 5/20 list

PAIRS = [
    pytest.param((NhexVenue, NhexFeed), id="nhex"),
    pytest.param((BitvVenue, BitvFeed), id="bitv"),
]


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest) -> tuple[type[GzipMbpVenue], type[GzipMbpFeed]]:
    return request.param


@dataclass
class Harness:
    venue: GzipMbpVenue
    feed: GzipMbpFeed
    metrics: RecordingMetrics
    symbols: list[str]
    started: float

    def sync(self, canonical: str) -> BookSync:
        return self.feed.current_syncs()[canonical]

    def truth(self, canonical: str):  # noqa: ANN201 - TruthBook
        return self.venue.topic_truth(canonical, self.feed.levels_for(canonical))

    def matches(self, canonical: str) -> bool:
        syncs = self.feed.current_syncs()
        return canonical in syncs and book_matches(syncs[canonical], self.truth(canonical),
                                                   depth=self.feed.levels_for(canonical))

    def all_live(self, symbols: list[str] | None = None) -> bool:
        syncs = self.feed.current_syncs()
        return all(s in syncs and syncs[s].live for s in symbols or self.symbols)

    async def wait_live(self, symbols: list[str] | None = None, timeout: float = WAIT) -> None:
        await wait_for(lambda: self.all_live(symbols), timeout, "books live")

    async def wait_applied(self, canonical: str, more: int = 2) -> None:
        """Wait until ``more`` further deltas were applied: the book is past its first post-snapshot delta,
        where a missing message reads as a stale snapshot rather than a gap."""
        sync = self.sync(canonical)
        target = sync.counters.applied + more
        await wait_for(lambda: sync.counters.applied >= target, WAIT, f"{more} deltas applied on {canonical}")

    async def settle(self, symbols: list[str] | None = None, timeout: float = WAIT) -> None:
        """Pause the market and wait until every book is live and equals its topic truth."""
        self.venue.pause()
        await self.venue.step_all(2)  # flush anything a REORDER holds back on tick-by-tick topics
        for canonical in symbols or self.symbols:
            try:
                await wait_for(lambda c=canonical: self.matches(c), timeout, f"{canonical} equal to truth")
            except BaseException:
                print(describe_mismatch(self.sync(canonical), self.truth(canonical),
                                        self.feed.levels_for(canonical)))
                raise

    def alive(self) -> bool:
        """No supervisor crashed."""
        return self.feed.running


@contextlib.asynccontextmanager
async def running(
    pair: tuple[type[GzipMbpVenue], type[GzipMbpFeed]],
    symbols: tuple[str, ...] = (FINE, PLAIN),
    depth: int | None = None,
    options: dict | None = None,
    extra_symbols: dict[str, str] | None = None,
    **venue_kwargs: object,
) -> AsyncIterator[Harness]:
    venue_cls, feed_cls = pair
    # The venue judges a client by when it reads its frames, and it reads them in the client's own
    # process: after that process stood still for a second or two, an answered ping reads as missed
    # and two reqs sent 110 ms apart read as back to back.  So the venue closes a connection only
    # after many missed pongs and does not space reqs, unless a test asks for it.
    kwargs: dict = {"rate": 60.0, "mbp_interval": 0.03, "ping_interval": 1.0, "max_missed_pongs": 50,
                    "req_min_interval": 0.0}
    kwargs.update(venue_kwargs)
    venue = venue_cls(**kwargs)
    await venue.start()
    mapping = {c: venue.resolve_symbol(c) for c in symbols}
    mapping.update(extra_symbols or {})
    metrics = RecordingMetrics()
    config = VenueConfig(venue.name, venue.name, mapping, depth=depth, options=dict(options or {}),
                         **venue.urls())
    feed = feed_cls(config, metrics=metrics)
    started = time.monotonic()
    await feed.start()
    try:
        yield Harness(venue, feed, metrics, list(symbols), started)
    finally:
        await feed.stop()
        await venue.stop()


# ---------------------------------------------------------------------- decoding
def test_decode_keeps_exact_number_text() -> None:
    raw = (b'{"ch":"market.btcusdt.mbp.5","ts":1573199608679,"tick":{"seqNum":100020146795,'
           b'"prevSeqNum":100020146794,"bids":[[7964,0.0678]],'
           b'"asks":[[645.140000000000000000,26.755973959140651643],[1e-5,0]]}}')
    obj = decode_frame(gzip.compress(raw))
    tick = obj["tick"]
    assert tick["seqNum"] == 100020146795
    assert exact_levels(tick["bids"]) == [("7964", "0.0678")]
    assert exact_levels(tick["asks"]) == [("645.140000000000000000", "26.755973959140651643"), ("1e-5", "0")]
    assert exact_levels(tick.get("missing")) is None
    with pytest.raises(FrameError):
        decode_frame(gzip.compress(raw)[:30])
    with pytest.raises(FrameError):
        decode_frame(gzip.compress(raw[:40]))
    with pytest.raises(FrameError):
        exact_levels([["1.0"]])


@pytest.mark.parametrize("raw", [
    b'{"ch":"c","tick":{"seqNum":2,"prevSeqNum":1,"bids":[[NaN,1.0]]}}',  # not JSON, not a price
    b'{"ch":"c","tick":{"seqNum":2,"prevSeqNum":1,"bids":[[1.5,Infinity]]}}',
    b'{"ch":"c\xff","tick":{}}',  # not UTF-8
    b'[1.5, 2]',  # JSON, but not an object
])
def test_decode_refuses_what_is_not_a_json_object(raw: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(gzip.compress(raw))


def test_levels_that_are_not_number_text_are_frame_errors() -> None:
    tick = decode_frame(gzip.compress(b'{"bids":[[1.5,true]],"asks":[[1.5,"2"]],"x":[1.5,[2.5]]}'))
    for raw in (tick["bids"], tick["x"], [["1.5", None]], "1.5", [1.5]):
        with pytest.raises(FrameError):
            exact_levels(raw)
    assert exact_levels(tick["asks"]) == [("1.5", "2")]  # a JSON string is taken as the venue's text


# ---------------------------------------------------------------------- happy path
@pytest.mark.parametrize("levels", [5, 20, 150])
async def test_books_equal_topic_truth(pair, levels: int) -> None:
    async with running(pair, symbols=(FINE, PLAIN, "XRP-USDT"), depth=levels) as h:
        await h.wait_live()
        live_after = time.monotonic() - h.started
        await wait_for(lambda: all(h.sync(s).counters.applied >= 5 for s in h.symbols), WAIT,
                       "deltas applied")
        await h.settle()
        for canonical in h.symbols:
            assert h.feed.levels_for(canonical) == levels
            bids, asks = h.sync(canonical).book.depth
            assert bids <= levels and asks <= levels
            assert sum(h.sync(canonical).counters.resyncs.values()) == 0
        starts = [round(s, 3) for _, s, after in h.metrics.ttl if after == "start"]
        print(f"\n{h.venue.name} mbp.{levels}: all {len(h.symbols)} books live {live_after:.3f}s "
              f"after start; per book {starts}")


@pytest.mark.parametrize(("depth", "text"),
                         [(150, lambda d: f"{d.normalize():f}"), (5, lambda d: f"{d:.18f}")],
                         ids=["150-short", "5-18-decimals"])
async def test_number_text_kept_exactly(pair, depth: int, text) -> None:  # noqa: ANN001
    """The book keeps each number as the venue wrote it: short on mbp.150, 18 decimals on mbp.5."""
    async with running(pair, symbols=(FINE,), depth=depth) as h:
        await h.wait_live()
        await h.settle()
        truth = h.truth(FINE)
        book = h.sync(FINE).book
        assert book.bids() == [(text(p), text(s)) for p, s in truth.bids]
        assert book.asks() == [(text(p), text(s)) for p, s in truth.asks]
        # the sizes really need all their decimals: a float would have changed them
        lossy = [s for _, s in book.bids() + book.asks() if Decimal(repr(float(s))) != Decimal(s)]
        assert len(lossy) >= 2


async def test_book_trimmed_when_venue_sends_no_window_exits(pair) -> None:
    async with running(pair, symbols=(FINE, PLAIN), depth=5, window_exit_deletes=False) as h:
        await h.wait_live()
        await wait_for(lambda: all(h.sync(s).counters.applied >= 15 for s in h.symbols), WAIT,
                       "deltas applied")
        await h.settle()
        assert all(max(h.sync(s).book.depth) == 5 for s in h.symbols)


async def test_quiet_tick_book_gets_snapshot_without_pushes(pair) -> None:
    async with running(pair, symbols=(FINE,), depth=20, autostart_pump=False,
                       options={"quiet_snapshot_delay": 0.2}) as h:
        await h.wait_live()
        assert h.sync(FINE).counters.applied == 0  # nothing was ever pushed on mbp.20
        assert h.sync(FINE).counters.snapshots == 1
        await h.settle()


async def test_straddling_snapshot_accepted_on_tick_topics(pair) -> None:
    async with running(pair, symbols=(FINE, PLAIN), depth=5, straddle_snapshots=True) as h:
        await h.wait_live()
        await wait_for(lambda: all(h.sync(s).counters.applied >= 3 for s in h.symbols), WAIT,
                       "deltas applied")
        await h.settle()
        assert all(sum(h.sync(s).counters.resyncs.values()) == 0 for s in h.symbols)


async def test_future_150_shape(pair) -> None:
    """150 in the doc's announced shape (a side left out, no empty pushes) keeps the book exact."""
    async with running(pair, symbols=(FINE, PLAIN), depth=150, mbp150_future_shape=True) as h:
        await h.wait_live()
        await wait_for(lambda: all(h.sync(s).counters.applied >= 3 for s in h.symbols), WAIT,
                       "deltas applied")
        await h.settle()
        assert all(h.sync(s).rule.name == "mbp-100ms" for s in h.symbols)
        assert all(sum(h.sync(s).counters.resyncs.values()) == 0 for s in h.symbols)


# ---------------------------------------------------------------------- stream faults
STREAM_FAULTS = [
    pytest.param(Fault.GAP, {}, Reason.GAP, 150, id="gap-150"),
    pytest.param(Fault.GAP, {}, Reason.GAP, 5, id="gap-5"),
    pytest.param(Fault.REORDER, {}, Reason.GAP, 150, id="reorder-150"),
    pytest.param(Fault.REORDER, {}, Reason.GAP, 5, id="reorder-5"),
    pytest.param(Fault.MALFORMED, {"kind": "gzip"}, Reason.DECODE_ERROR, 150, id="malformed-gzip"),
    pytest.param(Fault.MALFORMED, {"kind": "json"}, Reason.DECODE_ERROR, 150, id="malformed-json"),
    pytest.param(Fault.CROSSED, {}, Reason.CROSSED_BOOK, 150, id="crossed-150"),
    pytest.param(Fault.CROSSED, {}, Reason.CROSSED_BOOK, 20, id="crossed-20"),
    pytest.param(Fault.DISCONNECT, {}, Reason.DISCONNECT, 150, id="disconnect"),
    pytest.param(Fault.SERVER_CLOSE, {}, Reason.DISCONNECT, 150, id="server-close"),
    pytest.param(Fault.SILENT, {}, Reason.DISCONNECT, 150, id="silent"),
]


@pytest.mark.parametrize(("fault", "params", "reason", "levels"), STREAM_FAULTS)
async def test_stream_fault_recovers(pair, fault: Fault, params: dict, reason: Reason, levels: int) -> None:
    options = {"silence_timeout": 0.5} if fault is Fault.SILENT else {}
    async with running(pair, depth=levels, options=options, ping_interval=0.2) as h:
        await h.wait_live()
        await h.wait_applied(FINE)
        before = h.sync(FINE)
        resyncs_before = before.counters.resyncs[reason]
        h.venue.inject(fault, FINE, **params)
        await wait_for(lambda: h.venue.faults.fired[fault.value] >= 1, WAIT, f"{fault} fired")
        hit_at = time.monotonic()
        await wait_for(lambda: before.counters.resyncs[reason] > resyncs_before, WAIT, f"{reason} counted")
        await h.wait_live()
        back_after = time.monotonic() - hit_at
        await h.settle()
        assert h.alive()
        if reason is Reason.DISCONNECT:
            assert h.feed.reconnects >= 1 and h.metrics.reconnects >= 1
            assert h.sync(FINE) is not before  # a new connection brings new books
        else:
            assert h.feed.reconnects == 0 and h.sync(FINE) is before
        if reason is Reason.DECODE_ERROR:
            assert h.metrics.decode_errors >= 1
            assert h.sync(PLAIN).counters.resyncs[Reason.DECODE_ERROR] >= 1  # every book on the socket
        if reason in (Reason.GAP, Reason.CROSSED_BOOK):  # a gap touches only its own book
            assert sum(h.sync(PLAIN).counters.resyncs.values()) == 0
        print(f"\n{h.venue.name} {fault.value} mbp.{levels}: live again {back_after:.3f}s after the fault "
              f"(reason {reason.value})")


async def test_duplicate_dropped_without_resync(pair) -> None:
    async with running(pair, depth=5) as h:
        await h.wait_live()
        sync = h.sync(FINE)
        dropped = sync.counters.dropped
        h.venue.inject(Fault.DUPLICATE, FINE)
        await wait_for(lambda: sync.counters.dropped > dropped, WAIT, "duplicate dropped")
        await h.settle()
        assert sum(sync.counters.resyncs.values()) == 0 and h.sync(FINE) is sync


# ---------------------------------------------------------------------- snapshot (req) faults
SNAPSHOT_FAULTS = [
    pytest.param(Fault.STALE_SNAPSHOT, {}, {}, id="stale"),
    pytest.param(Fault.SLOW_SNAPSHOT, {"delay": 0.6}, {"req_timeout": 0.3}, id="slow-beyond-timeout"),
    pytest.param(Fault.SLOW_SNAPSHOT, {"delay": 0.05, "timeout": True}, {}, id="request-timeout-reply"),
    pytest.param(Fault.UNKNOWN_SYMBOL, {}, {"listing_check_base": 0.05}, id="unknown-symbol-once"),
    pytest.param(Fault.SNAPSHOT_429, {}, {}, id="429"),
]


@pytest.mark.parametrize(("fault", "params", "options"), SNAPSHOT_FAULTS)
async def test_snapshot_fault_recovers(pair, fault: Fault, params: dict, options: dict) -> None:
    async with running(pair, options=options) as h:
        h.venue.inject(fault, FINE, **params)  # armed before the first req
        await wait_for(lambda: h.venue.faults.fired[fault.value] >= 1, WAIT, f"{fault} fired")
        await h.wait_live()
        await h.settle()
        sync = h.sync(FINE)
        assert h.alive() and h.feed.reconnects == 0 and not h.feed.invalid
        if fault is Fault.STALE_SNAPSHOT:
            assert sync.counters.resyncs[Reason.STALE_SNAPSHOT] >= 1 and sync.counters.stale_snapshots >= 1
        elif fault is Fault.SLOW_SNAPSHOT:
            assert h.metrics.snapshots[(FINE, False)] >= 1
            if params.get("timeout"):
                assert h.feed.venue_errors["request timeout"] == 1
        elif fault is Fault.UNKNOWN_SYMBOL:
            assert h.feed.venue_errors[INVALID_SYMBOL] == 1  # still listed: resumed, not disabled
            assert h.metrics.snapshots[(FINE, False)] >= 1
            assert dict(h.feed.listing.counts) == {"listed": 1}
        elif fault is Fault.SNAPSHOT_429:
            assert h.feed.venue_errors[TOO_MANY] == 1 and h.feed.pacer.penalties >= 1
        assert sync.counters.snapshots >= 1


# ---------------------------------------------------------------------- heartbeat, pacing, symbols
async def test_pings_answered_connection_survives(pair) -> None:
    async with running(pair, symbols=(FINE,), ping_interval=0.05, max_missed_pongs=2) as h:
        await h.wait_live()
        conn_ids = set(h.venue.connections)
        sync = h.sync(FINE)
        # ten ping rounds; a client not answering would be closed after the third
        await wait_for(lambda: h.feed.pongs >= 10, WAIT, "ten pings answered")
        assert set(h.venue.connections) == conn_ids
        assert h.feed.reconnects == 0 and h.sync(FINE) is sync
        assert sync.counters.resyncs[Reason.DISCONNECT] == 0
        await h.settle()


async def test_reqs_spaced_on_one_connection(pair) -> None:
    symbols = (FINE, PLAIN, "SOL-USDT", "DOGE-USDT", "XRP-USDT")
    async with running(pair, symbols=symbols, req_min_interval=0.1) as h:
        await h.wait_live()
        assert len(h.feed.connections) == 1
        sent: list[float] = []  # when each req left the feed, as the feed wrote it to the socket
        send = h.feed._send

        async def timed(conn, obj: dict) -> None:
            if "req" in obj:
                sent.append(time.monotonic())
            await send(conn, obj)

        h.feed._send = timed  # type: ignore[method-assign]
        h.venue.inject(Fault.MALFORMED, FINE)  # every book on the socket resyncs at once
        await wait_for(lambda: h.metrics.decode_errors >= 1, WAIT, "decode error")
        await wait_for(lambda: all(h.sync(s).counters.snapshots >= 2 for s in symbols), WAIT,
                       "second snapshots")
        await h.settle()
        # the feed's part, measured where it is decided: five reqs at once left 100 ms apart.  (The
        # venue judges the spacing by when it reads each req, which a busy machine can squeeze
        # below what was sent; a 429 then is the venue's call, answered by the tests of 429 below.)
        assert len(sent) >= len(symbols)
        assert min(b - a for a, b in zip(sent, sent[1:], strict=False)) >= 0.1 - 0.001  # clock reads


async def test_bitv_tick_levels_fall_back_to_150_off_whitelist() -> None:
    assert UNLISTED.replace("-", "").lower() not in FAST_SYMBOLS
    async with running((BitvVenue, BitvFeed), symbols=(FINE, UNLISTED), depth=5) as h:
        assert h.feed.levels_for(FINE) == 5 and h.feed.levels_for(UNLISTED) == 150
        await h.wait_live()
        await h.settle()
        assert not h.feed.venue_errors  # chosen up front: no refused sub
        assert h.sync(UNLISTED).rule.name == "mbp-100ms" and h.sync(FINE).rule.name == "mbp-tick"


async def test_refused_tick_topic_falls_back_at_run_time(pair) -> None:
    # the venue offers 5/20 for btcusdt only, although the feed's list includes ethusdt
    async with running(pair, symbols=(FINE, PLAIN), depth=5, fast_symbols=("btcusdt",)) as h:
        await h.wait_live()
        await h.settle()
        assert h.feed.venue_errors[INVALID_TOPIC] == 1
        assert h.feed.levels_for(PLAIN) == 150 and h.feed.levels_for(FINE) == 5
        assert h.feed.reconnects == 0


async def test_unlisted_symbol_rejected_at_start(pair) -> None:
    async with running(pair, symbols=(FINE,), extra_symbols={"FOO-USDT": "foousdt"}) as h:
        await h.wait_live([FINE])
        assert "FOO-USDT" in h.feed.invalid
        foo = h.feed.current_syncs()["FOO-USDT"]
        assert foo.state is SyncState.INVALID and foo.reason is Reason.DELISTED
        assert h.feed.venue_errors[INVALID_SYMBOL] == 0  # never subscribed
        assert h.feed.tick_sizes[FINE] == Decimal("0.01")
        # 10^-amount-precision, whatever precision the venue lists for the symbol
        assert h.feed.lot_sizes[FINE] == Decimal(1).scaleb(-h.venue.amount_precision["btcusdt"])


async def test_refused_symbol_rechecked_without_retry_loop(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused ``sub`` for a symbol /v1/common/symbols does not list: delisted, re-checked on the
    list, never subscribed again while unlisted."""
    async def no_validation(self: GzipMbpFeed) -> dict[str, str]:
        return {}

    monkeypatch.setattr(GzipMbpFeed, "validate_symbols", no_validation)
    options = {"listing_check_base": 0.05, "listing_check_cap": 0.1}
    async with running(pair, symbols=(FINE,), extra_symbols={"FOO-USDT": "foousdt"}, options=options) as h:
        await h.wait_live([FINE])
        await wait_for(lambda: h.feed.current_syncs()["FOO-USDT"].reason is Reason.DELISTED, WAIT, "delisted")
        await wait_for(lambda: h.feed.listing.counts["delisted"] >= 3, WAIT, "re-checked")
        applied = h.sync(FINE).counters.applied
        await wait_for(lambda: h.sync(FINE).counters.applied >= applied + 20, WAIT, "more deltas")
        assert h.feed.venue_errors[INVALID_SYMBOL] == 1 and "FOO-USDT" in h.feed.invalid
        assert h.feed.listing.counts["listed"] == 0 and h.feed.reconnects == 0
        await h.settle([FINE])


async def test_unknown_depth_rejected(pair) -> None:
    _, feed_cls = pair
    with pytest.raises(ValueError, match="400"):
        feed_cls(VenueConfig("x", "x", {FINE: "btcusdt"}, depth=400))
    if feed_cls is NhexFeed:  # req serves 5/20/150 only: a 400-level book could never get a snapshot
        for depth in (400, 150):
            with pytest.raises(ValueError, match="req serves mbp snapshots of 5, 20 and 150 levels only"):
                feed_cls(VenueConfig("x", "x", {FINE: "btcusdt"}, depth=depth,
                                     options={"enable_mbp400": True}))


async def test_gap_to_live_timing(pair) -> None:
    """Measured (printed, not asserted): time from an injected gap to the book live again."""
    async with running(pair, symbols=(FINE,)) as h:
        await h.wait_live()
        sync = h.sync(FINE)
        for _ in range(3):
            await h.wait_applied(FINE)
            gaps = sync.counters.resyncs[Reason.GAP]
            h.venue.inject(Fault.GAP, FINE)
            await wait_for(lambda g=gaps: sync.counters.resyncs[Reason.GAP] > g, WAIT, "gap")
            await h.wait_live()
        await h.settle()
        resync = [round(s, 3) for _, s, after in h.metrics.ttl if after == "resync"]
        assert len(resync) == 3
        print(f"\n{h.venue.name} mbp.150 gap -> live: {resync} s")



async def test_a_misaligned_150_snapshot_is_never_forced_to_fit(pair) -> None:
    """A venue answering every ``req`` between two pushes keeps the book down, saying why, for good."""
    async with running(pair, symbols=(FINE,), straddle_snapshots=True,
                       options={"backoff_base": 0.01, "backoff_cap": 0.05}) as h:
        await wait_for(lambda: FINE in h.feed.current_syncs()
                       and h.sync(FINE).counters.resyncs[Reason.MISALIGNED_SNAPSHOT] >= 6, 15,
                       "six misaligned snapshots discarded")
        sync = h.sync(FINE)
        assert not sync.rule.straddle_ok
        assert sync.counters.applied == 0  # no push was ever applied on a misaligned snapshot
        assert sync.reason is Reason.MISALIGNED_SNAPSHOT and not sync.confirmed
        assert "misaligned_snapshot" in RESYNC_REASONS  # aggbook_book_resyncs_total counts it apart


async def test_misaligned_and_stale_snapshots_are_discarded_until_one_fits(pair) -> None:
    """Misaligned (between two pushes) and stale (older than the stream) answers, several in a row:
    each is discarded and counted with its own reason, and the book then recovers to the truth."""
    async with running(pair, symbols=(FINE,), options={"backoff_base": 0.01, "backoff_cap": 0.05}) as h:
        h.venue.faults.inject(Fault.STALE_SNAPSHOT, count=4, straddle=True)
        h.venue.faults.inject(Fault.STALE_SNAPSHOT, count=2, steps_back=3)
        await wait_for(lambda: h.venue.faults.pending(Fault.STALE_SNAPSHOT) == 0, 15, "faults taken")
        await h.wait_live()
        await h.settle()
        sync = h.sync(FINE)
        assert not sync.rule.straddle_ok
        assert sync.counters.misaligned_snapshots == 4
        assert sync.counters.resyncs[Reason.MISALIGNED_SNAPSHOT] == 4
        assert sync.counters.resyncs[Reason.STALE_SNAPSHOT] == 2
