"""Prometheus metrics of one service instance, one part per thing measured.

Each :class:`ServiceMetrics` owns its own ``CollectorRegistry`` (never the global default), so
several services can live in one process (tests) without their counters mixing.  Its parts:

* ``feeds`` (:class:`FeedCounters`): the :class:`aggbook.feeds.metrics.FeedMetrics` the feeds
  report frames, snapshots, reconnects and lags to;
* ``books`` (:class:`BookMetrics`): resyncs and gaps from the transitions the aggregator sees,
  crossed episodes, and book state and ages computed at scrape time;
* ``http`` (:class:`HttpMetrics`): the aiohttp middleware;
* ``ws`` (:class:`WsMetrics`): WebSocket clients and messages;
* ``loop`` (:class:`LoopLagProbe`): event-loop lag.

Label sets are bounded by the configuration (venue, symbol, reason, route); no label ever carries
a client id, a path parameter or free text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from aggbook.service.metrics.books import NOT_A_RESYNC, RESYNC_REASONS, STATES, BookMetrics, MetricsSource
from aggbook.service.metrics.feeds import FeedCounters
from aggbook.service.metrics.http import HttpMetrics
from aggbook.service.metrics.loop import LoopLagProbe
from aggbook.service.metrics.ws import WsMetrics

__all__ = [
    "NOT_A_RESYNC", "RESYNC_REASONS", "STATES", "BookMetrics", "FeedCounters", "HttpMetrics",
    "LoopLagProbe", "MetricsSource", "ServiceMetrics", "WsMetrics",
]


class ServiceMetrics:
    """All metrics of one service instance, in a private registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # ``*_created`` series double the exposition and nothing here reads them (process-wide switch).
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.feeds = FeedCounters(self.registry)
        self.books = BookMetrics(self.registry, clock)
        self.http = HttpMetrics(self.registry)
        self.ws = WsMetrics(self.registry)
        self.loop = LoopLagProbe(self.registry)

    def attach(self, source: MetricsSource) -> None:
        """Everything the running service exposes, every labelled series created up front."""
        self.feeds.precreate(source.configured_books())
        self.books.attach(source)

    def render(self, names: Iterable[str] | None = None) -> bytes:
        """The exposition; with ``names`` only the series of those names (a sample's name, e.g.
        ``aggbook_event_loop_lag_seconds_bucket``, or a counter's ``..._total``), read from the
        metrics that own them alone, so a narrow scrape costs the event loop nothing of the rest."""
        if names is None:
            return generate_latest(self.registry)
        return generate_latest(self.registry.restricted_registry(list(names)))
