"""The /v1/ws protocol over a real socket, with fake feeds so every message is predictable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from aggbook.service.runtime import Service
from aggbook.service.ws import Client
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, fake_config, load_all


class Ws:
    """A test client: send JSON, receive decoded messages (heartbeats skipped unless asked for)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.heartbeats = 0

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    async def recv(self, timeout: float = 5.0, heartbeats: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
            data = orjson.loads(msg.data)
            if data["type"] == "heartbeat" and not heartbeats:
                self.heartbeats += 1
                continue
            return data

    async def expect(self, type_: str, **fields: Any) -> dict:
        msg = await self.recv()
        assert msg["type"] == type_, msg
        for k, v in fields.items():
            assert msg[k] == v, (k, msg)
        return msg

    async def quiet(self) -> None:
        """Nothing else is queued for us: a ping's pong is the very next message."""
        await self.send({"op": "ping", "id": "q"})
        await self.expect("pong", id="q")


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Service, FakeFeeds, aiohttp.ClientSession]]:
    feeds = FakeFeeds()
    service = Service(fake_config(max_subscriptions=4, heartbeat=30.0), feed_factory=feeds)
    await service.start()
    load_all(feeds)
    async with aiohttp.ClientSession() as http:
        yield service, feeds, http
    await service.stop()


async def connect(service: Service, http: aiohttp.ClientSession) -> Ws:
    return Ws(await http.ws_connect(f"{service.url}/v1/ws"))


async def test_quotes_snapshot_then_updates_only_on_change(setup) -> None:
    service, feeds, http = setup
    ws = await connect(service, http)
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["btc-usdt"], "id": 7})
    ack = await ws.expect("ack", op="subscribe", id=7)
    assert ack["subs"] == [
        {"sub": "quotes:BTC-USDT", "channel": "quotes", "symbol": "BTC-USDT", "fees": False}
    ]
    snap = await ws.expect("snapshot", sub="quotes:BTC-USDT", seq=1, reason="subscribe")
    assert snap["data"]["bid"]["price"] == "100" and snap["data"]["ask"]["price"] == "100.5"
    assert "age_seconds" not in snap["data"]["venues"][0]

    feeds["alpha"].delta("BTC-USDT", bids=[("100.2", "3")])
    up = await ws.expect("update", sub="quotes:BTC-USDT", seq=2)
    assert up["data"]["bid"] == {
        "price": "100.2",
        "size": "3",
        "fee_adjusted": False,
        "venues": [{"venue": "alpha", "price": "100.2", "size": "3"}],
    }
    feeds["alpha"].delta("BTC-USDT", bids=[("90", "1")])  # below the top: no quote update
    await ws.quiet()
    feeds["beta"].delta("BTC-USDT", asks=[("100.3", "1")])
    up = await ws.expect("update", seq=3)
    assert up["data"]["ask"]["price"] == "100.3" and up["data"]["spread"] == "0.1"

    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "fees": True})
    await ws.expect("ack")
    fee_snap = await ws.expect("snapshot", sub="quotes:BTC-USDT:fees", seq=1)
    assert fee_snap["data"]["fees"] is True and fee_snap["data"]["bid"]["fee_adjusted"] is True


async def test_book_updates_only_when_the_top_n_changes(setup) -> None:
    service, feeds, http = setup
    ws = await connect(service, http)
    await ws.send(
        {"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 1, "venues": ["beta"]}
    )
    ack = await ws.expect("ack")
    assert ack["subs"][0] == {
        "sub": "book:BTC-USDT:1:beta",
        "channel": "book",
        "symbol": "BTC-USDT",
        "depth": 1,
        "venues": ["beta"],
    }
    snap = await ws.expect("snapshot", seq=1)
    assert snap["data"]["bids"] == [{"price": "100", "size": "0.5", "venues": {"beta": "0.5"}}]
    assert snap["data"]["venues"] == ["beta"]
    feeds["alpha"].delta("BTC-USDT", bids=[("100.4", "1")])  # another venue: not in this ladder
    feeds["beta"].delta("BTC-USDT", bids=[("98", "1")])  # below depth 1
    await ws.quiet()
    feeds["beta"].delta("BTC-USDT", bids=[("100.00", "0.75")])  # size at the top
    up = await ws.expect("update", seq=2)
    assert up["data"]["bids"][0]["size"] == "0.75"


async def test_sequence_continuity_and_status_across_a_venue_resync(setup) -> None:
    service, feeds, http = setup
    ws = await connect(service, http)
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
    await ws.send({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 3})
    seqs: dict[str, list[int]] = {}
    statuses: list[dict] = []
    last: dict[str, dict] = {}

    async def drain_until(cond) -> None:
        deadline = time.monotonic() + 5
        while not cond():
            assert time.monotonic() < deadline, (seqs, statuses)
            msg = await ws.recv()
            if msg["type"] in ("snapshot", "update"):
                seqs.setdefault(msg["sub"], []).append(msg["seq"])
                last[msg["sub"]] = msg
            elif msg["type"] == "status":
                statuses.append(msg)

    await drain_until(lambda: len(seqs) == 2)
    feeds["alpha"].gap("BTC-USDT")
    await drain_until(
        lambda: (
            any(s["state"] == "resyncing" for s in statuses)
            and last["quotes:BTC-USDT"]["data"]["venues"][0]["included"] is False
        )
    )
    assert statuses[0] == {
        **statuses[0],
        "venue": "alpha",
        "symbol": "BTC-USDT",
        "state": "resyncing",
        "previous": "live",
        "reason": "gap",
    }
    feeds["alpha"].publish_new("BTC-USDT")  # the feed reconnects: a new book replaces the old one
    feeds["alpha"].load("BTC-USDT", [("100.1", "1")], [("101", "1")], last=500)
    await drain_until(
        lambda: (
            any(s["state"] == "live" for s in statuses)
            and last["quotes:BTC-USDT"]["data"]["bid"]["price"] == "100.1"
        )
    )
    for i in range(5):
        feeds["beta"].delta("BTC-USDT", bids=[("99", str(5 + i))])
    await drain_until(
        lambda: (
            {"price": "99", "size": "9", "venues": {"beta": "9"}} in last["book:BTC-USDT:3"]["data"]["bids"]
        )
    )
    for sub, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), (sub, got)
    assert len(seqs["book:BTC-USDT:3"]) >= 4


async def test_errors_keep_the_connection_usable(setup) -> None:
    service, _, http = setup
    ws = await connect(service, http)
    cases: list[tuple[Any, str]] = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_request"),
        ({"op": "dance"}, "unknown_op"),
        ({"id": 3}, "unknown_op"),
        ({"op": "subscribe", "channel": "trades", "symbols": ["BTC-USDT"]}, "unknown_channel"),
        ({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "NOPE-USDT"]}, "unknown_symbol"),
        ({"op": "subscribe", "channel": "quotes", "symbols": []}, "bad_request"),
        ({"op": "subscribe", "channel": "quotes", "symbols": "BTC-USDT"}, "bad_request"),
        ({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "fees": "yes"}, "bad_request"),
        ({"op": "subscribe", "channel": "book", "symbol": "NOPE-USDT"}, "unknown_symbol"),
        ({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 0}, "bad_request"),
        ({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": "5"}, "bad_request"),
        ({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 100_000}, "bad_request"),
        ({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "venues": ["zeta"]}, "unknown_venue"),
        ({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "venues": "alpha"}, "bad_request"),
        ({"op": "unsubscribe", "channel": "quotes", "symbols": ["BTC-USDT"]}, "not_subscribed"),
        ({"op": "unsubscribe", "subs": ["quotes:ETH-USDT"]}, "not_subscribed"),
        ({"op": "unsubscribe", "subs": "quotes:ETH-USDT"}, "bad_request"),
        ({"op": "ping", "id": {"nested": 1}}, "bad_request"),
        ({"op": "ping", "id": True}, "bad_request"),
        ({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "id": False}, "bad_request"),
        ('{"op": "ping", "id": 1e999}', "bad_json"),
        ('{"op": "ping", "id": "\\ud800"}', "bad_json"),  # an escaped lone surrogate
        ("[" * 10_000 + "]" * 10_000, "bad_json"),  # nesting deeper than the parser allows
    ]
    for i, (request, code) in enumerate(cases):
        if isinstance(request, dict) and "id" not in request:
            request = {**request, "id": i}
        await ws.send(request)
        err = await ws.expect("error", code=code)
        assert err["message"]
        req_id = request.get("id") if isinstance(request, dict) else None
        if isinstance(req_id, int) and not isinstance(req_id, bool):
            assert err["id"] == req_id
        elif isinstance(req_id, bool):
            assert "id" not in err  # a refused id is not echoed
    await ws.ws.send_bytes(b"\x00\x01")
    await ws.expect("error", code="bad_request")
    # nothing above created a subscription, and the connection still works
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"], "id": "ok"})
    assert len((await ws.expect("ack", id="ok"))["subs"]) == 2
    await ws.expect("snapshot", seq=1)
    await ws.expect("snapshot", seq=1)
    # the limit is 4 per connection: 2 more are fine, a third is refused, a repeat costs nothing
    await ws.send({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 2})
    await ws.expect("ack")
    await ws.expect("snapshot")
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"], "fees": True})
    err = await ws.expect("error", code="too_many_subscriptions")
    assert "at most 4" in err["message"]
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
    assert (await ws.expect("ack"))["subs"][0]["sub"] == "quotes:BTC-USDT"
    await ws.quiet()  # no second snapshot for a subscription that already exists
    assert service.hub.stats()["subscriptions"] == 3


async def test_unsubscribe_stops_updates(setup) -> None:
    service, feeds, http = setup
    ws = await connect(service, http)
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"]})
    await ws.expect("ack")
    await ws.expect("snapshot")
    await ws.expect("snapshot")
    await ws.send({"op": "unsubscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "id": 1})
    assert (await ws.expect("ack", op="unsubscribe", id=1))["subs"] == ["quotes:BTC-USDT"]
    feeds["alpha"].delta("BTC-USDT", bids=[("100.3", "1")])
    feeds["alpha"].delta("ETH-USDT", bids=[("10.5", "1")])
    up = await ws.expect("update", sub="quotes:ETH-USDT", seq=2)
    assert up["data"]["bid"]["price"] == "10.5"
    await ws.quiet()
    await ws.send({"op": "unsubscribe", "subs": ["quotes:ETH-USDT"]})
    await ws.expect("ack", subs=["quotes:ETH-USDT"])
    assert service.hub.stats()["subscriptions"] == 0


async def test_unsubscribe_naming_a_subscription_twice(setup) -> None:
    service, _, http = setup
    ws = await connect(service, http)
    for unsubscribe in (
        {"op": "unsubscribe", "subs": ["quotes:BTC-USDT", "quotes:BTC-USDT"], "id": 1},
        {"op": "unsubscribe", "channel": "quotes", "symbols": ["BTC-USDT", "btc-usdt"], "id": 2},
    ):
        await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
        await ws.expect("ack")
        await ws.expect("snapshot")
        await ws.send(unsubscribe)
        assert (await ws.expect("ack", op="unsubscribe", id=unsubscribe["id"]))["subs"] == ["quotes:BTC-USDT"]
        await ws.quiet()
    assert service.hub.stats()["subscriptions"] == 0


async def test_a_failing_request_is_an_internal_error_and_the_connection_stays(setup, monkeypatch) -> None:
    service, _, http = setup
    ws = await connect(service, http)

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(service.hub, "subscribe", broken)
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "id": 9})
    await ws.expect("error", code="internal", id=9)
    monkeypatch.undo()
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"], "id": 10})
    await ws.expect("ack", id=10)
    await ws.expect("snapshot", seq=1)


async def test_a_failing_session_closes_with_1011_not_an_http_page(setup, monkeypatch) -> None:
    service, _, http = setup
    ws = await connect(service, http)

    def broken(self: object, text: str) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(Client, "handle_text", broken)  # a failure outside the per-request guard
    await ws.send({"op": "ping"})
    msg = await ws.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011, msg
    await wait_for(lambda: not service.hub.clients, what="client removed")


async def test_server_heartbeats() -> None:
    feeds = FakeFeeds()
    service = Service(fake_config(heartbeat=0.05), feed_factory=feeds)
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            ws = await connect(service, http)
            for _ in range(2):
                beat = await ws.recv(heartbeats=True)
                assert beat["type"] == "heartbeat" and beat["ts"] > 1.7e9
    finally:
        await service.stop()


async def test_shutdown_sends_every_client_a_close_frame() -> None:
    feeds = FakeFeeds()
    service = Service(fake_config(), feed_factory=feeds)
    await service.start()
    async with aiohttp.ClientSession() as http:
        clients = [await connect(service, http) for _ in range(3)]
        await clients[0].send({"op": "ping"})
        await clients[0].expect("pong")
        await service.stop()
        for c in clients:
            msg = await c.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
    assert all(f.stopped for f in feeds.feeds.values())


async def test_ws_metrics(setup) -> None:
    service, feeds, http = setup
    ws = await connect(service, http)
    await ws.send({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
    await ws.expect("ack")
    await ws.expect("snapshot")
    text = service.metrics.render().decode()
    assert "aggbook_ws_clients 1.0" in text
    assert "aggbook_ws_messages_sent_total 2.0" in text
    await asyncio.wait_for(ws.ws.close(), 5)


async def test_oversized_client_frame_closes_with_1009(setup) -> None:
    service, _, http = setup
    ws = await connect(service, http)
    await ws.send({"op": "ping", "id": "x" * 70_000})
    msg = await ws.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_a_client_gone_during_the_handshake_is_a_disconnect_not_an_error(
    setup, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The upgrade is answered only once the client has left: counted and logged, no traceback."""
    service, _, _ = setup
    prepare = web.WebSocketResponse.prepare
    gone: list[bool] = []

    def client_gone(request: web.BaseRequest) -> bool:
        return request.transport is None or request.transport.is_closing()

    async def once_the_client_left(self: web.WebSocketResponse, request: web.BaseRequest):  # type: ignore[no-untyped-def]
        await wait_for(lambda: client_gone(request), 5, "the client to go")
        gone.append(True)
        return await prepare(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", once_the_client_left)
    reader, writer = await asyncio.open_connection(service.host, service.port)
    writer.write(
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await writer.drain()
    with caplog.at_level(logging.DEBUG):
        writer.close()
        await writer.wait_closed()
        counted = "aggbook_ws_handshakes_abandoned_total 1.0"
        await wait_for(lambda: counted in service.metrics.render().decode(), 5, "the handshake counted")
    assert gone and not service.hub.clients
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not problems, [(r.name, r.getMessage()) for r in problems]
    assert any(r.getMessage() == "websocket client left during the handshake" for r in caplog.records)
    monkeypatch.undo()
    ws = await connect(service, setup[2])  # the service goes on serving
    await ws.send({"op": "ping", "id": 1})
    await ws.expect("pong", id=1)
