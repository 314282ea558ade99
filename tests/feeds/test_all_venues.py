"""Five venues and three symbols at once: the consolidated best bid and ask equal the best of the truths."""

from __future__ import annotations

from decimal import Decimal

from book.consolidated import ConsolidatedBook
from book.sync import BookSync
from feeds.config import VenueConfig
from feeds.registry import create_feed
from simulator.exchange import SimulatedExchange
from simulator.market import DEFAULT_SYMBOLS
from simulator.venue import VenueServer
from tests.conftest import wait_for

VENUES = ["binance", "mexc", "btse", "nhex", "bitv"]
SPECS = DEFAULT_SYMBOLS[:3]


def venue_truth(venue: VenueServer, sync: BookSync, symbol: str):
    """The truth in the numbering the feed sees (BTSE numbers each subscription from its own base)."""
    if hasattr(venue, "truth_for") and venue.connections:
        conn_id = max(venue.connections)  # the feed's current connection is the newest one
        return venue.truth_for(conn_id, symbol)
    return venue.truth(symbol)


def in_sync(venue: VenueServer, sync: BookSync, symbol: str) -> bool:
    if not sync.live:
        return False
    truth = venue_truth(venue, sync, symbol)
    if sync.last_id != truth.seq:
        return False
    depth = sync.book.max_depth
    bids = [(Decimal(p), Decimal(s)) for p, s in sync.book.bids(depth)]
    asks = [(Decimal(p), Decimal(s)) for p, s in sync.book.asks(depth)]
    t = truth if depth is None else truth.top(depth)
    return bids == list(t.bids) and asks == list(t.asks)


async def test_consolidated_bbo_equals_best_of_five_truths():
    async with SimulatedExchange(VENUES, SPECS, seed=11, rate=20.0) as sim:
        books = {spec.canonical: ConsolidatedBook(spec.canonical, stale_after=60) for spec in SPECS}
        feeds = []
        for name in VENUES:
            venue = sim.venues[name]
            symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
            feed = create_feed(VenueConfig(name=name, kind=name, symbols=symbols, **venue.urls()))

            def wire(canonical: str, sync: BookSync) -> None:
                cb = books[canonical]
                if sync.venue in cb.syncs:
                    cb.replace_venue(sync)
                else:
                    cb.add_venue(sync)

            feed.on_sync(wire)
            feeds.append(feed)
        try:
            for feed in feeds:
                await feed.start()
            await wait_for(lambda: all(s.live for f in feeds for s in f.current_syncs().values()),
                           timeout=20, what="all 15 books live")
            sim.pause()
            pairs = [(sim.venues[f.venue], s, sym) for f in feeds for sym, s in f.current_syncs().items()]
            await wait_for(lambda: all(in_sync(v, s, sym) for v, s, sym in pairs), timeout=10,
                           what="every book equal to its venue's truth")
            for spec in SPECS:
                sym = spec.canonical
                best_bid = max(sim.venues[v].truth(sym).bids[0][0] for v in VENUES)
                best_ask = min(sim.venues[v].truth(sym).asks[0][0] for v in VENUES)
                quote = books[sym].quote()
                assert {v.venue for v in quote.venues if v.included} == set(VENUES)
                assert Decimal(quote.bid.price) == best_bid
                assert Decimal(quote.ask.price) == best_ask
                at_bid = {v for v in VENUES if sim.venues[v].truth(sym).bids[0][0] == best_bid}
                assert {lv.venue for lv in quote.bid.venues} == at_bid
        finally:
            for feed in feeds:
                await feed.stop()
