"""Every live book compared, now and then, with a fresh venue snapshot at the book's own id.

Why.  A venue that leaves a level change out of a diff while its ids stay contiguous leaves a book
wrong that no sequence check can see.  The top-of-book cross-check (``feeds/crosscheck.py``)
catches such a loss while it is at the top; but when the market moves past the lost level before
the cross-check's allowance is up, the wrong level sinks into the depth and the tops agree again.
Only a comparison of every level finds it there, and that is what an audit is.

How.  Each connection audits its live books one after another, spread evenly over
``audit_interval`` seconds (an option per venue; 0 turns audits off).  An audit takes a snapshot
the way the venue's feed takes one for a resync (``fetch_snapshot``), through the venue-wide
snapshot pacer, so audits share the venue's request budget and its rate-limit pauses; and only
while no book of the feed is waiting for a snapshot (for one interval at most, so a book that cannot
get one does not stop the audits of the others), so a cold start or a resync does not queue behind
an audit.  Then:

* A snapshot with an id (NHEX/BitV ``seqNum``, MEXC ``version``, Binance ``lastUpdateId``) is
  compared when the book is at exactly that id: at once if it is there, else when a later delta
  brings it there.  A book already past the id, or one a delta carries past it without landing on
  it (a snapshot taken between two batched diffs), cannot be compared: the audit is
  *inconclusive* and the next round tries again.  A quiet book is always at the snapshot's id.
* A venue whose snapshot comes in-stream (BTSE: unsubscribe and subscribe again) starts a new
  stream; its snapshot is compared with the book as it stands when the snapshot arrives (every
  delta of the old stream is in by then), and then becomes the book's base either way.

Both books are compared over the depth both know (``book/compare.py``), as numbers.  A difference
*repairs* the book (:meth:`~aggbook.book.sync.BookSync.repair`): it is a resync with reason
``audit_mismatch``, logged and counted like any other, whose new base is the audit's snapshot,
so the book is live again at once.  Every audit's outcome is counted (``aggbook_book_audits_total``
and the feed's status), so an audit that never concludes is visible too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from aggbook.book.compare import first_difference
from aggbook.book.errors import BookError
from aggbook.book.l2 import L2Book
from aggbook.book.sync import BookSync, Snapshot
from aggbook.feeds.connection import Connection
from aggbook.feeds.errors import EXPECTED_SNAPSHOT_FAILURES, RateLimited

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed

log = logging.getLogger("aggbook.feeds.audit")

MATCH, MISMATCH, INCONCLUSIVE, FAILED = "match", "mismatch", "inconclusive", "failed"
OUTCOMES = (MATCH, MISMATCH, INCONCLUSIVE, FAILED)


class BookAudit:
    """The audits of one feed's books (one loop per connection, started by the supervisor)."""

    def __init__(self, feed: VenueFeed) -> None:
        self.feed = feed
        self.outcomes: Counter[str] = Counter()
        # id(sync) -> (the book, the snapshot it must reach): compared when a delta brings it there
        self._at_id: dict[int, tuple[BookSync, Snapshot]] = {}
        # id(sync) -> the book whose in-stream snapshot (a resubscribe) is an audit's
        self._in_stream: dict[int, BookSync] = {}
        self.waiting = False  # either of the two is not empty: ``deliver`` looks only then

    @property
    def interval(self) -> float:
        return float(self.feed.audit_interval)

    def status(self) -> dict:
        return {"interval_s": self.interval, **{o: self.outcomes[o] for o in OUTCOMES}}

    # ------------------------------------------------------------------ the loop
    async def run(self, conn: Connection) -> None:
        """Audit the connection's live books in turn, ``interval / books`` seconds apart, while it is open."""
        if self.interval <= 0:
            return
        while conn.open:
            symbols = list(conn.symbols)
            step = self.interval / max(1, len(symbols))
            for canonical in symbols:
                await asyncio.sleep(step)
                deferred = 0.0  # books that need a snapshot to be live come first, for an interval at most
                while conn.open and self.feed.snapshots.active and deferred < self.interval:
                    await asyncio.sleep(step)
                    deferred += step
                self._forget_dead()
                sync = conn.syncs.get(canonical)
                if conn.open and sync is not None and sync.confirmed:
                    await self.audit(conn, canonical, sync)

    async def audit(self, conn: Connection, canonical: str, sync: BookSync) -> None:
        """One audit of ``sync``: take a snapshot, then compare now, later, or when it arrives in-stream."""
        feed = self.feed
        try:
            await feed.snapshots.pacer.acquire(feed.snapshot_weight(canonical))
            if not (conn.open and sync.confirmed and conn.syncs.get(canonical) is sync):
                return
            if sync.rule.snapshot_in_stream:
                self._in_stream[id(sync)] = sync
                self.waiting = True
            snap = await asyncio.wait_for(feed.fetch_snapshot(conn, canonical), feed.snapshot_timeout)
        except RateLimited as exc:
            feed.snapshots.pacer.penalize(exc.retry_after)
            self._forget(sync)
            self._count(FAILED)
            return
        except Exception as exc:  # noqa: BLE001 - an audit that cannot be made leaves the book alone
            self._forget(sync)
            self._count(FAILED)
            log.info("%s %s: audit snapshot failed: %s", feed.venue, canonical,
                     exc if isinstance(exc, EXPECTED_SNAPSHOT_FAILURES) else repr(exc))
            return
        if snap is not None:
            self.consider(sync, snap)

    # ------------------------------------------------------------------ comparing
    def consider(self, sync: BookSync, snap: Snapshot) -> None:
        """A snapshot with an id taken for ``sync``: compare at that id, now or when the book gets there."""
        last = sync.last_id
        if not sync.live or last is None or last > snap.last:
            self._count(INCONCLUSIVE)
        elif last == snap.last:
            self._compare(sync, snap)
        else:
            self._at_id[id(sync)] = (sync, snap)
            self.waiting = True

    def after_book(self, sync: BookSync) -> None:
        """``sync`` applied a delta (the feed calls this only while ``waiting``)."""
        entry = self._at_id.get(id(sync))
        if entry is None or entry[0] is not sync:
            return
        snap = entry[1]
        last = sync.last_id
        if sync.live and last is not None and last < snap.last:
            return  # not there yet
        self._forget(sync)
        if sync.live and last == snap.last:
            self._compare(sync, snap)
        else:
            self._count(INCONCLUSIVE)

    def in_stream_snapshot(self, sync: BookSync, snap: Snapshot) -> bool:
        """An in-stream snapshot for ``sync``: True when it was an audit's and has been dealt with."""
        if self._in_stream.get(id(sync)) is not sync:
            return False
        self._forget(sync)
        if not sync.live:
            self._count(INCONCLUSIVE)
            return False  # the book broke meanwhile: the snapshot is its resync's, as usual
        self._compare(sync, snap)
        return True

    def _compare(self, sync: BookSync, snap: Snapshot) -> None:
        scratch = L2Book(max_depth=sync.book.max_depth)
        try:
            scratch.apply_snapshot(snap.bids, snap.asks, snap.depth)
        except BookError as exc:
            log.warning("%s %s: audit snapshot unreadable: %s", sync.venue, sync.symbol, exc)
            self._count(FAILED)
            if sync.rule.snapshot_in_stream:
                sync.on_snapshot(snap)  # the venue's new stream starts from it: the sync judges it
            return
        difference = first_difference(sync.book, scratch)
        if difference is None:
            self._count(MATCH)
            if sync.rule.snapshot_in_stream:
                sync.on_snapshot(snap)  # equal, and the base of the stream that follows
            return
        self._count(MISMATCH)
        detail = f"audit against the venue's snapshot at {snap.last}: {difference}"
        log.warning("%s %s: %s", sync.venue, sync.symbol, detail)
        sync.repair(snap, detail)

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.feed.metrics.audit(self.feed.venue, outcome)

    def _forget(self, sync: BookSync) -> None:
        self._at_id.pop(id(sync), None)
        self._in_stream.pop(id(sync), None)
        self.waiting = bool(self._at_id or self._in_stream)

    def _forget_dead(self) -> None:
        """Books that stopped being live (or were retired) while their audit waited end inconclusive."""
        for sync in [s for s, _ in self._at_id.values()] + list(self._in_stream.values()):
            if not sync.live:
                self._forget(sync)
                self._count(INCONCLUSIVE)
