"""Five venues and three symbols at once: the consolidated best bid and ask equal the best of the truths."""

from __future__ import annotations

from decimal import Decimal

from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import wait_for
from tests.feeds.fleet import running_fleet

VENUES = ["binance", "mexc", "btse", "nhex", "bitv"]
SPECS = DEFAULT_SYMBOLS[:3]


async def test_consolidated_bbo_equals_best_of_five_truths():
    sim = SimulatedExchange(VENUES, SPECS, seed=11, rate=20.0)
    async with sim, running_fleet(sim, SPECS) as fleet:
        await wait_for(fleet.all_live, timeout=20, what="all 15 books live")
        sim.pause()
        await wait_for(fleet.all_equal_to_truth, timeout=10, what="every book equal to its venue's truth")
        for spec in SPECS:
            sym = spec.canonical
            truths = dict(zip(VENUES, fleet.truths(sym), strict=True))
            best_bid = max(t.bids[0][0] for t in truths.values())
            best_ask = min(t.asks[0][0] for t in truths.values())
            quote = fleet.books[sym].quote()
            assert {v.venue for v in quote.venues if v.included} == set(VENUES)
            assert Decimal(quote.bid.price) == best_bid
            assert Decimal(quote.ask.price) == best_ask
            at_bid = {v for v, t in truths.items() if t.bids[0][0] == best_bid}
            assert {lv.venue for lv in quote.bid.venues} == at_bid
