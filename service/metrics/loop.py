"""Event-loop lag, and the collector pauses that cause much of it.

Lag (how late the loop wakes a timer) is the one number that shows a starved service.  The
cyclic garbage collector's passes hold the loop too, so their durations are recorded next to
it, per generation: when the lag's tail and the full (generation 2) passes line up, the cause
is the collector and ``service/gcfreeze.py`` is where it is kept short.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GENERATIONS = ("0", "1", "2")


class LoopLagProbe:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "aggbook_event_loop_lag_seconds", "How late the event loop woke a timer",
            buckets=LOOP_BUCKETS, registry=registry,
        )
        pauses = Histogram(
            "aggbook_gc_pause_seconds", "Duration of the cyclic garbage collector's passes (they hold "
            "the event loop), by the oldest generation collected",
            ["generation"], buckets=LOOP_BUCKETS, registry=registry,
        )
        self._pauses = [pauses.labels(g) for g in GENERATIONS]
        frozen = Gauge(
            "aggbook_gc_frozen_objects", "Objects moved out of the collector's passes (gc.freeze)",
            registry=registry,
        )
        frozen.set_function(gc.get_freeze_count)
        self._started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._pauses[info["generation"]].observe(time.perf_counter() - self._started)
            self._started = 0.0

    async def run(self, interval: float = 0.25) -> None:
        """Sleep ``interval`` over and over and record how late each wake-up is; meanwhile time
        every collector pass (``gc.callbacks`` is process-wide: the callback leaves with the task)."""
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                start = time.monotonic()
                await asyncio.sleep(interval)
                self.lag.observe(max(0.0, time.monotonic() - start - interval))
        finally:
            gc.callbacks.remove(self._on_gc)
