"""Event-loop lag: how late the loop wakes a timer, the one number that shows a starved service."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Histogram

LOOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLagProbe:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "aggbook_event_loop_lag_seconds", "How late the event loop woke a timer",
            buckets=LOOP_BUCKETS, registry=registry,
        )

    async def run(self, interval: float = 0.25) -> None:
        """Sleep ``interval`` over and over and record how late each wake-up is."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(interval)
            self.lag.observe(max(0.0, time.monotonic() - start - interval))
