"""HTTP requests by route template and their latency, counted by an aiohttp middleware.

The label is the route's template (``/v1/quotes/{symbol}``), never the raw path, so a client
cannot grow the label set; unmatched paths share one label.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge("aggbook_http_connections", "Open HTTP connections", registry=registry)
        self.refused = Counter(
            "aggbook_http_connections_refused_total",
            "Connections over a cap: over_cap = served the health probes only, closed = closed at once",
            ["how"], registry=registry,
        )
        for how in ("over_cap", "closed"):
            self.refused.labels(how)
        self.requests = Counter(
            "aggbook_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry
        )
        self.duration = Histogram(
            "aggbook_http_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=HTTP_BUCKETS, registry=registry,
        )

    def bind_connections(self, count: Callable[[], int]) -> None:
        """The open-connection count is read from the connection guard when scraped."""
        self.connections.set_function(count)

    def connection_refused(self, how: str) -> None:
        self.refused.labels(how).inc()

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Count requests by route template (never the raw path) and time them."""
        start = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.requests.labels(route, request.method, str(status)).inc()
            if request.headers.get("Upgrade", "").lower() != "websocket":  # a WS lives for hours
                self.duration.labels(route).observe(time.perf_counter() - start)
