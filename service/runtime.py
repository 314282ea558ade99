"""One service instance: metrics, aggregator, WebSocket hub and HTTP server, started and stopped in order.

Start order: feeds first (books begin to fill), then the HTTP site.  Stop order is
the reverse with the clients first: stop accepting connections, send every
WebSocket client a close frame (1001), stop the feeds (their sockets close), then
release the server.  ``aggbook serve``, ``aggbook demo`` and the tests all use
this class, so they shut down the same way.
"""

from __future__ import annotations

import logging

from aggbook.service.aggregator import Aggregator, FeedFactory, default_feed_factory
from aggbook.service.app import create_app
from aggbook.service.config import ServiceConfig
from aggbook.service.connections import ConnectionGuard, descriptor_limit
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.renders import RenderCache
from aggbook.service.serving import HttpServer
from aggbook.service.ws import Hub

log = logging.getLogger("aggbook.service")


class Service(HttpServer):
    """Feeds, aggregator, render cache, WebSocket hub and HTTP server: ``aggbook serve``."""

    log = log

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
        self._init_server(config.host, config.port, config.http)

    async def start_source(self) -> None:
        await self.aggregator.start()
        if self.publisher is not None:
            await self.publisher.start()  # returns at once: NATS may come later

    async def stop_source(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
        await self.aggregator.stop()
