"""The running core, and the one place where a frame's route is wired: feed -> book -> consolidated
view -> subscribers.

The route of one venue frame (see ``docs/architecture.md``):

1. a feed (``aggbook.feeds``) decodes the frame and hands a ``Snapshot`` or ``Delta`` to its
   :class:`~aggbook.book.sync.BookSync`, which applies it to the venue's ``L2Book``;
2. the sync tells its one downstream consumer, this aggregator: :meth:`Aggregator.on_update` for a
   book change, :meth:`Aggregator.on_transition` for a state change (live, resyncing, ...);
3. the aggregator updates the symbol's :class:`~aggbook.book.consolidated.ConsolidatedBook`, counts
   transitions in the metrics, and notes what moved in that symbol's pending :class:`SymbolChange`;
4. once per event-loop iteration (:meth:`Aggregator._flush`) each changed symbol's quote is computed
   once and one ``SymbolChange`` goes to every subscriber (the WebSocket hub), which renders it.

Nothing else attaches to a book: feeds keep only their own lifecycle hook, fixed when they create a
sync, and every current sync of every feed is attached here when the feed publishes it (at start,
after a reconnect, at a make-before-break rollover) and detached when it is replaced or the service
stops.  A burst of venue updates within one event-loop iteration costs one quote per symbol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from aggbook.book.consolidated import ConsolidatedBook, ConsolidatedQuote
from aggbook.book.sync import BookSync, Transition
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics
from aggbook.service.config import ServiceConfig
from aggbook.service.metrics import NOT_A_RESYNC, ServiceMetrics
from aggbook.service.tasks import cancel_and_wait

log = logging.getLogger("aggbook.service")


class Feed(Protocol):
    """What the service uses of a venue feed (``aggbook.feeds.base.VenueFeed``)."""

    venue: str
    config: VenueConfig

    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None: ...

    def current_syncs(self) -> dict[str, BookSync]: ...

    def status(self) -> dict: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


FeedFactory = Callable[..., Feed]


@dataclass(slots=True)
class SymbolChange:
    """What moved for one symbol during one event-loop iteration: the one signal subscribers get.

    Every change of the aggregator may have moved the merged depth.  ``quote`` is set when a venue's
    top of book or a venue's state moved (it is the freshly computed consolidated quote, without
    fees); ``transitions`` lists the venues' state transitions in the order they happened.
    ``depth`` is false when the source knows the merged book did not move (a gateway hearing a quote
    or a venue state only): the hub then leaves the symbol's book subscriptions alone.
    """

    symbol: str
    top: bool = False
    quote: ConsolidatedQuote | None = None
    transitions: list[tuple[str, Transition]] = field(default_factory=list)
    depth: bool = True


class ChangeSubscriber(Protocol):
    def on_symbol_changed(self, change: SymbolChange) -> None: ...


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
            s: ConsolidatedBook(s, stale_after=config.stale_after, clock=clock,
                                venues=[v.name for v in config.venues_for(s)])
            for s in config.symbols
        }
        self.venue_configs = {v.name: v for v in config.enabled_venues}
        self.feeds: dict[str, Feed] = {}
        self.history: dict[tuple[str, str], _History] = {}
        self.subscribers: list[ChangeSubscriber] = []
        self.started_at = time.time()
        self._crossed: dict[str, bool] = dict.fromkeys(config.symbols, False)
        self._included: dict[str, tuple[str, ...]] = dict.fromkeys(config.symbols, ())
        self._pending: dict[str, SymbolChange] = {}
        # per symbol, from its latest applied snapshot or delta at any venue: (the venue's event
        # time, this process's wall-clock time when the update was applied), epoch seconds.  The
        # WebSocket messages carry both so a client can tell venue-to-service delay from
        # service-to-client delay; the event time is None for a venue that sends none.
        self.event_times: dict[str, tuple[float | None, float]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._tasks: list[asyncio.Task] = []
        self._book_count = sum(1 for _ in self.configured_books())
        for vc in config.enabled_venues:
            feed = feed_factory(vc, metrics=self.metrics.feeds)
            feed.on_sync(self._attacher(vc))
            self.feeds[vc.name] = feed
        self.metrics.attach(self)

    def subscribe(self, subscriber: ChangeSubscriber) -> None:
        """Receive one :class:`SymbolChange` per changed symbol per event-loop iteration."""
        self.subscribers.append(subscriber)

    def configured_books(self) -> Iterator[tuple[str, str]]:
        for vc in self.venue_configs.values():
            for symbol in vc.symbols:
                yield vc.name, symbol

    # ------------------------------------------------------------------ 1. a feed publishes a book
    def _attacher(self, vc: VenueConfig) -> Callable[[str, BookSync], None]:
        def attach(symbol: str, sync: BookSync) -> None:
            book = self.consolidated.get(symbol)
            if book is None:
                log.error("feed %s published unconfigured symbol %s", vc.name, symbol)
                return
            old = book.syncs.get(vc.name)
            if old is not None:
                old.detach()  # retired: its later transitions are nobody's business
                book.replace_venue(sync)
            else:
                book.add_venue(sync, vc.fee_bps)
            sync.attach(self, self)
            self._pending_change(symbol).top = True
            log.debug("book attached", extra={"venue": vc.name, "symbol": symbol, "state": sync.state.value})

        return attach

    # ------------------------------------------------------------------ 2. a book tells what moved
    def on_update(self, sync: BookSync, changed: int) -> None:
        """Every applied snapshot or delta of every current book: the hot path, kept short."""
        symbol = sync.symbol
        change = self._pending.get(symbol)
        if change is None:
            change = self._pending_change(symbol)
        self.event_times[symbol] = (sync.last_event_time, time.time())
        if changed and self.consolidated[symbol].on_update(sync, changed):
            change.top = True

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        hist = self.history.setdefault((sync.venue, sync.symbol), _History())
        hist.last = transition
        if transition.reason not in NOT_A_RESYNC:
            hist.resyncs[transition.reason.value] += 1
        self.metrics.books.transition(sync, transition)
        self.consolidated[sync.symbol].on_transition(sync, transition)
        change = self._pending_change(sync.symbol)
        change.top = True
        change.transitions.append((sync.venue, transition))

    # ------------------------------------------------------------------ 3. one flush per loop iteration
    def _pending_change(self, symbol: str) -> SymbolChange:
        change = self._pending.get(symbol)
        if change is None:
            change = self._pending[symbol] = SymbolChange(symbol)
            if self._flush_handle is None:
                try:
                    self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
                except RuntimeError:  # no loop: a unit test driving books synchronously calls flush()
                    pass
        return change

    def flush(self) -> None:
        """Deliver what is pending now (tests without a running loop; the loop calls it by itself)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        for symbol, change in pending.items():
            if change.top:
                change.quote = quote = self.consolidated[symbol].quote()
                crossed = quote.crossed or quote.locked
                if crossed and not self._crossed[symbol]:
                    self.metrics.books.crossed_event(symbol)
                    # across venues a crossed or locked book is a market event, not a fault: info, counted
                    log.info("consolidated book crossed", extra={"symbol": symbol, "locked": quote.locked})
                self._crossed[symbol] = crossed
                self._included[symbol] = tuple(v.venue for v in quote.venues if v.included)
            for subscriber in self.subscribers:
                try:
                    subscriber.on_symbol_changed(change)
                except Exception:  # one broken subscriber must not starve the others
                    log.exception("subscriber failed on %s", symbol)

    async def _watch_staleness(self, interval: float) -> None:
        """A venue going stale changes no book, so nothing fires: check eligibility on a timer."""
        while True:
            await asyncio.sleep(interval)
            for symbol, book in self.consolidated.items():
                included = tuple(v for v, why in book.eligible().items() if why is None)
                if included != self._included[symbol]:
                    self._included[symbol] = included
                    self._pending_change(symbol).top = True

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
        await cancel_and_wait(self._tasks)
        # Books closing because we stop are not resyncs: stop counting and notifying before the feeds go.
        for book in self.consolidated.values():
            for sync in book.syncs.values():
                sync.detach()
        results = await asyncio.gather(*(f.stop() for f in self.feeds.values()), return_exceptions=True)
        for feed, result in zip(self.feeds.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.error("venue %s did not stop cleanly: %r", feed.venue, result)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()

    # ------------------------------------------------------------------ queries
    def readiness(self) -> tuple[bool, dict[str, list[str]]]:
        """(ready, symbol -> venues currently included).  Ready = every symbol has one."""
        now = self.clock()
        live = {
            s: [v for v, why in b.eligible(now).items() if why is None] for s, b in self.consolidated.items()
        }
        return all(live.values()), live

    def every_book_live(self) -> bool:
        """Every configured book has been published by its feed and is live (the cold start is over)."""
        published = 0
        for book in self.consolidated.values():
            for sync in book.syncs.values():
                if not sync.live:
                    return False
                published += 1
        return published == self._book_count

    def venues_for(self, symbol: str) -> list[str]:
        return [v for v, vc in self.venue_configs.items() if symbol in vc.symbols]

    def symbols(self) -> Iterable[tuple[str, dict[str, str]]]:
        for symbol in self.config.symbols:
            yield (
                symbol,
                {v: vc.symbols[symbol] for v, vc in self.venue_configs.items() if symbol in vc.symbols},
            )
