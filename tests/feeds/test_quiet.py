"""Liveness is per connection, staleness per book: a quiet market keeps its books included.

Every venue pushes nothing (or, NHEX/BitV mbp.5, nothing at all) while a book is unchanged, so the
age of a book's last change says nothing about whether it is current: its connection's pings and
pongs do.  For each venue, with the simulated market paused (heartbeats go on):

* the book stays live and included well past ``stale_after``, reported ``quiet`` with its age;
* a silent connection (the simulator's SILENT fault: no frame at all, heartbeats included) turns
  the book ``stale`` and excluded while it is still live, and the feed then drops the connection and
  resyncs to a book equal to the truth.
"""

from __future__ import annotations

import pytest

from aggbook.book.consolidated import ConsolidatedBook, Freshness
from aggbook.book.sync import BookSync
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import wait_for
from tests.feeds.fleet import equal_to_truth

SPEC = DEFAULT_SYMBOLS[0]
SYM = SPEC.canonical
STALE_AFTER = 0.2  # a book unchanged this long is quiet
LIVENESS = 1.0  # a connection silent this long makes its books stale

# venue -> (simulator options, feed options, feed depth): heartbeats every 0.25 s either way
CASES: dict[str, tuple[dict, dict, int | None]] = {
    "binance": ({"ping_interval": 0.25}, {"silence_timeout": 2.5}, None),
    "binance-futures": ({}, {"client_ping_interval": 0.25, "silence_timeout": 2.5}, None),
    "mexc": ({}, {"ping_interval": 0.25, "pong_timeout": 2.0, "silence_timeout": 2.5}, None),
    "btse": ({}, {"ping_interval": 0.25, "pong_timeout": 2.0, "silence_timeout": 2.5}, None),
    "nhex": ({"ping_interval": 0.25}, {"silence_timeout": 2.5}, 5),
    "bitv": ({"ping_interval": 0.25}, {"silence_timeout": 2.5}, 5),
}


class Watch:
    """The feed's current book of SYM in a ConsolidatedBook, as the service wires it."""

    def __init__(self) -> None:
        self.book = ConsolidatedBook(SYM, stale_after=STALE_AFTER)

    def on_sync(self, canonical: str, sync: BookSync) -> None:
        old = self.book.syncs.get(sync.venue)
        sync.attach(self.book, self.book)
        if old is None:
            self.book.add_venue(sync)
        else:
            old.detach()
            self.book.replace_venue(sync)

    def sync(self) -> BookSync:
        return next(iter(self.book.syncs.values()))

    def freshness(self) -> Freshness | None:
        return self.book.freshness(self.sync().venue)

    def included(self) -> bool:
        return self.book.quote().venues[0].included


async def _quiet_feed(venue_name: str):  # type: ignore[no-untyped-def]
    sim_opts, feed_opts, depth = CASES[venue_name]
    sim = SimulatedExchange([venue_name], [SPEC], seed=5, rate=50.0,
                            venue_options={venue_name: sim_opts} if sim_opts else None)
    await sim.start()
    venue = sim.venues[venue_name]
    config = VenueConfig(name=venue_name, kind=venue_name, symbols={SYM: venue.venue_symbol(SPEC)},
                         depth=depth, options={"liveness_timeout": LIVENESS, **feed_opts}, **venue.urls())
    feed = create_feed(config)
    watch = Watch()
    feed.on_sync(watch.on_sync)
    await feed.start()
    return sim, venue, feed, watch


@pytest.mark.parametrize("venue_name", list(CASES))
async def test_a_quiet_book_stays_included_while_its_connection_is_alive(venue_name: str) -> None:
    sim, venue, feed, watch = await _quiet_feed(venue_name)
    try:
        await wait_for(lambda: bool(watch.book.syncs) and watch.sync().live, 15, f"{venue_name} live")
        sim.pause()
        await wait_for(lambda: watch.freshness() is Freshness.QUIET, 10, "the book to turn quiet")
        sync = watch.sync()
        # unchanged for several liveness timeouts: included (and quiet) at every look
        seen: list[bool] = []

        def long_quiet() -> bool:
            seen.append(watch.included() and watch.freshness() is Freshness.QUIET and watch.sync() is sync)
            age = watch.book.quote().venues[0].age
            return age is not None and age > 3 * LIVENESS

        await wait_for(long_quiet, 15, "the quiet book to outlive three liveness timeouts")
        assert seen and all(seen), "the quiet book left the consolidated view"
        assert sync.silence(sync.clock()) is not None and sync.silence(sync.clock()) < LIVENESS  # type: ignore[operator]
        assert equal_to_truth(venue, sync, SYM)
    finally:
        await feed.stop()
        await sim.stop()


@pytest.mark.parametrize("venue_name", list(CASES))
async def test_a_silent_connection_makes_its_book_stale_then_resyncs(venue_name: str) -> None:
    sim, venue, feed, watch = await _quiet_feed(venue_name)
    try:
        await wait_for(lambda: bool(watch.book.syncs) and watch.sync().live, 15, f"{venue_name} live")
        sim.pause()
        first = watch.sync()
        conn_ids = [cid for cid, c in venue.connections.items() if not c.closed]
        for cid in conn_ids:
            venue.faults.inject(Fault.SILENT, conn_id=cid)
        # the fault is taken at the next data frame: step the paused market until one went out
        while venue.faults.fired[Fault.SILENT.value] == 0:
            await venue.step_all(1)
            await wait_for(lambda: True, 1)
        states: list[tuple[bool, Freshness | None, str | None]] = []

        def stale_while_live() -> bool:
            if watch.sync() is not first:
                return False
            q = watch.book.quote().venues[0]
            states.append((first.live, watch.freshness(), q.excluded_reason))
            return first.live and watch.freshness() is Freshness.STALE and q.excluded_reason == "stale"

        await wait_for(stale_while_live, 10, "the live book of a silent connection to turn stale")
        assert not watch.included()
        sim.resume()
        await wait_for(lambda: watch.sync() is not first and equal_to_truth(venue, watch.sync(), SYM)
                       and watch.included(), 20, "a resync to a book equal to the truth")
    finally:
        await feed.stop()
        await sim.stop()
