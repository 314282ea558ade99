"""The aiohttp application: the route table's routes behind the JSON error middleware.

Every response body is JSON encoded by orjson, including errors, which always
look like ``{"error": {"code": "...", "message": "..."}}``: 400 for a bad
parameter, 404 for an unknown symbol, venue or path, 405 for a wrong method.
Query parameters are checked strictly (an unknown one is a 400), so a typo such
as ``?dept=5`` is reported instead of silently ignored; the parameters a route
accepts are the ones its entry in ``routes.ROUTES`` declares.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from aggbook.service.handlers import ROUTES_KEY, SERVICE_KEY, ApiError, check_query, error_response
from aggbook.service.routes import ROUTES, Handler, Route

if TYPE_CHECKING:
    from aggbook.service.runtime import Service

log = logging.getLogger("aggbook.http")

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no route for {request.path}"
        return error_response(exc.status, code, message)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


def _strict(route: Route) -> Handler:
    """The route's handler behind the check that refuses query parameters the route does not declare."""
    allowed = route.query_names
    handler = route.handler

    async def checked(request: web.Request) -> web.StreamResponse:
        check_query(request, allowed)
        return await handler(request)

    return checked


def create_app(svc: Service, routes: Iterable[Route] = ROUTES) -> web.Application:
    app = web.Application(middlewares=[svc.metrics.http.middleware, svc.connections.middleware, errors])
    app[SERVICE_KEY] = svc
    app[ROUTES_KEY] = table = tuple(routes)
    for route in table:
        handler = _strict(route) if route.strict else route.handler
        if route.method == "GET":
            app.router.add_get(route.path, handler)  # HEAD too
        else:
            app.router.add_route(route.method, route.path, handler)
    return app
