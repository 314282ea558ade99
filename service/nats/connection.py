"""One NATS connection that keeps itself up: first connect retried with backoff in the background,
reconnects left to the client, and the owner told each time the link is (re)established.

A shard must start and serve HTTP even while NATS is down, and a gateway must come back by itself
after a NATS restart; neither may wait on NATS in its start-up path.  ``on_up`` runs after every
(re)connection, before the owner's work resumes: the publisher re-creates the key-value bucket and
republishes everything; the gateway reloads the bucket and resnapshots its clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client

from aggbook.service.nats.metrics import NatsLinkMetrics

log = logging.getLogger("aggbook.nats")

UpHook = Callable[[Client], Awaitable[None]]


class NatsLink:
    def __init__(
        self,
        url: str,
        *,
        name: str,
        metrics: NatsLinkMetrics,
        on_up: UpHook,
        on_down: Callable[[], None] = lambda: None,
        pending_bytes: int = 8 * 1024 * 1024,
        reconnect_wait: float = 0.5,
    ) -> None:
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.name = name
        self.metrics = metrics
        self.on_up = on_up
        self.on_down = on_down
        self.pending_bytes = pending_bytes
        self.reconnect_wait = reconnect_wait
        self.nc: Client | None = None
        self.up = False  # connected and ``on_up`` has completed since the last (re)connection
        self.slow_consumer_errors = 0
        self.on_slow_consumer: Callable[[], None] = lambda: None  # NATS dropped messages we read too slowly
        self._task: asyncio.Task | None = None
        self._up_task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"nats-connect-{self.name}")

    async def _connect_forever(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                self.nc = await nats.connect(
                    self.servers,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self.reconnect_wait,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    pending_size=self.pending_bytes,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
            except Exception as exc:  # NoServersError, OSError, timeouts: NATS is down, try again
                log.warning("nats connect failed: %s; retrying in %.1fs", exc, delay,
                            extra={"nats": self.name})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            log.info("nats connected", extra={"nats": self.name, "url": self.nc.connected_url})
            self.metrics.connected.set(1)
            await self._run_up()
            return

    async def _run_up(self) -> None:
        assert self.nc is not None
        self.up = False
        try:
            await self.on_up(self.nc)
        except Exception:  # NATS went away again half-way, or answered too slowly: try again
            log.exception("nats link set-up failed", extra={"nats": self.name})
            if self.nc.is_connected and not self._stopping:  # else the next reconnection runs it
                await asyncio.sleep(self.reconnect_wait)
                self._up_task = asyncio.create_task(self._run_up(), name=f"nats-up-{self.name}")
            return
        self.up = self.nc.is_connected

    async def _error(self, exc: Exception) -> None:
        if type(exc).__name__ == "SlowConsumerError":
            self.slow_consumer_errors += 1
            self.metrics.slow_consumer.inc()
            self.on_slow_consumer()
            return
        log.warning("nats error: %r", exc, extra={"nats": self.name})

    async def _disconnected(self) -> None:
        if self.up:
            log.warning("nats disconnected", extra={"nats": self.name})
        self.up = False
        self.metrics.connected.set(0)
        self.on_down()

    async def _reconnected(self) -> None:
        self.metrics.connected.set(1)
        self.metrics.reconnects.inc()
        log.info("nats reconnected", extra={"nats": self.name})
        # not awaited here: the client calls back from its reconnect loop, which must go on reading
        self._up_task = asyncio.create_task(self._run_up(), name=f"nats-up-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._up_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), 2.0)
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.up = False
        self.metrics.connected.set(0)
