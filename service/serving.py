"""The HTTP side every serving process shares, started and stopped in one order.

``Service`` (books from venue feeds) and ``Gateway`` (books from NATS) differ only in where
their data comes from.  Around that source both run the same server: the loop-lag probe, the
WebSocket hub, the aiohttp site with its connection guard.  Start: probe, hub, the source,
then the site (clients arrive to a filling view).  Stop: refuse new connections, close every
WebSocket client (1001), stop the source, release the server.  Written once here so the two
shut down the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Self

from aiohttp import web

from aggbook.service.config import HttpSettings
from aggbook.service.connections import ConnectionGuard
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.ws import Hub


class HttpServer:
    """A serving process's HTTP server around a data source that subclasses start and stop."""

    log: logging.Logger
    label = ""  # log prefix: "" for the service, "gateway " for a gateway
    metrics: ServiceMetrics
    hub: Hub
    connections: ConnectionGuard
    app: web.Application

    def _init_server(self, host: str, port: int, http: HttpSettings) -> None:
        """Call at the end of ``__init__``, once ``app``, ``hub`` and ``connections`` exist."""
        self.app.on_shutdown.append(self._on_shutdown)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.host = host
        self.port = port
        self._http = http
        self._lag_task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start_source(self) -> None:
        """Start what fills the view (feeds, or the NATS subscriptions)."""

    async def stop_source(self) -> None:
        """Stop it again: after the clients are closed, before the server is released."""

    def listening_extra(self) -> dict[str, Any]:
        return {}

    async def start(self) -> None:
        self._lag_task = asyncio.create_task(self.metrics.loop.run(), name="loop-lag")
        self.hub.start()
        await self.start_source()
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=5.0,
            keepalive_timeout=self._http.idle_timeout,  # also the deadline for a first request head
        )
        await self.runner.setup()
        assert self.runner.server is not None
        self.connections.install(self.runner.server)
        self.site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await self.site.start()
        except OSError:
            await self.stop()
            raise
        server = self.site._server  # noqa: SLF001 - the bound port when port 0 was asked for
        sockets = getattr(server, "sockets", None)  # an asyncio.Server; typed as AbstractServer
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.log.info(f"{self.label}listening", extra={"url": self.url, **self.listening_extra()})

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.hub.close_all()

    async def stop(self) -> None:
        if self.site is not None:
            with contextlib.suppress(Exception):
                await self.site.stop()  # no new connections
        await self.hub.close_all()
        await self.stop_source()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        self.log.info(f"{self.label}stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
