"""Which book is each symbol's current one, and how long a symbol was without a live book.

A symbol's :class:`~aggbook.book.sync.BookSync` is replaced on every reconnect and rollover, yet
the service must hear of exactly one current book per symbol (it attaches the new one and
detaches the old), and time-to-live must span the whole outage across those replacements rather
than the last book's life.  Both need the same bookkeeping, kept here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from aggbook.book.sync import BookSync, SyncState, Transition
from aggbook.feeds.connection import Connection
from aggbook.feeds.metrics import FeedMetrics


class BookPublisher:
    """The current book per symbol, handed to ``on_sync`` callbacks whenever it changes."""

    def __init__(self, venue: str, metrics: FeedMetrics, connections: Mapping[int, Connection]) -> None:
        self.venue = venue
        self.metrics = metrics
        self.connections = connections  # the feed's open connections (to find a book's connection)
        self.current: dict[str, BookSync] = {}
        self._callbacks: list[Callable[[str, BookSync], None]] = []
        self._ever_live: set[str] = set()
        self._down_since: dict[str, float] = {}  # canonical -> when its current book stopped being live

    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None:
        self._callbacks.append(callback)

    def publish(self, canonical: str, sync: BookSync) -> None:
        if self.current.get(canonical) is sync:
            return
        self.current[canonical] = sync
        for callback in self._callbacks:  # the service attaches the new book and detaches the old
            callback(canonical, sync)

    def watcher(self, canonical: str) -> Callable[[BookSync, Transition], None]:
        """The transition hook for a new book of ``canonical``: times its way to live, publishes
        it then if it belongs to a rollover connection."""
        # when the venue's book for this symbol stopped being live: a reconnect's fresh BookSync
        # inherits the moment the previous one went down, so time-to-live covers the whole outage
        down_since = self._down_since.get(canonical, time.monotonic())

        def on_transition(sync: BookSync, transition: Transition) -> None:
            nonlocal down_since
            if transition.new is not SyncState.LIVE and transition.old is SyncState.LIVE:
                down_since = transition.at
                if self.current.get(canonical) is sync:
                    self._down_since[canonical] = transition.at
            if transition.new is SyncState.LIVE and transition.old is not SyncState.LIVE:
                self._down_since.pop(canonical, None)
                after = "resync" if canonical in self._ever_live else "start"
                self._ever_live.add(canonical)
                self.metrics.time_to_live(self.venue, canonical, max(0.0, transition.at - down_since), after)
                for conn in self.connections.values():
                    if conn.syncs.get(canonical) is sync:
                        conn.went_live = True
                        if conn.publish_when_live:
                            self.publish(canonical, sync)

        return on_transition
