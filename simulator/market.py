"""Seeded, deterministic market model: the simulator's source of truth.

Each simulated venue owns one :class:`MarketModel` per symbol, which follows the symbol's shared
reference price (``reference.py``) through the venue's :class:`MarketProfile`: its own spread,
depth, tick and lot, rhythm, lag and drift.  ``step()`` produces one batch of absolute level
changes (re-quotes towards the reference, adds, partial cancels, full cancels, trades sweeping
several levels) and applies it to the model's own book, which is the truth a client's book is
compared against.  Prices and sizes are ``Decimal`` quantised to the venue's tick and lot step, so
every venue can render them as the exact text it would put on the wire.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from aggbook.simulator.reference import ReferencePrice

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


@dataclass(frozen=True)
class MarketProfile:
    """How one venue's market for a symbol sits around the shared reference price.

    Every simulated venue follows the same :class:`~aggbook.simulator.reference.ReferencePrice`
    per symbol, through its own profile, so the venues quote close to each other without being
    copies: the consolidated best bid and ask come from different venues, and now and then one
    venue's bid is at or above another's ask.  Distances are in ticks of the instrument's
    reference grid (the ``tick`` of the symbol's :class:`SymbolSpec`), so one profile suits every
    symbol; each is rounded up to at least one tick of the venue's own grid.

    ``spread``: the quoted spread; ``level_gap``: the mean distance between adjacent levels;
    ``size_scale`` and ``size_slope``: level sizes, and how much they grow per level away from the
    top; ``lag``: market steps the venue is behind the reference; ``offset``: a constant shift of
    the venue's fair price; ``drift``: the typical size of a slowly wandering extra shift;
    ``noise``: +- jitter of each re-quote; ``quote_interval``: market steps between re-quotes
    towards the reference (the rhythm of the venue's top of book); ``activity``: the most level
    changes one step makes.  ``rules`` are the venue's symbol rules, canonical symbol ->
    ``(tick, lot)``: the grid the venue's book is on, which its symbol-list endpoint serves.
    """

    spread: int = 2
    level_gap: int = 1
    size_scale: float = 1.0
    size_slope: float = 0.0
    lag: int = 0
    offset: int = 0
    drift: float = 0.0
    noise: int = 0
    quote_interval: int = 1
    activity: int = 12
    rules: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def symbol_rules(self, spec: SymbolSpec) -> SymbolSpec:
        """``spec`` on this venue's tick and lot (unchanged for a symbol without a rule)."""
        rule = self.rules.get(spec.canonical)
        if rule is None:
            return spec
        tick, lot = Decimal(rule[0]), Decimal(rule[1])
        return replace(spec, mid=spec.mid.quantize(tick), tick=tick, lot=lot)


NEUTRAL = MarketProfile()


@dataclass
class MarketModel:
    """One venue's order book for one symbol, following the symbol's shared reference price.

    ``spec`` is the instrument on the venue's own grid (tick, lot); ``reference_spec`` the
    instrument the reference price is quoted in (default: ``spec``).  Each step advances the
    reference clock by one index; every ``quote_interval`` steps the venue re-quotes around its fair
    price (the reference ``lag`` steps ago, plus offset, drift and noise): levels on the wrong side
    of its new quote are taken, levels far from it cancelled, and the top re-filled.  Then come the
    venue's own events (adds, partial and full cancels, trades sweeping the top).  The book never
    crosses itself: every bid is at or below the bid cap, every ask at or above the ask floor, and
    the two are at least a tick apart.

    ``depth`` bounds the number of levels per side so that a venue's full snapshot holds the whole
    truth book; venues with a narrower window compare the top N.  The process is a function of
    ``(venue, symbol, seed)`` and the number of steps and holds: reproducible from the seed.
    """

    spec: SymbolSpec
    seed: int = 1
    depth: int = 40
    venue: str = ""
    profile: MarketProfile = NEUTRAL
    reference_spec: SymbolSpec | None = None
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    steps: int = 0
    clock: int = 0  # reference index reached: one per step, and one per held (quiet) step

    def __post_init__(self) -> None:
        if self.reference_spec is None:
            self.reference_spec = self.spec
        self.reference = ReferencePrice(self.reference_spec, self.seed)
        owner = f"{self.venue}:" if self.venue else ""
        self._rng = random.Random(f"{owner}{self.spec.canonical}:{self.seed}")
        profile = self.profile
        self._ratio = float(self.reference_spec.tick / self.spec.tick)  # venue ticks per reference tick
        self._spread = self._venue_ticks(profile.spread)
        self._gap = self._venue_ticks(profile.level_gap)
        self._interval = max(1, profile.quote_interval)
        self._phase = self._rng.randrange(self._interval)
        self._drift = 0.0
        self._requote()
        self._scanned = self._bounds  # the first book is built inside them
        for i in range(self.depth):
            self.bids[self._px(self._bid_cap - i * self._gap)] = self._random_size(i)
            self.asks[self._px(self._ask_floor + i * self._gap)] = self._random_size(i)

    # ------------------------------------------------------------------ helpers
    def _venue_ticks(self, reference_ticks: int) -> int:
        return max(1, math.ceil(reference_ticks * self._ratio))

    def _px(self, ticks: int) -> Decimal:
        return (Decimal(max(ticks, 1)) * self.spec.tick).quantize(self.spec.tick)

    def _random_size(self, distance: int = 0) -> Decimal:
        """A level size; ``distance`` is the level's place away from the top (the depth profile)."""
        lots = self._rng.choice((1, 2, 5, 10, 25, 100, 250, 1000, 5000, 12345))
        scale = self.profile.size_scale * (1 + self.profile.size_slope * distance)
        return self._size(max(1, int(lots * self._rng.uniform(0.2, 3.0) * scale)))

    def _size(self, lots: int) -> Decimal:
        return (Decimal(lots) * self.spec.lot).quantize(self.spec.lot)

    def best_bid(self) -> Decimal | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Decimal | None:
        return min(self.asks) if self.asks else None

    def quote_bounds(self) -> tuple[Decimal, Decimal]:
        """The highest bid and lowest ask the venue's current quote allows."""
        return self._bounds

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

    # ------------------------------------------------------------------ following the reference
    def _requote(self) -> None:
        """The venue's fair price now, as a bid cap and an ask floor in venue ticks."""
        profile, rng = self.profile, self._rng
        fair = float(self.reference.ticks_at(self.clock - profile.lag) + profile.offset)
        if profile.drift:
            self._drift = self._drift * 0.98 + rng.gauss(0.0, profile.drift * 0.2)
            fair += self._drift
        if profile.noise:
            fair += rng.randint(-profile.noise, profile.noise)
        mid, half = fair * self._ratio, self._spread / 2
        self._bid_cap = max(1, math.floor(mid - half))
        self._ask_floor = max(self._bid_cap + 1, math.ceil(mid + half))
        self._bounds = (self._px(self._bid_cap), self._px(self._ask_floor))

    def _recentre(self, out: list[LevelChange]) -> None:
        """Take what the new quote crossed, cancel what is far from it, and quote the top again."""
        cap, floor = self._bounds
        if self._bounds != self._scanned:  # unmoved bounds: every level is already inside them
            self._scanned = self._bounds
            span = self.spec.tick * (2 * self.depth * self._gap + self._spread)
            for price in sorted(p for p in self.bids if p > cap or p < cap - span):
                self._set(out, BID, price, Decimal(0))
            for price in sorted(p for p in self.asks if p < floor or p > floor + span):
                self._set(out, ASK, price, Decimal(0))
        near = self.spec.tick * self._spread
        best_bid, best_ask = self.best_bid(), self.best_ask()
        if best_bid is None or best_bid < cap - near:
            self._set(out, BID, cap, self._random_size())
        if best_ask is None or best_ask > floor + near:
            self._set(out, ASK, floor, self._random_size())

    def hold(self, steps: int = 1) -> None:
        """Let ``steps`` reference steps pass with no change to the book (a quiet period)."""
        self.clock += steps

    # ------------------------------------------------------------------ process
    def step(self, max_changes: int | None = None) -> list[LevelChange]:
        """Advance the market by one event; returns the changes applied to the truth."""
        rng = self._rng
        out: list[LevelChange] = []
        self.steps += 1
        self.clock += 1
        if (self.clock - self._phase) % self._interval == 0:
            self._requote()
            self._recentre(out)
        limit = self.profile.activity if max_changes is None else max_changes
        n_ops = rng.randint(1, max(1, limit // 2))
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
            else:  # a new best quote at the venue's bid cap or ask floor
                self._set(out, side, self.quote_bounds()[0 if side == BID else 1], self._random_size())
        self._refill(out)
        self._trim(out)
        return out

    def _add_level(self, out: list[LevelChange], side: str) -> None:
        offset = self._rng.randint(0, self.depth * self._gap)
        ticks = self._bid_cap - offset if side == BID else self._ask_floor + offset
        if ticks > 0:
            self._set(out, side, self._px(ticks), self._random_size(offset // self._gap))

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
        for side, book in ((BID, self.bids), (ASK, self.asks)):
            tries = 0
            while len(book) < floor and tries < 20 * floor:
                self._add_level(out, side)
                tries += 1

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
