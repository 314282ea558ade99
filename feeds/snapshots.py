"""Getting each book the snapshot it asks for, at a pace the venue tolerates.

A reconnect makes every book on the socket want a snapshot at once; a venue that answers with
429/418 or errors must not see a stampede or a tight retry loop.  So all of a feed's snapshot
requests queue through one :class:`~aggbook.feeds.pacing.RequestPacer` (weighted per request,
closed for everyone on ``Retry-After``), and each symbol retries with its own backoff, which
only resets once its book is live again.  A book never stays "snapshot pending" because a
request failed: every failure is counted and retried while the book is still wanted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aggbook.book.sync import BookSync, SyncState
from aggbook.feeds.connection import Connection
from aggbook.feeds.errors import EXPECTED_SNAPSHOT_FAILURES, InvalidSymbol, RateLimited
from aggbook.feeds.pacing import Backoff, RequestPacer

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed

log = logging.getLogger("aggbook.feeds")


class SnapshotScheduler:
    """Runs one snapshot request per book that wants one, through the feed's pacer."""

    def __init__(self, feed: VenueFeed) -> None:
        self.feed = feed
        self.pacer = RequestPacer(*feed.snapshot_pacing())
        self.active = 0  # books whose snapshot is being obtained (queued at the pacer, or on its way)

    def repace(self) -> None:
        """Take the feed's pacing again: a venue may publish its budget only once the feed has started."""
        self.pacer.configure(*self.feed.snapshot_pacing())

    def request(self, conn: Connection, canonical: str) -> None:
        """Ask for a snapshot of ``canonical`` on ``conn`` unless one is already on its way."""
        sync = conn.syncs.get(canonical)
        if sync is None or sync.snapshot_pending or not conn.open:
            return
        sync.snapshot_requested()
        conn.spawn(self._obtain(conn, canonical, sync), name=f"{self.feed.venue}-snap-{canonical}")

    def backoff_for(self, conn: Connection, canonical: str) -> Backoff:
        """The symbol's retry backoff, resumed at the step its failures in a row reached."""
        feed = self.feed
        backoff = Backoff(feed.backoff_base, min(feed.backoff_cap, 10.0))
        for _ in range(conn.snapshot_attempts.get(canonical, 0)):
            backoff.next()
        return backoff

    async def _obtain(self, conn: Connection, canonical: str, sync: BookSync) -> None:
        self.active += 1
        try:
            await self._obtain_until_done(conn, canonical, sync)
        finally:
            self.active -= 1

    async def _obtain_until_done(self, conn: Connection, canonical: str, sync: BookSync) -> None:
        feed, venue = self.feed, self.feed.venue
        backoff = self.backoff_for(conn, canonical)
        attempts = conn.snapshot_attempts.get(canonical, 0)
        conn.snapshot_attempts[canonical] = attempts + 1
        if attempts:
            await asyncio.sleep(backoff.next())
        while conn.open and conn.syncs.get(canonical) is sync and sync.state is not SyncState.INVALID:
            try:
                await self.pacer.acquire(feed.snapshot_weight(canonical))
                if not conn.open:
                    return
                snap = await asyncio.wait_for(feed.fetch_snapshot(conn, canonical), feed.snapshot_timeout)
            except RateLimited as exc:
                self.pacer.penalize(exc.retry_after)
                feed.metrics.snapshot(venue, canonical, False)
                log.warning("%s %s: snapshot rate limited, retry after %.1fs", venue, canonical,
                            exc.retry_after)
                continue  # the pacer now holds every request until the venue's deadline
            except InvalidSymbol as exc:
                feed.metrics.snapshot(venue, canonical, False)
                feed.listing.refused(canonical, str(exc))  # invalid until its listing is re-checked
                return
            except Exception as exc:  # noqa: BLE001 - whatever the venue answered, retry: never stay pending
                feed.metrics.snapshot(venue, canonical, False)
                delay = backoff.next()
                expected = isinstance(exc, EXPECTED_SNAPSHOT_FAILURES)
                log.warning("%s %s: snapshot failed (%s); retry in %.2fs", venue, canonical,
                            exc if expected else repr(exc), delay, exc_info=not expected)
                await asyncio.sleep(delay)
                continue
            feed.metrics.snapshot(venue, canonical, True)
            if not conn.open or conn.syncs.get(canonical) is not sync:
                # the socket closed (or the book was replaced) while the answer was on its way: the
                # book has failed on the disconnect, and a snapshot without the socket's deltas
                # after it must not make it live again
                return
            if snap is None:
                return  # arrives on the stream; the sync stays pending until it does
            sync.snapshot_failed()  # clear pending so a stale answer can ask again
            feed.deliver_snapshot(conn, canonical, snap)
            return
