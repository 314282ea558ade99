"""A gateway's WebSocket fan-out from the messages it reads: each NATS message renders its payload
once, for every subscriber, and only what the message moved goes out (no NATS server needed: the
messages are handed to the view as its subscription would)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from aggbook.service.config import WebSocketSettings
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.nats import subjects
from aggbook.service.nats.metrics import GatewayMetrics
from aggbook.service.nats.view import NatsView, ViewSettings
from aggbook.service.ws import Client, Hub
from tests.conftest import wait_for
from tests.service.fakes import RecordingSocket, attach_client

SYMBOL = "BTC-USDT"


def envelope(seq: int, **body: Any) -> dict[str, Any]:
    return {"shard": "0/1", "instance": "0-a", "started": 1.0, "seq": seq, "ts": 2.0, "symbol": SYMBOL,
            "event_ts": 1.5, "recv_ts": 1.75 + seq, **body}


def quote(seq: int, bid: str) -> dict[str, Any]:
    q = {"symbol": SYMBOL, "bid": {"price": bid, "size": "1"}, "ask": None,
         "venues": [{"venue": "binance", "included": True}]}
    return envelope(seq, quote=q, quote_fees=q, venues={"binance": {"updated_at": 1.0, "last_id": seq}})


def book(seq: int, bid: str) -> dict[str, Any]:
    ladder = {"symbol": SYMBOL, "depth": 5, "bids": [[bid, "1"]], "asks": [], "venues": ["binance"],
              "excluded": {}}
    return envelope(seq, book=ladder)


async def test_each_message_renders_once_for_all_subscribers_and_sends_only_what_it_moved() -> None:
    view = NatsView(ViewSettings("nats://127.0.0.1:1"), GatewayMetrics(CollectorRegistry()))
    view._heartbeat({"index": 0, "count": 1, "instance": "0-a", "started": 1.0,
                     "symbols": {SYMBOL: {"binance": "BTCUSDT"}}})
    view._apply(subjects.QUOTE, SYMBOL, quote(1, "100"), from_snapshot=False)
    view._apply(subjects.BOOK, SYMBOL, book(1, "100"), from_snapshot=False)
    hub = Hub(view, WebSocketSettings(), ServiceMetrics(), default_depth=5, max_depth=5,
              renders=view.payloads)
    clients: list[tuple[Client, RecordingSocket]] = []
    for _ in range(3):
        sock = RecordingSocket()
        client = attach_client(hub, sock)
        for sub in ({"channel": "quotes", "symbols": [SYMBOL]}, {"channel": "book", "symbol": SYMBOL}):
            client.handle_text(orjson.dumps({"op": "subscribe", **sub}).decode())
        clients.append((client, sock))
    offered: list[str] = []  # the channel of every payload the hub hands a client, sent or not

    for client, _ in clients:
        def spy(sub: Any, *args: Any, _send: Any = client.send_sub, **kwargs: Any) -> None:
            offered.append(sub.channel)
            _send(sub, *args, **kwargs)

        client.send_sub = spy  # type: ignore[method-assign]

    def data(kind: str) -> list[list[dict]]:
        return [[f for f in sock.frames if f.get("type") == kind] for _, sock in clients]

    try:
        await wait_for(lambda: all(len(s) == 2 for s in data("snapshot")), what="the snapshots")
        renders = view.payloads.renders
        offered.clear()

        view._apply(subjects.QUOTE, SYMBOL, quote(2, "101"), from_snapshot=False)
        await wait_for(lambda: all(len(u) == 1 for u in data("update")), what="the quote update")
        assert view.payloads.renders == renders + 1  # the quote, once for three subscribers; no book
        assert offered == ["quotes"] * 3  # the book subscriptions are not even looked at
        for updates in data("update"):
            assert updates[0]["channel"] == "quotes" and updates[0]["data"]["bid"]["price"] == "101"
            assert updates[0]["recv_ts"] == 3.75 and updates[0]["seq"] == 2

        view._apply(subjects.BOOK, SYMBOL, book(2, "101"), from_snapshot=False)
        await wait_for(lambda: all(len(u) == 2 for u in data("update")), what="the book update")
        assert view.payloads.renders == renders + 2
        assert offered == ["quotes"] * 3 + ["book"] * 3
        for updates in data("update"):
            assert updates[1]["channel"] == "book" and updates[1]["data"]["bids"] == [["101", "1"]]

        view._status("binance", SYMBOL, {"venue": "binance", "symbol": SYMBOL, "state": "resyncing",
                                         "previous": "live", "reason": "gap", "detail": ""})
        await wait_for(lambda: all(len(s) == 1 for s in data("status")), what="the status")
        assert view.payloads.renders == renders + 2 and all(len(u) == 2 for u in data("update"))
        assert offered == ["quotes"] * 3 + ["book"] * 3
        assert all(set(sock.frames[-1]) >= {"venue", "state"} for _, sock in clients)
    finally:
        await hub.close_all()
