"""Reconnect backoff and request pacing: written once, used by every venue.

* :class:`Backoff` is capped exponential backoff with full jitter (each delay
  drawn uniformly below the doubling ceiling, so many clients do not retry in
  lock-step), floored at the base delay so a venue outage never turns into a
  tight reconnect loop.
* :class:`RequestPacer` spaces requests (REST snapshots, Huobi ``req`` frames,
  subscribe frames) by a token bucket, and obeys ``Retry-After`` from 429/418 by
  closing the gate for everyone until the venue's deadline, so a storm of
  resyncs after a reconnect is queued instead of stampeding.
* :class:`WeightBudget` is a venue's published request budget (``limit`` weight per
  ``window`` seconds) turned into the pacer's rate and burst, and
  :func:`cold_start_bound_s` the earliest moment that pacing lets the last of a
  cold start's snapshot requests out.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass


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

    def configure(self, rate: float, burst: float) -> None:
        """New rate and burst (a budget learned after start); tokens held never exceed the new burst."""
        self.rate = rate
        self.burst = burst
        self._tokens = min(self._tokens, burst)

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


@dataclass(frozen=True)
class WeightBudget:
    """A venue's request budget (``limit`` weight per ``window`` seconds) and the share snapshots may use.

    The snapshot pacer is a token bucket, and a bucket of rate ``r`` and burst ``B`` lets out at most
    ``B + r * window`` weight in any interval of ``window`` seconds, whether the venue counts in fixed
    windows (Binance's calendar minute) or a sliding one.  So :meth:`pacing` splits the usable weight
    ``limit * headroom - reserve`` (the headroom leaves room for other clients on the same IP, the
    reserve for the feed's own other requests such as ``exchangeInfo``) between the burst and the
    rate, and a cold start never spends more than that in one window.  The burst is a small share:
    a large burst only moves weight from the rate, which slows every cold start bigger than it.
    """

    limit: float
    window: float
    headroom: float = 0.8
    reserve: float = 0.0
    burst_share: float = 0.1

    def __post_init__(self) -> None:
        for name in ("limit", "window", "headroom", "reserve", "burst_share"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.limit <= 0 or self.window <= 0:
            raise ValueError(f"a budget needs a positive limit and window, got {self.limit}/{self.window}s")

    @property
    def usable(self) -> float:
        """Weight the snapshots may spend in one window."""
        return max(0.0, self.limit * self.headroom - self.reserve)

    def pacing(self, weight: float) -> tuple[float, float]:
        """``(rate, burst)`` for snapshots of ``weight`` each, with ``burst + rate * window <= usable``.

        A budget too small for two snapshots a window still lets one through per window (the venue
        answers a snapshot it cannot afford with 429 and ``Retry-After``, which the pacer obeys).
        """
        weight = max(weight, 1e-9)
        usable = self.usable
        burst = max(weight, usable * self.burst_share)
        if usable - burst < weight:
            return weight / self.window, weight
        return (usable - burst) / self.window, burst


def cold_start_bound_s(budget: WeightBudget, weight: float, symbols: int) -> float:
    """Earliest second after start at which the last of ``symbols`` snapshots of ``weight`` can leave.

    The bucket starts full (``burst``) and refills at ``rate``, so the ``k``-th request leaves at
    ``(k * weight - burst) / rate``; the books are live one round trip after their request.  This is
    the figure ``aggbook check-config`` shows per venue: what a cold start of that many books costs.
    """
    rate, burst = budget.pacing(weight)
    return drain_s(rate, burst, weight, symbols)


def drain_s(rate: float, burst: float, weight: float, requests: int) -> float:
    """Seconds until a full bucket of ``rate``/``burst`` has let ``requests`` of ``weight`` out."""
    if requests <= 0:
        return 0.0
    return max(0.0, (requests * min(weight, burst) - burst) / rate)
