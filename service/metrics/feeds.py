"""What the feeds report: frames, bytes, decode errors, snapshots, reconnects, lag, time to live.

This is the service's :class:`aggbook.feeds.metrics.FeedMetrics`: feeds call it on their hot path,
so the per-frame series keep their labelled children (``labels()`` validates and takes a lock on
every call, which cost more than the increment itself).  Keys are the feeds' (venue, symbol)
pairs, so the caches are as bounded as the labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TTL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class FeedCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        vs = ["venue", "symbol"]
        self.messages = Counter("aggbook_feed_messages_total", "Frames received", vs, registry=r)
        self.bytes = Counter("aggbook_feed_bytes_total", "Bytes received", vs, registry=r)
        self.decode_errors = Counter(
            "aggbook_feed_decode_errors_total", "Frames that could not be decoded", ["venue"], registry=r
        )
        self.lag_seconds = Histogram(
            "aggbook_feed_lag_seconds", "Exchange event time to receive time", ["venue"],
            buckets=LAG_BUCKETS, registry=r,
        )
        self.snapshots = Counter(
            "aggbook_snapshot_requests_total", "Snapshot requests by result", ["venue", "result"], registry=r
        )
        self.reconnects = Counter(
            "aggbook_feed_reconnects_total", "Connection attempts after the first", ["venue"], registry=r
        )
        self.ttl = Histogram(
            "aggbook_book_time_to_live_seconds", "Time for a book to become live", ["venue", "after"],
            buckets=TTL_BUCKETS, registry=r,
        )
        self._frame_series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lag_series: dict[str, Any] = {}

    def precreate(self, books: Iterable[tuple[str, str]]) -> None:
        """Every labelled series up front, so a scrape never confuses "none yet" with "not exported"."""
        venues: set[str] = set()
        for venue, symbol in books:
            venues.add(venue)
            self.messages.labels(venue, symbol)
            self.bytes.labels(venue, symbol)
        for venue in venues:
            self.decode_errors.labels(venue)
            self.lag_seconds.labels(venue)
            self.reconnects.labels(venue)
            for result in ("ok", "failed"):
                self.snapshots.labels(venue, result)
            for after in ("start", "resync"):
                self.ttl.labels(venue, after)

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
