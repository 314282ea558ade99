"""A serving process publishes its quotes, books, venue states and heartbeats to a real NATS."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from aggbook.service.nats.settings import NatsSettings
from aggbook.service.runtime import Service
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, fake_config, load_all
from tests.service.nats.natsserver import NatsServer

pytestmark = pytest.mark.integration


class Recorder:
    """Every message on ``aggbook.>``, by subject, in arrival order."""

    def __init__(self) -> None:
        self.by_subject: dict[str, list[dict]] = {}

    async def on_msg(self, msg: Msg) -> None:
        self.by_subject.setdefault(msg.subject, []).append(orjson.loads(msg.data))

    def last(self, subject: str) -> dict | None:
        got = self.by_subject.get(subject)
        return got[-1] if got else None


@pytest.fixture
async def published(nats_server: NatsServer) -> AsyncIterator[tuple[Service, FakeFeeds, Recorder, nats.NATS]]:
    settings = NatsSettings(url=nats_server.url, book_interval=0.05, heartbeat_interval=0.1, book_depth=5)
    config = dataclasses.replace(fake_config(), nats=settings)
    feeds = FakeFeeds()
    nc = await nats.connect(nats_server.url)
    recorder = Recorder()
    await nc.subscribe("aggbook.>", cb=recorder.on_msg)
    svc = Service(config, feed_factory=feeds)
    await svc.start()
    try:
        yield svc, feeds, recorder, nc
    finally:
        await svc.stop()
        await nc.close()


async def test_quotes_books_statuses_and_heartbeats_are_published(published) -> None:
    svc, feeds, rec, nc = published
    assert svc.publisher is not None
    await wait_for(lambda: svc.publisher.link.up, what="publisher connected")
    load_all(feeds)
    await wait_for(
        lambda: (rec.last("aggbook.quote.BTC-USDT") or {}).get("quote", {}).get("bid") is not None,
        what="a quote with a bid",
    )
    quote = rec.last("aggbook.quote.BTC-USDT")
    assert quote is not None
    # the same JSON the service serves over the WebSocket, in an envelope
    assert orjson.dumps(quote["quote"]) == svc.renders.quote_stream("BTC-USDT", False)
    assert orjson.dumps(quote["quote_fees"]) == svc.renders.quote_stream("BTC-USDT", True)
    assert quote["shard"] == "0/1" and quote["symbol"] == "BTC-USDT"
    assert set(quote["venues"]) == {"alpha", "beta"} and quote["venues"]["alpha"]["last_id"] == 100
    seqs = [m["seq"] for m in rec.by_subject["aggbook.quote.BTC-USDT"]]
    assert seqs == list(range(1, len(seqs) + 1))  # per subject, gap-free from 1

    await wait_for(
        lambda: (rec.last("aggbook.book.BTC-USDT") or {}).get("book", {}).get("bids") != [],
        what="a merged book with bids",
    )
    book = rec.last("aggbook.book.BTC-USDT")
    assert book is not None
    assert orjson.dumps(book["book"]) == svc.renders.ladder("BTC-USDT", 5)

    # a venue's state transition
    feeds["alpha"].gap("ETH-USDT")
    await wait_for(
        lambda: (rec.last("aggbook.status.alpha.ETH-USDT") or {}).get("reason") == "gap",
        what="the gap's status message",
    )
    status = rec.last("aggbook.status.alpha.ETH-USDT")
    assert status is not None
    assert (status["previous"], status["state"], status["reason"]) == ("live", "resyncing", "gap")

    await wait_for(lambda: rec.last("aggbook.heartbeat.0") is not None, what="a heartbeat")
    beat = rec.last("aggbook.heartbeat.0")
    assert beat is not None
    assert beat["symbols"] == {
        "BTC-USDT": {"alpha": "BTCUSDT", "beta": "BTCUSDT"},
        "ETH-USDT": {"alpha": "ETHUSDT", "beta": "ETHUSDT"},
    }
    assert beat["instance"] == quote["instance"] and beat["book_depth"] == 5

    # the key-value bucket holds the last quote and book of each symbol
    kv = await nc.jetstream().key_value("aggbook")
    await wait_for(lambda: rec.last("aggbook.quote.ETH-USDT") is not None, what="ETH quote")

    async def kv_quote_seq() -> int:
        entry = await kv.get("quote.BTC-USDT")
        assert entry.value is not None
        return orjson.loads(entry.value)["seq"]

    assert await kv_quote_seq() == rec.by_subject["aggbook.quote.BTC-USDT"][-1]["seq"]
    entry = await kv.get("book.ETH-USDT")
    assert entry.value is not None and orjson.loads(entry.value)["symbol"] == "ETH-USDT"
    metrics = svc.metrics.render().decode()
    assert 'aggbook_nats_published_total{kind="quote"}' in metrics
    assert "aggbook_nats_connected 1.0" in metrics


async def test_the_service_serves_while_nats_is_away_and_publishes_once_it_comes(tmp_path) -> None:
    server = NatsServer(tmp_path)
    server.port = 0  # not started: nothing listens at a port we will learn later
    import socket

    with socket.socket() as s:  # a port nothing listens on (the server will take it when it starts)
        s.bind(("127.0.0.1", 0))
        server.port = s.getsockname()[1]
    settings = NatsSettings(url=server.url, heartbeat_interval=0.1, book_interval=0.05)
    feeds = FakeFeeds()
    svc = Service(dataclasses.replace(fake_config(), nats=settings), feed_factory=feeds)
    await svc.start()
    try:
        assert svc.publisher is not None
        load_all(feeds)
        for i in range(50):  # changes while NATS is away: marked, conflated, never blocking
            feeds["alpha"].delta("BTC-USDT", bids=[("100.0", str(i + 1))])
            await asyncio.sleep(0)
        assert not svc.publisher.link.up
        assert svc.renders.quote_stream("BTC-USDT", False)  # serving goes on
        await server.start()
        nc = await nats.connect(server.url)
        try:
            kv = None

            async def bucket_has_quote() -> bool:
                nonlocal kv
                try:
                    kv = kv or await nc.jetstream().key_value("aggbook")
                    entry = await kv.get("quote.BTC-USDT")
                except Exception:
                    return False
                return entry.value is not None and orjson.loads(entry.value)["quote"]["bid"]["size"] == "50.5"

            deadline = asyncio.get_running_loop().time() + 15
            while not await bucket_has_quote():
                assert asyncio.get_running_loop().time() < deadline, "the bucket never got the quote"
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
    finally:
        await svc.stop()
        await server.stop()
