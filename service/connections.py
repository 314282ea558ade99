"""HTTP connection hygiene: idle deadlines, connection caps, and descriptors kept for what must work.

Without limits, silent sockets, headers sent a byte at a time or a burst of clients hold file
descriptors until the process runs out, and then ``/healthz`` fails and venue reconnects fail
with it.  Three rules keep the service reachable:

* **Idle deadline** (``http.idle_timeout``): a connection must deliver a complete request head
  within that many seconds of connecting or of its previous response, or it is closed.  aiohttp
  enforces this with its keep-alive timer, which it arms at connect time as well as after each
  response; a slow or silent head never completes a request, so the timer closes it.
* **Caps** (``http.max_connections``, ``http.max_connections_per_client``): a connection beyond
  either cap is served only the health probes (``/healthz``, ``/readyz``); anything else gets a
  JSON 503 ``too_many_connections``, and every answer on it closes it.  Beyond the cap plus a
  small allowance for those probes, a connection is closed at once, unanswered.
* **Reserved descriptors** (``http.reserved_descriptors``): the caps are lowered, with a
  warning, so that the process's descriptor limit always leaves that many for venue sockets,
  snapshot requests, files and the probes themselves.

The guard hooks aiohttp's public ``Server`` object (its per-connection ``connection_made`` and
``connection_lost`` calls) and a middleware; it needs no change to aiohttp.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from aggbook.service.config import HttpSettings
from aggbook.service.handlers import error_response

log = logging.getLogger("aggbook.http")

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
OVER_CAP = "over_cap"  # served the health probes only
CLOSED = "closed"  # closed at once: past the cap and the probes' allowance


def descriptor_limit() -> int | None:
    """The process's soft limit on open files, or ``None`` where there is none to read."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


class ConnectionGuard:
    """Counts live HTTP connections per client and decides which ones are served."""

    def __init__(
        self,
        settings: HttpSettings,
        fd_limit: int | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_refused = on_refused  # the metrics' counter, told OVER_CAP or CLOSED
        cap = settings.max_connections
        allowance = max(8, cap // 16)  # room for health probes past the cap
        if fd_limit is not None and cap + allowance > fd_limit - settings.reserved_descriptors:
            room = max(2, fd_limit - settings.reserved_descriptors)
            allowance = max(1, min(allowance, room // 16))
            cap = max(1, room - allowance)
            log.warning(
                "http.max_connections lowered to %d: the descriptor limit is %d and %d are reserved",
                cap, fd_limit, settings.reserved_descriptors,
            )
        self.max_connections = cap
        self.hard_limit = cap + allowance
        self.per_client = settings.max_connections_per_client
        self.total = 0
        self.by_client: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # OVER_CAP and CLOSED, since start
        self._peer: dict[object, str] = {}  # handler -> client address
        self._over_cap: set[object] = set()

    # ------------------------------------------------------------------ aiohttp's per-connection calls
    def install(self, server: web.Server) -> None:
        """Wrap ``server``'s connection bookkeeping, which every request handler reports to."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: Any) -> None:
            made(handler, transport)
            self.opened(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            self.closed(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def opened(self, handler: object, transport: Any) -> None:
        peername = transport.get_extra_info("peername")
        client = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        self._peer[handler] = client
        self.total += 1
        self.by_client[client] += 1
        if self.total > self.hard_limit:
            self._refuse(CLOSED)
            transport.abort()  # its descriptor is freed now; connection_lost follows
        elif self.total > self.max_connections or self.by_client[client] > self.per_client:
            self._refuse(OVER_CAP)
            self._over_cap.add(handler)

    def _refuse(self, how: str) -> None:
        self.refused[how] += 1
        if self.on_refused is not None:
            self.on_refused(how)

    def closed(self, handler: object) -> None:
        client = self._peer.pop(handler, None)
        if client is None:
            return
        self._over_cap.discard(handler)
        self.total -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    # ------------------------------------------------------------------ the middleware
    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Connections over a cap get the health probes only, and are closed after each answer."""
        if request.protocol not in self._over_cap:
            return await handler(request)
        if request.path in HEALTH_PATHS:
            response = await handler(request)
        else:
            response = error_response(
                503, "too_many_connections",
                f"too many connections (at most {self.max_connections}, "
                f"{self.per_client} per client address); try again later",
            )
            response.headers["Retry-After"] = "1"
        response.force_close()
        return response
