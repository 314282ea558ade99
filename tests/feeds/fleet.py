"""Every simulated venue's feed at once, wired into consolidated books, and the truth each must hold.

Shared by the tests that run all five venues together (tests/feeds/test_all_venues.py and
tests/feeds/test_soak.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

from aggbook.book.consolidated import ConsolidatedBook
from aggbook.book.sync import BookSync, Transition, TransitionListener
from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics
from aggbook.feeds.registry import create_feed
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.market import SymbolSpec, TruthBook
from aggbook.simulator.venue import VenueServer
from tests.conftest import book_matches, describe_mismatch


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
    """Live at the id the venue last sent, and level for level equal to the truth there."""
    if not sync.live:
        return False
    try:
        truth = truth_seen_by_feed(venue, symbol)
    except KeyError:
        return False
    return book_matches(sync, truth, sync.book.max_depth)


class Fleet:
    """One feed per venue of ``sim`` for ``specs``, each book wired into a ConsolidatedBook."""

    def __init__(self, sim: SimulatedExchange, specs: Iterable[SymbolSpec], *,
                 metrics: FeedMetrics | None = None,
                 transition_listeners: Iterable[TransitionListener] = ()) -> None:
        self.sim = sim
        specs = list(specs)
        self.books = {spec.canonical: ConsolidatedBook(spec.canonical, stale_after=60) for spec in specs}
        self.feeds: list[VenueFeed] = []
        self.transition_listeners = list(transition_listeners)
        for name, venue in sim.venues.items():
            symbols = {spec.canonical: venue.venue_symbol(spec) for spec in specs}
            feed = create_feed(VenueConfig(name=name, kind=name, symbols=symbols, **venue.urls()),
                               metrics=metrics)
            feed.on_sync(self._wire)
            self.feeds.append(feed)

    def _wire(self, canonical: str, sync: BookSync) -> None:
        book = self.books[canonical]
        old = book.syncs.get(sync.venue)
        if old is not None:
            old.detach()
            book.replace_venue(sync)
        else:
            book.add_venue(sync)
        sync.attach(self, book)

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        """The consolidated book first, then the test's own listeners (the service's order)."""
        self.books[sync.symbol].on_transition(sync, transition)
        for listener in self.transition_listeners:
            listener.on_transition(sync, transition)

    def pairs(self) -> list[tuple[VenueServer, BookSync, str]]:
        return [(self.sim.venues[f.venue], s, sym)
                for f in self.feeds for sym, s in f.current_syncs().items()]

    def all_live(self) -> bool:
        """Every configured (venue, symbol) has a book and it is live (no book yet is not live)."""
        return all(
            len(f.current_syncs()) == len(self.books) and all(s.live for s in f.current_syncs().values())
            for f in self.feeds
        )

    def all_equal_to_truth(self) -> bool:
        return all(equal_to_truth(v, s, sym) for v, s, sym in self.pairs())

    def mismatches(self) -> str:
        lines = []
        for v, s, sym in self.pairs():
            if not equal_to_truth(v, s, sym):
                with contextlib.suppress(KeyError):
                    lines.append(f"{v.name} {sym} "
                                 f"{describe_mismatch(s, truth_seen_by_feed(v, sym), s.book.max_depth)}")
        return "\n".join(lines)

    def truths(self, symbol: str) -> list[TruthBook]:
        """Each venue's truth for ``symbol`` as its feed must hold it."""
        return [truth_seen_by_feed(v, symbol) for v in self.sim.venues.values()]


@contextlib.asynccontextmanager
async def running_fleet(sim: SimulatedExchange, specs: Iterable[SymbolSpec], **kwargs: object
                        ) -> AsyncIterator[Fleet]:
    fleet = Fleet(sim, specs, **kwargs)  # type: ignore[arg-type]
    try:
        for feed in fleet.feeds:
            await feed.start()
        yield fleet
    finally:
        for feed in fleet.feeds:
            await feed.stop()
