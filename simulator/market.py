"""Seeded, deterministic market model: the simulator's source of truth.

Each simulated venue owns one :class:`MarketModel` per symbol.  ``step()`` produces
one batch of absolute level changes (adds, partial cancels, full cancels, trades
sweeping several levels, mid drift) and applies it to the model's own book, which
is the truth a client's book is compared against.  Prices and sizes are
``Decimal`` quantised to the symbol's tick and lot step, so every venue can render
them as the exact text it would put on the wire.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal

Level = tuple[Decimal, Decimal]

BID = "bid"
ASK = "ask"


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One absolute level update: ``size == 0`` removes the level."""

    side: str  # BID or ASK
    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Static description of a simulated instrument."""

    base: str  # "BTC"
    quote: str  # "USDT"
    mid: Decimal
    tick: Decimal  # price increment, e.g. Decimal("0.01")
    lot: Decimal  # size increment, e.g. Decimal("0.00001")

    @property
    def canonical(self) -> str:
        return f"{self.base}-{self.quote}"

    @property
    def price_decimals(self) -> int:
        return max(0, -self.tick.as_tuple().exponent)  # type: ignore[operator]

    @property
    def size_decimals(self) -> int:
        return max(0, -self.lot.as_tuple().exponent)  # type: ignore[operator]


DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTC", "USDT", Decimal("93180.10"), Decimal("0.01"), Decimal("0.00001")),
    SymbolSpec("ETH", "USDT", Decimal("3150.25"), Decimal("0.01"), Decimal("0.0001")),
    SymbolSpec("SOL", "USDT", Decimal("142.315"), Decimal("0.001"), Decimal("0.01")),
    SymbolSpec("DOGE", "USDT", Decimal("0.164321"), Decimal("0.000001"), Decimal("1")),
    SymbolSpec("XRP", "USDT", Decimal("2.1834"), Decimal("0.0001"), Decimal("0.1")),
)


def extra_symbol(index: int) -> SymbolSpec:
    """Synthetic instruments for many-symbol tests (``S000-USDT`` ...)."""
    rng = random.Random(index)
    decimals = rng.randint(1, 6)
    tick = Decimal(1).scaleb(-decimals)
    mid = (Decimal(rng.randint(1000, 900000)) * tick).quantize(tick)
    lot_decimals = rng.randint(0, 8)
    return SymbolSpec(f"S{index:03d}", "USDT", mid, tick, Decimal(1).scaleb(-lot_decimals))


@dataclass
class MarketModel:
    """A deterministic level-change process around a drifting mid.

    ``depth`` bounds the number of levels per side so that a venue's full snapshot
    holds the whole truth book; venues with a narrower window compare the top N.
    """

    spec: SymbolSpec
    seed: int = 1
    depth: int = 40
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    steps: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.spec.canonical}:{self.seed}")
        self._mid_ticks = int(self.spec.mid / self.spec.tick)
        half = max(1, self.depth // 20)
        for i in range(self.depth):
            self.bids[self._px(self._mid_ticks - half - i)] = self._random_size()
            self.asks[self._px(self._mid_ticks + half + i)] = self._random_size()

    # ------------------------------------------------------------------ helpers
    def _px(self, ticks: int) -> Decimal:
        return (Decimal(max(ticks, 1)) * self.spec.tick).quantize(self.spec.tick)

    def _random_size(self) -> Decimal:
        lots = self._rng.choice((1, 2, 5, 10, 25, 100, 250, 1000, 5000, 12345))
        lots = max(1, int(lots * self._rng.uniform(0.2, 3.0)))
        return (Decimal(lots) * self.spec.lot).quantize(self.spec.lot)

    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None

    def _set(self, out: list[LevelChange], side: str, price: Decimal, size: Decimal) -> None:
        book = self.bids if side == BID else self.asks
        if size == 0:
            if price not in book:
                return
            del book[price]
        else:
            book[price] = size
        out.append(LevelChange(side, price, size))

    def _trim(self, out: list[LevelChange]) -> None:
        while len(self.bids) > self.depth:
            self._set(out, BID, min(self.bids), Decimal(0))
        while len(self.asks) > self.depth:
            self._set(out, ASK, max(self.asks), Decimal(0))

    # ------------------------------------------------------------------ process
    def step(self, max_changes: int = 12) -> list[LevelChange]:
        """Advance the market by one event; returns the changes applied to the truth."""
        rng = self._rng
        out: list[LevelChange] = []
        self.steps += 1
        n_ops = rng.randint(1, max(1, max_changes // 2))
        for _ in range(n_ops):
            roll = rng.random()
            side = BID if rng.random() < 0.5 else ASK
            book = self.bids if side == BID else self.asks
            if roll < 0.30 and book:  # partial cancel / add to a level
                price = rng.choice(list(book))
                self._set(out, side, price, self._random_size())
            elif roll < 0.70:  # new level inside the book
                self._add_level(out, side)
            elif roll < 0.85 and book:  # full cancel
                price = rng.choice(list(book))
                self._set(out, side, price, Decimal(0))
            elif roll < 0.95:  # trade sweeping one or more top levels
                self._sweep(out, side)
            else:  # drift the mid
                self._mid_ticks += rng.choice((-3, -2, -1, 1, 2, 3))
        self._refill(out)
        self._trim(out)
        return out

    def _add_level(self, out: list[LevelChange], side: str) -> None:
        rng = self._rng
        bb, ba = self.best_bid(), self.best_ask()
        tick = self.spec.tick
        if side == BID:
            top = bb if bb is not None else self._px(self._mid_ticks - 1)
            offset = rng.randint(-1, self.depth)
            price = top - offset * tick
            if ba is not None and price >= ba:
                price = ba - tick
        else:
            top = ba if ba is not None else self._px(self._mid_ticks + 1)
            offset = rng.randint(-1, self.depth)
            price = top + offset * tick
            if bb is not None and price <= bb:
                price = bb + tick
        if price > 0:
            self._set(out, side, price.quantize(tick), self._random_size())

    def _sweep(self, out: list[LevelChange], side: str) -> None:
        book = self.bids if side == BID else self.asks
        if not book:
            return
        ordered = sorted(book, reverse=(side == BID))
        levels = self._rng.randint(1, min(3, len(ordered)))
        for price in ordered[: levels - 1]:
            self._set(out, side, price, Decimal(0))
        last = ordered[levels - 1]
        remaining = (book[last] * Decimal(self._rng.uniform(0.1, 0.9))).quantize(self.spec.lot)
        self._set(out, side, last, remaining)

    def _refill(self, out: list[LevelChange]) -> None:
        """Keep a few levels on each side so the book never empties."""
        floor = max(3, self.depth // 2)
        while len(self.bids) < floor:
            self._add_level(out, BID)
        while len(self.asks) < floor:
            self._add_level(out, ASK)

    # ------------------------------------------------------------------ views
    def snapshot(self, depth: int | None = None) -> tuple[list[Level], list[Level]]:
        """Bids best-first (descending) and asks best-first (ascending)."""
        bids = sorted(self.bids.items(), key=lambda kv: kv[0], reverse=True)
        asks = sorted(self.asks.items(), key=lambda kv: kv[0])
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return bids, asks

    def fmt_price(self, price: Decimal) -> str:
        """Fixed-point text with the tick's decimals.

        ``str(Decimal)`` would switch to exponent notation below 1e-6 (``"3E-7"``, and
        ``"0E-8"`` for a deletion), which no venue puts on the wire.
        """
        return f"{price.quantize(self.spec.tick):.{self.spec.price_decimals}f}"

    def fmt_size(self, size: Decimal) -> str:
        """Fixed-point text with the lot's decimals (see :meth:`fmt_price`)."""
        return f"{size.quantize(self.spec.lot):.{self.spec.size_decimals}f}"


@dataclass(frozen=True, slots=True)
class TruthBook:
    """The simulator's book for one symbol at one venue sequence id."""

    seq: int
    bids: tuple[tuple[Decimal, Decimal], ...]
    asks: tuple[tuple[Decimal, Decimal], ...]

    def top(self, depth: int) -> TruthBook:
        return TruthBook(self.seq, self.bids[:depth], self.asks[:depth])
