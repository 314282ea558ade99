"""Prometheus metrics of one service instance.

Each :class:`ServiceMetrics` owns its own ``CollectorRegistry`` (never the global
default), so several services can live in one process (tests) without their
counters mixing.  It is at once:

* the :class:`feeds.metrics.FeedMetrics` the feeds report frames, snapshots,
  reconnects and lags to;
* a :class:`book.sync.SyncListener` attached to every current ``BookSync``, which
  counts gaps and resyncs by reason from the sync's transitions;
* the home of the HTTP middleware, WebSocket counters and event-loop lag probe.

Values that depend on the clock (book and BBO ages) or on the current state
(book state, crossed, spread, live venues) are not pushed: a custom collector
reads them from the service when Prometheus scrapes, so they are never stale.

Label sets are bounded by the configuration (venue, symbol, reason, route); no
label ever carries a client id, a path parameter or free text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from aggbook.book.sync import BookSync, Reason, SyncState, Transition

if TYPE_CHECKING:
    from aggbook.book.consolidated import ConsolidatedBook

# Transitions with these reasons are not resyncs: a book being loaded, rejected, or shut down.
NOT_A_RESYNC = {Reason.START, Reason.SNAPSHOT, Reason.INVALID_SYMBOL, Reason.STOPPED}
RESYNC_REASONS = [r.value for r in Reason if r not in NOT_A_RESYNC]
STATES = [s.value for s in SyncState]

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TTL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UNMATCHED_ROUTE = "unmatched"


class MetricsSource(Protocol):
    """What the scrape-time collector reads from the running service."""

    consolidated: dict[str, ConsolidatedBook]

    def configured_books(self) -> Iterable[tuple[str, str]]:
        """(venue, symbol) pairs that are configured, live or not."""
        ...


class _ScrapeCollector:
    """Book state and ages, consolidated crossed/spread/age: computed when scraped."""

    def __init__(self, source: MetricsSource, clock: Callable[[], float]) -> None:
        self.source = source
        self.clock = clock

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        vs = ["venue", "symbol"]
        return {
            "live": GaugeMetricFamily(
                "aggbook_book_live", "1 when the venue's book for the symbol is live", labels=vs
            ),
            "state": GaugeMetricFamily(
                "aggbook_book_state",
                "1 for the book's current sync state, 0 otherwise",
                labels=[*vs, "state"],
            ),
            "age": GaugeMetricFamily(
                "aggbook_book_last_update_age_seconds",
                "Seconds since the book was last known current",
                labels=vs,
            ),
            "bbo_age": GaugeMetricFamily(
                "aggbook_consolidated_bbo_age_seconds",
                "Seconds since the oldest book behind the consolidated best bid/ask was last updated",
                labels=["symbol"],
            ),
            "crossed": GaugeMetricFamily(
                "aggbook_consolidated_crossed",
                "1 when the consolidated best bid >= best ask (crossed or locked)",
                labels=["symbol"],
            ),
            "spread": GaugeMetricFamily(
                "aggbook_consolidated_spread", "Consolidated best ask - best bid", labels=["symbol"]
            ),
            "live_venues": GaugeMetricFamily(
                "aggbook_consolidated_live_venues",
                "Venues currently included in the consolidated book",
                labels=["symbol"],
            ),
        }

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        f = self._families()
        now = self.clock()
        consolidated = self.source.consolidated
        for venue, symbol in self.source.configured_books():
            book = consolidated.get(symbol)
            sync = book.syncs.get(venue) if book is not None else None
            state = sync.state.value if sync is not None else SyncState.WAITING.value
            f["live"].add_metric([venue, symbol], 1.0 if state == SyncState.LIVE.value else 0.0)
            for s in STATES:
                f["state"].add_metric([venue, symbol, s], 1.0 if s == state else 0.0)
            if sync is not None and sync.updated_at is not None:
                f["age"].add_metric([venue, symbol], max(0.0, now - sync.updated_at))
        for symbol, book in consolidated.items():
            quote = book.quote(now=now)
            f["live_venues"].add_metric([symbol], float(sum(1 for v in quote.venues if v.included)))
            f["crossed"].add_metric([symbol], 1.0 if (quote.crossed or quote.locked) else 0.0)
            if quote.spread is not None:
                f["spread"].add_metric([symbol], float(Decimal(quote.spread)))
            behind = {lvl.venue for side in (quote.bid, quote.ask) if side is not None for lvl in side.venues}
            ages = [v.age for v in quote.venues if v.venue in behind and v.age is not None]
            if ages:
                f["bbo_age"].add_metric([symbol], max(ages))
        return iter(f.values())


class ServiceMetrics:
    """All metrics of one service instance, in a private registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # ``*_created`` series double the exposition and nothing here reads them (process-wide switch).
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        r = self.registry
        vs = ["venue", "symbol"]
        self.messages = Counter("aggbook_feed_messages_total", "Frames received", vs, registry=r)
        self.bytes = Counter("aggbook_feed_bytes_total", "Bytes received", vs, registry=r)
        self.decode_errors = Counter(
            "aggbook_feed_decode_errors_total", "Frames that could not be decoded", ["venue"], registry=r
        )
        self.gaps = Counter("aggbook_book_gaps_total", "Sequence gaps detected", vs, registry=r)
        self.resyncs = Counter(
            "aggbook_book_resyncs_total", "Books that lost sync, by reason", [*vs, "reason"], registry=r
        )
        self.lag_seconds = Histogram(
            "aggbook_feed_lag_seconds",
            "Exchange event time to receive time",
            ["venue"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.snapshots = Counter(
            "aggbook_snapshot_requests_total", "Snapshot requests by result", ["venue", "result"], registry=r
        )
        self.reconnects = Counter(
            "aggbook_feed_reconnects_total", "Connection attempts after the first", ["venue"], registry=r
        )
        self.ttl = Histogram(
            "aggbook_book_time_to_live_seconds",
            "Time for a book to become live",
            ["venue", "after"],
            buckets=TTL_BUCKETS,
            registry=r,
        )
        self.crossed_events = Counter(
            "aggbook_consolidated_crossed_events_total",
            "Times the consolidated book became crossed or locked",
            ["symbol"],
            registry=r,
        )
        self.http_requests = Counter(
            "aggbook_http_requests_total", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "aggbook_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.ws_clients = Gauge("aggbook_ws_clients", "Connected WebSocket clients", registry=r)
        self.ws_queued = Gauge(
            "aggbook_ws_queued_messages", "Messages queued to WebSocket clients", registry=r
        )
        self.ws_dropped = Counter(
            "aggbook_ws_dropped_messages_total", "WebSocket messages dropped by conflation", registry=r
        )
        self.ws_sent = Counter("aggbook_ws_messages_sent_total", "WebSocket messages sent", registry=r)
        self.loop_lag = Histogram(
            "aggbook_event_loop_lag_seconds",
            "How late the event loop woke a timer",
            buckets=LOOP_BUCKETS,
            registry=r,
        )
        self._collector: _ScrapeCollector | None = None
        # labelled children of the per-frame series, looked up once: ``labels()`` validates and takes a
        # lock on every call, which cost more than the increment itself on the feeds' hot path.  Keys
        # are the feeds' (venue, symbol) pairs, so the caches are as bounded as the labels.
        self._frame_series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lag_series: dict[str, Any] = {}

    # ------------------------------------------------------------------ wiring
    def attach(self, source: MetricsSource) -> None:
        """Register the scrape-time collector and create every labelled series up front.

        Pre-creating series makes every metric visible from the first scrape, so
        dashboards and ``absent()`` alerts do not confuse "nothing happened" with
        "not exported".
        """
        self._collector = _ScrapeCollector(source, self.clock)
        self.registry.register(self._collector)
        venues: set[str] = set()
        for venue, symbol in source.configured_books():
            venues.add(venue)
            self.messages.labels(venue, symbol)
            self.bytes.labels(venue, symbol)
            self.gaps.labels(venue, symbol)
            for reason in RESYNC_REASONS:
                self.resyncs.labels(venue, symbol, reason)
        for venue in venues:
            self.decode_errors.labels(venue)
            self.lag_seconds.labels(venue)
            self.reconnects.labels(venue)
            for result in ("ok", "failed"):
                self.snapshots.labels(venue, result)
            for after in ("start", "resync"):
                self.ttl.labels(venue, after)
        for symbol in source.consolidated:
            self.crossed_events.labels(symbol)

    def bind_ws(self, clients: Callable[[], int], queued: Callable[[], int]) -> None:
        self.ws_clients.set_function(clients)
        self.ws_queued.set_function(queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ FeedMetrics
    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        series = self._frame_series.get((venue, symbol))
        if series is None:
            series = self._frame_series[(venue, symbol)] = (
                self.messages.labels(venue, symbol), self.bytes.labels(venue, symbol))
        series[0].inc()
        series[1].inc(nbytes)

    def decode_error(self, venue: str) -> None:
        self.decode_errors.labels(venue).inc()

    def snapshot(self, venue: str, symbol: str, ok: bool) -> None:
        self.snapshots.labels(venue, "ok" if ok else "failed").inc()

    def reconnect(self, venue: str) -> None:
        self.reconnects.labels(venue).inc()

    def lag(self, venue: str, seconds: float) -> None:
        series = self._lag_series.get(venue)
        if series is None:
            series = self._lag_series[venue] = self.lag_seconds.labels(venue)
        series.observe(max(0.0, seconds))

    def time_to_live(self, venue: str, symbol: str, seconds: float, after: str) -> None:
        self.ttl.labels(venue, after).observe(max(0.0, seconds))

    # ------------------------------------------------------------------ book state (told by the aggregator)
    def book_transition(self, sync: BookSync, transition: Transition) -> None:
        if transition.reason in NOT_A_RESYNC:
            return
        self.resyncs.labels(sync.venue, sync.symbol, transition.reason.value).inc()
        if transition.reason is Reason.GAP:
            self.gaps.labels(sync.venue, sync.symbol).inc()

    # ------------------------------------------------------------------ consolidated, WS
    def crossed_event(self, symbol: str) -> None:
        self.crossed_events.labels(symbol).inc()

    def ws_message_sent(self) -> None:
        self.ws_sent.inc()

    def ws_messages_dropped(self, n: int = 1) -> None:
        self.ws_dropped.inc(n)

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Count requests by route template (never the raw path) and time them."""
        start = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED_ROUTE
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.http_requests.labels(route, request.method, str(status)).inc()
            if request.headers.get("Upgrade", "").lower() != "websocket":  # a WS lives for hours
                self.http_duration.labels(route).observe(time.perf_counter() - start)

    # ------------------------------------------------------------------ event loop
    async def watch_loop_lag(self, interval: float = 0.25) -> None:
        """Sleep ``interval`` over and over and record how late each wake-up is."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, time.monotonic() - start - interval))
