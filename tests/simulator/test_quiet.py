"""Quiet periods: a symbol's market holds still while the venue stays connected and keeps its heartbeats.

A client must be able to tell a quiet book from a dead connection, so the simulator can make one
symbol quiet for N seconds (``POST /_sim/quiet``, or at random with ``quiet_chance``).  Checked with
raw clients: during the quiet period no book frame of that symbol goes out (NHEX's mbp.150 keeps
its documented empty pushes unless ``mbp150_future_shape``), other symbols and pings carry on, and
afterwards the stream resumes with contiguous sequence ids.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from aggbook.simulator.binance import BinanceSpotVenue
from aggbook.simulator.exchange import SimulatedExchange, venue_classes
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.nhex import NhexVenue
from tests.simulator.test_core import wait_until

SYMBOLS = DEFAULT_SYMBOLS[:2]  # BTC-USDT, ETH-USDT
LONG = 600.0  # a quiet period the test ends itself, so nothing depends on how fast the machine is


async def post(session: aiohttp.ClientSession, url: str, body: object) -> tuple[int, dict]:
    async with session.post(url, json=body) as resp:
        return resp.status, await resp.json()


# ---------------------------------------------------------------------- control
@pytest.mark.parametrize("name", sorted(venue_classes()))
async def test_quiet_control_endpoint(name: str, session: aiohttp.ClientSession) -> None:
    venue = venue_classes()[name](SYMBOLS, autostart_pump=False)
    async with venue:
        base = venue.base_url
        status, body = await post(session, f"{base}/_sim/quiet", {"symbol": "BTC-USDT", "seconds": LONG})
        assert status == 200 and list(body["quiet"]) == [venue.resolve_symbol("BTC-USDT")]
        assert 0 < body["quiet"][venue.resolve_symbol("BTC-USDT")] <= LONG
        async with session.get(f"{base}/_sim/quiet") as resp:
            assert list((await resp.json())["quiet"]) == [venue.resolve_symbol("BTC-USDT")]
        async with session.get(f"{base}/_sim/") as resp:
            assert "POST /_sim/quiet" in (await resp.json())["endpoints"]
        btc, eth = (venue.markets[venue.resolve_symbol(s)] for s in ("BTC-USDT", "ETH-USDT"))
        before, eth_before = btc.snapshot(), eth.snapshot()
        await venue.step_all(5)
        assert btc.snapshot() == before, "a quiet market does not change"
        assert eth.snapshot() != eth_before and btc.clock == eth.clock == 5
        for bad in ({"symbol": "BTC-USDT"}, {"symbol": "BTC-USDT", "seconds": -1}, {"seconds": 1},
                    {"symbol": "BTC-USDT", "seconds": "soon"}, [1]):
            status, body = await post(session, f"{base}/_sim/quiet", bad)
            assert status == 400 and "bad quiet request" in body["error"], bad
        status, body = await post(session, f"{base}/_sim/quiet", {"symbol": "NOPE-USDT", "seconds": 1})
        assert status == 404 and "NOPE-USDT" in body["error"]
        status, body = await post(session, f"{base}/_sim/quiet", {"symbol": "BTC-USDT", "seconds": 0})
        assert (status, body) == (200, {"quiet": {}})
        await venue.step_all(1)
        assert btc.snapshot() != before, "the market moves again"


async def test_random_quiet_periods_hold_the_market_and_keep_the_reference_clock() -> None:
    venue = BinanceSpotVenue(SYMBOLS, autostart_pump=False, quiet_chance=1.0, quiet_seconds=LONG)
    async with venue:
        await venue.step_all(6)
        for market in venue.markets.values():
            assert (market.steps, market.clock) == (1, 6), "one step, then five held while quiet"
        assert set(venue.quiet_left()) == set(venue.markets)
    plain = BinanceSpotVenue(SYMBOLS, autostart_pump=False)
    assert plain.options.quiet_chance == 0.0 and plain.quiet_left() == {}


async def test_quiet_for_every_venue_of_the_exchange() -> None:
    async with SimulatedExchange(symbols=SYMBOLS, autostart_pump=False) as sim:
        sim.quiet("ETH-USDT", LONG)
        for venue in sim.venues.values():
            assert list(venue.quiet_left()) == [venue.resolve_symbol("ETH-USDT")]


# ---------------------------------------------------------------------- Binance: diff stream and pings
class BinanceReader:
    """Records every depth event per symbol and every server ping (answered with an echoing pong)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: dict[str, list[dict]] = {}
        self.pings = 0
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.PING:
                self.pings += 1
                await self.ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)["data"]
                self.events.setdefault(data["s"], []).append(data)

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.ws.close()


@pytest.fixture
async def binance(session: aiohttp.ClientSession) -> AsyncIterator[tuple[BinanceSpotVenue, BinanceReader]]:
    venue = BinanceSpotVenue(SYMBOLS, seed=3, rate=50.0, ping_interval=0.1)
    async with venue:
        ws = await session.ws_connect(venue.urls()["ws_url"] + "/stream?streams=btcusdt@depth/ethusdt@depth",
                                      autoping=False)
        reader = BinanceReader(ws)
        try:
            yield venue, reader
        finally:
            await reader.aclose()


def assert_contiguous(events: list[dict]) -> None:
    for prev, event in zip(events, events[1:], strict=False):
        assert event["U"] == prev["u"] + 1, (prev["u"], event["U"])


async def test_binance_quiet_symbol_sends_nothing_but_pings_go_on_and_ids_stay_contiguous(
    binance: tuple[BinanceSpotVenue, BinanceReader], session: aiohttp.ClientSession,
) -> None:
    venue, reader = binance
    count = lambda s: len(reader.events.get(s, []))  # noqa: E731
    await wait_until(lambda: count("BTCUSDT") >= 5 and count("ETHUSDT") >= 5, what="both streams flowing")
    status, _ = await post(session, f"{venue.base_url}/_sim/quiet", {"symbol": "BTCUSDT", "seconds": LONG})
    assert status == 200
    quiet_at = venue.current_seq("BTCUSDT")  # no BTC step can start once the quiet period is set
    pings, eth = reader.pings, count("ETHUSDT")
    await wait_until(lambda: reader.pings >= pings + 3 and count("ETHUSDT") >= eth + 20, what="pings and ETH")
    assert venue.current_seq("BTCUSDT") == quiet_at
    assert all(e["u"] <= quiet_at for e in reader.events["BTCUSDT"]), "no BTC frame while quiet"
    assert not reader.ws.closed

    venue.quiet("BTCUSDT", 0)
    await wait_until(lambda: reader.events["BTCUSDT"][-1]["u"] > quiet_at, what="BTC resuming")
    resumed = next(e for e in reader.events["BTCUSDT"] if e["u"] > quiet_at)
    assert resumed["U"] == quiet_at + 1, "the first update after the quiet period follows on"
    assert_contiguous(reader.events["BTCUSDT"])
    assert_contiguous(reader.events["ETHUSDT"])


async def test_binance_quiet_period_ends_by_itself(binance: tuple[BinanceSpotVenue, BinanceReader]) -> None:
    venue, reader = binance
    await wait_until(lambda: len(reader.events.get("BTCUSDT", [])) >= 3, what="BTC flowing")
    venue.quiet("BTC-USDT", 0.3)
    quiet_at = venue.current_seq("BTCUSDT")
    await wait_until(lambda: reader.events["BTCUSDT"][-1]["u"] > quiet_at, what="BTC resuming on its own")
    assert venue.quiet_left() == {}
    assert_contiguous(reader.events["BTCUSDT"])


# ---------------------------------------------------------------------- NHEX: mbp topics and JSON pings
class MbpReader:
    """Records pushes per topic and answers the venue's ``{"ping": ts}`` heartbeats."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pushes: dict[str, list[dict]] = {}
        self.pings = 0
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = json.loads(gzip.decompress(msg.data), parse_float=Decimal)
            if "ping" in frame:
                self.pings += 1
                await self.ws.send_str(json.dumps({"pong": frame["ping"]}))
            elif "tick" in frame and "ch" in frame:
                self.pushes.setdefault(frame["ch"], []).append(frame["tick"])

    def count(self, topic: str) -> int:
        return len(self.pushes.get(topic, []))

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.ws.close()


BTC5, BTC150, ETH5 = "market.btcusdt.mbp.5", "market.btcusdt.mbp.150", "market.ethusdt.mbp.5"


@pytest.mark.parametrize("future_shape", [False, True], ids=["documented-150", "future-150"])
async def test_nhex_quiet_symbol_pushes_no_book_change_and_pings_go_on(
    future_shape: bool, session: aiohttp.ClientSession,
) -> None:
    """mbp.5 pushes nothing while the book is unchanged; mbp.150 pushes only empty diffs (both sides
    ``[]``, the chain advancing) as NHEX documents, or nothing at all in the announced future shape."""
    venue = NhexVenue(SYMBOLS, seed=4, rate=50.0, ping_interval=0.1, max_missed_pongs=0,
                      fine_size_symbols=(), mbp150_future_shape=future_shape)
    async with venue:
        ws = await session.ws_connect(venue.urls()["ws_url"])
        reader = MbpReader(ws)
        try:
            for i, topic in enumerate((BTC5, BTC150, ETH5)):
                await ws.send_str(json.dumps({"sub": topic, "id": str(i)}))
            await wait_until(lambda: all(reader.count(t) >= 3 for t in (BTC5, BTC150, ETH5)), what="pushes")

            venue.quiet("BTC-USDT", LONG)
            await venue.interval_tick()  # flush what changed before the quiet period began
            at5, at150 = venue.topic_seq("btcusdt", 5), venue.topic_seq("btcusdt", 150)
            pings, eth = reader.pings, reader.count(ETH5)
            await wait_until(lambda: reader.pings >= pings + 3 and reader.count(ETH5) >= eth + 10,
                             what="pings and ETH pushes")
            assert venue.topic_seq("btcusdt", 5) == at5
            assert all(t["seqNum"] <= at5 for t in reader.pushes[BTC5]), "no mbp.5 push while quiet"
            late150 = [t for t in reader.pushes[BTC150] if t["seqNum"] > at150]
            if future_shape:
                await venue.interval_tick()
                assert venue.topic_seq("btcusdt", 150) == at150 and late150 == []
            else:
                await wait_until(lambda: reader.pushes[BTC150][-1]["seqNum"] > at150, what="empty 150 push")
                late150 = [t for t in reader.pushes[BTC150] if t["seqNum"] > at150]
                assert late150 and all(t["bids"] == [] and t["asks"] == [] for t in late150)

            venue.quiet("BTC-USDT", 0)
            await wait_until(lambda: reader.pushes[BTC5][-1]["seqNum"] > at5, what="mbp.5 resuming")
            await wait_until(lambda: any(t.get("bids") or t.get("asks") for t in reader.pushes[BTC150]
                                         if t["seqNum"] > at150), what="mbp.150 carrying a change again")
            for topic in (BTC5, BTC150, ETH5):
                pushes = reader.pushes[topic]
                for prev, push in zip(pushes, pushes[1:], strict=False):
                    assert push["prevSeqNum"] == prev["seqNum"], (topic, prev["seqNum"], push["prevSeqNum"])
            assert not ws.closed
        finally:
            await reader.aclose()
