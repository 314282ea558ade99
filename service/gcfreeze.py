"""Freeze what lives as long as the process, so that the collector's full passes stay short.

Why: CPython's cyclic garbage collector walks every tracked object on a full pass, and the
pass holds the event loop.  A service with 200 symbols on five venues tracks about 150,000
objects (modules and functions, a Prometheus child per labelled series, a ``BookSync`` with
its book and sequencing state per venue and symbol), and a full pass took 90-110 ms every
few seconds: the longest stall of a running service, and what set its event-loop lag p99.
Almost all of those objects are made while the service starts and live until it exits.
``gc.freeze()`` moves every tracked object to a permanent generation that later passes skip;
measured on that service, a full pass fell to about 15 ms.

When: twice.  Once the service has started (modules, metrics, the feeds' objects), and once
every configured book has been live once, or ``settle_timeout`` passed, because the books and
the connections are made during the cold start.

The price: the cyclic collector never frees a frozen object; reference counting still does.
A frozen object that later becomes part of an unreachable cycle (say, a connection open at
the freeze that closes later) stays in memory.  That is bounded by what existed at the freeze,
once; everything made later is collected as before.  ``gc_freeze = false`` in ``[service]``
turns this off.  Only the serving processes (``aggbook serve``, ``aggbook gateway``) freeze:
the process-wide switch is theirs, never a library's or a test's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("aggbook.service")

SETTLE_TIMEOUT = 300.0  # seconds after start: freeze what there is even if a venue never went live
SETTLE_POLL = 0.5


def freeze(stage: str, generation: int = 2) -> int:
    """Collect ``generation`` and the younger ones, then freeze every tracked object; log and
    return how many are frozen in all."""
    started = time.perf_counter()
    collected = gc.collect(generation)
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("long-lived objects frozen", extra={
        "stage": stage, "frozen": frozen, "collected": collected, "tracked": len(gc.get_objects()),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    })
    return frozen


async def freeze_when_settled(
    settled: Callable[[], bool], *, timeout: float = SETTLE_TIMEOUT, poll: float = SETTLE_POLL
) -> None:
    """Freeze once now (the service has started) and once more when ``settled()`` first holds.

    ``settled`` says the cold start is over (every book live once); after ``timeout`` seconds
    the second freeze happens anyway, so that a venue that never comes up does not leave the
    books of all the others in the collector's full passes.
    """
    freeze("started")
    deadline = time.monotonic() + timeout
    while not settled() and time.monotonic() < deadline:
        await asyncio.sleep(poll)
    freeze("settled", 1)
