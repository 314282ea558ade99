"""``aggbook gateway``: the HTTP API and the WebSocket protocol for every symbol of every shard,
served from NATS alone (no venue connections).

The routes are the service's own (``service/routes.py``) and their handlers are the same functions:
they read the source and payloads of the object they are given (``aggbook.service.source``), which
here is the NATS view instead of the local aggregator.  Routes that need a venue's own book
(``/v1/books/{symbol}/{venue}``, ``/v1/sweep``) are not served; ``/v1/status`` answers with the
gateway's report (its shards and their symbols); ``/openapi.json`` belongs to the shards.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from aggbook.service.app import create_app
from aggbook.service.config import HttpSettings, WebSocketSettings
from aggbook.service.connections import ConnectionGuard, descriptor_limit
from aggbook.service.handlers import SERVICE_KEY, json_response
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.nats.metrics import GatewayMetrics
from aggbook.service.nats.view import NatsView, ViewSettings
from aggbook.service.routes import ROUTES, Route
from aggbook.service.serving import HttpServer
from aggbook.service.ws import Hub

if TYPE_CHECKING:
    from aggbook.service.runtime import Service

log = logging.getLogger("aggbook.gateway")

SERVED = (
    "index",
    "symbols",
    "quotes",
    "quote",
    "book",
    "status",
    "websocket",
    "healthz",
    "readyz",
    "metrics",
)


@dataclass(frozen=True)
class GatewayConfig:
    """What ``aggbook gateway`` needs: where NATS is, where to listen, the client limits."""

    view: ViewSettings
    host: str = "127.0.0.1"
    port: int = 8080
    default_depth: int = 10
    max_depth: int = 50  # the shards' [nats] book_depth: deeper levels are not published
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    http: HttpSettings = field(default_factory=HttpSettings)


class _ServedConfig:
    """The part of ``ServiceConfig`` the shared handlers read, with the symbols the shards announce."""

    def __init__(self, config: GatewayConfig, view: NatsView) -> None:
        self.default_depth = config.default_depth
        self.max_depth = config.max_depth
        self._view = view

    @property
    def symbols(self) -> list[str]:
        return list(self._view.consolidated)


async def gateway_status(request: web.Request) -> web.Response:
    """``/v1/status`` of a gateway: NATS, every shard's heartbeat, every symbol's owner and venues."""
    gw = cast("Gateway", request.app[SERVICE_KEY])
    view = gw.view
    now = view.clock()
    ready, live = view.readiness()
    shards = []
    for index in sorted(view.shards):
        sh = view.shards[index]
        shards.append(
            {
                "shard": f"{sh.index}/{sh.count}",
                "instance": sh.instance,
                "fresh": sh.fresh,
                "heartbeat_age_seconds": round(now - sh.seen, 3),
                "ready": bool(sh.beat.get("ready")),
                "symbols": list(sh.beat.get("symbols", {})),
            }
        )
    symbols = {}
    for symbol, st in view.consolidated.items():
        quote = st.quote_env["quote"] if st.quote_env is not None else {}
        symbols[symbol] = {
            "ready": bool(live[symbol]),
            "live_venues": live[symbol],
            "shard": None if st.shard is None else st.shard,
            "stale": st.stale,
            "quote_seq": None if st.quote_env is None else st.quote_env.get("seq"),
            "book_seq": None if st.book_env is None else st.book_env.get("seq"),
            "venues": {
                v["venue"]: {
                    "state": v.get("state"),
                    "included": v.get("included") and not st.stale,
                    "excluded_reason": "shard stale" if st.stale else v.get("excluded_reason"),
                }
                for v in quote.get("venues", [])
            },
        }
    return json_response(
        {
            "role": "gateway",
            "ready": ready,
            "uptime_seconds": round(time.time() - view.started_at, 3),
            "nats": {"connected": view.link.up, "url": view.settings.url},
            "shards": shards,
            "symbols": symbols,
            "pending_symbols": sorted(view.pending),
            "websocket": gw.hub.stats(),
        }
    )


def gateway_routes() -> tuple[Route, ...]:
    """The service's route table, less what a gateway cannot answer, with the gateway's status."""
    routes = []
    for route in ROUTES:
        if route.name not in SERVED:
            continue
        if route.name == "status":
            route = dataclasses.replace(route, handler=gateway_status, summary="Shards, symbols and NATS")
        routes.append(route)
    return tuple(routes)


class Gateway(HttpServer):
    """One gateway: the NATS view, the WebSocket hub on it and the HTTP server."""

    log = log
    label = "gateway "

    def __init__(self, config: GatewayConfig) -> None:
        self.gateway_config = config
        self.metrics = ServiceMetrics()
        self.nats_metrics = GatewayMetrics(self.metrics.registry)
        self.view = NatsView(config.view, self.nats_metrics)
        self.config = _ServedConfig(config, self.view)
        self.aggregator = self.view  # the handlers' source
        self.renders = self.view.payloads
        self.hub = Hub(
            self.view,
            config.websocket,
            self.metrics,
            default_depth=config.default_depth,
            max_depth=config.max_depth,
            renders=self.renders,
        )
        self.view.on_resync.append(self.hub.resnapshot)
        self.connections = ConnectionGuard(
            config.http, descriptor_limit(), on_refused=self.metrics.http.connection_refused
        )
        self.metrics.http.bind_connections(lambda: self.connections.total)
        # the handlers take a Service; a gateway offers what the routes it serves read of one
        self.app = create_app(cast("Service", self), gateway_routes())
        self._init_server(config.host, config.port, config.http)

    async def start_source(self) -> None:
        await self.view.start()

    async def stop_source(self) -> None:
        await self.view.stop()

    def listening_extra(self) -> dict[str, Any]:
        return {"nats": self.gateway_config.view.url}
