"""A feed that speaks the service's feed interface without any network: tests drive its books directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from aggbook.book.sync import BookSync, Delta, Reason, Snapshot
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics, NullMetrics
from aggbook.feeds.mexc import MEXC
from aggbook.service.aggregator import Aggregator
from aggbook.service.config import ServiceConfig, WebSocketSettings
from aggbook.service.runtime import Service
from aggbook.service.ws import Client, Hub


class FakeFeed:
    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        self.config = config
        self.venue = config.name
        self.metrics = metrics or NullMetrics()
        self.callbacks: list[Callable[[str, BookSync], None]] = []
        self.current: dict[str, BookSync] = {}
        self.started = False
        self.stopped = False
        self.reconnects = 0

    # ------------------------------------------------------------------ the feed interface
    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None:
        self.callbacks.append(callback)

    def current_syncs(self) -> dict[str, BookSync]:
        return dict(self.current)

    def status(self) -> dict:
        return {
            "venue": self.venue,
            "reconnects": self.reconnects,
            "connections": [{"id": 1, "state": "open", "since": 0.0, "symbols": list(self.current)}],
        }

    async def start(self) -> None:
        self.started = True
        for symbol in self.config.symbols:
            self.publish_new(symbol)

    async def stop(self) -> None:
        self.stopped = True
        for sync in self.current.values():
            sync.fail(Reason.STOPPED, "feed stopped")

    # ------------------------------------------------------------------ test drivers
    def publish_new(self, symbol: str) -> BookSync:
        """A new BookSync becomes current (start, reconnect, rollover)."""
        sync = BookSync(MEXC, venue=self.venue, symbol=symbol)
        self.current[symbol] = sync
        for cb in self.callbacks:  # the aggregator attaches the new book and detaches the old
            cb(symbol, sync)
        return sync

    def load(
        self, symbol: str, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]], last: int = 100,
        depth: int | None = None,
    ) -> BookSync:
        """A snapshot; ``depth`` is the levels it was asked for (a side that deep is known only so far)."""
        sync = self.current[symbol]
        sync.on_snapshot(Snapshot(last, [list(b) for b in bids], [list(a) for a in asks], depth=depth))
        self.metrics.snapshot(self.venue, symbol, True)
        return sync

    def delta(
        self,
        symbol: str,
        bids: Sequence[tuple[str, str]] = (),
        asks: Sequence[tuple[str, str]] = (),
        skip: int = 0,
    ) -> BookSync:
        sync = self.current[symbol]
        nxt = (sync.last_id or 0) + 1 + skip
        self.metrics.message(self.venue, symbol, 100)
        sync.on_delta(Delta(nxt, nxt, None, [list(b) for b in bids] or None, [list(a) for a in asks] or None))
        return sync

    def gap(self, symbol: str) -> BookSync:
        """A delta that skips ids (after one in-order delta, so it is a gap and not a stale snapshot)."""
        self.delta(symbol, bids=[("0.0001", "0")])
        return self.delta(symbol, bids=[("1", "1")], skip=5)


class FakeFeeds:
    """Feed factory that remembers what it made."""

    def __init__(self) -> None:
        self.feeds: dict[str, FakeFeed] = {}

    def __call__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> FakeFeed:
        feed = FakeFeed(config, metrics=metrics)
        self.feeds[config.name] = feed
        return feed

    def __getitem__(self, name: str) -> FakeFeed:
        return self.feeds[name]


def fake_config(**ws: object) -> ServiceConfig:
    """Two venues, two symbols; alpha charges 10 bps and beta 20 bps."""
    venues = [
        VenueConfig("alpha", "binance", {"BTC-USDT": "BTCUSDT", "ETH-USDT": "ETHUSDT"}, fee_bps=Decimal(10)),
        VenueConfig("beta", "mexc", {"BTC-USDT": "BTCUSDT", "ETH-USDT": "ETHUSDT"}, fee_bps=Decimal(20)),
    ]
    return ServiceConfig(
        venues=venues,
        symbols=["BTC-USDT", "ETH-USDT"],
        host="127.0.0.1",
        port=0,
        stale_after=60.0,
        websocket=WebSocketSettings(**ws),
    )  # type: ignore[arg-type]


def load_all(feeds: FakeFeeds) -> None:
    """Both venues live on both symbols with a small, known book."""
    feeds["alpha"].load("BTC-USDT", [("100.0", "1"), ("99.5", "2")], [("101.0", "1"), ("102", "3")])
    feeds["beta"].load("BTC-USDT", [("100.00", "0.5"), ("99", "4")], [("100.5", "0.25"), ("101.00", "2")])
    feeds["alpha"].load("ETH-USDT", [("10", "1")], [("11", "1")])
    feeds["beta"].load("ETH-USDT", [("10", "2")], [("12", "1")])


@contextlib.asynccontextmanager
async def running_hub(
    settings: WebSocketSettings, **hub_options: Any
) -> AsyncIterator[tuple[Hub, FakeFeeds]]:
    """An aggregator over the fake feeds with every book loaded, and a WebSocket hub on it."""
    feeds = FakeFeeds()
    agg = Aggregator(fake_config(), feed_factory=feeds)
    hub = Hub(agg, settings, agg.metrics, **hub_options)
    await agg.start()
    load_all(feeds)
    try:
        yield hub, feeds
    finally:
        await hub.close_all()
        await agg.stop()


class RecordingSocket:
    """Stands for a client's WebSocket: keeps every frame the hub sends it, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.closed = False

    async def send_frame(self, data: bytes, opcode: object) -> None:
        self.frames.append(orjson.loads(data))

    async def close(self, *, code: int, message: bytes, drain: bool = True) -> bool:
        self.closed = True
        return True

    def of(self, sub: str, kind: str | None = None) -> list[dict]:
        """The frames of subscription ``sub`` (of one ``type`` when ``kind`` is given)."""
        return [f for f in self.frames if f.get("sub") == sub and (kind is None or f["type"] == kind)]


def attach_client(hub: Hub, sock: Any) -> Client:
    """A hub client writing to ``sock`` (any object with ``send_frame``, ``close`` and ``closed``)."""
    client = Client(sock, hub, "test")
    hub.clients.add(client)
    client.writer = asyncio.create_task(client.run_writer())
    return client


@contextlib.asynccontextmanager
async def serving(
    config: ServiceConfig | None = None, *, loaded: bool = False
) -> AsyncIterator[tuple[Service, FakeFeeds, aiohttp.ClientSession]]:
    """A started service over the fake feeds (every book loaded when ``loaded``) and a client of it."""
    feeds = FakeFeeds()
    async with Service(config or fake_config(), feed_factory=feeds) as service:
        if loaded:
            load_all(feeds)
        async with aiohttp.ClientSession(base_url=service.url) as http:
            yield service, feeds, http
