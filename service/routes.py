"""The route table: every HTTP route of the service, declared once.

Each :class:`Route` names its method, path, handler, parameters (with the bounds the
handlers really enforce), responses and, for the demo, an example.  From this one
table come the aiohttp routes (``app.create_app``), the unknown-parameter check, the
index at ``/``, the OpenAPI document at ``/openapi.json`` (``openapi.py``) and the
URLs printed by ``aggbook demo`` (``demo.banner``).  Adding a route here is all it
takes to serve, list, document and check it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from aggbook.book.sweep import QTY_FRAC_DIGITS, QTY_INT_DIGITS, QTY_PATTERN, SIDES
from aggbook.service import handlers as h
from aggbook.service.config import ServiceConfig
from aggbook.service.schemas import Schema
from aggbook.service.web import ASSET_TYPES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A parameter's schema, or a function of the config for bounds that are configured (symbols, depth).
SchemaFor = Schema | Callable[[ServiceConfig], Schema]


@dataclass(frozen=True)
class Param:
    """A path or query parameter, documented with the schema its handler enforces."""

    name: str
    where: Literal["path", "query"]
    description: str
    schema: SchemaFor
    required: bool = False

    def schema_for(self, config: ServiceConfig) -> Schema:
        return self.schema(config) if callable(self.schema) else self.schema


@dataclass(frozen=True)
class Reply:
    """One documented response: ``schema`` names one of ``schemas.SCHEMAS``, or is inline, or is
    None for a response without a body (the WebSocket upgrade)."""

    status: int
    description: str
    schema: str | Schema | None = None
    media_type: str = "application/json"
    # further media types the same status answers with, chosen by the request's Accept header
    also: tuple[tuple[str, Schema], ...] = ()


@dataclass(frozen=True)
class Example:
    """How ``aggbook demo`` shows the route: a label and the query string of an example request.

    ``{symbol}`` and ``{venue}`` in the path are filled with the demo's first symbol and venue."""

    label: str
    query: str = ""


@dataclass(frozen=True)
class Route:
    """One HTTP route: what serves it, what it accepts and answers, and how the demo shows it."""

    name: str  # the OpenAPI operationId
    path: str
    handler: Handler
    summary: str
    replies: tuple[Reply, ...]
    params: tuple[Param, ...] = ()
    description: str = ""
    method: str = "GET"
    # Strict routes refuse unknown and repeated query parameters (400); probes and scrapers add
    # their own parameters, so /healthz, /readyz, /metrics and /openapi.json ignore them.
    strict: bool = True
    websocket: bool = False
    example: Example | None = None

    @property
    def query_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.where == "query")


# ---------------------------------------------------------------------- shared parameters and replies
SYMBOL = Param(
    "symbol",
    "path",
    "canonical symbol (case-insensitive)",
    lambda c: {"type": "string", "enum": list(c.symbols)},
    required=True,
)
VENUE = Param("venue", "path", "venue name", {"type": "string"}, required=True)
DEPTH = Param(
    "depth",
    "query",
    "price levels per side",
    lambda c: {"type": "integer", "minimum": 1, "maximum": c.max_depth, "default": c.default_depth},
)
FEES = Param(
    "fees",
    "query",
    "apply each venue's taker fee (basis points) to prices",
    {"type": "boolean", "default": False},
)
VENUES = Param("venues", "query", "comma-separated venue names to merge (default all)", {"type": "string"})
SIDE = Param("side", "query", "taker side", {"type": "string", "enum": list(SIDES)}, required=True)
QTY = Param(
    "qty",
    "query",
    f"positive quantity in base units, at most {QTY_INT_DIGITS} digits before and "
    f"{QTY_FRAC_DIGITS} after the point",
    {"type": "string", "pattern": QTY_PATTERN},
    required=True,
)

ASSET = Param(
    "file", "path", "a file of the web page", {"type": "string", "enum": list(ASSET_TYPES)}, required=True
)
ASSET_VERSION = Param(
    "v", "query", "the file's content hash, as the page links it: the answer may be cached for good",
    {"type": "string"},
)
TEXT: Schema = {"type": "string"}

BAD = Reply(400, "a parameter is invalid, unknown or repeated (code bad_request)", "Error")
UNKNOWN = Reply(404, "unknown symbol or venue (code unknown_symbol / unknown_venue)", "Error")


def _ok(schema: str, description: str) -> Reply:
    return Reply(200, description, schema)


# ---------------------------------------------------------------------- the table
ROUTES: tuple[Route, ...] = (
    Route(
        "index",
        "/",
        h.index,
        "The service, its symbols and its endpoints; the live web page for a browser",
        (
            Reply(
                200,
                "index (JSON); the web page when the Accept header ranks text/html above application/json",
                "Index",
                also=(("text/html", TEXT),),
            ),
            BAD,
        ),
        description="Content negotiation: a browser (Accept: text/html) gets the live page, fed by /v1/ws; "
        "*/*, application/json or no Accept header get the JSON index.",
        example=Example("web page"),
    ),
    Route(
        "web_asset",
        "/web/{file}",
        h.web_asset,
        "A script, style sheet or icon of the web page",
        (
            Reply(
                200,
                "the file",
                TEXT,
                "text/javascript",
                also=tuple((m, TEXT) for m in sorted(set(ASSET_TYPES.values()) - {"text/javascript"})),
            ),
            BAD,
            Reply(404, "no such file (code not_found)", "Error"),
        ),
        (ASSET, ASSET_VERSION),
    ),
    Route(
        "symbols",
        "/v1/symbols",
        h.symbols,
        "Configured symbols and each venue's spelling",
        (_ok("Symbols", "symbol list"), BAD),
    ),
    Route(
        "quotes",
        "/v1/quotes",
        h.quotes,
        "Consolidated best bid/ask of every symbol",
        (_ok("Quotes", "quotes"), BAD),
        (FEES,),
        example=Example("quotes"),
    ),
    Route(
        "quote",
        "/v1/quotes/{symbol}",
        h.quote,
        "Consolidated best bid/ask of one symbol",
        (_ok("Quote", "quote"), BAD, UNKNOWN),
        (SYMBOL, FEES),
        example=Example("one quote", "fees=true"),
    ),
    Route(
        "book",
        "/v1/books/{symbol}",
        h.book,
        "Merged depth ladder with per-venue sizes",
        (_ok("Ladder", "ladder"), BAD, UNKNOWN),
        (SYMBOL, DEPTH, VENUES),
        example=Example("merged book", "depth=10"),
    ),
    Route(
        "venue_book",
        "/v1/books/{symbol}/{venue}",
        h.venue_book,
        "One venue's book",
        (_ok("VenueBook", "book"), BAD, UNKNOWN),
        (SYMBOL, VENUE, DEPTH),
        description="Levels are empty while the book is not live.",
        example=Example("venue book", "depth=10"),
    ),
    Route(
        "sweep",
        "/v1/sweep/{symbol}",
        h.sweep_handler,
        "Cost of filling a quantity across the live venues",
        (_ok("Sweep", "sweep result"), BAD, UNKNOWN),
        (SYMBOL, SIDE, QTY, FEES, VENUES),
        description="Walks every level of every included venue; with fees=true levels are taken in "
        "fee-adjusted order. Totals are exact; averages are rounded to 34 significant digits.",
        example=Example("sweep", "side=buy&qty=2&fees=true"),
    ),
    Route(
        "status",
        "/v1/status",
        h.status,
        "State of every venue, connection and book",
        (_ok("Status", "status"), BAD),
        example=Example("status"),
    ),
    Route(
        "websocket",
        "/v1/ws",
        h.websocket,
        "WebSocket subscriptions (quotes, book); see docs/api.md",
        (
            Reply(101, "Switching Protocols"),
            Reply(400, "not a WebSocket upgrade (code bad_request)", "Error"),
        ),
        description="A GET with the WebSocket upgrade headers; messages are described in docs/api.md.",
        strict=False,
        websocket=True,
        example=Example("websocket"),
    ),
    Route("healthz", "/healthz", h.healthz, "The process is alive", (_ok("Health", "ok"),), strict=False),
    Route(
        "readyz",
        "/readyz",
        h.readyz,
        "Every configured symbol has at least one live venue",
        (_ok("Ready", "ready"), Reply(503, "not ready; not_ready lists the symbols", "Ready")),
        strict=False,
        example=Example("ready"),
    ),
    Route(
        "metrics",
        "/metrics",
        h.metrics,
        "Prometheus exposition",
        (Reply(200, "Prometheus text format", {"type": "string"}, "text/plain"),),
        strict=False,
        example=Example("metrics"),
    ),
    Route(
        "openapi",
        "/openapi.json",
        h.openapi,
        "This document, generated from the route table",
        (_ok("OpenAPI", "OpenAPI 3.1"),),
        strict=False,
        example=Example("openapi"),
    ),
)


def example_url(route: Route, base_url: str, symbol: str, venue: str) -> str:
    """The demo's example request for ``route`` (which must have an example), on ``base_url``."""
    if route.example is None:
        raise ValueError(f"{route.path} has no example")
    if route.websocket:
        base_url = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    path = route.path.replace("{symbol}", symbol).replace("{venue}", venue)
    return f"{base_url}{path}" + (f"?{route.example.query}" if route.example.query else "")

