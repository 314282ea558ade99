"""Per-frame feed metrics: the service's ``FeedCounters`` against direct prometheus-client calls, in one run.

Every data frame a feed delivers costs two metrics calls (see ``feeds/base.py``): ``message(venue,
symbol, nbytes)`` when the frame is counted and ``lag(venue, max(0.0, time.time() - event_time))``
after it is applied.  This benchmark makes exactly those calls, clock read included, over a
rotation of venues and symbols, against two sinks on fresh private registries:

* ``new``: :class:`aggbook.service.metrics.FeedCounters` (plain integers folded in at scrape time,
  lag sampled one frame in ``LAG_SAMPLE_EVERY`` per venue);
* ``prometheus_direct``: the same series updated on every frame through cached labelled children
  (``Counter.inc`` twice, ``Histogram.observe`` once), as the service did before.

After the timed runs each sink is scraped and its exported frame and byte totals must equal what
was driven, so the benchmark cannot measure a sink that drops frames.  Each contender runs
``--runs`` times on a fresh sink and the fastest run counts.  The last line is machine-readable:
``metrics_calls_per_s new=<n> prometheus_direct=<n> ratio=<r>`` (frames per second; ratio = new /
prometheus_direct).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aggbook.service.metrics import ServiceMetrics
from aggbook.service.metrics.feeds import LAG_BUCKETS

VENUES = ("binance", "mexc", "btse", "nhex", "bitv")
SYMBOLS = ("BTC-USDT", "ETH-USDT")


class Sink(Protocol):
    def message(self, venue: str, symbol: str, nbytes: int) -> None: ...

    def lag(self, venue: str, seconds: float) -> None: ...


class PrometheusDirect:
    """Frames, bytes and lag straight into prometheus-client on every frame (labelled children cached)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        vs = ["venue", "symbol"]
        self.messages = Counter("aggbook_feed_messages_total", "Frames received", vs, registry=registry)
        self.bytes = Counter("aggbook_feed_bytes_total", "Bytes received", vs, registry=registry)
        self.lag_seconds = Histogram("aggbook_feed_lag_seconds", "Exchange event time to receive time",
                                     ["venue"], buckets=LAG_BUCKETS, registry=registry)
        self._frame_series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lag_series: dict[str, Any] = {}

    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        series = self._frame_series.get((venue, symbol))
        if series is None:
            series = self._frame_series[(venue, symbol)] = (
                self.messages.labels(venue, symbol), self.bytes.labels(venue, symbol))
        series[0].inc()
        series[1].inc(nbytes)

    def lag(self, venue: str, seconds: float) -> None:
        series = self._lag_series.get(venue)
        if series is None:
            series = self._lag_series[venue] = self.lag_seconds.labels(venue)
        series.observe(max(0.0, seconds))


@dataclass
class Result:
    name: str
    frames: int
    seconds: float
    exported_frames: float
    exported_bytes: float

    @property
    def per_s(self) -> float:
        return self.frames / self.seconds


def make_frames(n: int) -> list[tuple[str, str, int, float]]:
    """(venue, symbol, frame bytes, event time): venues and symbols interleaved as on a busy service."""
    event_time = time.time() - 0.02
    pairs = [(v, s) for v in VENUES for s in SYMBOLS]
    return [(*pairs[i % len(pairs)], 200 + i % 300, event_time) for i in range(n)]


def drive(sink: Sink, frames: list[tuple[str, str, int, float]]) -> float:
    """The two calls a feed makes per delivered frame; returns the elapsed seconds."""
    message, lag, clock = sink.message, sink.lag, time.time
    gc.collect()
    start = time.perf_counter()
    for venue, symbol, nbytes, event_time in frames:
        message(venue, symbol, nbytes)
        lag(venue, max(0.0, clock() - event_time))
    return time.perf_counter() - start


def exported(registry: CollectorRegistry) -> tuple[float, float]:
    """Total frames and bytes a scrape of ``registry`` reports."""
    totals = {"aggbook_feed_messages": 0.0, "aggbook_feed_bytes": 0.0}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name in totals:
            totals[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return totals["aggbook_feed_messages"], totals["aggbook_feed_bytes"]


def measure(name: str, make: Callable[[], tuple[Sink, CollectorRegistry]],
            frames: list[tuple[str, str, int, float]], runs: int) -> Result:
    best = float("inf")
    totals = (0.0, 0.0)
    for _ in range(runs):
        sink, registry = make()
        best = min(best, drive(sink, frames))
        totals = exported(registry)
    want = (float(len(frames)), float(sum(f[2] for f in frames)))
    if totals != want:
        raise SystemExit(f"{name}: exported (frames, bytes) {totals}, drove {want}")
    return Result(name, len(frames), best, *totals)


def _new() -> tuple[Sink, CollectorRegistry]:
    metrics = ServiceMetrics()
    return metrics.feeds, metrics.registry


def _direct() -> tuple[Sink, CollectorRegistry]:
    registry = CollectorRegistry()
    return PrometheusDirect(registry), registry


def main(argv: list[str] | None = None) -> tuple[Result, Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300_000, help="frames driven per run")
    parser.add_argument("--runs", type=int, default=3, help="repeat each contender, keep the fastest")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.runs < 1:
        parser.error("--frames and --runs must be >= 1")
    frames = make_frames(args.frames)
    new = measure("new", _new, frames, args.runs)
    direct = measure("prometheus_direct", _direct, frames, args.runs)
    print(f"{args.frames} frames over {len(VENUES)} venues x {len(SYMBOLS)} symbols, "
          f"message() + lag() with the clock read per frame, best of {args.runs} runs")
    for r in (new, direct):
        print(f"  {r.name:<18} {r.per_s:>12,.0f} frames/s  (scrape: {r.exported_frames:.0f} frames, "
              f"{r.exported_bytes:.0f} bytes)")
    ratio = new.per_s / direct.per_s
    print(f"metrics_calls_per_s new={new.per_s:.0f} prometheus_direct={direct.per_s:.0f} ratio={ratio:.2f}")
    return new, direct


if __name__ == "__main__":
    main()
