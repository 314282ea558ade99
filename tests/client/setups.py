"""The client's test set-ups: the demo (simulated venues and the service, 127.0.0.1, port 0) and a
scripted WebSocket server for what a correct service never does (skipped seqs, bad frames)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from aggbook.client import Client
from aggbook.service.config import WebSocketSettings
from aggbook.service.demo import DEMO_VENUES, demo_config, demo_exchange
from aggbook.service.runtime import Service
from aggbook.simulator.exchange import SimulatedExchange

FAST = {"reconnect_base": 0.02, "reconnect_cap": 0.2}


@dataclass
class Demo:
    sim: SimulatedExchange
    svc: Service

    async def restart(self) -> None:
        """Stop the service and start a new one on the same port (a deploy, a crash and restart)."""
        port = self.svc.port
        await self.svc.stop()
        self.svc = Service(demo_config(self.sim, port=port, websocket=WebSocketSettings(heartbeat=5.0)))
        await self.svc.start()


async def wait_ready(client: Client, timeout: float = 15.0) -> None:
    """Every demo venue is live on every symbol (readiness needs only one per symbol)."""

    async def all_live() -> bool:
        status = await client.get_status()
        return status.ready and all(len(v) == len(DEMO_VENUES) for v in status.live_venues.values())

    async def poll() -> None:
        while not await all_live():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    sim = demo_exchange(rate=20.0)
    await sim.start()
    svc = Service(demo_config(sim, port=0, websocket=WebSocketSettings(heartbeat=5.0)))
    await svc.start()
    d = Demo(sim, svc)
    try:
        yield d
    finally:
        await d.svc.stop()
        await sim.stop()


# ---------------------------------------------------------------------- a scripted WebSocket server
Script = Callable[["FakeSession"], Awaitable[None]]


@dataclass
class FakeSession:
    """One connection to the scripted server: what the client sent, and a way to answer."""

    ws: web.WebSocketResponse
    received: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
        data: dict[str, Any] = orjson.loads(msg.data)
        self.received.append(data)
        return data

    async def send(self, obj: dict[str, Any] | str) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    async def ack(self, request: dict[str, Any], subs: list[Any]) -> None:
        await self.send({"type": "ack", "op": request["op"], "subs": subs, "id": request["id"]})

    async def state(self, kind: str, sub: str, seq: int, data: dict[str, Any], reason: str | None = None,
                    channel: str = "quotes") -> None:
        msg: dict[str, Any] = {"type": kind, "sub": sub, "channel": channel, "symbol": data.get("symbol"),
                               "seq": seq, "ts": 1.0, "recv_ts": 0.5, "data": data}
        if reason is not None:
            msg["reason"] = reason
        await self.send(msg)

    async def until_closed(self) -> None:
        """Read (and keep) whatever else the client sends until it closes the connection."""
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                self.received.append(orjson.loads(msg.data))
        self.closed.set()


@dataclass
class FakeServer:
    url: str
    sessions: list[FakeSession]


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[[Script], Awaitable[FakeServer]]]:
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> FakeServer:
        sessions: list[FakeSession] = []

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            session = FakeSession(ws)
            sessions.append(session)
            await script(session)
            await ws.close()
            return ws

        app = web.Application()
        app.router.add_get("/v1/ws", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return FakeServer(f"http://127.0.0.1:{port}", sessions)

    yield start
    for runner in runners:
        await runner.cleanup()


def quote_data(bid: str = "100", symbol: str = "BTC-USDT") -> dict[str, Any]:
    """A consolidated quote as the service renders it (one venue, one side)."""
    return {
        "symbol": symbol,
        "bid": {"price": bid, "size": "1", "fee_adjusted": False,
                "venues": [{"venue": "alpha", "price": bid, "size": "1"}]},
        "ask": None, "crossed": False, "locked": False, "spread": None, "fees": False,
        "venues": [{"venue": "alpha", "state": "live", "included": True, "excluded_reason": None,
                    "bid": {"price": bid, "size": "1"}, "ask": None, "fee_bps": "0"}],
    }


def quote_sub(symbol: str = "BTC-USDT") -> dict[str, Any]:
    return {"sub": f"quotes:{symbol}", "channel": "quotes", "symbol": symbol, "fees": False}
