"""One sequencing state machine for every venue: snapshot + diffs -> a book that is live or honestly not.

Feeds normalise what the venue sends into :class:`Snapshot` and :class:`Delta`
(first id, last id, previous id as the venue gives them) and hand them to a
:class:`BookSync`.  What differs between venues is *data*, a :class:`SequenceRule`, whose
values each venue declares next to its feed (``aggbook.feeds.<venue>``); the rules in use:

================  ===========================  ==========================  ==============
rule              drop after snapshot ``L``    first delta applied         then
================  ===========================  ==========================  ==============
Binance spot      ``u <= L``                   ``U <= L+1``                ``U <= last+1`` (overlap ok)
Binance futures   ``u < L``                    ``U <= L <= u``             ``pu == last`` (a repeat
                                                                           is a gap)
MEXC              ``toVersion <= L``           ``fromVersion <= L+1``      ``fromVersion == last+1``
Huobi mbp (NHEX,  ``seqNum <= S``              ``prevSeqNum == S``         ``prevSeqNum == last``
BitV)                                          (straddle ok on 5/20)
BTSE              (snapshot arrives in-stream) any snapshot resets         ``prevSeqNum == last`` and
                                                                           ``seqNum == prevSeqNum+1``
================  ===========================  ==========================  ==============

A delta that fails its test is never papered over: the book is cleared and marked
not live, a transition with its reason is emitted, and the feed is asked (via
:meth:`BookSync.wants_snapshot`) for a new snapshot.  Spot's documented "restart
from step 1" is relaxed to "keep the socket, re-buffer, new snapshot", which the
MEXC and futures procedures do as well.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import msgspec

from aggbook.book.errors import BookError
from aggbook.book.l2 import ASK_TOP_CHANGED, BID_TOP_CHANGED, L2Book, RawLevel

log = logging.getLogger("aggbook.sync")


class SyncState(StrEnum):
    WAITING = "waiting"  # no snapshot yet: deltas are buffered (or dropped for in-stream snapshots)
    LIVE = "live"  # book equals the venue's at ``last_id``
    RESYNCING = "resyncing"  # was live or tried to be; out of sync, waiting for a new snapshot
    INVALID = "invalid"  # the venue rejected the symbol; its feed re-checks the listing with backoff


class Reason(StrEnum):
    START = "start"
    SNAPSHOT = "snapshot"
    GAP = "gap"
    STALE_SNAPSHOT = "stale_snapshot"
    # the snapshot falls between two deltas (Huobi mbp.150: prevSeqNum < S < seqNum): never forced to fit
    MISALIGNED_SNAPSHOT = "misaligned_snapshot"
    BUFFER_OVERFLOW = "buffer_overflow"
    CROSSED_BOOK = "crossed_book"
    DECODE_ERROR = "decode_error"
    DISCONNECT = "disconnect"
    VENUE_ERROR = "venue_error"
    ROLLOVER = "rollover"
    INVALID_SYMBOL = "invalid_symbol"  # the venue answered that it does not know the symbol
    DELISTED = "delisted"  # and its symbol list agrees: not listed (re-checked, so a relisting is seen)
    REVIVED = "revived"  # a re-check found the symbol listed (or could not tell): a book is tried again
    DEPTH_EXHAUSTED = "depth_exhausted"  # a side's snapshot window emptied: its best price is unknown
    BBO_MISMATCH = "bbo_mismatch"  # the venue's best bid/offer stream kept disagreeing with the book
    AUDIT_MISMATCH = "audit_mismatch"  # a fresh snapshot at the book's own id disagreed with it
    STOPPED = "stopped"


class Chain(StrEnum):
    """How a live delta must follow the previous one."""

    NEXT_ID = "next_id"  # first id == previous last id + 1 (Binance spot U, MEXC fromVersion)
    PREV_ID = "prev_id"  # previous id == previous last id (futures pu, prevSeqNum)


class FirstAfterSnapshot(StrEnum):
    """Which delta may be the first applied on top of a snapshot with id ``L``."""

    COVERS_NEXT = "covers_next"  # first <= L + 1 (and last > L, guaranteed by the drop rule)
    COVERS_SNAPSHOT = "covers_snapshot"  # first <= L <= last (Binance futures)
    PREV_IS_SNAPSHOT = "prev_is_snapshot"  # prev == L (Huobi mbp)


@dataclass(frozen=True, slots=True)
class SequenceRule:
    """A venue's sequencing rule, as data."""

    name: str
    chain: Chain
    first: FirstAfterSnapshot
    drop_through_snapshot: bool  # True: drop last <= L; False: drop last < L
    overlap_ok: bool = False  # live delta with first < last_id + 1 <= last applies (Binance spot)
    straddle_ok: bool = False  # first delta with prev < L < last applies (Huobi 5/20 tick-by-tick)
    duplicate_is_gap: bool = False  # an old or repeated delta means the stream is broken (BTSE)
    contiguous_ids: bool = False  # last must equal prev + 1 (BTSE)
    snapshot_in_stream: bool = False  # the venue pushes the snapshot on the stream; no buffering
    resync_on_cross: bool = True  # a crossed or locked book after a message is treated as corrupt



# Enum members bound to module names for the per-delta path: on Python 3.11 reading a member off its
# class (``SyncState.LIVE``) goes through a descriptor and costs several attribute reads.
_LIVE = SyncState.LIVE
_INVALID = SyncState.INVALID
_PREV_ID = Chain.PREV_ID


@dataclass(slots=True)
class Liveness:
    """When the connection a book arrives on last proved alive: one per socket, shared by its books.

    Most venues push nothing while a book is unchanged (NHEX/BitV mbp.5/20, Binance, MEXC, BTSE), so
    the age of a book's last change says nothing about whether it is still current; the socket's
    pings, pongs and frames do.  ``timeout`` is the venue's: silence longer than that (no frame of
    any kind) makes the connection's books stale, while a book merely unchanged is quiet.
    """

    timeout: float
    heard_at: float = field(default_factory=time.monotonic)

    def heard(self, now: float) -> None:
        self.heard_at = now

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.heard_at)

    def alive(self, now: float) -> bool:
        return now - self.heard_at <= self.timeout


class Delta(msgspec.Struct, gc=False):
    """One diff message, normalised.  ``first == last`` for venues with one id per message.

    A ``msgspec.Struct`` rather than a dataclass: every frame of every venue makes one, and a
    Struct is built in C, where a dataclass runs a Python ``__init__``.  ``gc=False``: it holds
    only the ids and the level lists, never anything that points back at it.
    """

    first: int
    last: int
    prev: int | None
    bids: Sequence[RawLevel] | None
    asks: Sequence[RawLevel] | None
    event_time: float | None = None  # exchange time, epoch seconds (lag metrics only)


@dataclass(slots=True)
class Snapshot:
    last: int
    bids: Sequence[RawLevel]
    asks: Sequence[RawLevel]
    event_time: float | None = None
    # levels per side the snapshot was asked for (None: the whole book); a side that came back this
    # deep is complete only down to its worst price (``L2Book``'s snapshot window)
    depth: int | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    old: SyncState
    new: SyncState
    reason: Reason
    detail: str
    at: float  # monotonic seconds


class TransitionListener(Protocol):
    """Told when a book's state changes (live, resyncing, ...) or a snapshot/resync re-enters one."""

    def on_transition(self, sync: BookSync, transition: Transition) -> None: ...


class UpdateListener(Protocol):
    """Told after every applied snapshot or delta; ``changed`` has the L2Book top-of-book bits."""

    def on_update(self, sync: BookSync, changed: int) -> None: ...


OwnerHook = Callable[["BookSync", Transition], None]


@dataclass
class SyncCounters:
    applied: int = 0
    dropped: int = 0  # stale or duplicate deltas ignored
    dropped_before_snapshot: int = 0  # in-stream-snapshot venues: deltas before the snapshot
    snapshots: int = 0
    stale_snapshots: int = 0  # snapshots discarded as older than the stream, or misaligned with it
    misaligned_snapshots: int = 0  # of those, the ones falling between two deltas
    resyncs: Counter[Reason] = field(default_factory=Counter)


class BookSync:
    """Sequencer and book for one (venue, symbol)."""

    def __init__(
        self,
        rule: SequenceRule,
        book: L2Book | None = None,
        *,
        venue: str = "",
        symbol: str = "",
        max_buffer: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        owner: OwnerHook | None = None,
    ) -> None:
        self.rule = rule
        self.book = book if book is not None else L2Book()
        self.venue = venue
        self.symbol = symbol
        self.max_buffer = max_buffer
        self.clock = clock
        self.state = SyncState.WAITING
        self.reason = Reason.START
        self.since = clock()
        self.updated_at: float | None = None  # last time the book changed (snapshot or applied delta)
        # the connection it arrives on (set by the feed); None: only ``updated_at`` says it is current
        self.liveness: Liveness | None = None
        self.last_event_time: float | None = None
        self.last_id: int | None = None
        self.snapshot_pending = False
        self.counters = SyncCounters()
        # Two fixed places, no listener lists: the feed that owns the sync hears its transitions
        # first (to pace snapshots), then the one downstream consumer attached by the service.
        self._owner = owner
        self._transitions: TransitionListener | None = None
        self._updates: UpdateListener | None = None
        self._first_pending = False
        self._buffer: deque[Delta] = deque()

    # ------------------------------------------------------------------ wiring
    def attach(self, transitions: TransitionListener | None, updates: UpdateListener | None) -> None:
        """Connect the one downstream consumer (the aggregator); a second attach replaces the first."""
        self._transitions = transitions
        self._updates = updates

    def detach(self) -> None:
        """A retired or stopping book: what happens to it from now on is nobody's business."""
        self._transitions = None
        self._updates = None

    # ------------------------------------------------------------------ queries
    @property
    def live(self) -> bool:
        return self.state is _LIVE

    @property
    def confirmed(self) -> bool:
        """Live, and the stream has continued the snapshot (or the snapshot needs no continuation).

        Until the first delta after a snapshot passes its test, the snapshot may still turn out
        stale or misaligned: feeds keep their snapshot backoff running until then.
        """
        return self.state is _LIVE and not self._first_pending

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def wants_snapshot(self, allow_empty_buffer: bool = False) -> bool:
        """Should the feed request a snapshot now?

        Request-based venues ask once a delta is buffered (so the snapshot can be
        checked against the stream); in-stream venues ask (resubscribe) whenever not live.
        """
        if self.state in (SyncState.LIVE, SyncState.INVALID) or self.snapshot_pending:
            return False
        if self.rule.snapshot_in_stream:
            return True
        return bool(self._buffer) or allow_empty_buffer

    # ------------------------------------------------------------------ feed calls
    def snapshot_requested(self) -> None:
        self.snapshot_pending = True

    def snapshot_failed(self) -> None:
        """The request failed (HTTP error, timeout, error reply): allow another one."""
        self.snapshot_pending = False

    def touch(self) -> None:
        """The venue proved the stream alive without changing the book (heartbeat, empty push).

        With a :class:`Liveness` the connection is marked heard (the book's age, the time since
        its last change, stays); without one the book's age restarts, the only mark it has.
        """
        if self.liveness is not None:
            self.liveness.heard(self.clock())
        elif self.state is SyncState.LIVE:
            self.updated_at = self.clock()

    def silence(self, now: float) -> float | None:
        """Seconds since the book's connection last proved alive; None without a :class:`Liveness`."""
        return None if self.liveness is None else self.liveness.silent_for(now)

    def on_snapshot(self, snap: Snapshot) -> None:
        self.snapshot_pending = False
        if self.state is SyncState.INVALID:
            return
        self.counters.snapshots += 1
        if self.rule.snapshot_in_stream:
            self._load(snap)
            return
        L = snap.last
        drop_le = self.rule.drop_through_snapshot
        # every buffered delta the snapshot already contains goes, wherever it sits in the buffer
        kept = deque(d for d in self._buffer if (d.last > L if drop_le else d.last >= L))
        self.counters.dropped += len(self._buffer) - len(kept)
        self._buffer = buffer = kept
        if buffer and not self._aligned_first(buffer[0], L):
            reason = self._misfit(buffer[0], L)
            self.counters.resyncs[reason] += 1
            first = buffer[0]
            detail = (f"snapshot {L} falls between delta prev {first.prev} and {first.last}"
                      if reason is Reason.MISALIGNED_SNAPSHOT
                      else f"snapshot {L} does not reach delta {first.first}")
            self._set_state(self.state if self.state is not SyncState.LIVE else SyncState.RESYNCING,
                            reason, detail)
            return
        if not self._load(snap):
            return
        self._first_pending = True
        while buffer and self.state is SyncState.LIVE:
            self._on_live(buffer.popleft())
        if self.state is SyncState.LIVE:
            buffer.clear()

    def on_delta(self, delta: Delta) -> None:
        state = self.state
        if state is _LIVE:
            # the common case first: a live book and the delta that continues it, which every rule
            # applies as it is; anything else (first delta after a snapshot, overlap, repeat, gap,
            # BTSE's non-contiguous ids) takes the full check in ``_on_live``
            cur = self.last_id
            last = delta.last
            if not self._first_pending and cur is not None and last > cur:
                rule = self.rule
                prev = delta.prev
                if (prev == cur if rule.chain is _PREV_ID else delta.first == cur + 1) and (
                        not rule.contiguous_ids or prev is None or last == prev + 1):
                    self._apply(delta)
                    return
            self._on_live(delta)
        elif state is _INVALID:
            return
        elif self.rule.snapshot_in_stream:
            self.counters.dropped_before_snapshot += 1
        else:
            self._buffer.append(delta)
            if len(self._buffer) > self.max_buffer:
                self._buffer.clear()
                self._buffer.append(delta)
                self.counters.resyncs[Reason.BUFFER_OVERFLOW] += 1
                self._set_state(SyncState.RESYNCING, Reason.BUFFER_OVERFLOW,
                                f"more than {self.max_buffer} deltas buffered while waiting for a snapshot")

    def fail(self, reason: Reason, detail: str = "") -> None:
        """Out of sync for a reason outside the stream (disconnect, undecodable frame, venue error)."""
        if self.state is SyncState.INVALID:
            return
        self._buffer.clear()
        self.snapshot_pending = False
        self._resync(reason, detail)

    def repair(self, snap: Snapshot, detail: str) -> None:
        """An audit found the live book different from ``snap``, a snapshot at the book's own id.

        The book was wrong while its ids were contiguous (a change the venue left out): it is
        resynchronised like any broken book (counted, logged, a transition to resyncing with reason
        ``audit_mismatch``), and since ``snap`` is the venue's state at exactly the id the stream is
        at (for a venue whose snapshot comes in-stream: the base of the stream that follows it), it
        is also the new base: the book is live again at once and the next delta continues it.
        """
        if self.state is not SyncState.LIVE or (
                snap.last != self.last_id and not self.rule.snapshot_in_stream):
            raise ValueError(f"a repair needs a live book at the snapshot's id {snap.last}, "
                             f"not {self.state.value} at {self.last_id}")
        self._buffer.clear()
        self.snapshot_pending = False
        self._resync(Reason.AUDIT_MISMATCH, detail)
        self.counters.snapshots += 1
        self._load(snap)  # not ``on_snapshot``: the stream goes on from this id as it did

    def invalidate(self, detail: str, reason: Reason = Reason.INVALID_SYMBOL) -> None:
        """The venue says the symbol does not exist (``reason`` says how sure): stop asking for it.

        Whether and when to ask again is the feed's decision (a listing re-check), not the book's.
        """
        self._buffer.clear()
        self.snapshot_pending = False
        self.book.clear()
        self.last_id = None
        self._first_pending = False
        self._set_state(SyncState.INVALID, reason, detail)

    def revive(self, detail: str) -> None:
        """Leave INVALID for WAITING, as a new book: the feed found the symbol listed again.

        Only an invalid book is revived; one in any other state is already being synchronised.
        """
        if self.state is not SyncState.INVALID:
            return
        self._buffer.clear()
        self.snapshot_pending = False
        self._set_state(SyncState.WAITING, Reason.REVIVED, detail)

    # ------------------------------------------------------------------ internals
    def _aligned_first(self, d: Delta, L: int) -> bool:
        first = self.rule.first
        if first is FirstAfterSnapshot.COVERS_NEXT:
            return d.first <= L + 1
        if first is FirstAfterSnapshot.COVERS_SNAPSHOT:
            return d.first <= L <= d.last
        prev = d.prev
        if prev is None:
            return False
        return prev == L or (self.rule.straddle_ok and prev < L < d.last)

    def _misfit(self, d: Delta, L: int) -> Reason:
        """Count a snapshot ``L`` that ``d`` (the first delta past it) does not continue, and say why.

        Misaligned: the venue's rule wants the delta's previous id to be ``L`` and it is below, so
        ``L`` falls inside the delta (a state between two pushes, which a 100 ms snapshot diff cannot
        be applied to).  Stale: anything else (the snapshot is older than the stream).
        """
        self.counters.stale_snapshots += 1
        if (self.rule.first is FirstAfterSnapshot.PREV_IS_SNAPSHOT and d.prev is not None
                and d.prev < L < d.last):
            self.counters.misaligned_snapshots += 1
            return Reason.MISALIGNED_SNAPSHOT
        return Reason.STALE_SNAPSHOT

    def _load(self, snap: Snapshot) -> bool:
        try:
            self.book.apply_snapshot(snap.bids, snap.asks, snap.depth)
        except BookError as exc:
            self._buffer.clear()
            self._resync(Reason.DECODE_ERROR, f"bad snapshot: {exc}")
            return False
        if self.rule.resync_on_cross and self.book.cross_state() is not None:
            self._buffer.clear()
            self._resync(Reason.CROSSED_BOOK, "snapshot is crossed or locked")
            return False
        self.last_id = snap.last
        self._first_pending = False
        self.updated_at = self.clock()
        if snap.event_time is not None:
            self.last_event_time = snap.event_time
        self._set_state(SyncState.LIVE, Reason.SNAPSHOT, f"snapshot {snap.last}")
        updates = self._updates
        if updates is not None:
            updates.on_update(self, BID_TOP_CHANGED | ASK_TOP_CHANGED)
        return True

    def _on_live(self, d: Delta) -> None:
        rule = self.rule
        cur = self.last_id
        assert cur is not None
        if self._first_pending:
            if d.last <= cur if rule.drop_through_snapshot else d.last < cur:
                self.counters.dropped += 1
                return
            if not self._aligned_first(d, cur):
                reason = self._misfit(d, cur)
                self._buffer.clear()
                self._buffer.append(d)
                self._resync(reason, f"first delta {d.first}..{d.last} (prev {d.prev}) "
                                     f"does not continue snapshot {cur}")
                return
        else:
            if rule.contiguous_ids and d.prev is not None and d.last != d.prev + 1:
                self._gap(d, f"delta {d.last} claims previous {d.prev}")
                return
            if d.last <= cur:
                if rule.duplicate_is_gap:
                    self._gap(d, f"old or repeated delta {d.last} after {cur}")
                else:
                    self.counters.dropped += 1
                return
            if rule.chain is Chain.PREV_ID:
                if d.prev != cur:
                    self._gap(d, f"delta prev {d.prev} != last applied {cur}")
                    return
            elif d.first != cur + 1 and not (rule.overlap_ok and d.first < cur + 1):
                self._gap(d, f"delta first {d.first} != last applied {cur} + 1")
                return
        self._apply(d)

    def _apply(self, d: Delta) -> None:
        """Write a delta that passed its sequence test, then check the book it leaves."""
        book = self.book
        try:
            changed = book.apply(d.bids, d.asks)
        except BookError as exc:
            self._buffer.clear()
            self._resync(Reason.DECODE_ERROR, f"bad delta {d.last}: {exc}")
            return
        self._first_pending = False
        self.last_id = d.last
        self.updated_at = self.clock()
        if d.event_time is not None:
            self.last_event_time = d.event_time
        self.counters.applied += 1
        if changed:  # the top moved: is it still a book?
            if self.rule.resync_on_cross and book.cross_state() is not None:
                self._buffer.clear()
                self._resync(Reason.CROSSED_BOOK, f"book {book.cross_state()} after delta {d.last}")
                return
            if book.exhausted():
                self._buffer.clear()
                self._resync(Reason.DEPTH_EXHAUSTED,
                             f"a side's snapshot window is empty after delta {d.last}")
                return
        updates = self._updates
        if updates is not None:
            updates.on_update(self, changed)

    def _gap(self, d: Delta, detail: str) -> None:
        self._buffer.clear()
        if not self.rule.snapshot_in_stream:
            self._buffer.append(d)  # the message that revealed the gap starts the new buffer
        self._resync(Reason.GAP, detail)

    def _resync(self, reason: Reason, detail: str) -> None:
        self.counters.resyncs[reason] += 1
        self.book.clear()
        self.last_id = None
        self._first_pending = False
        log.info("resync %s %s: %s (%s)", self.venue, self.symbol, reason.value, detail)
        self._set_state(SyncState.RESYNCING, reason, detail)

    def _set_state(self, new: SyncState, reason: Reason, detail: str) -> None:
        old = self.state
        self.state = new
        self.reason = reason
        now = self.clock()
        if old is not new:
            self.since = now
        transition = Transition(old, new, reason, detail, now)
        if self._owner is not None:
            self._owner(self, transition)
        if self._transitions is not None:
            self._transitions.on_transition(self, transition)
