"""A symbol the venue refuses is re-checked against its symbol list, never disabled for good.

One "invalid symbol" reply is one reading: a venue answers that way during a maintenance window, a
relisting, a glitch on one server, or (in the simulator) an injected fault.  Disabling the book
until restart on that reading left books dead for hours after the venue had recovered.  So every
venue error about one symbol (a snapshot refused with ``-1121``, BTSE error 1000, a MEXC channel
rejected or left out of the ack, an NHEX/BitV ``invalid symbol``) and every symbol missing from the
venue's list at start-up goes through :class:`ListingWatch`, the one mechanism every feed shares:

* the symbol's books are marked invalid with the venue's words (reason ``invalid_symbol``, or
  ``delisted`` once the symbol list agrees), and new books made for it on reconnects start
  invalid, so nothing asks the venue for it in a loop;
* a re-check is scheduled with capped, jittered backoff (``listing_check_base`` doubling up to
  ``listing_check_cap``); it asks the venue's symbol list through the feed's ``symbol_listed``
  hook;
* listed, or the check itself failed (``None``: the list is down, which says nothing about the
  symbol): the books leave INVALID (``BookSync.revive``) and the feed's ``resume_symbol`` hook asks
  for a snapshot or resubscribes, as each venue does;
* not listed: the books are reported ``delisted`` and re-checked every ``listing_check_cap``
  seconds, so a relisted symbol comes back by itself.

The backoff of a symbol starts afresh once one of its books is live again.  Every re-check and its
outcome is logged and counted (``counts``); ``status()`` shows what is pending and when the next
check is due.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aggbook.book.sync import BookSync, Reason, SyncState, Transition
from aggbook.feeds.pacing import Backoff

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed

log = logging.getLogger("aggbook.feeds.listing")


@dataclass
class _Watch:
    """One refused symbol: why, how its checks went, and the task that runs the next one."""

    reason: Reason
    detail: str
    backoff: Backoff
    checks: int = 0
    next_check_at: float | None = None  # epoch seconds, for status
    task: asyncio.Task | None = None
    outcomes: Counter[str] = field(default_factory=Counter)


class ListingWatch:
    """The refused symbols of one feed and their re-checks."""

    def __init__(self, feed: VenueFeed) -> None:
        self.feed = feed
        self.watches: dict[str, _Watch] = {}
        self.counts: Counter[str] = Counter()  # re-check outcomes: listed, delisted, unknown
        self._rng = random.Random()

    # ------------------------------------------------------------------ what the feed reports
    def refused(self, canonical: str, detail: str, *, listed: bool | None = None) -> None:
        """The venue refused ``canonical`` (``listed=False``: its symbol list does not have it).

        Marks every book of the symbol invalid and makes sure a re-check is scheduled; a refusal
        while one is already scheduled keeps that schedule.
        """
        feed = self.feed
        reason = Reason.DELISTED if listed is False else Reason.INVALID_SYMBOL
        watch = self.watches.get(canonical)
        if watch is None:
            watch = self.watches[canonical] = _Watch(
                reason, detail, Backoff(feed.listing_check_base, max(feed.listing_check_base,
                                                                      feed.listing_check_cap), self._rng))
        watch.reason, watch.detail = reason, detail
        feed.invalid[canonical] = detail
        log.error("%s: symbol %s refused by the venue (%s): %s", feed.venue, canonical, reason.value, detail)
        for sync in self._books(canonical):
            if sync.state is not SyncState.INVALID or sync.reason is not reason:
                sync.invalidate(detail, reason)
        self._schedule(canonical, watch)

    def restart(self) -> None:
        """The feed starts again after a stop: pending re-checks, cancelled by the stop, run again."""
        for canonical, watch in self.watches.items():
            if canonical in self.feed.invalid:
                self._schedule(canonical, watch)

    def _schedule(self, canonical: str, watch: _Watch) -> None:
        if watch.task is None or watch.task.done():
            watch.task = asyncio.create_task(self._recheck(canonical, watch),
                                             name=f"{self.feed.venue}-listing-{canonical}")

    def new_book(self, canonical: str, sync: BookSync) -> None:
        """A fresh book for a symbol awaiting its re-check starts invalid: nobody asks for it meanwhile."""
        watch = self.watches.get(canonical)
        if watch is not None and self.feed.invalid.get(canonical) is not None:
            sync.invalidate(watch.detail, watch.reason)

    def book_transition(self, canonical: str, transition: Transition) -> None:
        """A book of the symbol went live: the venue serves it again, so its backoff starts afresh."""
        if transition.new is SyncState.LIVE:
            watch = self.watches.get(canonical)
            if watch is not None and (watch.task is None or watch.task.done()):
                del self.watches[canonical]

    def stop(self) -> None:
        for watch in self.watches.values():
            if watch.task is not None:
                watch.task.cancel()

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            canonical: {
                "reason": w.reason.value,
                "detail": w.detail,
                "checks": w.checks,
                "outcomes": dict(w.outcomes),
                "next_check_at": round(w.next_check_at, 3) if w.next_check_at is not None else None,
                "resumed": w.task is not None and w.task.done(),  # listed; waiting for a book to go live
            }
            for canonical, w in self.watches.items()
        }

    # ------------------------------------------------------------------ the re-check
    async def _recheck(self, canonical: str, watch: _Watch) -> None:
        """Ask the symbol list after the backoff; revive on listed/unknown, else again at the cap."""
        feed = self.feed
        while True:
            delay = (watch.backoff.cap * self._rng.uniform(0.8, 1.0) if watch.reason is Reason.DELISTED
                     else watch.backoff.next())
            watch.next_check_at = time.time() + delay
            await asyncio.sleep(delay)
            watch.checks += 1
            try:
                listed = await feed.symbol_listed(canonical)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a list we cannot read says nothing about the symbol
                log.warning("%s %s: symbol list unavailable (%r)", feed.venue, canonical, exc)
                listed = None
            outcome = {True: "listed", False: "delisted", None: "unknown"}[listed]
            watch.outcomes[outcome] += 1
            self.counts[outcome] += 1
            if listed is False:
                detail = f"not in {feed.venue}'s symbol list (checked {watch.checks} times)"
                watch.reason, watch.detail = Reason.DELISTED, detail
                feed.invalid[canonical] = detail
                for sync in self._books(canonical):
                    if sync.reason is not Reason.DELISTED:
                        sync.invalidate(detail, Reason.DELISTED)
                log.warning("%s %s: re-check %d: delisted; next check in about %.0fs", feed.venue,
                            canonical, watch.checks, watch.backoff.cap)
                continue
            why = "listed again" if listed else "symbol list unavailable, trying the book again"
            log.warning("%s %s: re-check %d: %s; resuming the book", feed.venue, canonical, watch.checks, why)
            watch.next_check_at = None
            self._revive(canonical, f"re-check {watch.checks}: {why}")
            return

    def _revive(self, canonical: str, detail: str) -> None:
        feed = self.feed
        feed.invalid.pop(canonical, None)
        for sync in self._books(canonical):
            sync.revive(detail)
        for conn in list(feed.connections.values()):
            if canonical in conn.syncs:
                try:
                    feed.resume_symbol(conn, canonical)
                except Exception:  # one connection's trouble must not keep the others from resuming
                    log.exception("%s %s: resuming on connection %s failed", feed.venue, canonical, conn.id)

    def _books(self, canonical: str) -> list[BookSync]:
        """Every book of the symbol: one per connection holding it, and the published one."""
        feed = self.feed
        books = [conn.syncs[canonical] for conn in feed.connections.values() if canonical in conn.syncs]
        current = feed.publisher.current.get(canonical)
        if current is not None and all(current is not b for b in books):
            books.append(current)
        return books
