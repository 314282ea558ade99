"""Render cost is shared fairly: deep book subscriptions wait their turn, distinct subscriptions are
capped across all clients, and quotes always go out in the event-loop iteration of their change.

Clients are real ``Client`` objects on sockets that accept everything, driven by the fake feeds, so
every assertion is on counts, sequence numbers and states, never on how long something took."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from aggbook.service.config import WebSocketSettings
from aggbook.service.ws import Client, Hub
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, RecordingSocket, attach_client, running_hub
from tests.service.test_api import value


@pytest.fixture
async def hub_and_feeds(request) -> AsyncIterator[tuple[Hub, FakeFeeds]]:
    settings = WebSocketSettings(**getattr(request, "param", {}))
    async with running_hub(settings, max_depth=1000) as hub_feeds:
        yield hub_feeds


def attach(hub: Hub) -> tuple[Client, RecordingSocket]:
    sock = RecordingSocket()
    return attach_client(hub, sock), sock


def subscribe(client: Client, **msg: object) -> None:
    client.handle_text(orjson.dumps({"op": "subscribe", **msg}).decode())


async def changes(hub: Hub, feeds: FakeFeeds, quoter: Client, n: int) -> None:
    """``n`` top-of-book changes; after each, the quote subscriber has it queued or sent already."""
    sub = quoter.subs["quotes:BTC-USDT"]
    for i in range(n):
        before = sub.seq
        feeds["alpha"].delta("BTC-USDT", bids=[(f"100.{i + 1:03d}", "1")])
        await asyncio.sleep(0)  # one loop iteration: the aggregator's flush for this change
        assert sub.seq == before + 1, "a quote waited behind someone's deep books"


@pytest.mark.parametrize("hub_and_feeds", [{"heavy_depth": 50, "heavy_interval": 3600.0}], indirect=True)
async def test_heavy_books_are_conflated_while_quotes_keep_every_change(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    quoter, quotes = attach(hub)
    heavy, books = attach(hub)
    subscribe(quoter, channel="quotes", symbols=["BTC-USDT"])
    subscribe(heavy, channel="book", symbol="BTC-USDT", depth=500)
    subscribe(heavy, channel="book", symbol="BTC-USDT", depth=10)  # shallow: not heavy
    await asyncio.sleep(0)
    await changes(hub, feeds, quoter, 20)
    await wait_for(lambda: not quoter.queue and not heavy.queue, what="drained")
    assert len(quotes.of("quotes:BTC-USDT", "update")) == 20
    assert len(books.of("book:BTC-USDT:10", "update")) == 20  # shallow books are not held back
    # the deep book got one update (the first change), then waits out its interval: the other 19
    # changes are conflated into the update still to come
    assert len(books.of("book:BTC-USDT:500", "update")) == 1
    text = hub.metrics.render().decode()
    assert value(text, "aggbook_ws_heavy_renders_total", outcome="conflated") == 18


@pytest.mark.parametrize("hub_and_feeds", [{"heavy_depth": 50, "heavy_interval": 0.0}], indirect=True)
async def test_a_heavy_update_carries_the_latest_state(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    quoter, _ = attach(hub)
    heavy, books = attach(hub)
    subscribe(quoter, channel="quotes", symbols=["BTC-USDT"])
    subscribe(heavy, channel="book", symbol="BTC-USDT", depth=200)
    await changes(hub, feeds, quoter, 5)
    await wait_for(lambda: any(f["data"]["bids"][0]["price"] == "100.005"
                               for f in books.of("book:BTC-USDT:200", "update")), what="latest state")
    frames = books.of("book:BTC-USDT:200")
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))  # gap-free as ever


@pytest.mark.parametrize(
    "hub_and_feeds", [{"heavy_depth": 50, "heavy_interval": 0.0, "render_budget": 0.0}], indirect=True
)
async def test_an_abusers_deep_books_are_spread_over_iterations_and_never_delay_quotes(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    quoter, quotes = attach(hub)
    abusers = [attach(hub) for _ in range(5)]
    subscribe(quoter, channel="quotes", symbols=["BTC-USDT"])
    for i, (client, _sock) in enumerate(abusers):
        for depth in range(100 + 20 * i, 120 + 20 * i):  # 20 distinct deep books each, 100 in all
            subscribe(client, channel="book", symbol="BTC-USDT", depth=depth)
    await asyncio.sleep(0)
    await changes(hub, feeds, quoter, 10)  # asserts each quote goes out in its change's iteration
    text = hub.metrics.render().decode()
    assert value(text, "aggbook_ws_heavy_renders_total", outcome="deferred") > 0
    # and every deep book still reaches the latest state in the end
    for client, sock in abusers:
        for key in client.subs:
            await wait_for(lambda s=sock, k=key: any(f["data"]["bids"][0]["price"] == "100.01"
                                                     for f in s.of(k, "update")), what=f"{key} latest")
    assert len(quotes.of("quotes:BTC-USDT", "update")) == 10


@pytest.mark.parametrize("hub_and_feeds", [{"max_distinct_subscriptions": 3}], indirect=True)
async def test_distinct_subscriptions_are_capped_across_clients(hub_and_feeds) -> None:
    hub, _feeds = hub_and_feeds
    first, _ = attach(hub)
    second, sock = attach(hub)
    for depth in (5, 10, 20):
        subscribe(first, channel="book", symbol="BTC-USDT", depth=depth)
    subscribe(second, channel="book", symbol="BTC-USDT", depth=30, id=1)  # a fourth distinct one
    subscribe(second, channel="book", symbol="BTC-USDT", depth=10, id=2)  # already served: shared
    await wait_for(lambda: len([f for f in sock.frames if f["type"] in ("error", "ack")]) == 2,
                   what="replies")
    error = next(f for f in sock.frames if f["type"] == "error")
    assert error["id"] == 1 and error["code"] == "too_many_subscriptions"
    assert "distinct subscriptions across all clients" in error["message"]
    assert set(second.subs) == {"book:BTC-USDT:10"}
    first.handle_text('{"op": "unsubscribe", "subs": ["book:BTC-USDT:5"]}')
    subscribe(second, channel="book", symbol="BTC-USDT", depth=30, id=3)  # room again
    assert "book:BTC-USDT:30" in second.subs
    text = hub.metrics.render().decode()
    assert value(text, "aggbook_ws_subscriptions_refused_total", limit="service") == 1
