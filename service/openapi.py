"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the route table.

Every path, parameter and response comes from ``routes.ROUTES`` and the body schemas
from ``schemas.SCHEMAS``, so the document describes the routes that are served and
the bounds that are enforced (the configured symbols and ``max_depth``, the sweep's
quantity pattern) without being kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aggbook.service.config import ServiceConfig
from aggbook.service.schemas import SCHEMAS, Schema, ref

if TYPE_CHECKING:
    from aggbook.service.routes import Param, Reply, Route

DESCRIPTION = (
    "Consolidated order books across venues. Prices and sizes are exact decimal strings. "
    'Errors are {"error": {"code", "message"}}. Query parameters of the routes that declare '
    "a 400 are strict: an unknown or repeated one is refused."
)


def _param(param: Param, config: ServiceConfig) -> Schema:
    return {
        "name": param.name,
        "in": param.where,
        "required": param.required or param.where == "path",
        "schema": param.schema_for(config),
        "description": param.description,
    }


def _reply(reply: Reply) -> Schema:
    out: Schema = {"description": reply.description}
    if reply.schema is not None:
        schema = ref(reply.schema) if isinstance(reply.schema, str) else reply.schema
        out["content"] = {reply.media_type: {"schema": schema}}
        out["content"].update({media: {"schema": other} for media, other in reply.also})
    return out


def _operation(route: Route, config: ServiceConfig) -> Schema:
    op: Schema = {"operationId": route.name, "summary": route.summary}
    if route.description:
        op["description"] = route.description
    op["parameters"] = [_param(p, config) for p in route.params]
    op["responses"] = {str(r.status): _reply(r) for r in route.replies}
    return op


def openapi_document(config: ServiceConfig, routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, Schema] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, config)
    return {
        "openapi": "3.1.0",
        "info": {"title": "aggbook", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
