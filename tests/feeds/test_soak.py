"""Five venues under seeded random faults at once: after the storm every book equals its venue's truth.

The simulator's random mode fires gaps, duplicates, reordered pairs, truncated frames, crossed
books, abrupt disconnects, server closes, BTSE buffer-full errors and snapshot faults on every
venue while the feeds run with their production defaults (``AGGBOOK_SOAK_SEEDS`` and
``AGGBOOK_SOAK_FAULTS`` widen the hunt by hand).  Then the faults stop, the market is paused,
and every book must be live at the last id its venue sent it and equal to the truth there;
every stream fault kind must have fired, the resyncs be counted with their reasons, and no
feed's supervisor may have died.
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal

import pytest

from aggbook.book.sync import BookSync, Reason, SyncState, Transition
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import wait_for
from tests.feeds.fleet import running_fleet
from tests.feeds.recording import RecordingMetrics

VENUES = ["binance", "mexc", "btse", "nhex", "bitv"]
SPECS = DEFAULT_SYMBOLS[:2]
KINDS = [Fault(k) for k in os.environ.get(
    "AGGBOOK_SOAK_FAULTS",
    "gap,duplicate,reorder,malformed,crossed,disconnect,server_close,buffer_full,stale_snapshot,"
    "snapshot_429,slow_snapshot").split(",")]
SEEDS = [int(s) for s in os.environ.get("AGGBOOK_SOAK_SEEDS", "23,24,25").split(",")]
STREAM_KINDS = [Fault.GAP, Fault.DUPLICATE, Fault.REORDER, Fault.MALFORMED, Fault.CROSSED, Fault.DISCONNECT]


class TransitionCount:
    """Counts every resync transition of every book any feed ever published."""

    def __init__(self) -> None:
        self.reasons: Counter[Reason] = Counter()

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        if transition.new is SyncState.RESYNCING:
            self.reasons[transition.reason] += 1


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_fault_storm_on_five_venues_ends_equal_to_the_truth(seed: int) -> None:
    async with SimulatedExchange(VENUES, SPECS, seed=seed, rate=40.0, fault_rate=0.004,
                                 fault_kinds=KINDS) as sim:
        transitions, metrics = TransitionCount(), RecordingMetrics()
        async with running_fleet(sim, SPECS, metrics=metrics, transition_listeners=[transitions]) as fleet:

            def fired() -> Counter:
                return sum((Counter(v.faults.fired) for v in sim.venues.values()), Counter())

            await wait_for(lambda: all(fired()[k.value] >= 2 for k in STREAM_KINDS), timeout=60,
                           what="every stream fault kind fired at least twice")
            for venue in sim.venues.values():
                venue.faults.configure_random(0.0)
            storm = fired()

            await wait_for(fleet.all_live, timeout=30, what="every book live once the faults stop")
            sim.pause()
            try:
                await wait_for(fleet.all_equal_to_truth, timeout=15,
                               what="every book equal to its venue's truth")
            except BaseException:
                print(fleet.mismatches())
                raise

            print(f"\nfault storm (seed {seed}): fired {dict(storm)}; resyncs {dict(transitions.reasons)}; "
                  f"decode errors {metrics.decode_errors}, reconnects {metrics.reconnects}")
            # each kind of fault left its mark, counted with its reason
            assert transitions.reasons[Reason.GAP] >= 1
            assert transitions.reasons[Reason.DECODE_ERROR] >= 1 and metrics.decode_errors >= 1
            assert transitions.reasons[Reason.CROSSED_BOOK] >= 1
            assert transitions.reasons[Reason.DISCONNECT] >= 1 and metrics.reconnects >= 1
            assert all(f.running for f in fleet.feeds)
            for spec in SPECS:
                sym = spec.canonical
                quote = fleet.books[sym].quote()
                assert {v.venue for v in quote.venues if v.included} == set(VENUES)
                truths = fleet.truths(sym)
                assert Decimal(quote.bid.price) == max(t.bids[0][0] for t in truths)
                assert Decimal(quote.ask.price) == min(t.asks[0][0] for t in truths)
