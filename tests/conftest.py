"""Shared test helpers: condition waits (never sleep-and-hope) and book-versus-truth comparison."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from aggbook.book.sync import BookSync
from aggbook.simulator.market import TruthBook


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` every 10 ms until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def book_matches(sync: BookSync, truth: TruthBook, depth: int | None = None) -> bool:
    """True when the sync is live at the truth's sequence id and its book equals the truth (top ``depth``)."""
    if not sync.live or sync.last_id != truth.seq:
        return False
    bids = [(Decimal(p), Decimal(s)) for p, s in sync.book.bids(depth)]
    asks = [(Decimal(p), Decimal(s)) for p, s in sync.book.asks(depth)]
    t = truth if depth is None else truth.top(depth)
    return bids == list(t.bids) and asks == list(t.asks)


def describe_mismatch(sync: BookSync, truth: TruthBook, depth: int | None = None) -> str:
    """The state, the ids, the top levels of both, and per side where the book first departs from
    the truth (a wrong deep level under a right top shows only there)."""
    t = truth if depth is None else truth.top(depth)
    lines = [f"state={sync.state} reason={sync.reason} last_id={sync.last_id} truth_seq={t.seq}",
             f"book bids={sync.book.bids(5)} asks={sync.book.asks(5)}",
             f"truth bids={t.bids[:5]} asks={t.asks[:5]}"]
    sides = (("bids", sync.book.bids(depth), t.bids), ("asks", sync.book.asks(depth), t.asks))
    for side, mine, true in sides:
        levels = [(Decimal(p), Decimal(s)) for p, s in mine]
        first = next((i for i, (a, b) in enumerate(zip(levels, true, strict=False)) if a != b),
                     min(len(levels), len(true)))
        if levels != list(true):
            lines.append(f"{side}: {len(levels)} levels against {len(true)}, first difference at "
                         f"level {first}: book {levels[first:first + 3]} truth {list(true[first:first + 3])}")
    return "\n".join(lines)


@pytest.fixture
def wait():
    return wait_for
