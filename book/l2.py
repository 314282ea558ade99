"""A sorted in-memory L2 book that keeps every price and size as the text the venue sent.

Why this shape:

* Output must be the venue's exact decimal text (``"93180.10"``), so each level
  stores the ``(price_text, size_text)`` pair it last received.
* Ordering must be numeric and ``"100"``/``"100.0"`` must be one level, so levels
  are keyed by the price as an exact integer count of ``10**-scale`` units.  The
  scale grows on demand (a price with more decimals than any seen so far rescales
  the book once), and a per-book cache turns repeated price strings into keys
  with one dict lookup, which is what makes the hot path cheap.
* Bids are keyed by the negated integer so both sides are ascending
  ``SortedList``s whose element 0 is the best price.
* An update is parsed and validated completely before anything is written, so a
  bad level raises :class:`InvalidLevel` and leaves the book untouched.

Known depth (the book's *window*).  A venue's snapshot covers only part of its book, and a level
outside it is unknown until it changes (Binance's "How to manage a local order book": "the
levels outside the snapshot are not known"); an unknown level between two known ones makes every
deeper level useless for a ladder or a sweep.  So each side knows the price range it is complete
over and holds nothing beyond it; every level the book holds is known, and ``depth`` is the
number of complete levels per side.  Two kinds of window exist:

* **Snapshot window** (``apply_snapshot(..., depth=D)``, venues whose diffs cover the whole book:
  Binance, MEXC, BTSE).  When a side of the snapshot held at least ``D`` levels, the side is
  complete from its best price down to the snapshot's worst price ``W`` (its *bound*); when it held
  fewer, the venue sent its whole side and the side is complete to the end (no bound).  Because
  the diff stream reports every change at every price, the range ``[W, best]`` stays complete
  however the book moves: an update beyond ``W`` is dropped (the levels between it and ``W``
  would be unknown), one inside is applied.  Removing the level at ``W`` itself does not shrink
  the *range* (the diff says there is nothing at ``W``), only the number of complete levels: the
  window shrinks by that level and no deeper level becomes known.  The range never grows: only a
  new snapshot widens it.  When the market moves away from ``W`` the side holds fewer levels;
  a side with a bound and no level left has an unknown top (:meth:`exhausted`), which the
  sequencer treats as a reason to resynchronise.
* **Top-N window** (``max_depth=N``, venues whose stream itself is the top ``N``: NHEX/BitV
  ``mbp.N``).  The venue keeps the window filled: a level that leaves the top ``N`` is trimmed
  here (with or without the venue's delete) and one pulled in by a deletion arrives as an insert.
  A side holding ``N`` levels is complete down to its ``N``-th price; one holding fewer holds
  the venue's whole side.  Removing the edge level leaves ``N - 1`` levels until the venue sends
  the level that replaces it; no guess is made in between.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from decimal import Context, Decimal

from sortedcontainers import SortedList

from aggbook.book.errors import InvalidLevel

Level = tuple[str, str]  # (price text, size text) exactly as the venue wrote them
RawLevel = Sequence[str]  # what a venue message carries: [price, size]

BID_TOP_CHANGED = 1
ASK_TOP_CHANGED = 2

_INF = math.inf
_CTX = Context(prec=80)  # wide enough that scaling a price to an integer never rounds
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
_PLAIN = re.compile(r"(\d*)\.?(\d*)", re.ASCII)  # digits, an optional point: parsed without Decimal
_MAX_DECIMALS = 30
_CACHE_LIMIT = 100_000


class L2Book:
    """Bids and asks of one instrument at one venue."""

    __slots__ = (
        "_scale",
        "_bid_cache",
        "_ask_cache",
        "_bids",
        "_asks",
        "_bid_keys",
        "_ask_keys",
        "_best_bid",
        "_best_ask",
        "_bid_limit",
        "_ask_limit",
        "max_depth",
    )

    def __init__(self, max_depth: int | None = None) -> None:
        if max_depth is not None and max_depth < 1:
            raise ValueError("max_depth must be >= 1")
        self.max_depth = max_depth
        self._scale = 0
        self._bid_cache: dict[str, int] = {}  # price text -> -units
        self._ask_cache: dict[str, int] = {}  # price text -> +units
        self._bids: dict[int, Level] = {}
        self._asks: dict[int, Level] = {}
        self._bid_keys: SortedList = SortedList()
        self._ask_keys: SortedList = SortedList()
        # best level per side, cached: read after every message by the consolidated book
        self._best_bid: Level | None = None
        self._best_ask: Level | None = None
        # snapshot window per side: (key of the worst price known, its text); None = complete to the end
        self._bid_limit: tuple[int, str] | None = None
        self._ask_limit: tuple[int, str] | None = None

    # ------------------------------------------------------------------ parsing
    def _learn(self, price: object) -> None:
        """Validate a price seen for the first time, rescale if needed, and cache its keys."""
        if type(price) is not str:
            raise InvalidLevel(f"price is not a decimal number: {price!r}")
        plain = _PLAIN.fullmatch(price)
        if plain is not None and (plain.group(1) or plain.group(2)):  # "93180.10", as venues write
            whole, frac = plain.group(1), plain.group(2).rstrip("0")
            decimals = len(frac)
            positive = bool(frac) or whole.strip("0") != ""
        elif not _NUMBER.fullmatch(price):
            raise InvalidLevel(f"price is not a decimal number: {price!r}")
        else:  # exponent form ("1.5e3"): rare, let Decimal do it
            plain = None
            value = Decimal(price)
            decimals = max(0, -value.normalize(_CTX).as_tuple().exponent)  # type: ignore[operator]
            positive = value > 0
        if not positive:
            raise InvalidLevel(f"price must be positive: {price!r}")
        if decimals > _MAX_DECIMALS:
            raise InvalidLevel(f"price has more than {_MAX_DECIMALS} decimals: {price!r}")
        if decimals > self._scale:
            self._rescale(decimals)
        if plain is not None:
            units = int((whole or "0") + frac) * 10 ** (self._scale - decimals)
        else:
            units = int(value.scaleb(self._scale, _CTX))
        if len(self._ask_cache) >= _CACHE_LIMIT:
            self._ask_cache.clear()
            self._bid_cache.clear()
        self._ask_cache[price] = units
        self._bid_cache[price] = -units

    def _rescale(self, scale: int) -> None:
        factor = 10 ** (scale - self._scale)
        self._scale = scale
        self._bid_cache.clear()
        self._ask_cache.clear()
        self._bids = {k * factor: v for k, v in self._bids.items()}
        self._asks = {k * factor: v for k, v in self._asks.items()}
        self._bid_keys = SortedList(self._bids)
        self._ask_keys = SortedList(self._asks)
        if self._bid_limit is not None:
            self._bid_limit = (self._bid_limit[0] * factor, self._bid_limit[1])
        if self._ask_limit is not None:
            self._ask_limit = (self._ask_limit[0] * factor, self._ask_limit[1])

    def _parse(self, levels: Iterable[RawLevel], cache: dict[str, int]) -> list[tuple[int, Level | None]]:
        """Turn raw ``[price, size]`` pairs into ``(key, level or None-for-delete)``."""
        out: list[tuple[int, Level | None]] = []
        append = out.append
        inf = _INF
        try:
            for price, size in levels:
                key = cache.get(price)
                if key is None:
                    self._learn(price)
                    key = cache[price]
                qty = float(size)
                if 0.0 < qty < inf:
                    append((key, (price, size)))
                elif qty == 0.0:
                    append((key, None))
                else:
                    raise InvalidLevel(f"size must be a finite non-negative number: {size!r}")
        except InvalidLevel:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidLevel(f"malformed level: {exc}") from exc
        return out

    def _parse_both(
        self, bids: Iterable[RawLevel] | None, asks: Iterable[RawLevel] | None
    ) -> tuple[list[tuple[int, Level | None]], list[tuple[int, Level | None]]]:
        if bids and not isinstance(bids, (list, tuple)):
            bids = list(bids)  # iterated twice if a rescale happens
        if asks and not isinstance(asks, (list, tuple)):
            asks = list(asks)
        while True:
            scale = self._scale
            bid_ops = self._parse(bids, self._bid_cache) if bids else []
            ask_ops = self._parse(asks, self._ask_cache) if asks else []
            if self._scale == scale:  # no rescale happened half-way: keys are consistent
                return bid_ops, ask_ops

    # ------------------------------------------------------------------ writing
    def apply_snapshot(
        self, bids: Iterable[RawLevel], asks: Iterable[RawLevel], depth: int | None = None
    ) -> None:
        """Replace the whole book (levels in order; a zero size removes, as in a delta).

        ``depth`` is the number of levels per side the snapshot was asked for (None: the venue sent
        its whole book): a side that came back with that many levels is complete only down to its
        worst price (the module docstring's snapshot window).
        """
        if depth is not None and depth < 1:
            raise ValueError("depth must be >= 1")
        bid_ops, ask_ops = self._parse_both(bids, asks)
        self._bids = self._collect(bid_ops)
        self._asks = self._collect(ask_ops)
        self._bid_keys = SortedList(self._bids)
        self._ask_keys = SortedList(self._asks)
        self._bid_limit = self._limit(self._bids, self._bid_keys, depth)
        self._ask_limit = self._limit(self._asks, self._ask_keys, depth)
        self._trim()
        self._best_bid = self._bids[self._bid_keys[0]] if self._bids else None
        self._best_ask = self._asks[self._ask_keys[0]] if self._asks else None

    @staticmethod
    def _limit(levels: dict[int, Level], keys: SortedList, depth: int | None) -> tuple[int, str] | None:
        if depth is None or len(keys) < depth:
            return None
        worst = keys[-1]
        return worst, levels[worst][0]

    @staticmethod
    def _collect(ops: list[tuple[int, Level | None]]) -> dict[int, Level]:
        """Levels in message order: a repeated price keeps its last size, a zero removes it."""
        levels: dict[int, Level] = {}
        for key, level in ops:
            if level is None:
                levels.pop(key, None)
            else:
                levels[key] = level
        return levels

    def apply(self, bids: Iterable[RawLevel] | None, asks: Iterable[RawLevel] | None) -> int:
        """Apply absolute level sizes (size 0 removes; removing an absent level is a no-op).

        Returns a bit mask of :data:`BID_TOP_CHANGED` / :data:`ASK_TOP_CHANGED` so the
        consolidated book only recomputes when a venue's top of book moved.
        """
        bid_ops, ask_ops = self._parse_both(bids, asks)
        changed = 0
        if self._bid_limit is not None and bid_ops:
            edge = self._bid_limit[0]
            bid_ops = [op for op in bid_ops if op[0] <= edge]  # beyond the window: unknown context
        if self._ask_limit is not None and ask_ops:
            edge = self._ask_limit[0]
            ask_ops = [op for op in ask_ops if op[0] <= edge]
        if bid_ops:
            keys = self._bid_keys
            levels = self._bids
            self._write(bid_ops, levels, keys)
            top = levels[keys[0]] if levels else None
            if top is not self._best_bid:
                self._best_bid = top
                changed = BID_TOP_CHANGED
        if ask_ops:
            keys = self._ask_keys
            levels = self._asks
            self._write(ask_ops, levels, keys)
            top = levels[keys[0]] if levels else None
            if top is not self._best_ask:
                self._best_ask = top
                changed |= ASK_TOP_CHANGED
        if self.max_depth is not None:
            self._trim()
        return changed

    @staticmethod
    def _write(ops: list[tuple[int, Level | None]], levels: dict[int, Level], keys: SortedList) -> None:
        add = keys.add
        for key, level in ops:
            if level is None:
                if levels.pop(key, None) is not None:
                    keys.remove(key)
            else:
                if key not in levels:
                    add(key)
                levels[key] = level

    def set_level(self, side: str, price: str, size: str) -> int:
        """Set one level on ``side`` ("bid" or "ask") to an absolute size."""
        if side == "bid":
            return self.apply(((price, size),), None)
        if side == "ask":
            return self.apply(None, ((price, size),))
        raise InvalidLevel(f"side must be 'bid' or 'ask': {side!r}")

    def clear(self) -> None:
        self._best_bid = self._best_ask = None
        self._bid_limit = self._ask_limit = None
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()

    def _trim(self) -> None:
        if self.max_depth is not None:
            self.trim(self.max_depth)

    def trim(self, depth: int) -> None:
        """Keep only the best ``depth`` levels per side (for venues that publish a window)."""
        if depth < 1:
            raise ValueError("depth must be >= 1")
        for levels, keys in ((self._bids, self._bid_keys), (self._asks, self._ask_keys)):
            while len(keys) > depth:
                del levels[keys.pop()]

    # ------------------------------------------------------------------ reading
    def best_bid(self) -> Level | None:
        return self._best_bid

    def best_ask(self) -> Level | None:
        return self._best_ask

    def bids(self, n: int | None = None) -> list[Level]:
        """Best ``n`` bids, highest price first (all when ``n`` is None)."""
        levels = self._bids
        return [levels[k] for k in self._bid_keys.islice(0, n)]

    def asks(self, n: int | None = None) -> list[Level]:
        """Best ``n`` asks, lowest price first (all when ``n`` is None)."""
        levels = self._asks
        return [levels[k] for k in self._ask_keys.islice(0, n)]

    def window(self) -> tuple[str | None, str | None]:
        """Per side (bids, asks), the price text the side is complete down to; None = to the end.

        Every level the book holds is inside its window; see the module docstring for how the
        window is kept.
        """
        return (self._edge(self._bids, self._bid_keys, self._bid_limit),
                self._edge(self._asks, self._ask_keys, self._ask_limit))

    def _edge(self, levels: dict[int, Level], keys: SortedList, limit: tuple[int, str] | None) -> str | None:
        if self.max_depth is not None and len(keys) >= self.max_depth:
            return levels[keys[-1]][0]  # a full top-N window ends at its N-th level
        return None if limit is None else limit[1]

    def exhausted(self) -> bool:
        """A side with a snapshot window holds no level: its best price is unknown."""
        return ((self._bid_limit is not None and not self._bids)
                or (self._ask_limit is not None and not self._asks))

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    @property
    def depth(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    def cross_state(self) -> str | None:
        """``"crossed"`` if best bid > best ask, ``"locked"`` if equal, else None."""
        if not self._bid_keys or not self._ask_keys:
            return None
        bid_units = -self._bid_keys[0]
        ask_units = self._ask_keys[0]
        if bid_units > ask_units:
            return "crossed"
        if bid_units == ask_units:
            return "locked"
        return None

    def is_crossed_or_locked(self) -> bool:
        return self.cross_state() is not None

    def as_decimal(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        """Both sides as ``{price: size}`` Decimals: for comparisons in tests and checks."""
        return (
            {Decimal(p): Decimal(s) for p, s in self._bids.values()},
            {Decimal(p): Decimal(s) for p, s in self._asks.values()},
        )
