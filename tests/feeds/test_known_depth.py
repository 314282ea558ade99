"""Known depth over real sockets: a book snapshotted shallower than the venue's book holds exactly
the truth inside its window (from the best price to the snapshot's worst), nothing beyond it, and
keeps that as the market moves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from aggbook.book.sync import BookSync, Reason
from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed
from aggbook.simulator.exchange import venue_classes
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.venue import VenueServer
from tests.conftest import wait_for
from tests.feeds.fleet import truth_seen_by_feed

SPECS = DEFAULT_SYMBOLS[:2]
SYM = "BTC-USDT"
DEPTH = 8  # of the simulated market's 40 levels per side
# per venue: what makes its snapshot DEPTH deep (the feed's config depth, and the venue's own option)
CASES = {
    "binance": {},
    "binance-futures": None,  # futures takes only 5, 10, 20, ... as a limit: tested with spot
    "mexc": {},
    "btse": {"snapshot_depth": DEPTH},
}


@contextlib.asynccontextmanager
async def running(kind: str) -> AsyncIterator[tuple[VenueServer, VenueFeed]]:
    venue = venue_classes()[kind](SPECS, seed=5, rate=30.0, **(CASES[kind] or {}))
    await venue.start()
    symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
    feed = create_feed(VenueConfig(name=kind, kind=kind, symbols=symbols, depth=DEPTH,
                                   options={"backoff_base": 0.05, "backoff_cap": 0.5}, **venue.urls()))
    try:
        await feed.start()
        yield venue, feed
    finally:
        await feed.stop()
        await venue.stop()


def equal_inside_window(venue: VenueServer, sync: BookSync) -> bool:
    """Live at the id the venue last sent, and equal to the truth from the best price to the window's edge."""
    if not sync.live:
        return False
    try:
        truth = truth_seen_by_feed(venue, SYM)
    except KeyError:
        return False
    if sync.last_id != truth.seq:
        return False
    bid_edge, ask_edge = (None if e is None else Decimal(e) for e in sync.book.window())
    if bid_edge is None or ask_edge is None:
        return False  # the market is deeper than the snapshot: both sides must have an edge
    bids = [(Decimal(p), Decimal(s)) for p, s in sync.book.bids()]
    asks = [(Decimal(p), Decimal(s)) for p, s in sync.book.asks()]
    return (bids == [lvl for lvl in truth.bids if lvl[0] >= bid_edge]
            and asks == [lvl for lvl in truth.asks if lvl[0] <= ask_edge])


@pytest.mark.parametrize("kind", [k for k, v in CASES.items() if v is not None])
async def test_a_shallow_snapshot_is_known_only_to_its_window(kind: str) -> None:
    async with running(kind) as (venue, feed):
        await wait_for(lambda: SYM in feed.current_syncs() and feed.current_syncs()[SYM].live, 15, "live")
        sync = feed.current_syncs()[SYM]
        assert all(sync.book.window())  # both sides came back DEPTH deep: each has an edge
        await wait_for(lambda: feed.current_syncs()[SYM].counters.applied >= 30, 15, "30 deltas applied")
        venue.pause()
        await wait_for(lambda: equal_inside_window(venue, feed.current_syncs()[SYM]), 10,
                       "the book equal to the truth inside its window")
        sync = feed.current_syncs()[SYM]
        truth = truth_seen_by_feed(venue, SYM)
        assert len(truth.bids) > sync.book.depth[0] and len(truth.asks) > sync.book.depth[1]
        # the only resync a moving market may force is an emptied window
        assert set(sync.counters.resyncs) <= {Reason.DEPTH_EXHAUSTED}
