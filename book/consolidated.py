"""The consolidated view of one canonical symbol across venues.

It listens to every venue's :class:`~book.sync.BookSync` for that symbol.  The
consolidated best bid and ask are maintained incrementally: a venue update that
does not move that venue's top of book costs nothing here, a top-of-book move
costs O(1) (compare with the cached best, or mark it dirty if the venue that held
the best got worse), and only a query that finds the cache dirty scans the
venues.  ``scans`` counts those scans so tests can hold the property.

Venues are excluded from every answer when they are not live or stale; the answer
says which and why.  Liveness is per connection, staleness per book: a book whose
connection keeps proving itself alive (pings, pongs, any frame: its
:class:`~book.sync.Liveness`) stays included however long the book itself goes
unchanged, and is only *quiet* (not changed for ``stale_after`` seconds); it is
*stale*, and excluded, once its connection is silent past the venue's timeout.  A
book without a ``Liveness`` (a test's bare sync) is stale ``stale_after`` seconds
after its last change.
Every price and size leaves in canonical decimal text (:mod:`aggbook.book.canonical`): one
spelling per number whichever venue wrote it, converted once where a level is taken from a venue
book and cached per spelling; totals and fee-adjusted prices are exact ``Decimal`` arithmetic in
the same form.  A single venue's own book keeps its exact wire text; it is not read through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Context, Decimal
from enum import StrEnum

from aggbook.book.canonical import CanonicalText
from aggbook.book.l2 import ASK_TOP_CHANGED, BID_TOP_CHANGED
from aggbook.book.sync import BookSync, SyncState, Transition

BPS = Decimal(10_000)
_WIDE = Context(prec=80)  # normalising never rounds a sum or product of venue numbers


def fmt(value: Decimal) -> str:
    """Canonical text of a computed number: no exponent, no trailing zeros (``1.50E-7`` -> ``0.00000015``)."""
    return format(value.normalize(_WIDE), "f")


class Freshness(StrEnum):
    """How current a live book is known to be."""

    FRESH = "fresh"  # changed within stale_after
    QUIET = "quiet"  # unchanged for longer, but its connection proves itself alive: still included
    STALE = "stale"  # its connection has been silent past the venue's timeout: excluded


@dataclass(frozen=True, slots=True)
class VenueLevel:
    venue: str
    price: str  # canonical text
    size: str  # canonical text
    fee_adjusted_price: str | None = None


@dataclass(frozen=True, slots=True)
class SideQuote:
    """One side of the consolidated top of book: the best price and everyone at it."""

    price: str
    size: str  # total across venues at this price
    venues: tuple[VenueLevel, ...]
    fee_adjusted: bool = False


@dataclass(frozen=True, slots=True)
class VenueQuote:
    venue: str
    state: str
    bid: tuple[str, str] | None
    ask: tuple[str, str] | None
    age: float | None  # seconds since the book was last known current
    included: bool
    excluded_reason: str | None
    last_id: int | None
    fee_bps: str
    freshness: str | None = None  # a Freshness value for a live book, None otherwise


@dataclass(frozen=True, slots=True)
class ConsolidatedQuote:
    symbol: str
    bid: SideQuote | None
    ask: SideQuote | None
    crossed: bool
    locked: bool
    spread: str | None
    venues: tuple[VenueQuote, ...]

    @property
    def excluded(self) -> dict[str, str]:
        return {v.venue: v.excluded_reason or "" for v in self.venues if not v.included}


@dataclass(frozen=True, slots=True)
class LadderLevel:
    price: str
    size: str
    venues: tuple[tuple[str, str], ...]  # (venue, canonical size text), best venue size first


@dataclass(frozen=True, slots=True)
class Ladder:
    symbol: str
    bids: tuple[LadderLevel, ...]
    asks: tuple[LadderLevel, ...]
    venues: tuple[str, ...]  # the venues merged
    excluded: dict[str, str] = field(default_factory=dict)
    # per merged venue, its complete levels (bids, asks) counted up to the ladder's depth; per side,
    # the price the ladder stops at when a venue's window (not ``depth``) ended it, else None.  Both
    # change only when the ladder's own levels could, so a subscriber is not woken by deep churn.
    complete_depth: dict[str, tuple[int, int]] = field(default_factory=dict)
    complete_to: tuple[str | None, str | None] = (None, None)


@dataclass(slots=True)
class _Top:
    """A venue's cached best price on one side: (Decimal price, canonical price text, canonical size text)."""

    price: Decimal
    text: str
    size: str


class ConsolidatedBook:
    """Best bid/ask and merged depth of one symbol across venues."""

    def __init__(
        self,
        symbol: str,
        *,
        stale_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        venues: Iterable[str] = (),
    ) -> None:
        self.symbol = symbol
        # Venues are always listed in this order (the config's), never in the order their books
        # happened to arrive or go live: clients diff and display these lists.
        self._rank: dict[str, int] = {v: i for i, v in enumerate(venues)}
        self.stale_after = stale_after
        self.clock = clock
        self.syncs: dict[str, BookSync] = {}
        self.fees: dict[str, Decimal] = {}
        self._bids: dict[str, _Top] = {}  # live venues only
        self._asks: dict[str, _Top] = {}
        self._best_bid: Decimal | None = None
        self._best_ask: Decimal | None = None
        self._bid_dirty = True
        self._ask_dirty = True
        self.scans = 0
        self.text = CanonicalText()  # venue text -> canonical text, for every level taken from a book
        self.updated_at: float | None = None  # last time a venue's top or state moved this book

    # ------------------------------------------------------------------ wiring
    def add_venue(self, sync: BookSync, fee_bps: Decimal | str | int = 0) -> None:
        venue = sync.venue
        if venue in self.syncs:
            raise ValueError(f"venue {venue!r} already attached to {self.symbol}")
        self._rank.setdefault(venue, len(self._rank))
        self.syncs[venue] = sync
        self.syncs = dict(sorted(self.syncs.items(), key=lambda item: self._rank[item[0]]))
        self.fees[venue] = Decimal(fee_bps)
        self.updated_at = self.clock()
        if sync.live:
            self._refresh(sync, BID_TOP_CHANGED | ASK_TOP_CHANGED)

    def replace_venue(self, sync: BookSync) -> None:
        """Swap in a new sync for a venue (make-before-break rollover) keeping its fee."""
        self.syncs[sync.venue] = sync
        self.fees.setdefault(sync.venue, Decimal(0))
        self._drop(sync.venue)
        if sync.live:
            self._refresh(sync, BID_TOP_CHANGED | ASK_TOP_CHANGED)
        self.updated_at = self.clock()

    # ------------------------------------------------------------------ told by whoever wires the venues
    # (the service's Aggregator; a test may attach the book to a sync directly).  They say whether
    # this book moved, so the caller decides what to recompute: the book keeps no listeners itself.
    def on_transition(self, sync: BookSync, transition: Transition) -> bool:
        if self.syncs.get(sync.venue) is not sync:
            return False
        if transition.new is SyncState.LIVE:
            self._refresh(sync, BID_TOP_CHANGED | ASK_TOP_CHANGED)
        else:
            self._drop(sync.venue)
        self.updated_at = self.clock()
        return True

    def on_update(self, sync: BookSync, changed: int) -> bool:
        """``True`` when a venue's top of book moved (the quote changes); depth changes say ``False``."""
        if changed and self.syncs.get(sync.venue) is sync:
            self._refresh(sync, changed)
            self.updated_at = self.clock()
            return True
        return False

    # ------------------------------------------------------------------ incremental best
    def _refresh(self, sync: BookSync, changed: int) -> None:
        venue = sync.venue
        if changed & BID_TOP_CHANGED:
            level = sync.book.best_bid()
            old = self._bids.pop(venue, None)
            if level is not None:
                price = self.text(level[0])
                top = _Top(Decimal(price), price, self.text(level[1]))
                self._bids[venue] = top
                if not self._bid_dirty and (self._best_bid is None or top.price > self._best_bid):
                    self._best_bid = top.price
            else:
                top = None
            if old is not None and old.price == self._best_bid and (top is None or top.price < old.price):
                self._bid_dirty = True
        if changed & ASK_TOP_CHANGED:
            level = sync.book.best_ask()
            old = self._asks.pop(venue, None)
            if level is not None:
                price = self.text(level[0])
                top = _Top(Decimal(price), price, self.text(level[1]))
                self._asks[venue] = top
                if not self._ask_dirty and (self._best_ask is None or top.price < self._best_ask):
                    self._best_ask = top.price
            else:
                top = None
            if old is not None and old.price == self._best_ask and (top is None or top.price > old.price):
                self._ask_dirty = True

    def _drop(self, venue: str) -> None:
        old = self._bids.pop(venue, None)
        if old is not None and old.price == self._best_bid:
            self._bid_dirty = True
        old = self._asks.pop(venue, None)
        if old is not None and old.price == self._best_ask:
            self._ask_dirty = True

    def _ensure_best(self) -> None:
        if self._bid_dirty:
            self.scans += 1
            self._best_bid = max((t.price for t in self._bids.values()), default=None)
            self._bid_dirty = False
        if self._ask_dirty:
            self.scans += 1
            self._best_ask = min((t.price for t in self._asks.values()), default=None)
            self._ask_dirty = False

    # ------------------------------------------------------------------ eligibility
    def freshness(self, venue: str, now: float | None = None) -> Freshness | None:
        """Fresh, quiet or stale for a live book (see the module docstring); None when not live."""
        sync = self.syncs[venue]
        if sync.state is not SyncState.LIVE:
            return None
        now = self.clock() if now is None else now
        unchanged = sync.updated_at is None or now - sync.updated_at > self.stale_after
        liveness = sync.liveness
        if liveness is None:
            return Freshness.STALE if unchanged else Freshness.FRESH
        if not liveness.alive(now):
            return Freshness.STALE
        return Freshness.QUIET if unchanged else Freshness.FRESH

    def _exclusion(self, venue: str, now: float) -> str | None:
        sync = self.syncs[venue]
        if sync.state is not SyncState.LIVE:
            return f"{sync.state.value}: {sync.reason.value}"
        if self.freshness(venue, now) is Freshness.STALE:
            return "stale"
        return None

    def eligible(
        self, now: float | None = None, venues: Iterable[str] | None = None
    ) -> dict[str, str | None]:
        """venue -> None when included, else the reason it is excluded."""
        now = self.clock() if now is None else now
        wanted = set(venues) if venues is not None else None
        out: dict[str, str | None] = {}
        for venue in self.syncs:
            if wanted is not None and venue not in wanted:
                continue
            out[venue] = self._exclusion(venue, now)
        return out

    # ------------------------------------------------------------------ queries
    def quote(self, *, fees: bool = False, now: float | None = None) -> ConsolidatedQuote:
        now = self.clock() if now is None else now
        status = self.eligible(now)
        included = {v for v, why in status.items() if why is None}
        if fees:
            bid = self._side_with_fees(self._bids, included, is_bid=True)
            ask = self._side_with_fees(self._asks, included, is_bid=False)
        else:
            self._ensure_best()
            all_live_included = included.issuperset(self._bids) and included.issuperset(self._asks)
            if all_live_included:
                best_bid, best_ask = self._best_bid, self._best_ask
            else:
                best_bid = max((t.price for v, t in self._bids.items() if v in included), default=None)
                best_ask = min((t.price for v, t in self._asks.items() if v in included), default=None)
            bid = self._side_at(self._bids, included, best_bid)
            ask = self._side_at(self._asks, included, best_ask)
        crossed = locked = False
        spread = None
        if bid is not None and ask is not None:
            b, a = Decimal(bid.price), Decimal(ask.price)
            crossed, locked = b > a, b == a
            spread = fmt(a - b)
        venues = tuple(self._venue_quote(v, status[v], now) for v in self.syncs)
        return ConsolidatedQuote(self.symbol, bid, ask, crossed, locked, spread, venues)

    def _side_at(self, tops: dict[str, _Top], included: set[str], best: Decimal | None) -> SideQuote | None:
        if best is None:
            return None
        at = sorted(((v, t) for v, t in tops.items() if v in included and t.price == best),
                    key=lambda item: self._rank[item[0]])
        if not at:
            return None
        total = sum((Decimal(t.size) for _, t in at), Decimal(0))
        return SideQuote(at[0][1].text, fmt(total), tuple(VenueLevel(v, t.text, t.size) for v, t in at))

    def _side_with_fees(self, tops: dict[str, _Top], included: set[str], *, is_bid: bool) -> SideQuote | None:
        adjusted: list[tuple[Decimal, str, _Top]] = []
        for venue, top in tops.items():
            if venue not in included:
                continue
            factor = (BPS - self.fees[venue]) / BPS if is_bid else (BPS + self.fees[venue]) / BPS
            adjusted.append((top.price * factor, venue, top))
        if not adjusted:
            return None
        best = max(a[0] for a in adjusted) if is_bid else min(a[0] for a in adjusted)
        at = sorted((a for a in adjusted if a[0] == best), key=lambda a: self._rank[a[1]])
        total = sum((Decimal(t.size) for _, _, t in at), Decimal(0))
        levels = tuple(VenueLevel(v, t.text, t.size, fmt(p)) for p, v, t in at)
        return SideQuote(fmt(best), fmt(total), levels, fee_adjusted=True)

    def _venue_quote(self, venue: str, why: str | None, now: float) -> VenueQuote:
        sync = self.syncs[venue]
        live = sync.state is SyncState.LIVE
        bid = self.text.level(sync.book.best_bid()) if live else None
        ask = self.text.level(sync.book.best_ask()) if live else None
        age = None if sync.updated_at is None else max(0.0, now - sync.updated_at)
        fresh = self.freshness(venue, now)
        return VenueQuote(venue, sync.state.value, bid, ask, age, why is None, why, sync.last_id,
                          fmt(self.fees[venue]), None if fresh is None else fresh.value)

    def ladder(self, depth: int = 10, venues: Iterable[str] | None = None,
               now: float | None = None) -> Ladder:
        """Merged top ``depth`` prices per side, each with total size and per-venue sizes."""
        status = self.eligible(now, venues)
        included = [v for v, why in status.items() if why is None]
        excluded = {v: why for v, why in status.items() if why is not None}
        bid_to = self.complete_to(included, is_bid=True)
        ask_to = self.complete_to(included, is_bid=False)
        bids = self._merge(included, depth, is_bid=True, cut=bid_to)
        asks = self._merge(included, depth, is_bid=False, cut=ask_to)
        complete = {v: (min(b, depth), min(a, depth)) for v in included
                    for b, a in (self.syncs[v].book.depth,)}
        return Ladder(self.symbol, bids, asks, tuple(included), excluded, complete,
                      (None if bid_to is None or len(bids) >= depth else self.text(bid_to[1]),
                       None if ask_to is None or len(asks) >= depth else self.text(ask_to[1])))

    def complete_to(self, venues: Iterable[str], *, is_bid: bool) -> tuple[Decimal, str] | None:
        """The price every one of ``venues`` is known down to on one side (None: all to the end).

        A merged price beyond one venue's window would leave that venue's size there unknown, so
        merged answers stop at the tightest window (``L2Book.window``).
        """
        cut: tuple[Decimal, str] | None = None
        for venue in venues:
            edge = self.syncs[venue].book.window()[0 if is_bid else 1]
            if edge is None:
                continue
            price = Decimal(edge)
            if cut is None or (price > cut[0] if is_bid else price < cut[0]):
                cut = (price, edge)
        return cut

    def _merge(self, venues: list[str], depth: int, *, is_bid: bool,
               cut: tuple[Decimal, str] | None = None) -> tuple[LadderLevel, ...]:
        # keyed by canonical price text: one spelling per number, so "100.0" and "100" meet here
        merged: dict[str, list[tuple[str, str]]] = {}
        text = self.text
        for venue in venues:
            book = self.syncs[venue].book
            for price, size in (book.bids(depth) if is_bid else book.asks(depth)):
                if cut is not None and (Decimal(price) < cut[0] if is_bid else Decimal(price) > cut[0]):
                    break  # beyond some venue's known depth: not a complete level
                merged.setdefault(text(price), []).append((venue, text(size)))
        prices = sorted(merged, key=Decimal, reverse=is_bid)[:depth]
        out = []
        for p in prices:
            entries = sorted(merged[p], key=lambda e: Decimal(e[1]), reverse=True)
            total = sum((Decimal(e[1]) for e in entries), Decimal(0))
            out.append(LadderLevel(p, fmt(total), tuple(entries)))
        return tuple(out)
