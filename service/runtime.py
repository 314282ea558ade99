"""One service instance: metrics, aggregator, WebSocket hub and HTTP server, started and stopped in order.

Start order: feeds first (books begin to fill), then the HTTP site.  Stop order is
the reverse with the clients first: stop accepting connections, send every
WebSocket client a close frame (1001), stop the feeds (their sockets close), then
release the server.  ``aggbook serve``, ``aggbook demo`` and the tests all use
this class, so they shut down the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from aggbook.service.aggregator import Aggregator, FeedFactory, default_feed_factory
from aggbook.service.app import create_app
from aggbook.service.config import ServiceConfig
from aggbook.service.connections import ConnectionGuard, descriptor_limit
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.renders import RenderCache
from aggbook.service.ws import Hub

log = logging.getLogger("aggbook.service")


class Service:
    def __init__(self, config: ServiceConfig, *, feed_factory: FeedFactory = default_feed_factory) -> None:
        self.config = config
        self.metrics = ServiceMetrics()
        self.aggregator = Aggregator(config, feed_factory=feed_factory, metrics=self.metrics)
        self.renders = RenderCache(self.aggregator)  # before the hub: it must hear a change first
        self.hub = Hub(
            self.aggregator,
            config.websocket,
            self.metrics,
            default_depth=config.default_depth,
            max_depth=config.max_depth,
            renders=self.renders,
        )
        self.connections = ConnectionGuard(
            config.http, descriptor_limit(), on_refused=self.metrics.http.connection_refused
        )
        self.metrics.http.bind_connections(lambda: self.connections.total)
        self.publisher = None  # NATS publishing ([nats] url set): imported only then
        if config.nats is not None and config.nats.enabled:
            from aggbook.service.nats.publisher import NatsPublisher

            self.publisher = NatsPublisher(
                self.aggregator, self.renders, config.nats, self.metrics.registry, shard=config.shard
            )
        self.app = create_app(self)
        self.app.on_shutdown.append(self._on_shutdown)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.host = config.host
        self.port = config.port
        self._lag_task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._lag_task = asyncio.create_task(self.metrics.loop.run(), name="loop-lag")
        self.hub.start()
        await self.aggregator.start()
        if self.publisher is not None:
            await self.publisher.start()  # returns at once: NATS may come later
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0,
            keepalive_timeout=self.config.http.idle_timeout,  # also the deadline for a first request head
        )
        await self.runner.setup()
        assert self.runner.server is not None
        self.connections.install(self.runner.server)
        self.site = web.TCPSite(self.runner, self.config.host, self.config.port)
        try:
            await self.site.start()
        except OSError:
            await self.stop()
            raise
        server = self.site._server  # noqa: SLF001 - the bound port when port 0 was asked for
        sockets = getattr(server, "sockets", None)  # an asyncio.Server; typed as AbstractServer
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("listening", extra={"url": self.url})

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.hub.close_all()

    async def stop(self) -> None:
        if self.site is not None:
            with contextlib.suppress(Exception):
                await self.site.stop()  # no new connections
        await self.hub.close_all()
        if self.publisher is not None:
            await self.publisher.stop()
        await self.aggregator.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        log.info("stopped")

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
