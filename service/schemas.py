"""JSON Schemas of the HTTP response bodies, the ``components.schemas`` of ``/openapi.json``.

Kept apart from the route table so the table reads as a list of routes.  The service's
own shapes are closed (``additionalProperties: false``) and list what is always present
as required, so the tests that check real responses against them notice a field that
appears, disappears or changes type.  The feed's own status report and the WebSocket
totals stay open: they belong to the feeds and the hub, which add fields of their own.
"""

from __future__ import annotations

from typing import Any

from aggbook.book.consolidated import Freshness
from aggbook.book.sweep import SIDES
from aggbook.book.sync import SyncState

Schema = dict[str, Any]

# canonical decimal text: what every answer that merges venues, and every computed number, is written in
DEC: Schema = {
    "type": "string",
    "pattern": r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$",
    "description": "exact decimal number as canonical text: no exponent, no redundant zeros",
}
NDEC: Schema = {**DEC, "type": ["string", "null"], "description": "canonical decimal text, or null"}
# a venue's own book: the venue's wire text as sent
VENUE_DEC: Schema = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$", "description": "the venue's own text"}
STATES: Schema = {"type": "string", "enum": [s.value for s in SyncState]}
FRESHNESS: Schema = {
    "type": ["string", "null"],
    "enum": [*(f.value for f in Freshness), None],
    "description": "live books: fresh (changed within stale_after), quiet (unchanged for longer, its "
                   "connection alive: still included) or stale (connection silent past the venue's "
                   "timeout: excluded); null when not live",
}
NAMES: Schema = {"type": "array", "items": {"type": "string"}}
REASONS: Schema = {
    "type": "object",
    "additionalProperties": {"type": "string"},
    "description": "venue -> why it is excluded",
}


def ref(name: str) -> Schema:
    """A reference to one of :data:`SCHEMAS`."""
    return {"$ref": f"#/components/schemas/{name}"}


def closed(properties: Schema, *, optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    """An object with exactly these properties, all required except ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [k for k in properties if k not in optional],
        "additionalProperties": False,
        **extra,
    }


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


_LEVEL = closed({"price": DEC, "size": DEC})
_PAIR = {"type": "array", "items": VENUE_DEC, "minItems": 2, "maxItems": 2, "description": "[price, size]"}
_COUNTS: Schema = closed(
    {"bids": {"type": "integer", "minimum": 0}, "asks": {"type": "integer", "minimum": 0}},
    description="complete (known) levels per side",
)
_VENUE_NDEC: Schema = {**VENUE_DEC, "type": ["string", "null"], "description": "venue text, or null"}
_COMPLETE_TO: Schema = closed(
    {"bids": NDEC, "asks": NDEC},
    description="per side, the price the book is known down to: beyond it a level may exist unseen "
    "(the snapshot's depth, or a top-N stream's edge); null = known to the end of the book",
)
_SWEEP_FEES = ("fee", "average_price_with_fees", "worst_price_with_fees", "total_cost", "net_proceeds")

SCHEMAS: dict[str, Schema] = {
    "Error": closed(
        {
            "error": closed(
                {
                    "code": {
                        "type": "string",
                        "examples": [
                            "bad_request",
                            "unknown_symbol",
                            "unknown_venue",
                            "not_found",
                            "method_not_allowed",
                            "internal",
                        ],
                    },
                    "message": {"type": "string"},
                }
            )
        }
    ),
    "Index": closed(
        {
            "service": {"const": "aggbook"},
            "symbols": NAMES,
            "endpoints": {**NAMES, "description": "every route's path template"},
        }
    ),
    "Symbols": closed(
        {
            "symbols": {
                "type": "array",
                "items": closed(
                    {
                        "symbol": {"type": "string"},
                        "venues": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "venue -> the venue's spelling of the symbol",
                        },
                    }
                ),
            }
        }
    ),
    "Side": {
        **_nullable(
            closed(
                {
                    "price": DEC,
                    "size": {**DEC, "description": "total size across the venues at the price"},
                    "fee_adjusted": {"type": "boolean"},
                    "venues": {
                        "type": "array",
                        "items": closed(
                            {
                                "venue": {"type": "string"},
                                "price": DEC,
                                "size": DEC,
                                "fee_adjusted_price": DEC,
                            },
                            optional=("fee_adjusted_price",),
                        ),
                    },
                }
            )
        ),
        "description": "best price on one side and every included venue at it; null when none has it",
    },
    "VenueQuote": closed(
        {
            "venue": {"type": "string"},
            "state": STATES,
            "included": {"type": "boolean",
                         "description": "live, and its connection heard within the venue's timeout"},
            "excluded_reason": {"type": ["string", "null"]},
            "bid": _nullable(_LEVEL),
            "ask": _nullable(_LEVEL),
            "fee_bps": DEC,
            "age_seconds": {"type": ["number", "null"], "description": "seconds since the book last changed"},
            "freshness": FRESHNESS,
            "last_id": {"type": ["integer", "null"], "description": "venue sequence id of the book"},
        }
    ),
    "Quote": closed(
        {
            "symbol": {"type": "string"},
            "bid": ref("Side"),
            "ask": ref("Side"),
            "crossed": {"type": "boolean", "description": "best bid > best ask"},
            "locked": {"type": "boolean", "description": "best bid = best ask"},
            "spread": NDEC,
            "fees": {"type": "boolean"},
            "venues": {"type": "array", "items": ref("VenueQuote")},
        }
    ),
    "Quotes": closed({"quotes": {"type": "array", "items": ref("Quote")}}),
    "LadderLevel": closed(
        {
            "price": DEC,
            "size": DEC,
            "venues": {
                "type": "object",
                "additionalProperties": DEC,
                "description": "venue -> size at this price, largest first",
            },
        }
    ),
    "Ladder": closed(
        {
            "symbol": {"type": "string"},
            "depth": {"type": "integer", "minimum": 1},
            "bids": {"type": "array", "items": ref("LadderLevel")},
            "asks": {"type": "array", "items": ref("LadderLevel")},
            "venues": {**NAMES, "description": "venues merged"},
            "excluded": REASONS,
            "complete_to": {**_COMPLETE_TO, "description": "per side, the price the ladder stops at "
                            "because a venue's book is not known beyond it (fewer than depth levels); "
                            "null = the side is not cut short by any venue's known depth"},
            "complete_depth": {
                "type": "object",
                "additionalProperties": _COUNTS,
                "description": "merged venue -> its complete levels per side, counted up to depth",
            },
        }
    ),
    "VenueBook": closed(
        {
            "symbol": {"type": "string"},
            "venue": {"type": "string"},
            "state": STATES,
            "reason": {"type": "string", "description": "why the book is in its state"},
            "included": {"type": "boolean"},
            "excluded_reason": {"type": ["string", "null"]},
            "age_seconds": {"type": ["number", "null"]},
            "freshness": FRESHNESS,
            "last_id": {"type": ["integer", "null"]},
            "depth": {"type": "integer", "minimum": 1},
            "bids": {"type": "array", "items": _PAIR, "description": "empty while the book is not live"},
            "asks": {"type": "array", "items": _PAIR, "description": "empty while the book is not live"},
            "complete_depth": _COUNTS,
            "complete_to": {**_COMPLETE_TO, "properties": {"bids": _VENUE_NDEC, "asks": _VENUE_NDEC}},
        }
    ),
    "SweepFill": closed(
        {
            "venue": {"type": "string"},
            "qty": DEC,
            "notional": DEC,
            "average_price": DEC,
            "best_price": DEC,
            "worst_price": DEC,
            "levels": {"type": "integer", "minimum": 1},
            "fee_bps": DEC,
            "fee": DEC,
        },
        optional=("fee_bps", "fee"),
    ),
    "Sweep": closed(
        {
            "symbol": {"type": "string"},
            "side": {"type": "string", "enum": list(SIDES)},
            "requested": DEC,
            "filled": DEC,
            "complete": {"type": "boolean"},
            "unfilled": DEC,
            "notional": DEC,
            "average_price": NDEC,
            "best_price": NDEC,
            "worst_price": NDEC,
            "levels": {"type": "integer", "minimum": 0},
            "fees_included": {"type": "boolean"},
            "venues": NAMES,
            "excluded": REASONS,
            "incomplete": {
                "type": "boolean",
                "description": "the fill stopped at a venue's known depth with quantity left: what lies "
                "beyond is unknown, so the rest was not priced (filled/unfilled say how far it got)",
            },
            "complete_to": {**NDEC, "description": "the walked side's tightest venue bound (raw price); "
                            "null = every included venue's side is known to the end"},
            "complete_depth": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "included venue -> complete levels on the walked side",
            },
            "allocation": {"type": "array", "items": ref("SweepFill"), "description": "largest fill first"},
            "fee": DEC,
            "total_cost": {**DEC, "description": "buy with fees: notional + fee"},
            "net_proceeds": {**DEC, "description": "sell with fees: notional - fee"},
            "average_price_with_fees": NDEC,
            "worst_price_with_fees": NDEC,
        },
        optional=_SWEEP_FEES,
        description="The fee fields are present only with fees=true: total_cost for a buy, "
        "net_proceeds for a sell.",
        allOf=[
            {
                "if": {"properties": {"fees_included": {"const": True}}},
                "then": {"required": ["fee", "average_price_with_fees", "worst_price_with_fees"]},
                "else": {"not": {"anyOf": [{"required": [k]} for k in _SWEEP_FEES]}},
            },
            {
                "if": {"properties": {"side": {"const": "buy"}}},
                "then": {"not": {"required": ["net_proceeds"]}},
                "else": {"not": {"required": ["total_cost"]}},
            },
        ],
    ),
    "BookStatus": closed(
        {
            "venue_symbol": {"type": "string", "description": "the venue's spelling of the symbol"},
            "resyncs": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 1},
                "description": "reason -> books that lost sync for it, since start and across reconnects",
            },
            "state": STATES,
            "reason": {"type": "string"},
            "detail": {"type": "string", "description": "detail of the last transition"},
            "since": {"type": "number", "description": "epoch seconds of entering the state"},
            "since_seconds": {"type": "number"},
            "last_update_age_seconds": {"type": ["number", "null"]},
            "freshness": FRESHNESS,
            "connection_silence_seconds": {
                "type": ["number", "null"],
                "description": "seconds since the book's connection last proved alive (any frame, "
                               "heartbeats too)",
            },
            "last_id": {"type": ["integer", "null"]},
            "levels": closed({"bids": {"type": "integer"}, "asks": {"type": "integer"}}),
            "included": {"type": "boolean"},
            "excluded_reason": {"type": ["string", "null"]},
        },
        optional=("detail", "since", "since_seconds", "last_update_age_seconds", "freshness",
                  "connection_silence_seconds", "last_id", "levels"),
        description="The optional fields are there once the feed has handed over a book.",
    ),
    "VenueStatus": {
        "type": "object",
        "description": "A configured venue; an enabled one adds its feed's own report (connections, "
        "reconnects, rejected symbols, snapshot pacing and what else the venue's feed keeps).",
        "properties": {
            "venue": {"type": "string"},
            "kind": {"type": "string"},
            "enabled": {"type": "boolean"},
            "reconnects": {"type": "integer"},
            "connections": {"type": "array", "items": {"type": "object"}},
            "status_error": {"type": "string", "description": "the feed's report failed"},
            "symbols": {"type": "object", "additionalProperties": ref("BookStatus")},
        },
        "required": ["venue", "kind", "enabled"],
    },
    "Status": closed(
        {
            "ready": {"type": "boolean"},
            "uptime_seconds": {"type": "number"},
            "symbols": {
                "type": "object",
                "additionalProperties": closed({"ready": {"type": "boolean"}, "live_venues": NAMES}),
            },
            "venues": {"type": "array", "items": ref("VenueStatus")},
            "websocket": {
                "type": "object",
                "properties": {
                    "clients": {"type": "integer"},
                    "subscriptions": {"type": "integer"},
                    "queued": {"type": "integer"},
                },
                "required": ["clients"],
            },
        }
    ),
    "Health": closed({"status": {"const": "ok"}}),
    "Ready": closed(
        {
            "ready": {"type": "boolean"},
            "not_ready": {**NAMES, "description": "symbols without an included venue"},
            "symbols": {"type": "object", "additionalProperties": closed({"live_venues": NAMES})},
        }
    ),
    "OpenAPI": {"type": "object", "required": ["openapi", "info", "paths"]},
}
