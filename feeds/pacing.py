"""Reconnect backoff and request pacing: written once, used by every venue.

* :class:`Backoff` is capped exponential backoff with full jitter (each delay
  drawn uniformly below the doubling ceiling, so many clients do not retry in
  lock-step), floored at the base delay so a venue outage never turns into a
  tight reconnect loop.
* :class:`RequestPacer` spaces requests (REST snapshots, Huobi ``req`` frames,
  subscribe frames) by a token bucket, and obeys ``Retry-After`` from 429/418 by
  closing the gate for everyone until the venue's deadline, so a storm of
  resyncs after a reconnect is queued instead of stampeding.
"""

from __future__ import annotations

import asyncio
import random
import time


class Backoff:
    """Capped exponential backoff with full jitter, never shorter than ``base``.

    Attempt ``k`` waits ``uniform(base, min(cap, base * 2**k))``: the spread is the
    whole window under the ceiling (full jitter), but the floor keeps even an
    unlucky run of draws at most ``1 / base`` attempts per second.
    """

    def __init__(self, base: float = 0.25, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** self.attempts))
        self.attempts += 1
        return self._rng.uniform(min(self.base, ceiling), ceiling)

    def reset(self) -> None:
        self.attempts = 0


class RequestPacer:
    """A token bucket of ``rate`` weight per second with bursts of ``burst``, plus a Retry-After gate."""

    def __init__(self, rate: float, burst: float | None = None, min_interval: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.min_interval = min_interval
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._last = 0.0
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds callers spent queued (observability)
        self.penalties = 0

    def penalize(self, retry_after: float) -> None:
        """The venue said 429/418: nobody sends until ``retry_after`` seconds from now."""
        self.penalties += 1
        self._blocked_until = max(self._blocked_until, time.monotonic() + max(retry_after, 0.0))

    async def acquire(self, weight: float = 1.0) -> None:
        async with self._lock:  # FIFO: requests leave in the order they were queued
            start = time.monotonic()
            weight = min(weight, self.burst)
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                wait = max(self._blocked_until - now, self._last + self.min_interval - now)
                if self._tokens < weight:
                    wait = max(wait, (weight - self._tokens) / self.rate)
                if wait <= 0:
                    self._tokens -= weight
                    self._last = now
                    self.waited += now - start
                    return
                await asyncio.sleep(wait)
