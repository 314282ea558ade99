"""A refused symbol comes back without a restart, on every venue, over real sockets.

Each venue's feed runs against its simulated venue with short re-check timers.  An "invalid
symbol" reply (the simulator's ``UNKNOWN_SYMBOL`` fault) makes the book invalid; the listing
re-check finds the symbol listed and the book returns live and equal to the truth.  A symbol the
simulated venue really takes off its list (``delist``) is reported ``delisted`` and comes back once
the venue lists it again, whether it was delisted while live or at start.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from aggbook.book.sync import BookSync, Reason, SyncState, Transition
from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed, venue_spec
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.venue import VenueServer
from tests.conftest import describe_mismatch, wait_for
from tests.feeds.fleet import equal_to_truth, truth_seen_by_feed

KINDS = ["binance", "binance-futures", "binance-coinm", "mexc", "btse", "nhex", "bitv"]
SPECS = DEFAULT_SYMBOLS[:2]
SYM, OTHER = (spec.canonical for spec in SPECS)
# re-checks and reconnects in tens of milliseconds, so the tests wait for states, not for timers
FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "listing_check_base": 0.05, "listing_check_cap": 0.3}


class Recorder:
    """``feed.on_sync`` callback: the transitions of every book the feed publishes, by symbol."""

    def __init__(self) -> None:
        self.reasons: dict[str, Counter[Reason]] = {}

    def __call__(self, canonical: str, sync: BookSync) -> None:
        sync.attach(self, None)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        self.reasons.setdefault(sync.symbol, Counter())[transition.reason] += 1

    def count(self, canonical: str, reason: Reason) -> int:
        return self.reasons.get(canonical, Counter())[reason]


@contextlib.asynccontextmanager
async def running(kind: str, before_start: Callable[[VenueServer], None] | None = None
                  ) -> AsyncIterator[tuple[VenueServer, VenueFeed, Recorder]]:
    venue = venue_spec(kind).simulator_class()(SPECS, seed=5, rate=50.0)
    await venue.start()
    symbols = {spec.canonical: venue.venue_symbol(spec) for spec in SPECS}
    feed = create_feed(VenueConfig(name=kind, kind=kind, symbols=symbols, options=dict(FAST), **venue.urls()))
    rec = Recorder()
    feed.on_sync(rec)
    if before_start is not None:
        before_start(venue)
    try:
        await feed.start()
        yield venue, feed, rec
    finally:
        await feed.stop()
        await venue.stop()


def book(feed: VenueFeed, canonical: str) -> BookSync | None:
    return feed.current_syncs().get(canonical)


def all_live(feed: VenueFeed) -> bool:
    return all((sync := book(feed, c)) is not None and sync.live for c in (SYM, OTHER))


async def settle(venue: VenueServer, feed: VenueFeed) -> None:
    """Pause the market; every book must be live and equal to what the venue last sent it."""
    venue.pause()

    def equal() -> bool:
        return all((sync := book(feed, c)) is not None and equal_to_truth(venue, sync, c)
                   for c in (SYM, OTHER))

    try:
        await wait_for(equal, 10, "books equal to the truth")
    except BaseException:
        for c in (SYM, OTHER):
            sync = book(feed, c)
            with contextlib.suppress(KeyError):
                if sync is not None:
                    print(c, describe_mismatch(sync, truth_seen_by_feed(venue, c)))
        raise


def reason_is(feed: VenueFeed, canonical: str, reason: Reason) -> bool:
    sync = book(feed, canonical)
    return sync is not None and sync.state is SyncState.INVALID and sync.reason is reason


@pytest.mark.parametrize("kind", KINDS)
async def test_invalid_symbol_reply_is_rechecked_and_the_book_comes_back(kind: str) -> None:
    """One "invalid symbol" answer: the book is invalid, its listing re-checked, then live again."""
    async with running(kind, lambda v: v.inject(Fault.UNKNOWN_SYMBOL, SYM)) as (venue, feed, rec):
        await wait_for(lambda: rec.count(SYM, Reason.INVALID_SYMBOL) >= 1, 10, "the refusal seen")
        await wait_for(lambda: all_live(feed), 10, "both books live again")
        assert venue.faults.fired[Fault.UNKNOWN_SYMBOL.value] == 1
        assert rec.count(SYM, Reason.INVALID_SYMBOL) == 1 and rec.count(SYM, Reason.REVIVED) == 1
        assert feed.listing.counts == Counter(listed=1)
        assert SYM not in feed.invalid and rec.count(OTHER, Reason.INVALID_SYMBOL) == 0
        assert feed.reconnects == 0  # the book came back on the same connection
        assert feed.status()["listing_checks"] == {}  # forgotten once live
        await settle(venue, feed)


@pytest.mark.parametrize("kind", KINDS)
async def test_delisted_symbol_is_reported_and_comes_back_when_relisted(kind: str) -> None:
    """Delisted while live: the resync is refused, the list agrees (delisted), relisting revives it."""
    async with running(kind) as (venue, feed, rec):
        await wait_for(lambda: all_live(feed), 10, "both books live")
        venue.delist(SYM)
        venue.inject(Fault.GAP, SYM)  # the resync asks for a book the venue no longer lists
        await wait_for(lambda: reason_is(feed, SYM, Reason.DELISTED), 10, "reported delisted")
        checks = feed.status()["listing_checks"][SYM]
        assert checks["reason"] == "delisted" and checks["next_check_at"] is not None
        assert checks["outcomes"]["delisted"] >= 1 and not checks["resumed"]
        assert SYM in feed.status()["invalid_symbols"]
        assert book(feed, OTHER).live  # type: ignore[union-attr]
        assert rec.count(SYM, Reason.INVALID_SYMBOL) == 1  # the venue's refusal, then the list's verdict
        await wait_for(lambda: feed.listing.counts["delisted"] >= 2, 10, "re-checked while delisted")
        assert reason_is(feed, SYM, Reason.DELISTED)

        venue.relist(SYM)
        await wait_for(lambda: all_live(feed), 10, "relisted book live")
        assert feed.listing.counts["listed"] == 1 and rec.count(SYM, Reason.REVIVED) == 1
        assert SYM not in feed.invalid
        await settle(venue, feed)


@pytest.mark.parametrize("kind", KINDS)
async def test_symbol_missing_at_start_is_delisted_not_refused_for_good(kind: str) -> None:
    """validate_symbols' verdict is one reading too: the symbol comes back once the venue lists it."""
    async with running(kind, lambda v: v.delist(SYM)) as (venue, feed, rec):
        await wait_for(lambda: reason_is(feed, SYM, Reason.DELISTED) and book(feed, OTHER).live,  # type: ignore[union-attr]
                       10, "SYM delisted, OTHER live")
        await wait_for(lambda: feed.listing.counts["delisted"] >= 1, 10, "re-checked")
        venue.relist(SYM)
        await wait_for(lambda: all_live(feed), 10, "relisted book live")
        assert feed.listing.counts["listed"] == 1
        await settle(venue, feed)
