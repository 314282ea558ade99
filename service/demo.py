"""The built-in demo: the simulated venues in-process and the service pointed at them.

The config is built from the running simulator (its ports are chosen by the OS),
so ``aggbook demo`` needs no file and never collides with anything on the host.
The same function gives the integration tests their set-up.
"""

from __future__ import annotations

from decimal import Decimal

from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import venue_specs
from aggbook.service.config import ServiceConfig, WebSocketSettings
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.market import DEFAULT_SYMBOLS

# every venue whose spec gives a demo fee (a venue joins the demo by declaring one), in registry order
DEMO_FEES_BPS: dict[str, Decimal] = {
    kind: spec.demo_fee_bps for kind, spec in venue_specs().items() if spec.demo_fee_bps is not None
}
DEMO_VENUES = tuple(DEMO_FEES_BPS)
DEMO_SYMBOLS = DEFAULT_SYMBOLS[:3]  # BTC-USDT, ETH-USDT, SOL-USDT


def demo_exchange(rate: float = 20.0, fault_rate: float = 0.0, seed: int = 1) -> SimulatedExchange:
    return SimulatedExchange(
        list(DEMO_VENUES), symbols=DEMO_SYMBOLS, rate=rate, fault_rate=fault_rate, seed=seed
    )


def demo_config(
    sim: SimulatedExchange,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    stale_after: float = 10.0,
    websocket: WebSocketSettings | None = None,
    options: dict | None = None,
) -> ServiceConfig:
    """Every demo venue trading the three demo symbols, at the (started) simulator's URLs."""
    venues = []
    for name in DEMO_VENUES:
        server = sim.venues[name]
        urls = server.urls()
        venues.append(
            VenueConfig(
                name=name,
                kind=name,
                symbols={spec.canonical: server.venue_symbol(spec) for spec in DEMO_SYMBOLS},
                rest_url=urls["rest_url"],
                ws_url=urls["ws_url"],
                fee_bps=DEMO_FEES_BPS[name],
                options=dict(options or {}),
            )
        )
    return ServiceConfig(
        venues=venues,
        symbols=[spec.canonical for spec in DEMO_SYMBOLS],
        host=host,
        port=port,
        stale_after=stale_after,
        websocket=websocket or WebSocketSettings(),
        source="<demo>",
    )


def banner(base_url: str, sim: SimulatedExchange | None = None) -> str:
    """What to open, printed at start: every route of the route table that has an example."""
    from aggbook.service.routes import ROUTES, example_url

    symbol, venue = DEMO_SYMBOLS[0].canonical, DEMO_VENUES[0]
    lines = [f"aggbook is running on {base_url}", ""]
    for route in ROUTES:
        if route.example is not None:
            lines.append(f"  {route.example.label:<13} {example_url(route, base_url, symbol, venue)}")
    if sim is not None:
        lines += ["", "simulated venues:"]
        for name, server in sim.venues.items():
            urls = server.urls()
            lines.append(f"  {name:<16} rest {urls['rest_url']:<40} ws {urls['ws_url']}")
        first = next(iter(sim.venues.values()), None)
        if first is not None:
            lines.append(f"  fault injection and truth: {first.base_url}/_sim/ (on every venue's port)")
    lines += ["", "Ctrl-C to stop."]
    return "\n".join(lines)
