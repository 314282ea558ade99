"""Reconnect backoff: capped, exponential, fully jittered, never a tight loop."""

from __future__ import annotations

import random

from aggbook.feeds.pacing import Backoff


def test_delays_stay_between_the_base_and_the_doubling_ceiling() -> None:
    backoff = Backoff(0.25, 30.0, rng=random.Random(1))
    for attempt in range(20):
        ceiling = min(30.0, 0.25 * 2**attempt)
        assert 0.25 <= backoff.next() <= ceiling


def test_full_jitter_spreads_over_the_whole_window() -> None:
    """Draws at the cap land in its lower half too (equal jitter never would)."""
    backoff = Backoff(0.25, 8.0, rng=random.Random(2))
    for _ in range(6):
        backoff.next()  # reach the cap
    draws = [backoff.next() for _ in range(200)]
    assert max(draws) <= 8.0
    assert sum(d < 4.0 for d in draws) > 50
    assert sum(d >= 4.0 for d in draws) > 50


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(0.5, 10.0, rng=random.Random(3))
    for _ in range(8):
        backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5  # attempt 0: the window is [base, base]
