"""Typed answers of the aggbook API, parsed from its JSON.

Prices and sizes are :class:`~decimal.Decimal` built from the exact decimal text the service sent
(never floats), so arithmetic on them is exact and ``format(value, "f")`` gives the service's text
back: canonical text (no exponent, no trailing zeros) for the consolidated answers, the venue's own
for a :class:`VenueBook`.  Times and ages are floats: they are measurements, not amounts.

Every parser raises :class:`~aggbook.client.errors.ProtocolError` naming the field when the JSON does
not have the documented shape, so a malformed answer is never half-read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aggbook.client.errors import ProtocolError


# ---------------------------------------------------------------------- field readers
def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ProtocolError(f"{where}: missing field {key!r}")
    return obj[key]


def _decimal(value: Any, where: str) -> Decimal:
    if type(value) is not str:
        raise ProtocolError(f"{where}: expected decimal text, got {value!r}")
    try:
        out = Decimal(value)
    except InvalidOperation:
        raise ProtocolError(f"{where}: not a decimal number: {value!r}") from None
    if not out.is_finite():
        raise ProtocolError(f"{where}: not a finite number: {value!r}")
    return out


def _opt_decimal(value: Any, where: str) -> Decimal | None:
    return None if value is None else _decimal(value, where)


def _str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{where}: expected a string, got {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"{where}: expected true or false, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{where}: expected an integer, got {value!r}")
    return value


def _opt_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _opt_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float):
        raise ProtocolError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------- shapes
@dataclass(frozen=True, slots=True)
class Level:
    """One price level: a venue's own top of book or a level of a venue's own book."""

    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class VenueAtBest:
    """A venue quoting the consolidated best price, with what it quotes there."""

    venue: str
    price: Decimal
    size: Decimal
    fee_adjusted_price: Decimal | None  # with ``fees=True`` only


@dataclass(frozen=True, slots=True)
class QuoteSide:
    """One side of the consolidated top of book: the best price, the total size at it, who quotes it."""

    price: Decimal
    size: Decimal
    fee_adjusted: bool
    venues: tuple[VenueAtBest, ...]


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """One configured venue in a quote: its own top of book and whether it counts."""

    venue: str
    state: str  # waiting, live, resyncing, invalid
    included: bool
    excluded_reason: str | None
    bid: Level | None
    ask: Level | None
    fee_bps: Decimal
    age_seconds: float | None = None  # HTTP answers only (a WebSocket quote leaves out what the clock moves)
    last_id: int | None = None  # HTTP answers only


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a state arrived over the WebSocket.

    ``resync`` is set on the first snapshot after the client had to subscribe afresh, and says why:
    ``"gap: ..."`` when a ``seq`` was skipped, ``"reconnect: ..."`` after the connection was lost
    (for example a service restart).  Whatever happened between that and the previous state was not
    seen.  ``reason == "conflated"`` means the service skipped intermediate states because this
    client read too slowly; the state itself is complete and current.
    """

    sub: str
    seq: int
    kind: str  # "snapshot" or "update"
    reason: str | None  # snapshots: "subscribe" or "conflated"
    ts: float
    event_ts: float | None
    recv_ts: float | None
    resync: str | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    """The consolidated best bid and ask of one symbol (``GET /v1/quotes/{symbol}``, channel ``quotes``)."""

    symbol: str
    bid: QuoteSide | None
    ask: QuoteSide | None
    crossed: bool
    locked: bool
    spread: Decimal | None
    fees: bool
    venues: tuple[VenueQuote, ...]
    delivery: Delivery | None = None  # WebSocket only


@dataclass(frozen=True, slots=True)
class BookLevel:
    """One price of the merged ladder: the total size and each venue's size, largest first."""

    price: Decimal
    size: Decimal
    venues: dict[str, Decimal] = field(hash=False)


@dataclass(frozen=True, slots=True)
class Book:
    """The merged ladder of one symbol (``GET /v1/books/{symbol}``, channel ``book``)."""

    symbol: str
    depth: int
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    venues: tuple[str, ...]  # the venues merged
    excluded: dict[str, str] = field(hash=False)  # venue -> why it is not merged
    delivery: Delivery | None = None  # WebSocket only


@dataclass(frozen=True, slots=True)
class VenueBook:
    """One venue's own book (``GET /v1/books/{symbol}/{venue}``), in the venue's own decimal text."""

    symbol: str
    venue: str
    state: str
    reason: str
    included: bool
    excluded_reason: str | None
    age_seconds: float | None
    last_id: int | None
    depth: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Status:
    """``GET /v1/status``: readiness, live venues per symbol, and the full report as sent."""

    ready: bool
    uptime_seconds: float
    live_venues: dict[str, tuple[str, ...]] = field(hash=False)  # symbol -> venues included now
    raw: dict[str, Any] = field(hash=False)  # everything, including each feed's own report


# ---------------------------------------------------------------------- parsers
def _level(obj: Any, where: str) -> Level | None:
    if obj is None:
        return None
    return Level(_decimal(_get(obj, "price", where), f"{where}.price"),
                 _decimal(_get(obj, "size", where), f"{where}.size"))


def _pair(obj: Any, where: str) -> Level:
    pair = _list(obj, where)
    if len(pair) != 2:
        raise ProtocolError(f"{where}: expected [price, size], got {pair!r}")
    return Level(_decimal(pair[0], f"{where}[0]"), _decimal(pair[1], f"{where}[1]"))


def _side(obj: Any, where: str) -> QuoteSide | None:
    if obj is None:
        return None
    venues = []
    for i, item in enumerate(_list(_get(obj, "venues", where), f"{where}.venues")):
        w = f"{where}.venues[{i}]"
        venues.append(VenueAtBest(
            _str(_get(item, "venue", w), f"{w}.venue"),
            _decimal(_get(item, "price", w), f"{w}.price"),
            _decimal(_get(item, "size", w), f"{w}.size"),
            _opt_decimal(item.get("fee_adjusted_price"), f"{w}.fee_adjusted_price"),
        ))
    return QuoteSide(
        _decimal(_get(obj, "price", where), f"{where}.price"),
        _decimal(_get(obj, "size", where), f"{where}.size"),
        _bool(_get(obj, "fee_adjusted", where), f"{where}.fee_adjusted"),
        tuple(venues),
    )


def parse_quote(obj: Any, delivery: Delivery | None = None) -> Quote:
    venues = []
    for i, item in enumerate(_list(_get(obj, "venues", "quote"), "quote.venues")):
        w = f"quote.venues[{i}]"
        venues.append(VenueQuote(
            _str(_get(item, "venue", w), f"{w}.venue"),
            _str(_get(item, "state", w), f"{w}.state"),
            _bool(_get(item, "included", w), f"{w}.included"),
            _opt_str(_get(item, "excluded_reason", w), f"{w}.excluded_reason"),
            _level(_get(item, "bid", w), f"{w}.bid"),
            _level(_get(item, "ask", w), f"{w}.ask"),
            _decimal(_get(item, "fee_bps", w), f"{w}.fee_bps"),
            _opt_float(item.get("age_seconds"), f"{w}.age_seconds"),
            _opt_int(item.get("last_id"), f"{w}.last_id"),
        ))
    return Quote(
        _str(_get(obj, "symbol", "quote"), "quote.symbol"),
        _side(_get(obj, "bid", "quote"), "quote.bid"),
        _side(_get(obj, "ask", "quote"), "quote.ask"),
        _bool(_get(obj, "crossed", "quote"), "quote.crossed"),
        _bool(_get(obj, "locked", "quote"), "quote.locked"),
        _opt_decimal(_get(obj, "spread", "quote"), "quote.spread"),
        _bool(_get(obj, "fees", "quote"), "quote.fees"),
        tuple(venues),
        delivery,
    )


def _ladder_side(obj: Any, where: str) -> tuple[BookLevel, ...]:
    out = []
    for i, item in enumerate(_list(obj, where)):
        w = f"{where}[{i}]"
        sizes = _get(item, "venues", w)
        if not isinstance(sizes, dict):
            raise ProtocolError(f"{w}.venues: expected an object of venue sizes")
        out.append(BookLevel(
            _decimal(_get(item, "price", w), f"{w}.price"),
            _decimal(_get(item, "size", w), f"{w}.size"),
            {_str(v, f"{w}.venues"): _decimal(s, f"{w}.venues.{v}") for v, s in sizes.items()},
        ))
    return tuple(out)


def parse_book(obj: Any, delivery: Delivery | None = None) -> Book:
    excluded = _get(obj, "excluded", "book")
    if not isinstance(excluded, dict):
        raise ProtocolError("book.excluded: expected an object")
    return Book(
        _str(_get(obj, "symbol", "book"), "book.symbol"),
        _int(_get(obj, "depth", "book"), "book.depth"),
        _ladder_side(_get(obj, "bids", "book"), "book.bids"),
        _ladder_side(_get(obj, "asks", "book"), "book.asks"),
        tuple(_str(v, "book.venues[]") for v in _list(_get(obj, "venues", "book"), "book.venues")),
        {_str(v, "book.excluded"): _str(why, f"book.excluded.{v}") for v, why in excluded.items()},
        delivery,
    )


def parse_venue_book(obj: Any) -> VenueBook:
    w = "venue book"
    return VenueBook(
        _str(_get(obj, "symbol", w), f"{w}.symbol"),
        _str(_get(obj, "venue", w), f"{w}.venue"),
        _str(_get(obj, "state", w), f"{w}.state"),
        _str(_get(obj, "reason", w), f"{w}.reason"),
        _bool(_get(obj, "included", w), f"{w}.included"),
        _opt_str(_get(obj, "excluded_reason", w), f"{w}.excluded_reason"),
        _opt_float(_get(obj, "age_seconds", w), f"{w}.age_seconds"),
        _opt_int(_get(obj, "last_id", w), f"{w}.last_id"),
        _int(_get(obj, "depth", w), f"{w}.depth"),
        tuple(_pair(p, f"{w}.bids[{i}]") for i, p in enumerate(_list(_get(obj, "bids", w), f"{w}.bids"))),
        tuple(_pair(p, f"{w}.asks[{i}]") for i, p in enumerate(_list(_get(obj, "asks", w), f"{w}.asks"))),
    )


def parse_status(obj: Any) -> Status:
    symbols = _get(obj, "symbols", "status")
    if not isinstance(symbols, dict):
        raise ProtocolError("status.symbols: expected an object")
    live = {}
    for s, item in symbols.items():
        w = f"status.symbols.{s}"
        venues = _list(_get(item, "live_venues", w), f"{w}.live_venues")
        live[s] = tuple(_str(v, f"{w}.live_venues[]") for v in venues)
    uptime = _opt_float(_get(obj, "uptime_seconds", "status"), "status.uptime_seconds")
    return Status(_bool(_get(obj, "ready", "status"), "status.ready"), uptime or 0.0, live, obj)
