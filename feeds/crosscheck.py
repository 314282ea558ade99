"""Every venue book's top checked against the venue's own best-bid/offer stream.

A sequence check sees a lost or repeated message; it cannot see a level update the venue
dropped while keeping its ids contiguous.  The venue's best-bid/offer stream (Binance
``@bookTicker``, MEXC's book ticker, BTSE ``snapshotL1``, NHEX/BitV ``bbo``) is computed by the
venue from its own book, so a book whose top disagrees with it for longer than the two streams'
timing can explain is wrong, and is resynchronised (reason ``bbo_mismatch``, counted by the
service's resync counter like every other reason).

The two streams are not synchronised, so a disagreement alone proves nothing.  Two ways to compare:

* **By id** (the bbo says which book state it reflects: Binance's ``u``, MEXC's ``version``).
  A bbo is compared only when the book is at exactly that id (now, or when a later delta brings
  it there; a book that jumps past the id leaves that bbo uncompared).  Both then describe the
  same venue state, so one disagreement is proof: the book resyncs at once.
* **By time** (no usable id: BTSE, NHEX/BitV).  The latest bbo is compared with the book's top
  whenever either changes.  A disagreement that has lasted ``allowance`` seconds resyncs the
  book unless it is still explained by timing: the latest bbo equals a top the book had within
  the last ``allowance`` seconds, or the book's top equals a bbo seen within that time (one
  stream simply ran ahead of the other).  A timer looks again every quarter allowance while a
  disagreement is open, so a quiet market is no hiding place; a look more than half an allowance
  after the previous one (the event loop stalled, frames may be unread) starts the count afresh.
  Detection takes between one and two allowances.
  ``allowance`` must exceed both streams' documented cadence (100 ms pushes) plus their skew,
  hence the default of 2 s.

Prices and sizes compare as numbers (``"100.0"`` equals ``"100"``).  The checker keeps no
state across a book's resync except the latest bbo, which is still the venue's current top.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from aggbook.book.l2 import Level
from aggbook.book.sync import BookSync, SyncState

Top = tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]  # (bid, ask), numbers

_KEPT = 64  # top states remembered per stream for the by-time comparison
_LIVE = SyncState.LIVE  # bound once: after_book runs per delta, and an enum member read is slow on 3.11


@dataclass(frozen=True, slots=True)
class Bbo:
    """One best-bid/offer frame as the venue sent it: ``(price, size)`` text per side, or None."""

    bid: tuple[str, str] | None
    ask: tuple[str, str] | None
    book_id: int | None = None  # the book update id this top reflects, when the venue says so


def _side(level: tuple[str, str] | Level | None) -> tuple[Decimal, Decimal] | None:
    if level is None:
        return None
    price, size = Decimal(level[0]), Decimal(level[1])
    return None if size == 0 else (price, size)  # a zero-size side is an empty side


def bbo_top(bbo: Bbo) -> Top:
    """The bbo as numbers; ``ValueError`` for text that is not a number (the frame is bad)."""
    try:
        return _side(bbo.bid), _side(bbo.ask)
    except (InvalidOperation, TypeError, IndexError) as exc:
        raise ValueError(f"bad best bid/offer: {bbo}") from exc


def book_top(sync: BookSync) -> Top:
    return _side(sync.book.best_bid()), _side(sync.book.best_ask())


@dataclass
class CrossCheckCounters:
    """What the checks did, for the feed's status report."""

    bbos: int = 0  # bbo frames taken
    compared: int = 0  # comparisons made (by id at the same id, or by time)
    mismatches: int = 0  # comparisons that disagreed
    resyncs: int = 0  # books resynchronised for a disagreement that persisted
    seconds_to_resync: float | None = None  # from the first disagreement to the last resync

    def as_json(self) -> dict:
        return {"bbos": self.bbos, "compared": self.compared, "mismatches": self.mismatches,
                "resyncs": self.resyncs,
                "last_seconds_to_resync": None if self.seconds_to_resync is None
                else round(self.seconds_to_resync, 6)}


@dataclass
class _BookCheck:
    """The state of one book's check."""

    bbo: Top | None = None  # latest bbo
    pending: dict[int, Top] = field(default_factory=dict)  # by id: bbos the book has not reached yet
    book_tops: deque[tuple[float, Top]] = field(default_factory=lambda: deque(maxlen=_KEPT))
    bbo_tops: deque[tuple[float, Top]] = field(default_factory=lambda: deque(maxlen=_KEPT))
    since: float | None = None  # by time: when the current disagreement began
    seen_at: float | None = None  # by time: the last look at it (a frame of either stream, or the timer)
    timer: asyncio.TimerHandle | None = None
    # by time: the book's best levels (the L2Book's own objects) that ``book_tops[-1]`` was read from.
    # A book level is an immutable tuple replaced on every change, so while the book still holds these
    # very objects its top is that entry and need not be converted to numbers again.
    top_levels: tuple[object, object] | None = None
    book: weakref.ref[BookSync] | None = None  # the book, weakly: its death removes this check


class TopCrossCheck:
    """The checks of one feed's books; ``resync(sync, detail)`` is how a persisting mismatch acts."""

    def __init__(
        self,
        resync: Callable[[BookSync, str], None],
        *,
        allowance: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resync = resync
        self.allowance = allowance
        self.clock = clock
        self.counters = CrossCheckCounters()
        # per book, weakly: a retired book (closed connection, rollover) takes its check with it.  Keyed
        # by ``id(book)``, which ``after_book`` looks up on every delta of every venue (a
        # WeakKeyDictionary lookup costs two Python calls); the book's weak reference removes the
        # entry as the book dies, before its id can be reused.  Empty until a bbo arrives: the feeds'
        # ``deliver`` reads it to skip ``after_book`` while there is nothing to compare with.
        self.checks: dict[int, _BookCheck] = {}

    def _check_of(self, sync: BookSync) -> _BookCheck:
        key = id(sync)
        check = self.checks.get(key)
        if check is None:
            checks = self.checks
            check = checks[key] = _BookCheck()
            check.book = weakref.ref(sync, lambda _ref: checks.pop(key, None))
        return check

    # ------------------------------------------------------------------ inputs
    def on_bbo(self, sync: BookSync, bbo: Bbo) -> None:
        """A bbo frame for ``sync``'s symbol arrived (``ValueError`` if its numbers are not numbers)."""
        top = bbo_top(bbo)
        self.counters.bbos += 1
        check = self._check_of(sync)
        now = self.clock()
        check.bbo = top
        if bbo.book_id is not None:
            self._by_id(sync, check, bbo.book_id, top)
            return
        check.bbo_tops.append((now, top))
        self._by_time(sync, check, now)

    def after_book(self, sync: BookSync) -> None:
        """``sync`` applied a snapshot or delta (called by the feed after every one)."""
        check = self.checks.get(id(sync))
        if check is None:
            return  # no bbo seen for this book yet: nothing to compare with
        if sync.state is not _LIVE:
            self._reset(check)
            return
        if check.pending:
            last = sync.last_id
            for book_id in [i for i in check.pending if last is None or i <= last]:
                top = check.pending.pop(book_id)
                if book_id == last:
                    self._compare_now(sync, check, top)
            return
        if check.bbo_tops:
            book = sync.book
            levels = (book.best_bid(), book.best_ask())
            top_levels = check.top_levels
            if (top_levels is not None and levels[0] is top_levels[0] and levels[1] is top_levels[1]
                    and check.book_tops):
                return  # the same top as the last one noted (most deltas change deeper levels only)
            top = (_side(levels[0]), _side(levels[1]))
            if not check.book_tops or check.book_tops[-1][1] != top:
                now = self.clock()
                check.book_tops.append((now, top))
                check.top_levels = levels
                self._by_time(sync, check, now)
            else:
                check.top_levels = levels  # new objects, same top as the entry

    # ------------------------------------------------------------------ by id
    def _by_id(self, sync: BookSync, check: _BookCheck, book_id: int, top: Top) -> None:
        if not sync.live or sync.last_id is None:
            return
        if book_id == sync.last_id:
            self._compare_now(sync, check, top)
        elif book_id > sync.last_id:
            check.pending[book_id] = top
            while len(check.pending) > _KEPT:
                check.pending.pop(min(check.pending))

    def _compare_now(self, sync: BookSync, check: _BookCheck, top: Top) -> None:
        self.counters.compared += 1
        book = book_top(sync)
        if book == top:
            return
        self.counters.mismatches += 1
        self.counters.seconds_to_resync = 0.0
        self._act(sync, check, f"top {_show(book)} at id {sync.last_id}, the venue's bbo there {_show(top)}")

    # ------------------------------------------------------------------ by time
    def _by_time(self, sync: BookSync, check: _BookCheck, now: float, recheck: bool = False) -> None:
        if not sync.live or check.bbo is None:
            return
        if not check.book_tops:
            book = sync.book
            levels = (book.best_bid(), book.best_ask())
            check.book_tops.append((now, (_side(levels[0]), _side(levels[1]))))
            check.top_levels = levels
        current = check.book_tops[-1][1]
        if not recheck:
            self.counters.compared += 1
        gap = 0.0 if check.seen_at is None else now - check.seen_at
        check.seen_at = now
        if check.bbo == current:
            check.since = None
            return
        if not recheck:
            self.counters.mismatches += 1
        if check.since is None or gap > self.allowance / 2:
            # a new disagreement, or one last looked at before a stall of the event loop (frames of
            # either stream may still be unread): the allowance counts from now
            check.since = now
        if now - check.since >= self.allowance and not self._explained(check, current, now):
            self.counters.seconds_to_resync = now - check.since
            self._act(sync, check, f"top {_show(current)} and the venue's bbo {_show(check.bbo)} "
                                   f"disagree for {now - check.since:.3f}s")
        else:  # look again soon: until the allowance is up, or a recent state stops explaining it
            self._arm(sync, check, self.allowance / 4)

    def _explained(self, check: _BookCheck, current: Top, now: float) -> bool:
        """The latest bbo was a top of the book within the allowance, or the book's top a bbo."""
        horizon = now - self.allowance
        return (_seen_since(check.book_tops, check.bbo, horizon)
                or _seen_since(check.bbo_tops, current, horizon))

    def _arm(self, sync: BookSync, check: _BookCheck, delay: float) -> None:
        if check.timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a plain unit test): the next bbo or book change looks again
        ref = weakref.ref(sync)
        check.timer = loop.call_later(delay, self._timer_fired, ref, check)

    def _timer_fired(self, ref: weakref.ref[BookSync], check: _BookCheck) -> None:
        check.timer = None
        sync = ref()
        if sync is not None and self.checks.get(id(sync)) is check and check.since is not None:
            self._by_time(sync, check, self.clock(), recheck=True)

    # ------------------------------------------------------------------ acting
    def _act(self, sync: BookSync, check: _BookCheck, detail: str) -> None:
        self.counters.resyncs += 1
        self._reset(check)
        self.resync(sync, detail)

    def _reset(self, check: _BookCheck) -> None:
        check.pending.clear()
        check.book_tops.clear()
        check.top_levels = None
        check.since = None
        check.seen_at = None
        if check.timer is not None:
            check.timer.cancel()
            check.timer = None


def _seen_since(history: deque[tuple[float, Top]], top: Top | None, horizon: float) -> bool:
    """``top`` was in force at some moment after ``horizon`` (an entry holds until the next one)."""
    until = None
    for at, seen in reversed(history):
        if until is not None and until < horizon:
            return False
        if seen == top:
            return True
        until = at
    return False


def _show(top: Top | None) -> str:
    if top is None:
        return "none"
    bid, ask = top
    return (f"{'-' if bid is None else f'{bid[1]}@{bid[0]}'} / "
            f"{'-' if ask is None else f'{ask[1]}@{ask[0]}'}")
