"""The running core: one feed per enabled venue, one consolidated book per symbol, and the wiring.

Feeds hand over every ``BookSync`` that becomes current (at start, after a
reconnect, at a make-before-break rollover).  The first one of a (venue, symbol)
is added to the symbol's :class:`ConsolidatedBook` with the venue's fee; later
ones replace it.  Each gets the metrics listener, the aggregator's own listener
(cumulative resync counts that survive the sync being replaced, for
``/v1/status``) and any extra listeners (the WebSocket hub's status messages).

Consolidated changes are coalesced: a burst of venue updates within one event-loop
iteration costs one quote per symbol, which feeds the crossed/locked event
counter and every registered quote listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from aggbook.book.consolidated import ConsolidatedBook, ConsolidatedQuote
from aggbook.book.sync import BookSync, SyncListener, Transition
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics
from aggbook.service.config import ServiceConfig
from aggbook.service.metrics import NOT_A_RESYNC, ServiceMetrics

log = logging.getLogger("aggbook.service")


class Feed(Protocol):
    """What the service uses of a venue feed (``feeds.base.VenueFeed``)."""

    venue: str
    config: VenueConfig

    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None: ...

    def current_syncs(self) -> dict[str, BookSync]: ...

    def status(self) -> dict: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


FeedFactory = Callable[..., Feed]
QuoteListener = Callable[[str, ConsolidatedQuote], None]


def default_feed_factory(config: VenueConfig, *, metrics: FeedMetrics | None = None) -> Feed:
    from aggbook.feeds.registry import create_feed

    return create_feed(config, metrics=metrics)


class _History:
    """A (venue, symbol)'s cumulative resyncs and last transition, across sync replacements."""

    __slots__ = ("resyncs", "last")

    def __init__(self) -> None:
        self.resyncs: Counter[str] = Counter()
        self.last: Transition | None = None


class Aggregator:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        feed_factory: FeedFactory = default_feed_factory,
        metrics: ServiceMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.metrics = metrics if metrics is not None else ServiceMetrics(clock=clock)
        self.consolidated: dict[str, ConsolidatedBook] = {
            s: ConsolidatedBook(s, stale_after=config.stale_after, clock=clock) for s in config.symbols
        }
        self.venue_configs = {v.name: v for v in config.enabled_venues}
        self.feeds: dict[str, Feed] = {}
        self.history: dict[tuple[str, str], _History] = {}
        self.sync_listeners: list[SyncListener] = []  # extra listeners attached to every current sync
        self.quote_listeners: list[QuoteListener] = []
        self.started_at = time.time()
        self._crossed: dict[str, bool] = dict.fromkeys(config.symbols, False)
        self._included: dict[str, tuple[str, ...]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task] = []
        for symbol, book in self.consolidated.items():
            book.listeners.append(self._on_consolidated)
            self._included[symbol] = ()
        for vc in config.enabled_venues:
            feed = feed_factory(vc, metrics=self.metrics)
            feed.on_sync(self._sync_callback(vc))
            self.feeds[vc.name] = feed
        self.metrics.attach(self)

    # ------------------------------------------------------------------ wiring
    def configured_books(self) -> Iterator[tuple[str, str]]:
        for vc in self.venue_configs.values():
            for symbol in vc.symbols:
                yield vc.name, symbol

    def _sync_callback(self, vc: VenueConfig) -> Callable[[str, BookSync], None]:
        def on_sync(symbol: str, sync: BookSync) -> None:
            book = self.consolidated.get(symbol)
            if book is None:
                log.error("feed %s published unconfigured symbol %s", vc.name, symbol)
                return
            if vc.name in book.syncs:
                book.replace_venue(sync)
            else:
                book.add_venue(sync, vc.fee_bps)
            sync.listeners.append(self.metrics)
            sync.listeners.append(self)
            sync.listeners.extend(self.sync_listeners)
            log.debug("book attached", extra={"venue": vc.name, "symbol": symbol, "state": sync.state.value})

        return on_sync

    # SyncListener: cumulative history per (venue, symbol)
    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        hist = self.history.setdefault((sync.venue, sync.symbol), _History())
        hist.last = transition
        if transition.reason not in NOT_A_RESYNC:
            hist.resyncs[transition.reason.value] += 1

    def on_update(self, sync: BookSync, changed: int) -> None:
        pass

    # ------------------------------------------------------------------ consolidated change coalescing
    def _on_consolidated(self, book: ConsolidatedBook, what: str) -> None:
        self.mark_dirty(book.symbol)

    def mark_dirty(self, symbol: str) -> None:
        self._dirty.add(symbol)
        if self._flush_handle is None:
            try:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:  # no loop (unit tests driving books synchronously): flush now
                self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for symbol in dirty:
            quote = self.consolidated[symbol].quote()
            crossed = quote.crossed or quote.locked
            if crossed and not self._crossed[symbol]:
                self.metrics.crossed_event(symbol)
                log.warning("consolidated book crossed", extra={"symbol": symbol, "locked": quote.locked})
            self._crossed[symbol] = crossed
            self._included[symbol] = tuple(v.venue for v in quote.venues if v.included)
            for listener in self.quote_listeners:
                try:
                    listener(symbol, quote)
                except Exception:  # one broken listener must not starve the others
                    log.exception("quote listener failed")

    async def _watch_staleness(self, interval: float) -> None:
        """A venue going stale changes no book, so nothing fires: check eligibility on a timer."""
        while True:
            await asyncio.sleep(interval)
            for symbol, book in self.consolidated.items():
                included = tuple(v for v, why in book.eligible().items() if why is None)
                if included != self._included[symbol]:
                    self._included[symbol] = included
                    self.mark_dirty(symbol)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        results = await asyncio.gather(*(f.start() for f in self.feeds.values()), return_exceptions=True)
        for feed, result in zip(self.feeds.values(), results, strict=True):
            if isinstance(result, BaseException):
                await self.stop()
                raise RuntimeError(f"venue {feed.venue} failed to start: {result}") from result
        interval = max(0.05, min(1.0, self.config.stale_after / 4))
        self._tasks.append(asyncio.create_task(self._watch_staleness(interval), name="staleness"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        # Books closing because we stop are not resyncs: stop counting and notifying before the feeds go.
        ours = {id(self.metrics), id(self), *(id(x) for x in self.sync_listeners)}
        for book in self.consolidated.values():
            for sync in book.syncs.values():
                sync.listeners[:] = [x for x in sync.listeners if id(x) not in ours]
        results = await asyncio.gather(*(f.stop() for f in self.feeds.values()), return_exceptions=True)
        for feed, result in zip(self.feeds.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.error("venue %s did not stop cleanly: %r", feed.venue, result)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    # ------------------------------------------------------------------ queries
    def readiness(self) -> tuple[bool, dict[str, list[str]]]:
        """(ready, symbol -> venues currently included).  Ready = every symbol has one."""
        now = self.clock()
        live = {
            s: [v for v, why in b.eligible(now).items() if why is None] for s, b in self.consolidated.items()
        }
        return all(live.values()), live

    def venues_for(self, symbol: str) -> list[str]:
        return [v for v, vc in self.venue_configs.items() if symbol in vc.symbols]

    def symbols(self) -> Iterable[tuple[str, dict[str, str]]]:
        for symbol in self.config.symbols:
            yield (
                symbol,
                {v: vc.symbols[symbol] for v, vc in self.venue_configs.items() if symbol in vc.symbols},
            )
