"""The OpenAPI 3.1 description served at ``/openapi.json``.

Written by hand next to the routes rather than generated: the API is small, and a
hand-written document can say what matters (exact decimal strings, what "live"
means, the error shape) that a generator would not know.
"""

from __future__ import annotations

from typing import Any

from aggbook.book.sweep import QTY_FRAC_DIGITS, QTY_INT_DIGITS, QTY_PATTERN
from aggbook.service.config import ServiceConfig

DEC = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "exact decimal number as text"}
NDEC = {"type": ["string", "null"], "description": "exact decimal number as text, or null"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


def openapi_document(config: ServiceConfig) -> dict[str, Any]:
    symbol = _param(
        "symbol", "path", {"type": "string", "enum": config.symbols}, "canonical symbol (case-insensitive)"
    )
    depth = _param(
        "depth",
        "query",
        {"type": "integer", "minimum": 1, "maximum": config.max_depth, "default": config.default_depth},
        "price levels per side",
    )
    fees = _param(
        "fees",
        "query",
        {"type": "boolean", "default": False},
        "apply each venue's taker fee (basis points) to prices",
    )
    venues = _param(
        "venues", "query", {"type": "string"}, "comma-separated venue names to merge (default all)"
    )
    bad = _error("a parameter is invalid (code bad_request)")
    unknown = _error("unknown symbol or venue (code unknown_symbol / unknown_venue)")
    level = {"type": "object", "properties": {"price": DEC, "size": DEC}, "required": ["price", "size"]}
    schemas = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {
                            "type": "string",
                            "examples": [
                                "bad_request",
                                "unknown_symbol",
                                "unknown_venue",
                                "not_found",
                                "method_not_allowed",
                            ],
                        },
                        "message": {"type": "string"},
                    },
                    "required": ["code", "message"],
                }
            },
            "required": ["error"],
        },
        "Side": {
            "type": ["object", "null"],
            "description": "best price on one side and every included venue at it",
            "properties": {
                "price": DEC,
                "size": {**DEC, "description": "total size across the venues at the price"},
                "fee_adjusted": {"type": "boolean"},
                "venues": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "venue": {"type": "string"},
                            "price": DEC,
                            "size": DEC,
                            "fee_adjusted_price": DEC,
                        },
                    },
                },
            },
        },
        "VenueQuote": {
            "type": "object",
            "properties": {
                "venue": {"type": "string"},
                "state": {"type": "string", "enum": ["waiting", "live", "resyncing", "invalid"]},
                "included": {"type": "boolean", "description": "live and updated within stale_after"},
                "excluded_reason": {"type": ["string", "null"]},
                "bid": {"oneOf": [level, {"type": "null"}]},
                "ask": {"oneOf": [level, {"type": "null"}]},
                "fee_bps": DEC,
                "age_seconds": {
                    "type": ["number", "null"],
                    "description": "seconds since last known current",
                },
                "last_id": {"type": ["integer", "null"], "description": "venue sequence id of the book"},
            },
        },
        "Quote": {
            "type": "object",
            "properties": {
                "symbol": {"type": "string"},
                "bid": _ref("Side"),
                "ask": _ref("Side"),
                "crossed": {"type": "boolean"},
                "locked": {"type": "boolean"},
                "spread": NDEC,
                "fees": {"type": "boolean"},
                "venues": {"type": "array", "items": _ref("VenueQuote")},
            },
        },
        "Ladder": {
            "type": "object",
            "properties": {
                "symbol": {"type": "string"},
                "depth": {"type": "integer"},
                "bids": {"type": "array", "items": _ref("LadderLevel")},
                "asks": {"type": "array", "items": _ref("LadderLevel")},
                "venues": {"type": "array", "items": {"type": "string"}, "description": "venues merged"},
                "excluded": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "LadderLevel": {
            "type": "object",
            "properties": {
                "price": DEC,
                "size": DEC,
                "venues": {
                    "type": "object",
                    "additionalProperties": DEC,
                    "description": "venue -> size at this price, largest first",
                },
            },
        },
        "VenueBook": {
            "type": "object",
            "properties": {
                "symbol": {"type": "string"},
                "venue": {"type": "string"},
                "state": {"type": "string"},
                "reason": {"type": "string"},
                "included": {"type": "boolean"},
                "excluded_reason": {"type": ["string", "null"]},
                "age_seconds": {"type": ["number", "null"]},
                "last_id": {"type": ["integer", "null"]},
                "depth": {"type": "integer"},
                "bids": {
                    "type": "array",
                    "items": {"type": "array", "items": DEC, "minItems": 2, "maxItems": 2},
                },
                "asks": {
                    "type": "array",
                    "items": {"type": "array", "items": DEC, "minItems": 2, "maxItems": 2},
                },
            },
        },
        "Sweep": {
            "type": "object",
            "properties": {
                "symbol": {"type": "string"},
                "side": {"type": "string", "enum": ["buy", "sell"]},
                "requested": DEC,
                "filled": DEC,
                "unfilled": DEC,
                "complete": {"type": "boolean"},
                "notional": DEC,
                "average_price": NDEC,
                "best_price": NDEC,
                "worst_price": NDEC,
                "levels": {"type": "integer"},
                "fees_included": {"type": "boolean"},
                "fee": DEC,
                "total_cost": DEC,
                "net_proceeds": DEC,
                "average_price_with_fees": NDEC,
                "worst_price_with_fees": NDEC,
                "allocation": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "venue": {"type": "string"},
                            "qty": DEC,
                            "notional": DEC,
                            "average_price": DEC,
                            "best_price": DEC,
                            "worst_price": DEC,
                            "levels": {"type": "integer"},
                            "fee_bps": DEC,
                            "fee": DEC,
                        },
                    },
                },
                "venues": {"type": "array", "items": {"type": "string"}},
                "excluded": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }

    def get(
        summary: str,
        response: dict,
        params: list | None = None,
        errors: dict | None = None,
        description: str = "",
        ok: str = "200",
    ) -> dict:
        op: dict[str, Any] = {"summary": summary, "parameters": params or [], "responses": {ok: response}}
        if description:
            op["description"] = description
        op["responses"].update(errors or {})
        return {"get": op}

    paths = {
        "/v1/symbols": get(
            "Configured symbols and each venue's spelling",
            _json({"type": "object"}, "symbol list"),
            errors={"400": bad},
        ),
        "/v1/quotes": get(
            "Consolidated best bid/ask of every symbol",
            _json(
                {"type": "object", "properties": {"quotes": {"type": "array", "items": _ref("Quote")}}},
                "quotes",
            ),
            [fees],
            {"400": bad},
        ),
        "/v1/quotes/{symbol}": get(
            "Consolidated best bid/ask of one symbol",
            _json(_ref("Quote"), "quote"),
            [symbol, fees],
            {"400": bad, "404": unknown},
        ),
        "/v1/books/{symbol}": get(
            "Merged depth ladder with per-venue sizes",
            _json(_ref("Ladder"), "ladder"),
            [symbol, depth, venues],
            {"400": bad, "404": unknown},
        ),
        "/v1/books/{symbol}/{venue}": get(
            "One venue's book",
            _json(_ref("VenueBook"), "book"),
            [symbol, _param("venue", "path", {"type": "string"}, "venue name"), depth],
            {"400": bad, "404": unknown},
            "Levels are empty while the book is not live.",
        ),
        "/v1/sweep/{symbol}": get(
            "Cost of filling a quantity across the live venues",
            _json(_ref("Sweep"), "sweep result"),
            [
                symbol,
                _param("side", "query", {"type": "string", "enum": ["buy", "sell"]}, "taker side", True),
                _param(
                    "qty",
                    "query",
                    {"type": "string", "pattern": QTY_PATTERN},
                    f"positive quantity in base units, at most {QTY_INT_DIGITS} digits before and "
                    f"{QTY_FRAC_DIGITS} after the point",
                    True,
                ),
                fees,
                venues,
            ],
            {"400": bad, "404": unknown},
            "Walks every level of every included venue; with fees=true levels are taken in fee-adjusted "
            "order. Totals are exact; averages are rounded to 34 significant digits.",
        ),
        "/v1/status": get(
            "State of every venue, connection and book",
            _json({"type": "object"}, "status"),
            errors={"400": bad},
        ),
        "/healthz": get("The process is alive", _json({"type": "object"}, "ok")),
        "/readyz": get(
            "Every configured symbol has at least one live venue",
            _json({"type": "object"}, "ready"),
            errors={"503": _json({"type": "object"}, "not ready; not_ready lists the symbols")},
        ),
        "/metrics": get(
            "Prometheus exposition",
            {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        ),
        "/openapi.json": get("This document", _json({"type": "object"}, "OpenAPI 3.1")),
        "/v1/ws": get(
            "WebSocket subscriptions (quotes, book); see docs/api.md",
            {"description": "101 Switching Protocols"},
            errors={"400": bad},
            ok="101",
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aggbook",
            "version": "1",
            "description": "Consolidated order books across venues. Prices and sizes are exact decimal "
            'strings. Errors are {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
