"""Two shards and two gateways over the simulator and a real NATS, in one process, and a WebSocket
client that checks the protocol's promises as it reads (every subscription's ``seq`` goes up by
exactly one per message) and keeps each subscription's latest state and snapshot reasons."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from aggbook.service.config import ServiceConfig
from aggbook.service.demo import DEMO_SYMBOLS, DEMO_VENUES, demo_config, demo_exchange
from aggbook.service.nats.gateway import Gateway, GatewayConfig
from aggbook.service.nats.settings import NatsSettings, Shard, apply_shard
from aggbook.service.nats.view import ViewSettings
from aggbook.service.runtime import Service
from aggbook.simulator.exchange import SimulatedExchange
from tests.conftest import wait_for
from tests.service.nats.natsserver import NatsServer

SYMBOLS = [s.canonical for s in DEMO_SYMBOLS]
DEPTH = 20  # the published depth
FAST_RECONNECT = {"backoff_base": 0.05, "backoff_cap": 0.3}


class Watcher:
    """A WebSocket client on a gateway: quotes of every symbol and each symbol's book at ``DEPTH``."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.latest: dict[str, dict] = {}  # sub -> data of its last snapshot/update
        self.seq: dict[str, int] = {}
        self.reasons: dict[str, list[str]] = {}  # sub -> reasons of its snapshots, in order
        self.messages = 0
        self.statuses: list[dict] = []
        self.errors: list[str] = []
        self.closed: int | None = None
        self._task: asyncio.Task | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self) -> None:
        self.ws = await self.http.ws_connect(self.url.replace("http://", "ws://") + "/v1/ws")
        await self.ws.send_str(
            orjson.dumps({"op": "subscribe", "channel": "quotes", "symbols": SYMBOLS}).decode()
        )
        for symbol in SYMBOLS:
            await self.ws.send_str(
                orjson.dumps(
                    {"op": "subscribe", "channel": "book", "symbol": symbol, "depth": DEPTH}
                ).decode()
            )
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(msg.data)
            kind = data["type"]
            if kind in ("snapshot", "update"):
                sub = data["sub"]
                expected = self.seq.get(sub, 0) + 1
                if data["seq"] != expected:
                    self.errors.append(f"{sub}: seq {data['seq']} after {expected - 1}")
                if kind == "update" and sub not in self.latest:
                    self.errors.append(f"{sub}: an update before any snapshot")
                self.seq[sub] = data["seq"]
                self.latest[sub] = data["data"]
                self.messages += 1
                if kind == "snapshot":
                    self.reasons.setdefault(sub, []).append(data["reason"])
            elif kind == "status":
                self.statuses.append(data)
            elif kind == "error":
                self.errors.append(str(data))
        self.closed = self.ws.close_code

    def book(self, symbol: str) -> dict | None:
        return self.latest.get(f"book:{symbol}:{DEPTH}")

    def quote(self, symbol: str) -> dict | None:
        return self.latest.get(f"quotes:{symbol}")

    def conflated(self) -> dict[str, int]:
        return {sub: reasons.count("conflated") for sub, reasons in self.reasons.items()}

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """``wait_for`` for a condition that must ask over the network."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def merged_truth(sim: SimulatedExchange, symbol: str, depth: int) -> tuple[list, list]:
    """The merged book the simulator's truth implies: per price, the sum over venues (top ``depth``)."""
    out = []
    for idx, best_first in ((0, True), (1, False)):
        total: dict[Decimal, Decimal] = {}
        for venue in DEMO_VENUES:
            server = sim.venues[venue]
            truth = server.truth(server.resolve_symbol(symbol), 1000)
            for price, size in (truth.bids, truth.asks)[idx]:
                total[price] = total.get(price, Decimal(0)) + size
        prices = sorted(total, reverse=best_first)[:depth]
        out.append([(p, total[p]) for p in prices])
    return out[0], out[1]


def book_levels(book: dict | None) -> tuple[list, list] | None:
    if book is None:
        return None
    return (
        [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in book["bids"]],
        [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in book["asks"]],
    )


def equal_to_truth(watcher: Watcher, sim: SimulatedExchange) -> bool:
    return all(book_levels(watcher.book(s)) == merged_truth(sim, s, DEPTH) for s in SYMBOLS)


@dataclass
class Cluster:
    sim: SimulatedExchange
    nats: NatsServer
    config: ServiceConfig
    http: aiohttp.ClientSession
    shards: dict[int, Service] = field(default_factory=dict)
    gateways: list[Gateway] = field(default_factory=list)

    def shard_config(self, index: int) -> ServiceConfig:
        return apply_shard(self.config, Shard(index, 2))

    async def start_shard(self, index: int) -> Service:
        svc = Service(self.shard_config(index))
        await svc.start()
        self.shards[index] = svc
        return svc

    async def stop_shard(self, index: int) -> None:
        await self.shards.pop(index).stop()

    async def start_gateway(self) -> Gateway:
        gw = Gateway(
            GatewayConfig(
                ViewSettings(self.nats.url, stale_after=0.6), host="127.0.0.1", port=0, max_depth=DEPTH
            )
        )
        await gw.start()
        self.gateways.append(gw)
        return gw

    async def ready(self, gw: Gateway, timeout: float = 20.0) -> None:
        """Ready, and every venue of every symbol live (a book not live yet when the markets are
        paused would wait for a market event that never comes)."""
        await wait_for(
            lambda: (
                gw.view.readiness()[0]
                and all(len(gw.view.live_venues(s)) == len(DEMO_VENUES) for s in SYMBOLS)
            ),
            timeout=timeout,
            what="gateway ready with every venue live",
        )

    async def get(self, gw: Gateway, path: str) -> tuple[int, Any]:
        async with self.http.get(gw.url + path) as resp:
            return resp.status, await resp.json()

    async def get_json(self, url: str) -> Any:
        async with self.http.get(url) as resp:
            assert resp.status == 200, (url, await resp.text())
            return await resp.json()

    async def get_text(self, url: str) -> str:
        async with self.http.get(url) as resp:
            return await resp.text()


@contextlib.asynccontextmanager
async def running_cluster(nats: NatsServer, rate: float = 40.0, gateways: int = 2) -> AsyncIterator[Cluster]:
    sim = demo_exchange(rate=rate)
    await sim.start()
    config = dataclasses.replace(
        demo_config(sim, port=0, options=FAST_RECONNECT),
        nats=NatsSettings(url=nats.url, book_depth=DEPTH, book_interval=0.05, heartbeat_interval=0.1),
    )
    http = aiohttp.ClientSession()
    cluster = Cluster(sim, nats, config, http)
    try:
        for index in (0, 1):
            await cluster.start_shard(index)
        for _ in range(gateways):
            await cluster.start_gateway()
        for gw in cluster.gateways:
            await cluster.ready(gw)
        for svc in cluster.shards.values():  # every book live: the markets may be paused from here on
            await wait_for(
                lambda svc=svc: all(
                    len(v) == len(DEMO_VENUES) for v in svc.aggregator.readiness()[1].values()
                ),
                timeout=20,
                what="every venue live on the shard",
            )
        yield cluster
    finally:
        for gw in cluster.gateways:
            await gw.stop()
        for svc in cluster.shards.values():
            await svc.stop()
        await http.close()
        await sim.stop()
