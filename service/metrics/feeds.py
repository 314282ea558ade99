"""What the feeds report: frames, bytes, decode errors, snapshots, reconnects, lag, time to live.

This is the service's :class:`aggbook.feeds.metrics.FeedMetrics`, and feeds call two of its methods
on every frame, so those two stay off prometheus-client:

* frames and bytes per (venue, symbol) are plain integers, read by a collector when Prometheus
  scrapes (``aggbook_feed_messages_total``, ``aggbook_feed_bytes_total``).  A ``Counter.inc`` takes
  a lock and does float arithmetic on every call; an integer in a dict does neither, and the
  exported series are the same counters with the same names, help, labels and pre-created series.
  The feeds and the scrape handler both run on the event-loop thread, so the integers need no lock.
* lag is sampled: one frame in :data:`LAG_SAMPLE_EVERY` per venue is observed (the first frame of a
  venue always is).  Quantiles of a uniform sample estimate those of every frame; the histogram's
  ``_count`` counts sampled frames, so frame rates come from ``aggbook_feed_messages_total``.

Everything else here happens per snapshot, reconnect or error, and uses the client's own types.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from aggbook.feeds.audit import OUTCOMES as AUDIT_OUTCOMES

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TTL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LAG_SAMPLE_EVERY = 16
"""One frame in this many per venue has its lag observed."""

_FRAME_LABELS = ["venue", "symbol"]
_MESSAGES = ("aggbook_feed_messages_total", "Frames received")
_BYTES = ("aggbook_feed_bytes_total", "Bytes received")


class _FrameCollector:
    """Exports the frame and byte integers as the two counters, at scrape time."""

    def __init__(self, frames: dict[tuple[str, str], list[int]]) -> None:
        self.frames = frames

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(*_MESSAGES, labels=_FRAME_LABELS)
        yield CounterMetricFamily(*_BYTES, labels=_FRAME_LABELS)

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(*_MESSAGES, labels=_FRAME_LABELS)
        nbytes = CounterMetricFamily(*_BYTES, labels=_FRAME_LABELS)
        for (venue, symbol), (count, size) in list(self.frames.items()):
            messages.add_metric([venue, symbol], float(count))
            nbytes.add_metric([venue, symbol], float(size))
        yield messages
        yield nbytes


class FeedCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        # (venue, symbol) -> [frames, bytes]; only ever grows, so exported counters never go down
        self._frames: dict[tuple[str, str], list[int]] = {}
        r.register(_FrameCollector(self._frames))
        self.decode_errors = Counter(
            "aggbook_feed_decode_errors_total", "Frames that could not be decoded", ["venue"], registry=r
        )
        self.lag_seconds = Histogram(
            "aggbook_feed_lag_seconds",
            f"Exchange event time to receive time, sampled: one frame in {LAG_SAMPLE_EVERY} per venue",
            ["venue"], buckets=LAG_BUCKETS, registry=r,
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
        self.audits = Counter(
            "aggbook_book_audits_total", "Books compared with a fresh snapshot at their own id, by outcome",
            ["venue", "outcome"], registry=r,
        )
        # venue -> (frames to skip before the next observation, the venue's labelled histogram)
        self._lag: dict[str, list[Any]] = {}

    def precreate(self, books: Iterable[tuple[str, str]]) -> None:
        """Every labelled series up front, so a scrape never confuses "none yet" with "not exported"."""
        venues: set[str] = set()
        for venue, symbol in books:
            venues.add(venue)
            self._frames.setdefault((venue, symbol), [0, 0])
        for venue in venues:
            self.decode_errors.labels(venue)
            self.lag_seconds.labels(venue)
            self.reconnects.labels(venue)
            for result in ("ok", "failed"):
                self.snapshots.labels(venue, result)
            for after in ("start", "resync"):
                self.ttl.labels(venue, after)
            for outcome in AUDIT_OUTCOMES:
                self.audits.labels(venue, outcome)

    def frames(self, venue: str, symbol: str) -> tuple[int, int]:
        """(frames, bytes) counted so far for the pair: what the next scrape exports."""
        counts = self._frames.get((venue, symbol))
        return (0, 0) if counts is None else (counts[0], counts[1])

    # ------------------------------------------------------------------ FeedMetrics
    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        counts = self._frames.get((venue, symbol))
        if counts is None:
            counts = self._frames[(venue, symbol)] = [0, 0]
        counts[0] += 1
        counts[1] += nbytes

    def decode_error(self, venue: str) -> None:
        self.decode_errors.labels(venue).inc()

    def snapshot(self, venue: str, symbol: str, ok: bool) -> None:
        self.snapshots.labels(venue, "ok" if ok else "failed").inc()

    def reconnect(self, venue: str) -> None:
        self.reconnects.labels(venue).inc()

    def lag(self, venue: str, seconds: float) -> None:
        state = self._lag.get(venue)
        if state is None:
            state = self._lag[venue] = [0, self.lag_seconds.labels(venue)]
        if state[0]:
            state[0] -= 1
            return
        state[0] = LAG_SAMPLE_EVERY - 1
        state[1].observe(max(0.0, seconds))

    def time_to_live(self, venue: str, symbol: str, seconds: float, after: str) -> None:
        self.ttl.labels(venue, after).observe(max(0.0, seconds))

    def audit(self, venue: str, outcome: str) -> None:
        self.audits.labels(venue, outcome).inc()
