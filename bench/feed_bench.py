"""Per-message hot path of each venue feed (decode + sequencer + L2 book) against a plain script, in one run.

Recording (not timed): each simulated venue runs in-process with its market pump off; a raw
aiohttp WebSocket client subscribes to one symbol's diff-depth stream the way the venue's feed
does, the snapshot the feed needs is taken (REST for Binance and MEXC, the ``req`` reply for
NHEX, the in-stream snapshot for BTSE), and then the market is stepped until ``--frames`` data
frames have arrived.  Stepping by hand instead of on a timer means no market step falls between
the snapshot and the first recorded frame, so every recorded frame must apply.

Replay (timed), per venue, on the same frames:

* ``aggbook``: the real feed object from ``feeds.registry.create_feed`` (never started: its URLs
  are dummies), a ``feeds.base.Connection`` with its ``BookSync``, the snapshot loaded through the
  feed's own parser, then ``await feed.handle(conn, msg)`` for every recorded ``WSMessage``, with
  ``frame_bytes``/``frame_counted`` set as the supervisor's read loop sets them.  After the run the sync
  must be live with ``counters.applied`` equal to the number of frames and no resync, so the
  benchmark cannot silently measure a resync loop.
* ``plain``: the script a desk would write: stdlib decoding (``json.loads``; ``gzip.decompress``
  then ``json.loads`` for NHEX; protobuf ``FromString`` for MEXC, which has no stdlib decoder),
  float-keyed dict books, no sequencing checks, no best-price upkeep.

Each contender runs ``--runs`` times on fresh objects (a fresh sync and book from the same
snapshot, never the same sync twice) and the fastest run counts.  The last line is
machine-readable:
``feed_frames_per_s binance=<n> mexc=<n> btse=<n> nhex=<n> ratio_vs_plain binance=<r> ...``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from aggbook.book.sync import BookSync, SyncState
from aggbook.feeds.base import Connection, VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.gzip_mbp import decode_frame
from aggbook.feeds.registry import create_feed
from aggbook.proto import mexc_push_pb2 as pb
from aggbook.simulator.binance import BinanceSpotVenue
from aggbook.simulator.btse import BtseVenue
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.mexc import MexcVenue
from aggbook.simulator.nhex import NhexVenue
from aggbook.simulator.venue import VenueServer

SPEC = DEFAULT_SYMBOLS[0]  # BTC-USDT
CANONICAL = SPEC.canonical
VENUES = ("binance", "mexc", "btse", "nhex")
DUMMY_REST = "http://127.0.0.1:9"
DUMMY_WS = "ws://127.0.0.1:9"


@dataclass
class Recording:
    """One venue's recorded stream: the snapshot the feed needs, then the data frames."""

    venue: str  # feed kind
    symbol: str  # the venue's spelling
    snapshot: Any  # REST body text (binance, mexc), req reply frame (nhex), snapshot frame (btse)
    frames: list[aiohttp.WSMessage] = field(default_factory=list)
    levels: int = 0  # level updates carried by the frames


# ---------------------------------------------------------------------- recording (not timed)
class _Reader:
    """Reads one client socket into data frames and other frames (acks, replies, heartbeats)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, is_data: Callable[[aiohttp.WSMessage], bool]):
        self.ws = ws
        self.data: list[aiohttp.WSMessage] = []
        self.other: list[aiohttp.WSMessage] = []
        self._is_data = is_data
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY) and self._is_data(msg):
                self.data.append(msg)
            else:
                self.other.append(msg)

    async def wait(self, cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"recording: no {what} (socket closed: {self._task.done()})")
            await asyncio.sleep(0.005)

    async def settle(self, quiet: float = 0.1) -> None:
        """Until no frame arrived for ``quiet`` seconds: everything stepped so far has been read."""
        seen = -1
        while seen != len(self.data) + len(self.other):
            seen = len(self.data) + len(self.other)
            await asyncio.sleep(quiet)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _first_frame(venue: VenueServer, reader: _Reader) -> None:
    """Step until a data frame arrives (the subscription is active), let the step's frames land."""
    for _ in range(1000):
        await venue.step_all(1)
        await asyncio.sleep(0.005)
        if reader.data:
            await reader.settle()
            return
    raise RuntimeError(f"recording: {venue.name} sent no data frame")


async def _record_frames(venue: VenueServer, reader: _Reader, frames: int,
                         after_step: Callable[[], Any] | None = None) -> list[aiohttp.WSMessage]:
    """Step the market until ``frames`` data frames have arrived after the snapshot."""
    reader.data.clear()  # frames before the snapshot: the snapshot contains them
    while len(reader.data) < frames:
        await venue.step_all(1)
        if after_step is not None:
            await after_step()
        await asyncio.sleep(0)
    await reader.settle()
    return reader.data[:frames]


async def _rest_depth(session: aiohttp.ClientSession, venue: VenueServer, symbol: str) -> str:
    """``/api/v3/depth`` at the feeds' default limit (Binance and MEXC share the path)."""
    async with session.get(f"{venue.urls()['rest_url']}/api/v3/depth",
                           params={"symbol": symbol, "limit": "1000"}) as resp:
        assert resp.status == 200, resp.status
        return await resp.text()


async def record_binance(session: aiohttp.ClientSession, frames: int, seed: int) -> Recording:
    venue = BinanceSpotVenue([SPEC], seed=seed, autostart_pump=False)
    async with venue:
        symbol = venue.venue_symbol(SPEC)
        url = f"{venue.urls()['ws_url']}/stream?streams={symbol.lower()}@depth@100ms"  # the feed's URL
        reader = _Reader(await session.ws_connect(url),
                         lambda m: m.type is aiohttp.WSMsgType.TEXT and "depthUpdate" in m.data)
        try:
            await _first_frame(venue, reader)
            snapshot = await _rest_depth(session, venue, symbol)
            data = await _record_frames(venue, reader, frames)
        finally:
            await reader.close()
    return Recording("binance", symbol, snapshot, data)


async def record_mexc(session: aiohttp.ClientSession, frames: int, seed: int) -> Recording:
    venue = MexcVenue([SPEC], seed=seed, autostart_pump=False)
    async with venue:
        symbol = venue.venue_symbol(SPEC)
        channel = f"spot@public.aggre.depth.v3.api.pb@100ms@{symbol}"  # the feed's default channel
        ws = await session.ws_connect(venue.urls()["ws_url"])
        reader = _Reader(ws, lambda m: m.type is aiohttp.WSMsgType.BINARY)
        try:
            await ws.send_str(orjson.dumps({"method": "SUBSCRIPTION", "params": [channel]}).decode())
            await reader.wait(lambda: reader.other, "SUBSCRIPTION reply")
            reply = orjson.loads(reader.other[0].data)
            assert reply.get("msg") == channel, reply
            await _first_frame(venue, reader)
            snapshot = await _rest_depth(session, venue, symbol)
            data = await _record_frames(venue, reader, frames)
        finally:
            await reader.close()
    return Recording("mexc", symbol, snapshot, data)


async def record_btse(session: aiohttp.ClientSession, frames: int, seed: int) -> Recording:
    venue = BtseVenue([SPEC], seed=seed, autostart_pump=False, idle_timeout=None)
    async with venue:
        symbol = venue.venue_symbol(SPEC)
        ws = await session.ws_connect(venue.urls()["ws_url"])

        def is_book(msg: aiohttp.WSMessage) -> bool:
            return msg.type is aiohttp.WSMsgType.TEXT and msg.data.startswith('{"topic":"update:')

        reader = _Reader(ws, is_book)
        try:
            await ws.send_str(orjson.dumps({"op": "subscribe", "args": [f"update:{symbol}_0"]}).decode())
            await reader.wait(lambda: reader.data, "in-stream snapshot")
            snapshot = reader.data[0]
            assert orjson.loads(snapshot.data)["data"]["type"] == "snapshot", snapshot.data[:200]
            data = await _record_frames(venue, reader, frames)
        finally:
            await reader.close()
    return Recording("btse", symbol, snapshot, data)


async def record_nhex(session: aiohttp.ClientSession, frames: int, seed: int) -> Recording:
    # mbp.150 (the feed's default depth) is a snapshot diff on the venue's 100 ms timer: the timer is
    # off and run once per market step instead, so each frame carries one step's changes
    venue = NhexVenue([SPEC], seed=seed, autostart_pump=False, mbp_interval=None, ping_interval=3600.0)
    async with venue:
        symbol = venue.venue_symbol(SPEC)
        topic = f"market.{symbol}.mbp.150"
        ws = await session.ws_connect(venue.urls()["ws_url"])
        reader = _Reader(ws, lambda m: m.type is aiohttp.WSMsgType.BINARY and "tick" in decode_frame(m.data))

        def reply(rid: str) -> dict | None:
            for msg in reader.other:
                obj = decode_frame(msg.data)
                if obj.get("id") == rid:
                    return obj
            return None

        try:
            await ws.send_str(orjson.dumps({"sub": topic, "id": "sub-1"}).decode())
            await reader.wait(lambda: reply("sub-1"), "sub ack")
            assert reply("sub-1")["status"] == "ok", reply("sub-1")
            await ws.send_str(orjson.dumps({"req": topic, "id": "req-1"}).decode())
            await reader.wait(lambda: reply("req-1"), "req reply")
            snapshot = next(m for m in reader.other if decode_frame(m.data).get("id") == "req-1")
            data = await _record_frames(venue, reader, frames, after_step=venue.interval_tick)
        finally:
            await reader.close()
    return Recording("nhex", symbol, snapshot, data)


RECORDERS = {"binance": record_binance, "mexc": record_mexc, "btse": record_btse, "nhex": record_nhex}


# ---------------------------------------------------------------------- aggbook: the real feed
def build_feed(rec: Recording) -> tuple[VenueFeed, Connection, BookSync]:
    """The venue's feed with a connection as ``new_connection`` and ``subscribe`` leave it."""
    feed = create_feed(VenueConfig(name=rec.venue, kind=rec.venue, symbols={CANONICAL: rec.symbol},
                                   rest_url=DUMMY_REST, ws_url=DUMMY_WS))
    conn = feed.new_connection([CANONICAL], publish_when_live=False)
    sync = conn.syncs[CANONICAL]
    # the per-connection routing state that subscribe()/connect() set up before any frame is read
    if rec.venue == "mexc":
        state = conn.venue_state
        state.by_venue[rec.symbol] = CANONICAL
        state.by_channel[feed.channel_for(rec.symbol)] = CANONICAL
    elif rec.venue == "nhex":
        conn.venue_state.topics[feed.topic_for(CANONICAL)] = CANONICAL
        conn.venue_state.subbed[CANONICAL] = time.monotonic()
    elif rec.venue == "btse":
        from aggbook.feeds.btse import _ResyncPacer

        feed.resync_pacers[sync] = _ResyncPacer(feed, conn, CANONICAL)
        sync.snapshot_requested()
        feed._expect_snapshot(conn, CANONICAL)  # noqa: SLF001
    return feed, conn, sync


async def load_snapshot(feed: VenueFeed, conn: Connection, rec: Recording) -> None:
    """Through the feed's own snapshot parsing, as if its request had just been answered."""
    if rec.venue in ("binance", "mexc"):
        body = orjson.loads(rec.snapshot)

        async def get_json(url: str, params: dict | None = None) -> tuple[int, Any, Any]:
            return 200, {}, body

        feed.get_json = get_json  # type: ignore[method-assign]
        feed.deliver_snapshot(conn, CANONICAL, await feed.fetch_snapshot(conn, CANONICAL))
    elif rec.venue == "nhex":
        feed.deliver_snapshot(conn, CANONICAL, feed._snapshot(decode_frame(rec.snapshot.data)))  # noqa: SLF001
    else:  # btse: the snapshot is a frame of the stream
        conn.frame_bytes, conn.frame_counted = len(rec.snapshot.data), False
        await feed.handle(conn, rec.snapshot)


async def run_aggbook(rec: Recording) -> tuple[float, BookSync]:
    feed, conn, sync = build_feed(rec)
    await load_snapshot(feed, conn, rec)
    # a REST snapshot with no diff before it waits for the first one (VenueFeed.deliver_snapshot), as
    # in a live feed: the first timed frame loads it, a cost the plain contender does not pay
    if not (sync.live or CANONICAL in conn.parked):
        raise RuntimeError(f"{rec.venue}: the snapshot did not bring the book live ({sync.reason})")
    handle, frames = feed.handle, rec.frames
    gc.collect()
    start = time.perf_counter()
    for msg in frames:
        conn.frame_bytes = len(msg.data)
        conn.frame_counted = False
        await handle(conn, msg)
    elapsed = time.perf_counter() - start
    return elapsed, sync


# ---------------------------------------------------------------------- plain: the home-grown script
Book = tuple[dict[float, float], dict[float, float]]


def _apply(side: dict[float, float], levels: list) -> None:
    for p, q in levels:
        price = float(p)
        size = float(q)
        if size == 0:
            side.pop(price, None)
        else:
            side[price] = size


def plain_decoder(venue: str) -> Callable[[Any], tuple[list, list]]:
    """frame data -> (bids, asks) level lists, stdlib (or protobuf) only."""
    if venue == "binance":
        def decode(data: str) -> tuple[list, list]:
            event = json.loads(data)["data"]
            return event["b"], event["a"]
    elif venue == "mexc":
        def decode(data: bytes) -> tuple[list, list]:
            body = pb.PushDataV3ApiWrapper.FromString(data).publicAggreDepths
            return ([(lv.price, lv.quantity) for lv in body.bids],
                    [(lv.price, lv.quantity) for lv in body.asks])
    elif venue == "btse":
        def decode(data: str) -> tuple[list, list]:
            book = json.loads(data)["data"]
            return book["bids"], book["asks"]
    else:
        def decode(data: bytes) -> tuple[list, list]:
            tick = json.loads(gzip.decompress(data))["tick"]
            return tick.get("bids") or [], tick.get("asks") or []
    return decode


def plain_snapshot(rec: Recording) -> Book:
    if rec.venue in ("binance", "mexc"):
        body = json.loads(rec.snapshot)
        bids, asks = body["bids"], body["asks"]
    elif rec.venue == "nhex":
        data = json.loads(gzip.decompress(rec.snapshot.data))["data"]
        bids, asks = data["bids"], data["asks"]
    else:
        data = json.loads(rec.snapshot.data)["data"]
        bids, asks = data["bids"], data["asks"]
    return {float(p): float(q) for p, q in bids}, {float(p): float(q) for p, q in asks}


def run_plain(rec: Recording) -> tuple[float, Book]:
    bids, asks = plain_snapshot(rec)
    decode = plain_decoder(rec.venue)
    frames = rec.frames
    gc.collect()
    start = time.perf_counter()
    for msg in frames:
        b, a = decode(msg.data)
        _apply(bids, b)
        _apply(asks, a)
    elapsed = time.perf_counter() - start
    return elapsed, (bids, asks)


# ---------------------------------------------------------------------- the run
@dataclass
class VenueResult:
    venue: str
    frames: int
    levels: int
    applied: int
    t_aggbook: float
    t_plain: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.t_aggbook

    @property
    def ratio(self) -> float:
        return self.t_plain / self.t_aggbook


async def record_all(venues: list[str], frames: int, seed: int) -> list[Recording]:
    recordings = []
    async with aiohttp.ClientSession() as session:
        for venue in venues:
            rec = await RECORDERS[venue](session, frames, seed)
            decode = plain_decoder(venue)
            rec.levels = sum(len(b) + len(a) for b, a in (decode(m.data) for m in rec.frames))
            recordings.append(rec)
    return recordings


async def measure(rec: Recording, runs: int) -> VenueResult:
    t_agg = t_plain = float("inf")
    applied = 0
    for _ in range(runs):
        elapsed, sync = await run_aggbook(rec)
        applied = sync.counters.applied
        if sync.state is not SyncState.LIVE or applied != len(rec.frames) or sync.counters.resyncs:
            raise RuntimeError(f"{rec.venue}: replay did not apply every frame: state {sync.state}, "
                               f"applied {applied}/{len(rec.frames)}, resyncs {dict(sync.counters.resyncs)}")
        t_agg = min(t_agg, elapsed)
        elapsed, (bids, asks) = run_plain(rec)
        t_plain = min(t_plain, elapsed)
        # the two books were built independently from the same frames: their tops must agree
        best_bid, best_ask = sync.book.best_bid(), sync.book.best_ask()
        if best_bid is None or best_ask is None or (float(best_bid[0]), float(best_ask[0])) != (
                max(bids), min(asks)):
            raise RuntimeError(f"{rec.venue}: aggbook top {best_bid}/{best_ask} != plain top "
                               f"{max(bids, default=None)}/{min(asks, default=None)}")
    return VenueResult(rec.venue, len(rec.frames), rec.levels, applied, t_agg, t_plain)


def main(argv: list[str] | None = None) -> list[VenueResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000, help="data frames recorded per venue")
    parser.add_argument("--runs", type=int, default=3, help="repeat each contender, keep the fastest")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--venues", default=",".join(VENUES),
                        help="comma-separated subset of " + ",".join(VENUES))
    args = parser.parse_args(argv)
    venues = [v for v in args.venues.split(",") if v]
    unknown = set(venues) - set(VENUES)
    if unknown or args.frames < 1 or args.runs < 1:
        parser.error(f"unknown venues {sorted(unknown)}" if unknown else "--frames and --runs must be >= 1")

    async def run() -> list[VenueResult]:
        recordings = await record_all(venues, args.frames, args.seed)
        return [await measure(rec, args.runs) for rec in recordings]

    results = asyncio.run(run())
    print(f"one symbol ({CANONICAL}) per venue, {args.frames} recorded data frames each, "
          f"best of {args.runs} runs")
    for r in results:
        print(f"{r.venue:<8} {r.frames} frames, {r.levels} level updates, applied {r.applied}/{r.frames}")
        for name, t in (("aggbook feed", r.t_aggbook), ("plain script", r.t_plain)):
            print(f"  {name} {r.frames / t:>12,.0f} frames/s {r.levels / t:>12,.0f} levels/s")
        print(f"  aggbook/plain {r.ratio:.2f}")
    print("feed_frames_per_s " + " ".join(f"{r.venue}={r.frames_per_s:.0f}" for r in results)
          + " ratio_vs_plain " + " ".join(f"{r.venue}={r.ratio:.2f}" for r in results))
    return results


if __name__ == "__main__":
    main()
