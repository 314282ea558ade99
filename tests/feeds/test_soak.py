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

import contextlib
import os
from collections import Counter
from decimal import Decimal

import pytest

from book.consolidated import ConsolidatedBook
from book.sync import BookSync, Reason, SyncState, Transition
from feeds.config import VenueConfig
from feeds.registry import create_feed
from simulator.exchange import SimulatedExchange
from simulator.faults import Fault
from simulator.market import DEFAULT_SYMBOLS, TruthBook
from simulator.venue import VenueServer
from tests.conftest import describe_mismatch, wait_for
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

    def __call__(self, canonical: str, sync: BookSync) -> None:
        sync.listeners.append(self)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        if transition.new is SyncState.RESYNCING:
            self.reasons[transition.reason] += 1

    def on_update(self, sync: BookSync, changed: int) -> None:
        pass


def truth_seen_by_feed(venue: VenueServer, symbol: str) -> TruthBook:
    """The truth at the last id the venue wrote on the feed's (newest open) connection for ``symbol``.

    Not simply the current truth: a frame the venue still holds back (a REORDER waiting for the
    next event, which never comes once the market is paused) was never sent, so the feed cannot
    have it.  BTSE answers in the seq space of that connection's subscription.
    """
    for conn_id in sorted((cid for cid, c in venue.connections.items() if not c.closed), reverse=True):
        try:
            return venue.truth_sent(conn_id, symbol)
        except KeyError:
            continue
    raise KeyError(f"{venue.name} sent nothing for {symbol} on an open connection")


def equal_to_truth(venue: VenueServer, sync: BookSync, symbol: str) -> bool:
    if not sync.live:
        return False
    try:
        truth = truth_seen_by_feed(venue, symbol)
    except KeyError:
        return False
    depth = sync.book.max_depth
    t = truth if depth is None else truth.top(depth)
    return (sync.last_id == truth.seq
            and [(Decimal(p), Decimal(s)) for p, s in sync.book.bids(depth)] == list(t.bids)
            and [(Decimal(p), Decimal(s)) for p, s in sync.book.asks(depth)] == list(t.asks))


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_fault_storm_on_five_venues_ends_equal_to_the_truth(seed: int) -> None:
    async with SimulatedExchange(VENUES, SPECS, seed=seed, rate=40.0, fault_rate=0.004,
                                 fault_kinds=KINDS) as sim:
        books = {spec.canonical: ConsolidatedBook(spec.canonical, stale_after=60) for spec in SPECS}
        transitions, metrics = TransitionCount(), RecordingMetrics()
        feeds = []
        for name in VENUES:
            venue = sim.venues[name]
            symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
            feed = create_feed(VenueConfig(name=name, kind=name, symbols=symbols, **venue.urls()),
                               metrics=metrics)

            def wire(canonical: str, sync: BookSync) -> None:
                cb = books[canonical]
                if sync.venue in cb.syncs:
                    cb.replace_venue(sync)
                else:
                    cb.add_venue(sync)

            feed.on_sync(transitions)
            feed.on_sync(wire)
            feeds.append(feed)
        try:
            for feed in feeds:
                await feed.start()

            def fired() -> Counter:
                return sum((Counter(v.faults.fired) for v in sim.venues.values()), Counter())

            await wait_for(lambda: all(fired()[k.value] >= 2 for k in STREAM_KINDS), timeout=60,
                           what="every stream fault kind fired at least twice")
            for venue in sim.venues.values():
                venue.faults.configure_random(0.0)
            storm = fired()

            def all_live() -> bool:
                return all(s.live for f in feeds for s in f.current_syncs().values())

            await wait_for(all_live, timeout=30, what="every book live once the faults stop")
            sim.pause()
            pairs = [(sim.venues[f.venue], s, sym) for f in feeds for sym, s in f.current_syncs().items()]
            try:
                await wait_for(lambda: all(equal_to_truth(v, s, sym) for v, s, sym in pairs), timeout=15,
                               what="every book equal to its venue's truth")
            except BaseException:
                for v, s, sym in pairs:
                    if not equal_to_truth(v, s, sym):
                        with contextlib.suppress(KeyError):
                            truth = truth_seen_by_feed(v, sym)
                            print(v.name, sym, describe_mismatch(s, truth, s.book.max_depth))
                raise

            print(f"\nfault storm (seed {seed}): fired {dict(storm)}; resyncs {dict(transitions.reasons)}; "
                  f"decode errors {metrics.decode_errors}, reconnects {metrics.reconnects}")
            # each kind of fault left its mark, counted with its reason
            assert transitions.reasons[Reason.GAP] >= 1
            assert transitions.reasons[Reason.DECODE_ERROR] >= 1 and metrics.decode_errors >= 1
            assert transitions.reasons[Reason.CROSSED_BOOK] >= 1
            assert transitions.reasons[Reason.DISCONNECT] >= 1 and metrics.reconnects >= 1
            assert all(not task.done() for f in feeds for task in f._supervisors)  # noqa: SLF001
            for spec in SPECS:
                sym = spec.canonical
                quote = books[sym].quote()
                assert {v.venue for v in quote.venues if v.included} == set(VENUES)
                truths = [truth_seen_by_feed(sim.venues[v], sym) for v in VENUES]
                assert Decimal(quote.bid.price) == max(t.bids[0][0] for t in truths)
                assert Decimal(quote.ask.price) == min(t.asks[0][0] for t in truths)
        finally:
            for feed in feeds:
                await feed.stop()
