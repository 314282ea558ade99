"""The top-of-book cross-check against each venue's best bid/offer stream, over real sockets.

SILENT_LOSS leaves a top-moving level change out of a delta while the sequence ids stay
contiguous: no sequence check can see it, the venue's truth has the change and the client's book
does not.  Each venue's bbo stream (served by the simulator in the venue's wire shape) must
reveal it: the book resyncs with reason ``bbo_mismatch`` and returns equal to the truth.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from aggbook.book.sync import BookSync, Reason, Transition
from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed
from aggbook.simulator.exchange import venue_classes
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.venue import VenueServer
from tests.conftest import describe_mismatch, wait_for
from tests.feeds.fleet import equal_to_truth, truth_seen_by_feed

SPECS = DEFAULT_SYMBOLS[:2]
SYM = "BTC-USDT"
ALLOWANCE = 0.5  # seconds an id-less bbo may disagree with the book (the option's default is 2)
FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "bbo_allowance": ALLOWANCE}
VENUES = ["binance", "binance-futures", "mexc", "btse"]


class Transitions:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Transition]] = []

    def __call__(self, canonical: str, sync: BookSync) -> None:
        sync.attach(self, None)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        self.seen.append((sync.symbol, transition))

    def reasons(self, symbol: str) -> list[Reason]:
        return [t.reason for s, t in self.seen if s == symbol]


@contextlib.asynccontextmanager
async def running(kind: str, options: dict | None = None) -> AsyncIterator[tuple[VenueServer, VenueFeed,
                                                                                  Transitions]]:
    venue = venue_classes()[kind](SPECS, seed=11, rate=20.0)
    await venue.start()
    symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
    feed = create_feed(VenueConfig(name=kind, kind=kind, symbols=symbols, options={**FAST, **(options or {})},
                                   **venue.urls()))
    seen = Transitions()
    feed.on_sync(seen)
    try:
        await feed.start()
        yield venue, feed, seen
    finally:
        await feed.stop()
        await venue.stop()


def live_and_true(venue: VenueServer, feed: VenueFeed) -> bool:
    syncs = feed.current_syncs()
    return len(syncs) == len(SPECS) and all(equal_to_truth(venue, s, c) for c, s in syncs.items())


@pytest.mark.parametrize("kind", VENUES)
async def test_silent_loss_is_caught_by_the_bbo_cross_check(kind: str) -> None:
    async with running(kind) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed) and feed.crosscheck.counters.bbos > 0, 15,
                       "books live and bbos flowing")
        assert Reason.BBO_MISMATCH not in seen.reasons(SYM)  # the running market raises no false alarm
        # drive the market by hand: the step that loses a top-moving change is the last one, so the
        # wrong top persists and only the cross-check can notice it
        venue.pause()
        venue.inject(Fault.SILENT_LOSS, symbol=SYM)
        for _ in range(200):
            await venue.step_all()
            if venue.faults.fired[Fault.SILENT_LOSS.value]:
                break
        assert venue.faults.fired[Fault.SILENT_LOSS.value] == 1
        lost_at = time.monotonic()
        await wait_for(lambda: Reason.BBO_MISMATCH in seen.reasons(SYM), 10, "a bbo_mismatch resync")
        caught_after = time.monotonic() - lost_at
        counters = feed.crosscheck.counters
        assert counters.mismatches >= 1 and counters.resyncs == 1
        # no sequence check saw anything: the only resync is the cross-check's
        resync_reasons = [r for r in seen.reasons(SYM) if r not in (Reason.START, Reason.SNAPSHOT)]
        assert resync_reasons == [Reason.BBO_MISMATCH]
        venue.resume()  # a request-based venue asks for its snapshot once a delta is buffered
        await wait_for(lambda: feed.current_syncs()[SYM].live, 10, "the book live again")
        venue.pause()
        try:
            await wait_for(lambda: live_and_true(venue, feed), 10, "books equal to the truth")
        except BaseException:
            sync = feed.current_syncs()[SYM]
            print(describe_mismatch(sync, truth_seen_by_feed(venue, SYM)))
            raise
        print(f"[bbo cross-check] {kind}: {counters.mismatches} mismatch(es), {counters.compared} "
              f"comparisons, resync {caught_after * 1000:.1f} ms after the lost change "
              f"(first disagreement to resync {counters.seconds_to_resync or 0.0:.3f} s)")


@pytest.mark.parametrize("kind", VENUES)
async def test_bbo_check_can_be_turned_off(kind: str) -> None:
    async with running(kind, {"bbo_check": False}) as (venue, feed, seen):
        await wait_for(lambda: live_and_true(venue, feed), 15, "books live")
        venue.pause()
        venue.inject(Fault.SILENT_LOSS, symbol=SYM)
        for _ in range(200):
            await venue.step_all()
            if venue.faults.fired[Fault.SILENT_LOSS.value]:
                break
        # nothing subscribed, nothing compared: the lost change stays unseen (the reason the check exists)
        assert not any("bookTicker" in s or "bbo" in s or "L1" in s or "Ticker" in s
                       for c in venue.connections.values() for s in c.subscriptions)
        assert feed.crosscheck.counters.bbos == 0
        sync = feed.current_syncs()[SYM]
        await wait_for(lambda: sync.last_id == truth_seen_by_feed(venue, SYM).seq, 10, "last delta applied")
        assert sync.live and not equal_to_truth(venue, sync, SYM)
