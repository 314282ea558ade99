"""What it costs to fill a quantity by walking the merged book of the live venues.

Every level of every included venue's book is considered (not just the top N).  A
buy walks asks from the cheapest up, a sell walks bids from the highest down; with
``fees=True`` levels are ordered by their fee-adjusted price, which is where a
taker would actually route.  Quantities, notionals and fees are exact ``Decimal``
arithmetic in an 80-digit context (wide enough that no product or sum of venue
numbers rounds); only the average prices, being divisions, are rounded, to 34
significant digits.  Prices in the result are canonical text (:mod:`aggbook.book.canonical`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from aggbook.book.consolidated import BPS, ConsolidatedBook, fmt

EXACT = Context(prec=80)
AVERAGE = Context(prec=34)
SIDES = ("buy", "sell")

# The quantities a sweep accepts.  ASCII digits only (``\d`` would admit "١" and "５", which
# Decimal happily converts), and few enough of them that EXACT never rounds: 15 before the
# point is far beyond any order book, 18 after it is the finest size any venue quotes, and
# remaining (qty - sizes) x price (about 30 digits) + fee digits stays well under 80.
QTY_INT_DIGITS = 15
QTY_FRAC_DIGITS = 18
QTY_PATTERN = (
    rf"^(?:[0-9]{{1,{QTY_INT_DIGITS}}}(?:\.[0-9]{{0,{QTY_FRAC_DIGITS}}})?|\.[0-9]{{1,{QTY_FRAC_DIGITS}}})$"
)
QTY = re.compile(QTY_PATTERN.removeprefix("^").removesuffix("$"))  # used with fullmatch


@dataclass
class VenueFill:
    venue: str
    fee_bps: Decimal
    qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    levels: int = 0
    best: str | None = None
    worst: str | None = None


@dataclass
class SweepResult:
    symbol: str
    side: str
    requested: Decimal
    fees: bool
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    levels: int = 0
    best: str | None = None
    worst: str | None = None
    worst_with_fees: Decimal | None = None
    venues: dict[str, VenueFill] = field(default_factory=dict)
    included: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.filled == self.requested


def _txt(value: Decimal) -> str:
    """Exact text without trailing zeros or exponent (``93.1801000`` -> ``93.1801``)."""
    return fmt(value.normalize(EXACT))


def _average(total: Decimal, qty: Decimal) -> str | None:
    if qty == 0:
        return None
    return fmt(AVERAGE.divide(total, qty).normalize(AVERAGE))


def sweep(
    book: ConsolidatedBook,
    side: str,
    qty: Decimal,
    *,
    fees: bool = False,
    venues: list[str] | None = None,
    now: float | None = None,
) -> SweepResult:
    """Fill ``qty`` against the included venues' books; the result says how far it got."""
    if side not in SIDES:
        raise ValueError(f"side must be buy or sell, got {side!r}")
    if qty <= 0:
        raise ValueError("qty must be positive")
    status = book.eligible(now, venues)
    result = SweepResult(book.symbol, side, qty, fees)
    result.included = [v for v, why in status.items() if why is None]
    result.excluded = {v: why for v, why in status.items() if why is not None}
    buy = side == "buy"
    levels: list[tuple[Decimal, Decimal, str, str, str, Decimal]] = []  # sort key, price, venue, texts, size
    for venue in result.included:
        fee_bps = book.fees.get(venue, Decimal(0))
        factor = EXACT.divide(BPS + fee_bps if buy else BPS - fee_bps, BPS) if fees else Decimal(1)
        result.venues[venue] = VenueFill(venue, fee_bps)
        sync = book.syncs[venue]
        for price_text, size_text in sync.book.asks() if buy else sync.book.bids():
            price = Decimal(price_text)
            key = EXACT.multiply(price, factor)
            levels.append((key if buy else -key, price, venue, price_text, size_text, Decimal(size_text)))
    levels.sort(key=lambda lvl: (lvl[0], lvl[2]))
    remaining = qty
    text = book.text  # prices leave in canonical text, like every consolidated answer
    for key, price, venue, venue_text, _size_text, size in levels:
        if remaining <= 0:
            break
        price_text = text(venue_text)
        take = min(size, remaining)
        remaining = EXACT.subtract(remaining, take)
        notional = EXACT.multiply(price, take)
        fill = result.venues[venue]
        fill.qty = EXACT.add(fill.qty, take)
        fill.notional = EXACT.add(fill.notional, notional)
        fill.levels += 1
        fill.best = fill.best or price_text
        fill.worst = price_text
        result.filled = EXACT.add(result.filled, take)
        result.notional = EXACT.add(result.notional, notional)
        result.levels += 1
        result.best = result.best or price_text
        if fees:
            result.worst_with_fees = key if buy else -key
        # with fees the walk is in fee-adjusted order, so the worst raw price is tracked explicitly
        if result.worst is None or (price > Decimal(result.worst) if buy else price < Decimal(result.worst)):
            result.worst = price_text
    for fill in result.venues.values():
        result.fee = EXACT.add(result.fee, EXACT.divide(EXACT.multiply(fill.notional, fill.fee_bps), BPS))
    return result


def sweep_json(r: SweepResult) -> dict[str, Any]:
    buy = r.side == "buy"
    out: dict[str, Any] = {
        "symbol": r.symbol,
        "side": r.side,
        "requested": _txt(r.requested),
        "filled": _txt(r.filled),
        "complete": r.complete,
        "unfilled": _txt(EXACT.subtract(r.requested, r.filled)),
        "notional": _txt(r.notional),
        "average_price": _average(r.notional, r.filled),
        "best_price": r.best,
        "worst_price": r.worst,
        "levels": r.levels,
        "fees_included": r.fees,
        "venues": r.included,
        "excluded": r.excluded,
    }
    allocation: list[dict[str, Any]] = []
    for fill in r.venues.values():
        if fill.qty == 0:
            continue
        fee = EXACT.divide(EXACT.multiply(fill.notional, fill.fee_bps), BPS)
        item: dict[str, Any] = {
            "venue": fill.venue,
            "qty": _txt(fill.qty),
            "notional": _txt(fill.notional),
            "average_price": _average(fill.notional, fill.qty),
            "best_price": fill.best,
            "worst_price": fill.worst,
            "levels": fill.levels,
        }
        if r.fees:
            item["fee_bps"] = _txt(fill.fee_bps)
            item["fee"] = _txt(fee)
        allocation.append(item)
    allocation.sort(key=lambda a: Decimal(a["qty"]), reverse=True)
    out["allocation"] = allocation
    if r.fees:
        total = EXACT.add(r.notional, r.fee) if buy else EXACT.subtract(r.notional, r.fee)
        out["fee"] = _txt(r.fee)
        out["total_cost" if buy else "net_proceeds"] = _txt(total)
        out["average_price_with_fees"] = _average(total, r.filled)
        out["worst_price_with_fees"] = None if r.worst_with_fees is None else _txt(r.worst_with_fees)
    return out
