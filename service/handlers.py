"""The HTTP request handlers and their parameter checks.

Every response body is JSON encoded by orjson.  A handler refuses a bad request by
raising :class:`ApiError`, which the app's error middleware turns into the JSON error
shape.  Unknown query parameters are refused before a handler runs, from the
parameters its route declares (see ``service/routes.py``), so what is accepted and
what is documented cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from aggbook.book.sweep import QTY, QTY_FRAC_DIGITS, QTY_INT_DIGITS, SIDES, sweep, sweep_json
from aggbook.service import web as page
from aggbook.service.openapi import openapi_document
from aggbook.service.views import status_json, venue_book_json

if TYPE_CHECKING:
    from aggbook.service.routes import Route
    from aggbook.service.runtime import Service

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")
ROUTES_KEY: web.AppKey[tuple[Route, ...]] = web.AppKey("routes")
_DEPTH_DIGITS = 9  # int() of a longer string is pointless, and above 4300 digits it raises
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class ApiError(Exception):
    """A refused request: its HTTP status and the error body's code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def json_bytes_response(body: bytes) -> web.Response:
    """A body already rendered to JSON (a render-cache payload): sent as it is."""
    return web.Response(body=body, content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


# ---------------------------------------------------------------------- parameter helpers
def check_query(request: web.Request, allowed: Iterable[str]) -> None:
    """Reject unknown and repeated parameters: ``?fees=true&fees=false`` has no right answer."""
    allowed = set(allowed)
    seen: set[str] = set()
    for key, _ in request.query.items():  # iterating the keys alone would fold repeats into one
        if key not in allowed:
            raise ApiError(
                400,
                "bad_request",
                f"unknown parameter {key!r}; allowed: {', '.join(sorted(allowed)) or 'none'}",
            )
        if key in seen:
            raise ApiError(400, "bad_request", f"parameter {key!r} given more than once")
        seen.add(key)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(400, "bad_request", f"{name} must be true or false, got {request.query[name]!r}")


def _depth(request: web.Request, svc: Service) -> int:
    cfg = svc.config
    raw = request.query.get("depth")
    if raw is None:
        return cfg.default_depth
    digits = raw.isascii() and raw.isdigit() and len(raw) <= _DEPTH_DIGITS
    if not digits or not 1 <= int(raw) <= cfg.max_depth:
        raise ApiError(400, "bad_request", f"depth must be an integer from 1 to {cfg.max_depth}, got {raw!r}")
    return int(raw)


def _symbol(request: web.Request, svc: Service) -> str:
    raw = request.match_info["symbol"]
    symbol = raw.upper()
    if symbol not in svc.aggregator.consolidated:
        raise ApiError(
            404, "unknown_symbol", f"unknown symbol {raw!r}; known: {', '.join(svc.config.symbols)}"
        )
    return symbol


def _venues(request: web.Request, svc: Service, symbol: str) -> list[str] | None:
    raw = request.query.get("venues")
    if raw is None:
        return None
    names = [v.strip() for v in raw.split(",") if v.strip()]
    if not names:
        raise ApiError(400, "bad_request", "venues must be a comma-separated list of venue names")
    known = svc.aggregator.venues_for(symbol)
    unknown = [v for v in names if v not in known]
    if unknown:
        raise ApiError(
            404,
            "unknown_venue",
            f"unknown venue(s) for {symbol}: {', '.join(unknown)}; known: {', '.join(known)}",
        )
    return names


# ---------------------------------------------------------------------- handlers
def _svc(request: web.Request) -> Service:
    return request.app[SERVICE_KEY]


async def index(request: web.Request) -> web.Response:
    """The web page for a browser; for anyone else every route but this one, from the route table
    the app was built from."""
    if page.prefers_html(request.headers.get("Accept", "")):
        return web.Response(body=page.page(), content_type="text/html", charset="utf-8",
                            headers=page.PAGE_HEADERS)
    svc = _svc(request)
    endpoints = [r.path for r in request.app[ROUTES_KEY] if r.handler is not index]
    response = json_response({"service": "aggbook", "symbols": svc.config.symbols, "endpoints": endpoints})
    response.headers["Vary"] = "Accept"  # a cache must not hand this to a browser, nor the page to curl
    return response


async def web_asset(request: web.Request) -> web.Response:
    """A file of the web page; ``v`` is its content hash, which makes the answer cacheable for good."""
    name = request.match_info["file"]
    asset = page.assets().get(name)
    if asset is None:
        raise ApiError(404, "not_found", f"no file {name!r}; known: {', '.join(page.ASSET_TYPES)}")
    return web.Response(body=asset.body, content_type=asset.content_type,
                        charset="utf-8" if asset.content_type.startswith("text/") else None,
                        headers=asset.headers(request.query.get("v")))


async def symbols(request: web.Request) -> web.Response:
    svc = _svc(request)
    return json_response({"symbols": [{"symbol": s, "venues": v} for s, v in svc.aggregator.symbols()]})


# Quotes and merged books are rendered once per change of their symbol by the service's render cache
# (``service/renders.py``) and served from it: ages and staleness are brought up to date per request.
async def quotes(request: web.Request) -> web.Response:
    svc = _svc(request)
    fees = _flag(request, "fees")
    now = svc.aggregator.clock()
    return json_bytes_response(svc.renders.quotes_http(svc.aggregator.consolidated, fees, now))


async def quote(request: web.Request) -> web.Response:
    svc = _svc(request)
    symbol = _symbol(request, svc)
    fees = _flag(request, "fees")
    return json_bytes_response(svc.renders.quote_http(symbol, fees))


async def book(request: web.Request) -> web.Response:
    svc = _svc(request)
    symbol = _symbol(request, svc)
    depth = _depth(request, svc)
    venues = _venues(request, svc, symbol)
    return json_bytes_response(svc.renders.ladder(symbol, depth, venues))


async def venue_book(request: web.Request) -> web.Response:
    svc = _svc(request)
    symbol = _symbol(request, svc)
    venue = request.match_info["venue"]
    depth = _depth(request, svc)
    consolidated = svc.aggregator.consolidated[symbol]
    if venue not in svc.aggregator.venues_for(symbol):
        raise ApiError(
            404,
            "unknown_venue",
            f"venue {venue!r} does not trade {symbol}; known: {', '.join(svc.aggregator.venues_for(symbol))}",
        )
    sync = consolidated.syncs.get(venue)
    now = svc.aggregator.clock()
    if sync is None:
        return json_response(
            {
                "symbol": symbol,
                "venue": venue,
                "state": "waiting",
                "reason": "start",
                "included": False,
                "excluded_reason": "no book yet",
                "age_seconds": None,
                "freshness": None,
                "last_id": None,
                "depth": depth,
                "bids": [],
                "asks": [],
            }
        )
    why = consolidated.eligible(now, [venue]).get(venue)
    fresh = consolidated.freshness(venue, now)
    return json_response(venue_book_json(sync, symbol, depth, now, included=why is None, excluded_reason=why,
                                         freshness=None if fresh is None else fresh.value))


async def sweep_handler(request: web.Request) -> web.Response:
    svc = _svc(request)
    symbol = _symbol(request, svc)
    side = request.query.get("side")
    if side not in SIDES:
        raise ApiError(400, "bad_request", f"side must be buy or sell, got {side!r}")
    raw = request.query.get("qty")
    if raw is None or not QTY.fullmatch(raw) or Decimal(raw) <= 0:
        raise ApiError(
            400,
            "bad_request",
            f"qty must be a positive decimal number with at most {QTY_INT_DIGITS} digits before "
            f"and {QTY_FRAC_DIGITS} after the point, got {raw!r}",
        )
    fees = _flag(request, "fees")
    venues = _venues(request, svc, symbol)
    result = sweep(svc.aggregator.consolidated[symbol], side, Decimal(raw), fees=fees, venues=venues)
    return json_response(sweep_json(result))


async def status(request: web.Request) -> web.Response:
    svc = _svc(request)
    return json_response(status_json(svc.aggregator, websocket=svc.hub.stats()))


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready, live = _svc(request).aggregator.readiness()
    not_ready = [s for s, v in live.items() if not v]
    body = {
        "ready": ready,
        "not_ready": not_ready,
        "symbols": {s: {"live_venues": v} for s, v in live.items()},
    }
    return json_response(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    # ``name[]`` (repeatable, as prometheus_client's own exporter takes it): only those series.  The
    # whole exposition of a thousand books takes the event loop a second; one histogram takes nothing
    names = request.query.getall("name[]", [])
    body = _svc(request).metrics.render(names or None)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    routes = request.app[ROUTES_KEY]
    return json_response(openapi_document(_svc(request).config, routes))


async def websocket(request: web.Request) -> web.StreamResponse:
    return await _svc(request).hub.handle(request)
