"""An in-memory L2 book that keeps every price and size as the text the venue sent.

What it must do:

* Output must be the venue's exact decimal text (``"93180.10"``), so each level
  stores the ``(price_text, size_text)`` pair it last received.
* Ordering must be numeric and ``"100"``/``"100.0"`` must be one level, so levels
  are keyed by the price as an exact integer count of ``10**-scale`` units.  The
  scale grows on demand (a price with more decimals than any seen so far rescales
  the book once), and a per-book cache turns repeated price strings into keys
  with one dict lookup.  Bids are keyed by the negated integer, so on both sides
  the smallest key is the best price.
* The best bid and ask are read after every message (the consolidated book); sorted
  depth is read only on demand (merged ladder, ``/v1/books``, sweeps).
* An update is validated completely before anything is written, so a bad level
  raises :class:`InvalidLevel` and leaves the book untouched.

Why this structure:

Writes dominate: every venue message sets or deletes a handful of levels, and a
sorted container (``SortedList``, which this module kept in step on every write
before) pays an ordered insert or remove in Python for every new or deleted price,
most of the write cost.
Only the best price is needed after every message, so each side is a ``dict`` of
levels plus a ``heapq`` min-heap of keys (heapq is C) that answers just that:

* The common message (every price seen before, no snapshot window) is parsed and
  written in one pass per side (``_Side.update``): a dict store per level, and a
  ``heappush`` only when the price is new to the book.  To stay all-or-nothing
  without validating first, each write is logged (key, level before) and a level
  that raises (a new price, a malformed level) takes both sides back
  (``_Side.rollback``); the message then goes through the careful path, which
  parses and validates it into ``(key, level)`` operations, learning new prices,
  before writing any.  Bulk C-level variants (``zip``/``map``/``dict.update`` per
  message side, a list comprehension, one regular expression over the joined sizes
  instead of ``float``) were measured and lost: messages are small (a few levels
  per side), and a dozen C calls or a closure per side cost more than they save.
* The heap gets a key pushed only when the price is new to the book; a deleted
  price stays in the heap until it surfaces at the top, where it is popped (lazy
  deletion).  After every write the top of the heap is a live level, so the best
  price and ``cross_state()`` are O(1) reads.  Stale keys are bounded: when the heap
  holds more than twice the live levels (plus slack) it is rebuilt from the dict.
* A short depth query (a ladder's few levels of a deep book) pops them from a copy
  of the heap.  A whole side (an audit, a sweep) with no order kept is one C sort of
  its keys: the read costs a sort either way, and keeping an order for it would make
  later writes note their changes and leave tracked lists for the garbage collector.
  Longer slices (a deep ``/v1/books``) read a ``SortedList``
  of keys, brought up to date only when such a query asks: a write notes each
  price that appeared or vanished in a list (a C append), and the query applies
  their net effect (an add or discard per noted price) before it slices.  A side
  never queried that way notes at most about one change per level (plus slack),
  then drops its order and the next such query rebuilds it in one sort; without an
  order the one-pass update notes nothing.
* ``max_depth`` (venues that publish a window of N levels) drops the worst levels,
  the largest keys, after each message; the heap forgets them lazily.

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
from heapq import heapify, heappop, heappush, nlargest

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
_HEAP_SLACK = 64  # stale heap keys tolerated beyond one per live level before a rebuild
_PENDING_SLACK = 64  # order changes kept for the next depth query beyond one per live level
_SHORT_QUERY = 8  # a depth query for fewer than 1/_SHORT_QUERY of the levels pops them from the heap

_Ops = list[tuple[int, Level | None]]  # one side of a message, validated: (key, level or None to delete)
_Undo = list[Level | None]  # per level a one-pass update got through: the level it replaced, or None


class _Side:
    """One side of the book: levels by key, the key heap for the best price, the sorted keys for depth."""

    __slots__ = ("levels", "heap", "ordered", "pending", "limit")

    def __init__(self) -> None:
        self.levels: dict[int, Level] = {}
        # every live key, plus keys deleted since they were pushed; heap[0] is live after every write
        self.heap: list[int] = []
        # the keys in price order as of the last depth query; None: rebuilt by the next one
        self.ordered: SortedList | None = None
        # keys added or removed since ``ordered`` was brought up to date (a key may repeat)
        self.pending: list[int] = []
        # snapshot window: (key of the worst price known, its text); None = complete to the end
        self.limit: tuple[int, str] | None = None

    def write(self, ops: _Ops) -> Level | None:
        """Apply validated operations in message order; return the best level afterwards."""
        levels = self.levels
        heap = self.heap
        note = self.pending.append
        for key, level in ops:
            if level is None:
                if levels.pop(key, None) is not None:
                    note(key)  # its heap key dies lazily
            else:
                if key not in levels:
                    heappush(heap, key)
                    note(key)
                levels[key] = level
        if len(self.pending) > len(levels) + _PENDING_SLACK:
            self.forget_order()  # no depth query for a while: rebuilding will be cheaper
        if levels and len(heap) <= 2 * len(levels) + _HEAP_SLACK:  # settle(), written out
            while heap[0] not in levels:
                heappop(heap)
            return levels[heap[0]]
        return self.settle()

    def update(self, raw: Sequence[RawLevel], cache: dict[str, int], undo: _Undo) -> Level | None:
        """Parse and write one message side in a single pass; return the best level afterwards.

        The fast path for known prices and no window: no list of operations is built and read
        back.  Each level it gets through appends the level it replaced (None: none) to ``undo``,
        so that the caller can take the side back with :meth:`rollback` when a level raises: an
        unknown price (``KeyError``, learnt by the careful path) or a malformed level
        (``TypeError``, ``ValueError``).  Nothing is written for the level that raises.
        """
        levels = self.levels
        heap = self.heap
        # with no sorted order kept (no long depth query since it was dropped) there is nothing to
        # note: a C call that does nothing costs less than a test per level
        note = self.pending.append if self.ordered is not None else callable
        log = undo.append
        for price, size in raw:
            key = cache[price]
            qty = float(size)
            if 0.0 < qty < _INF:
                old = levels.get(key)
                levels[key] = (price, size)
                if old is None:
                    heappush(heap, key)
                    note(key)
                log(old)
            elif qty == 0.0:
                old = levels.pop(key, None)
                if old is not None:
                    note(key)  # its heap key dies lazily
                log(old)
            else:
                raise ValueError(f"size must be a finite non-negative number: {size!r}")
        if len(self.pending) > len(levels) + _PENDING_SLACK:
            self.forget_order()  # no depth query for a while: rebuilding will be cheaper
        if levels and len(heap) <= 2 * len(levels) + _HEAP_SLACK:  # settle(), written out
            while heap[0] not in levels:
                heappop(heap)
            return levels[heap[0]]
        return self.settle()

    def rollback(self, raw: Sequence[RawLevel], cache: dict[str, int], undo: _Undo) -> None:
        """Undo what :meth:`update` did with the first ``len(undo)`` levels of ``raw``, newest first.

        Rolled back, the state after each level is the one before it: where that level found no
        level (None) its key is absent again, else the level object it found is back.
        """
        levels = self.levels
        heap = self.heap
        note = self.pending.append
        for i in range(len(undo) - 1, -1, -1):
            key = cache[raw[i][0]]
            old = undo[i]
            if old is None:
                levels.pop(key, None)
            else:
                if key not in levels:  # deleted: its heap key may have been popped since
                    heappush(heap, key)
                levels[key] = old
            note(key)
        self.settle()

    def load(self, ops: _Ops) -> None:
        """Fill an empty side from a snapshot: one heapify instead of a push per level."""
        levels = self.levels
        for key, level in ops:
            if level is None:
                levels.pop(key, None)
            else:
                levels[key] = level
        self.heap = list(levels)
        heapify(self.heap)
        self.forget_order()

    def forget_order(self) -> None:
        self.ordered = None
        self.pending = []

    def settle(self) -> Level | None:
        """Pop dead keys off the top of the heap, rebuild it if mostly dead; return the best level."""
        levels = self.levels
        heap = self.heap
        if not levels:
            heap.clear()
            return None
        if len(heap) > 2 * len(levels) + _HEAP_SLACK:
            heap[:] = levels
            heapify(heap)
        else:
            while heap[0] not in levels:
                heappop(heap)
        return levels[heap[0]]

    def trim(self, depth: int) -> None:
        """Drop all but the best ``depth`` levels; their heap keys die lazily."""
        levels = self.levels
        excess = len(levels) - depth
        if excess <= 0:
            return
        if excess == 1:
            worst = max(levels)
            del levels[worst]
            self.pending.append(worst)
        else:
            for key in nlargest(excess, levels):
                del levels[key]
                self.pending.append(key)

    def rescale(self, factor: int) -> None:
        """Multiply every key by ``factor`` (the content and its order are unchanged)."""
        self.levels = {k * factor: v for k, v in self.levels.items()}
        self.heap = list(self.levels)
        heapify(self.heap)
        self.forget_order()
        if self.limit is not None:
            self.limit = (self.limit[0] * factor, self.limit[1])

    def bound(self, depth: int | None) -> None:
        """Set the snapshot window after a load: a side that filled ``depth`` ends at its worst price."""
        levels = self.levels
        if depth is None or len(levels) < depth:
            self.limit = None
        else:
            worst = max(levels)
            self.limit = (worst, levels[worst][0])

    def within(self, ops: _Ops) -> _Ops:
        """The operations inside the snapshot window: beyond it the context is unknown."""
        if self.limit is None:
            return ops
        edge = self.limit[0]
        return [op for op in ops if op[0] <= edge]

    def edge(self, max_depth: int | None) -> str | None:
        """The price text this side is complete down to; None = to the end."""
        levels = self.levels
        if max_depth is not None and len(levels) >= max_depth:
            return levels[max(levels)][0]  # a full top-N window ends at its N-th level
        return None if self.limit is None else self.limit[1]

    def best(self, n: int | None) -> list[Level]:
        """The best ``n`` levels in order (all when ``n`` is None); slice semantics otherwise."""
        levels = self.levels
        if n is not None and n >= 0 and n * _SHORT_QUERY < len(levels):
            return self.top(n)
        ordered = self.ordered
        if ordered is None and (n is None or n >= len(levels)):
            # the whole side and no order kept: one C sort of the keys.  A whole read costs a sort
            # either way; keeping a SortedList for it would make every later write note its change,
            # and leave a few tracked lists per book for the garbage collector's full passes to
            # walk (an audit reads every book whole, one after another)
            return list(map(levels.__getitem__, sorted(levels)))
        if ordered is None:
            ordered = self.ordered = SortedList(levels)
            self.pending = []
        elif self.pending:
            for key in set(self.pending):  # a key's net change: is it a level now?
                if key in levels:
                    if key not in ordered:
                        ordered.add(key)
                else:
                    ordered.discard(key)
            self.pending = []
        return list(map(levels.__getitem__, ordered.islice(0, n)))

    def top(self, n: int) -> list[Level]:
        """The best ``n`` levels (fewer than the side holds) popped from a copy of the heap.

        A ladder asks for a few levels of a deep book after most messages: a C copy of the heap
        and ``n`` pops cost less than bringing the sorted keys up to date, and touch nothing.
        """
        levels = self.levels
        heap = self.heap.copy()
        out: list[Level] = []
        last = None
        while len(out) < n:  # n < len(levels): the heap cannot run dry first
            key = heappop(heap)
            if key != last and key in levels:  # a re-added price can be in the heap twice
                out.append(levels[key])
                last = key
        return out


class L2Book:
    """Bids and asks of one instrument at one venue."""

    __slots__ = (
        "_scale",
        "_bid_cache",
        "_ask_cache",
        "_bids",
        "_asks",
        "_best_bid",
        "_best_ask",
        "max_depth",
    )

    def __init__(self, max_depth: int | None = None) -> None:
        if max_depth is not None and max_depth < 1:
            raise ValueError("max_depth must be >= 1")
        self.max_depth = max_depth
        self._scale = 0
        self._bid_cache: dict[str, int] = {}  # price text -> -units
        self._ask_cache: dict[str, int] = {}  # price text -> +units
        self._bids = _Side()
        self._asks = _Side()
        # best level per side, cached: read after every message by the consolidated book
        self._best_bid: Level | None = None
        self._best_ask: Level | None = None

    # ------------------------------------------------------------------ parsing
    def _learn(self, price: object, cache: dict[str, int]) -> int:
        """Validate a price seen for the first time, rescale if needed, cache its keys; return its key."""
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
        return cache[price]

    def _rescale(self, scale: int) -> None:
        factor = 10 ** (scale - self._scale)
        self._scale = scale
        self._bid_cache.clear()
        self._ask_cache.clear()
        self._bids.rescale(factor)
        self._asks.rescale(factor)

    def _parse(self, levels: Iterable[RawLevel], cache: dict[str, int]) -> _Ops:
        """Turn raw ``[price, size]`` pairs into ``(key, level or None-for-delete)``, in order."""
        out: _Ops = []
        append = out.append
        inf = _INF
        try:
            for price, size in levels:
                try:
                    key = cache[price]
                except KeyError:
                    key = self._learn(price, cache)
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
    ) -> tuple[_Ops | None, _Ops | None]:
        if bids and not isinstance(bids, (list, tuple)):
            bids = list(bids)  # iterated twice if a rescale happens
        if asks and not isinstance(asks, (list, tuple)):
            asks = list(asks)
        while True:
            scale = self._scale
            bid_ops = self._parse(bids, self._bid_cache) if bids else None
            ask_ops = self._parse(asks, self._ask_cache) if asks else None
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
        self._bids = _Side()
        self._asks = _Side()
        if bid_ops:
            self._bids.load(bid_ops)
        if ask_ops:
            self._asks.load(ask_ops)
        self._bids.bound(depth)
        self._asks.bound(depth)
        self._trim()
        self._best_bid = self._bids.settle()
        self._best_ask = self._asks.settle()

    def apply(self, bids: Iterable[RawLevel] | None, asks: Iterable[RawLevel] | None) -> int:
        """Apply absolute level sizes (size 0 removes; removing an absent level is a no-op).

        Returns a bit mask of :data:`BID_TOP_CHANGED` / :data:`ASK_TOP_CHANGED` so the
        consolidated book only recomputes when a venue's top of book moved.
        """
        bid_side = self._bids
        ask_side = self._asks
        if (
            bid_side.limit is None
            and ask_side.limit is None
            and (type(bids) is list or type(bids) is tuple or bids is None)
            and (type(asks) is list or type(asks) is tuple or asks is None)
        ):
            # one pass per side (``_Side.update``); the careful path below on anything unusual
            bid_undo: _Undo = []
            ask_undo: _Undo = []
            changed = 0
            try:
                if bids:
                    top = bid_side.update(bids, self._bid_cache, bid_undo)
                    if top is not self._best_bid:
                        self._best_bid = top
                        changed = BID_TOP_CHANGED
                if asks:
                    top = ask_side.update(asks, self._ask_cache, ask_undo)
                    if top is not self._best_ask:
                        self._best_ask = top
                        changed |= ASK_TOP_CHANGED
            except (KeyError, TypeError, ValueError):  # a new price or a bad level: as if never seen
                if asks:
                    ask_side.rollback(asks, self._ask_cache, ask_undo)
                if bids:
                    bid_side.rollback(bids, self._bid_cache, bid_undo)
                self._best_bid = bid_side.settle()
                self._best_ask = ask_side.settle()
            else:
                if self.max_depth is not None:
                    self.trim(self.max_depth)
                return changed
        return self._apply_careful(bids, asks)

    def _apply_careful(self, bids: Iterable[RawLevel] | None, asks: Iterable[RawLevel] | None) -> int:
        """:meth:`apply` through validated operations: new prices, windows, any iterable, errors named."""
        if bids and not isinstance(bids, (list, tuple)):
            bids = list(bids)  # parsed twice if a rescale happens
        if asks and not isinstance(asks, (list, tuple)):
            asks = list(asks)
        scale = self._scale
        bid_ops = self._parse(bids, self._bid_cache) if bids else None
        ask_ops = self._parse(asks, self._ask_cache) if asks else None
        if self._scale != scale:  # a new price rescaled the book half-way: keys of both scales
            bid_ops, ask_ops = self._parse_both(bids, asks)
        changed = 0
        if bid_ops:
            side = self._bids
            if side.limit is not None:
                bid_ops = side.within(bid_ops)
            top = side.write(bid_ops)
            if top is not self._best_bid:
                self._best_bid = top
                changed = BID_TOP_CHANGED
        if ask_ops:
            side = self._asks
            if side.limit is not None:
                ask_ops = side.within(ask_ops)
            top = side.write(ask_ops)
            if top is not self._best_ask:
                self._best_ask = top
                changed |= ASK_TOP_CHANGED
        if self.max_depth is not None:
            self.trim(self.max_depth)
        return changed

    def set_level(self, side: str, price: str, size: str) -> int:
        """Set one level on ``side`` ("bid" or "ask") to an absolute size."""
        if side == "bid":
            return self.apply(((price, size),), None)
        if side == "ask":
            return self.apply(None, ((price, size),))
        raise InvalidLevel(f"side must be 'bid' or 'ask': {side!r}")

    def clear(self) -> None:
        self._best_bid = self._best_ask = None
        self._bids = _Side()
        self._asks = _Side()

    def _trim(self) -> None:
        if self.max_depth is not None:
            self.trim(self.max_depth)

    def trim(self, depth: int) -> None:
        """Keep only the best ``depth`` levels per side (for venues that publish a window)."""
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._bids.trim(depth)  # never the best level: the heap tops stay live
        self._asks.trim(depth)

    # ------------------------------------------------------------------ reading
    def best_bid(self) -> Level | None:
        return self._best_bid

    def best_ask(self) -> Level | None:
        return self._best_ask

    def bids(self, n: int | None = None) -> list[Level]:
        """Best ``n`` bids, highest price first (all when ``n`` is None)."""
        return self._bids.best(n)

    def asks(self, n: int | None = None) -> list[Level]:
        """Best ``n`` asks, lowest price first (all when ``n`` is None)."""
        return self._asks.best(n)

    def window(self) -> tuple[str | None, str | None]:
        """Per side (bids, asks), the price text the side is complete down to; None = to the end.

        Every level the book holds is inside its window; see the module docstring for how the
        window is kept.
        """
        return self._bids.edge(self.max_depth), self._asks.edge(self.max_depth)

    def exhausted(self) -> bool:
        """A side with a snapshot window holds no level: its best price is unknown."""
        bids, asks = self._bids, self._asks
        return (bids.limit is not None and not bids.levels) or (asks.limit is not None and not asks.levels)

    def __len__(self) -> int:
        return len(self._bids.levels) + len(self._asks.levels)

    @property
    def depth(self) -> tuple[int, int]:
        return len(self._bids.levels), len(self._asks.levels)

    def cross_state(self) -> str | None:
        """``"crossed"`` if best bid > best ask, ``"locked"`` if equal, else None."""
        if not self._bids.levels or not self._asks.levels:
            return None
        bid_units = -self._bids.heap[0]  # live after every write: see _Side.settle
        ask_units = self._asks.heap[0]
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
            {Decimal(p): Decimal(s) for p, s in self._bids.levels.values()},
            {Decimal(p): Decimal(s) for p, s in self._asks.levels.values()},
        )
