"""A restarted shard's predecessor is not served as current: after the new process's first
heartbeat, a quote or book held from the old process excludes the symbol until the new process has
published its own (no NATS server needed: messages are handed to the view as its subscription would)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from aggbook.service.nats import subjects
from aggbook.service.nats.metrics import GatewayMetrics
from aggbook.service.nats.view import SHARD_STALE, NatsView, ViewSettings

SYMBOL = "BTC-USDT"


def envelope(instance: str, started: float, seq: int, **body: Any) -> dict[str, Any]:
    return {"shard": "0/1", "instance": instance, "started": started, "seq": seq, "ts": started + 1,
            "symbol": SYMBOL, "event_ts": started, "recv_ts": started + 0.5, **body}


def quote(instance: str, started: float, seq: int, bid: str) -> dict[str, Any]:
    q = {"symbol": SYMBOL, "bid": {"price": bid, "size": "1"}, "ask": None,
         "venues": [{"venue": "binance", "included": True}]}
    return envelope(instance, started, seq, quote=q, quote_fees=q,
                    venues={"binance": {"updated_at": started, "last_id": seq}})


def book(instance: str, started: float, seq: int, bid: str) -> dict[str, Any]:
    ladder = {"symbol": SYMBOL, "depth": 5, "bids": [[bid, "1"]], "asks": [], "venues": ["binance"],
              "excluded": {}}
    return envelope(instance, started, seq, book=ladder)


def heartbeat(view: NatsView, instance: str, started: float) -> None:
    view._heartbeat({"index": 0, "count": 1, "instance": instance, "started": started,
                     "symbols": {SYMBOL: {"binance": "BTCUSDT"}}})


def served(view: NatsView) -> tuple[dict, dict]:
    return (orjson.loads(view.payloads.quote_stream(SYMBOL, False)),
            orjson.loads(view.payloads.ladder(SYMBOL, 5)))


def test_the_old_process_state_is_excluded_until_the_new_process_published_quote_and_book() -> None:
    view = NatsView(ViewSettings("nats://127.0.0.1:1"), GatewayMetrics(CollectorRegistry()))
    view.loaded.set()  # as after reading the key-value bucket
    heartbeat(view, "0-a", 1.0)
    view._apply(subjects.QUOTE, SYMBOL, quote("0-a", 1.0, 7, "100"), from_snapshot=False)
    view._apply(subjects.BOOK, SYMBOL, book("0-a", 1.0, 7, "100"), from_snapshot=False)
    assert view.live_venues(SYMBOL) == ["binance"] and view.readiness()[0]
    q, b = served(view)
    assert q["bid"]["price"] == "100" and b["bids"] == [["100", "1"]]

    heartbeat(view, "0-b", 5.0)  # a new process of shard 0 says hello before it has published
    assert view.live_venues(SYMBOL) == [] and not view.readiness()[0]
    q, b = served(view)
    assert q["bid"] is None and q["venues"][0]["excluded_reason"] == SHARD_STALE
    assert b["bids"] == [] and b["excluded"] == {"binance": SHARD_STALE}

    view._apply(subjects.QUOTE, SYMBOL, quote("0-b", 5.0, 1, "101"), from_snapshot=False)
    assert view.live_venues(SYMBOL) == []  # the book held is still the old process's
    assert served(view)[1]["bids"] == []

    view._apply(subjects.BOOK, SYMBOL, book("0-b", 5.0, 1, "101"), from_snapshot=False)
    assert view.live_venues(SYMBOL) == ["binance"] and view.readiness()[0]
    q, b = served(view)
    assert q["bid"]["price"] == "101" and b["bids"] == [["101", "1"]]
