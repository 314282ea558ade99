"""The shared connection lifecycle of feeds/base.py, shown with the Binance feeds as the vehicle.

* make-before-break rollover, both when the venue announces it (spot ``serverShutdown``
  at the simulator's shortened connection lifetime) and on the feed's own
  ``max_connection_age`` (futures, which sends no notice): the consolidated book,
  sampled every 10 ms, never loses the venue;
* many symbols: packing into connections, snapshots queued through the pacer, after
  start and after a reconnect;
* reconnect with capped, jittered exponential backoff while the venue is down, and
  recovery when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from decimal import Decimal

import pytest

from aggbook.book.consolidated import ConsolidatedBook
from aggbook.book.sync import BookSync, Reason, Snapshot
from aggbook.feeds.config import VenueConfig
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import extra_symbol
from tests.conftest import wait_for
from tests.feeds.test_binance import FUTURES, SPOT, SYM, Harness, Market, running


# ---------------------------------------------------------------------------- rollover
class RolloverWatch:
    """Wires the feed into a ConsolidatedBook and notes, at each swap, whether it was make-before-break."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.book = ConsolidatedBook(SYM, stale_after=60)
        self.swaps: list[tuple[bool, bool]] = []  # (new book live, old connection still open)
        self.samples: list[bool] = []  # venue included in the consolidated quote
        self.rollover_requests: list[int] = []
        h.feed.on_sync(self.on_sync)
        request = h.feed.request_rollover

        def counted(conn):  # type: ignore[no-untyped-def]
            self.rollover_requests.append(conn.id)
            request(conn)

        h.feed.request_rollover = counted  # type: ignore[method-assign]

    def on_sync(self, canonical: str, sync: BookSync) -> None:
        if canonical != SYM:
            return
        old = self.book.syncs.get(sync.venue)
        sync.attach(self.book, self.book)
        if old is None:
            self.book.add_venue(sync)
            return
        old.detach()
        holders = [c for c in self.h.feed.connections.values() if c.syncs.get(SYM) is old]
        self.swaps.append((sync.live, bool(holders) and all(c.open for c in holders)))
        self.book.replace_venue(sync)

    async def sample(self) -> None:
        venue = self.h.feed.venue
        while True:
            quote = self.book.quote()
            (vq,) = [v for v in quote.venues if v.venue == venue]
            self.samples.append(vq.included and quote.bid is not None and quote.ask is not None)
            await asyncio.sleep(0.01)


async def check_rollover(market: Market, venue_kw: dict, options: dict, label: str) -> None:
    watch: RolloverWatch | None = None

    def wire(h: Harness) -> None:
        nonlocal watch
        watch = RolloverWatch(h)

    async with running(market, venue_kw=venue_kw, options=options, before_start=wire) as h:
        assert watch is not None
        await h.wait_all_live()
        (first,) = h.feed.connections.values()
        (sim_first,) = h.venue.connections.values()
        sampler = asyncio.create_task(watch.sample())
        try:
            began = time.monotonic()
            await wait_for(lambda: watch.swaps and first.state == "closed", 10, "rollover completed")
            switched = time.monotonic() - began
            n = len(watch.samples)
            await wait_for(lambda: len(watch.samples) >= n + 5, 5, "samples after the switch")
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        # the new connection's book was live before the old connection closed...
        assert watch.swaps[0] == (True, True), watch.swaps
        # ...so every 10 ms sample of the consolidated quote included the venue
        assert len(watch.samples) >= 20
        assert all(watch.samples), f"venue excluded in {watch.samples.count(False)} samples"
        assert first.id in watch.rollover_requests
        assert h.feed.reconnects >= 1
        # the retired book was closed after the switch and never published as not live
        assert first.syncs[SYM].counters.resyncs[Reason.DISCONNECT] == 1
        await h.settle()
        truth = h.venue.truth(SYM)
        quote = watch.book.quote()
        assert quote.bid is not None and quote.ask is not None
        assert (Decimal(quote.bid.price), Decimal(quote.ask.price)) == (truth.bids[0][0], truth.asks[0][0])
        print(f"[rollover] {h.feed.venue} {label}: {len(watch.samples)} samples at 10 ms, venue included "
              f"in all; swap {switched * 1000:.0f} ms after sampling began")
        if market is SPOT:
            assert sim_first.state["shutting_down"]  # the venue announced it: serverShutdown


async def test_rollover_on_server_shutdown_never_loses_the_venue() -> None:
    """Spot: the venue sends serverShutdown at its (shortened) connection lifetime, closes 1 s later."""
    await check_rollover(SPOT, {"max_connection_age": 1.5, "shutdown_grace": 1.0}, {}, "serverShutdown")


async def test_rollover_on_connection_age_never_loses_the_venue() -> None:
    """Futures sends no notice: the feed rolls over on its own max_connection_age, before the venue's cut."""
    await check_rollover(FUTURES, {"max_connection_age": 30.0}, {"max_connection_age": 1.0},
                         "max_connection_age")


# ---------------------------------------------------------------------------- many symbols
async def test_fifty_symbols_packed_and_snapshots_paced() -> None:
    specs = [extra_symbol(i) for i in range(50)]
    rate, burst, weight = 100.0, 50.0, 5  # weight per second, burst, weight of a limit-100 snapshot
    options = {"max_symbols_per_connection": 20, "snapshot_rate": rate, "snapshot_burst": burst}
    async with running(SPOT, specs=specs, rate=10.0, depth=100, options=options) as h:
        start_to_live = await h.wait_all_live(timeout=20)
        await h.settle()

        assert sorted(len(c.symbols) for c in h.feed.connections.values()) == [10, 20, 20]
        depth_streams = [[s for s in c.subscriptions if "@depth" in s] for c in h.venue.connections.values()]
        assert sorted(map(len, depth_streams)) == [10, 20, 20]
        assert h.feed.snapshot_weight("S000-USDT") == weight
        fetched = [c for _, c in h.fetches]
        assert sorted(fetched) == sorted(s.canonical for s in specs)  # one snapshot each
        assert h.venue.limiter.used == 20 + 50 * weight  # type: ignore[attr-defined]
        # paced: the k-th request waited for its tokens (a lower bound on elapsed time, so a slow
        # machine cannot break it); the first burst/weight went at once, the rest queued
        assert h.feed.pacer.waited > 0
        for k, (at, _) in enumerate(sorted(h.fetches)):
            assert at - h.started >= ((k + 1) * weight - burst) / rate - 0.005, k
        spread = h.fetches[-1][0] - h.fetches[0][0]

        # a reconnect of one 20-symbol connection: its snapshots are queued again, not stampeded
        h.venue.resume()
        victim = max(h.venue.connections.values(), key=lambda c: len(c.subscriptions))
        before, waited = len(h.fetches), h.feed.pacer.waited
        dropped_at = time.monotonic()
        h.venue.inject(Fault.DISCONNECT, conn_id=victim.id)
        await wait_for(lambda: h.feed.reconnects == 1, 5, "reconnect")
        await wait_for(h.all_live, 10, "all 50 live after the reconnect")
        reconnect_to_live = time.monotonic() - dropped_at
        await h.settle()
        assert len(h.fetches) - before == 20
        assert h.feed.pacer.waited > waited
        print(f"[time-to-live] 50 symbols on 3 connections: start->all live {start_to_live * 1000:.0f} ms "
              f"(snapshots spread over {spread * 1000:.0f} ms by the pacer, queued "
              f"{h.feed.pacer.waited:.2f} s in total); reconnect of 20 -> all live "
              f"{reconnect_to_live * 1000:.0f} ms")


# ---------------------------------------------------------------------------- reconnect backoff
async def test_reconnect_backoff_while_venue_down_then_recovers() -> None:
    base, cap = 0.05, 0.2
    async with running(SPOT, options={"backoff_base": base, "backoff_cap": cap}) as h:
        await h.wait_all_live()
        port = h.venue.port
        await h.venue.stop()
        down = time.monotonic()
        await wait_for(lambda: h.feed.reconnects >= 5, 10, "five reconnect attempts")
        elapsed = time.monotonic() - down
        # full jitter draws each delay from [base, ceiling]: the attempts cannot come faster
        floor = 5 * base
        assert elapsed >= floor
        assert h.metrics.reconnects == h.feed.reconnects
        assert not any(s.live for s in h.feed.current_syncs().values())

        await h.venue.start(port=port)
        await h.wait_all_live(timeout=10)
        await h.settle()


# ---------------------------------------------------------------------------- surprises from a venue
async def test_snapshot_parser_surprise_is_retried_not_left_pending() -> None:
    """An exception no venue module anticipated (a KeyError) fails that fetch only; the next one lands."""
    surprises: list[str] = []

    def arm(h: Harness) -> None:
        fetch = h.feed.fetch_snapshot

        async def once_broken(conn, canonical):  # type: ignore[no-untyped-def]
            if not surprises:
                surprises.append(canonical)
                raise KeyError("lastUpdateId")
            return await fetch(conn, canonical)

        h.feed.fetch_snapshot = once_broken  # type: ignore[method-assign]

    async with running(SPOT, before_start=arm) as h:
        await h.wait_all_live()
        await h.settle()
        assert surprises == [SYM]
        assert h.metrics.failures(SYM) == 1 and h.metrics.snapshot_count(True, SYM) == 1
        assert h.feed.reconnects == 0


async def test_frame_handler_surprise_is_a_counted_resync_not_a_crash() -> None:
    """A frame that breaks the handler unforeseen: decode error counted, books resynced, socket kept."""
    async with running(SPOT) as h:
        await h.wait_all_live()
        handle = h.feed.handle
        broken: list[int] = []

        async def breaks_once(conn, msg):  # type: ignore[no-untyped-def]
            if not broken and msg.type.name == "TEXT" and "depthUpdate" in msg.data:
                broken.append(conn.id)
                raise RuntimeError("unforeseen frame shape")
            await handle(conn, msg)

        h.feed.handle = breaks_once  # type: ignore[method-assign]
        await wait_for(lambda: bool(broken), 5, "a depth frame")
        await wait_for(lambda: h.sync(SYM).counters.resyncs[Reason.DECODE_ERROR] == 1, 5, "decode resync")
        await h.wait_all_live()  # the next diff is buffered and the snapshot fetched against it
        await h.settle()
        assert h.metrics.decode_errors == 1
        assert h.feed.reconnects == 0


class _OpenSocket:
    """Stands for the aiohttp socket of a connection that is open until the test says otherwise."""

    closed = False


async def test_a_snapshot_answered_as_its_socket_closes_is_not_applied() -> None:
    """The answer and the close land in the same turn of the event loop: the book stays failed.

    A venue that answers a snapshot request and then closes the socket (a venue going down) can
    complete the fetch just as the connection's end cancels it; ``asyncio.wait_for`` (Python 3.11)
    then hands back the answer instead of raising.  The book has failed on the disconnect by then;
    applied, the snapshot would make it live on a closed socket that will never bring its deltas.
    """
    feed = SPOT.feed_cls(VenueConfig(name="binance", kind="binance", symbols={SYM: "BTCUSDT"},
                                     rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9"))
    conn = feed.new_connection([SYM], publish_when_live=False)
    conn.ws, conn.state = _OpenSocket(), "open"  # type: ignore[assignment]
    sync = conn.syncs[SYM]

    async def answered_as_the_socket_closes(c, canonical):  # type: ignore[no-untyped-def]
        c.state = "closed"  # what ConnectionSupervisor._run does when the socket ends...
        sync.fail(Reason.DISCONNECT, f"connection {c.id} closed")  # ...before the answer is handled
        return Snapshot(last=100, bids=[("100", "1")], asks=[("101", "1")])

    feed.fetch_snapshot = answered_as_the_socket_closes  # type: ignore[method-assign]
    feed.request_snapshot(conn, SYM)
    await wait_for(lambda: not conn.tasks, 5, "the snapshot request to end")
    assert not sync.live and sync.counters.snapshots == 0, (sync.state, sync.counters.snapshots)
    assert sync.counters.resyncs[Reason.DISCONNECT] == 1


async def test_a_silent_connection_is_dropped_by_its_silence_watch(caplog: pytest.LogCaptureFixture) -> None:
    """No frame at all for ``silence_timeout`` (3 s here) ends the read with that reason, then reconnects;
    a connection that keeps hearing frames is never dropped by the watch."""
    caplog.set_level(logging.WARNING, logger="aggbook.feeds")
    async with running(SPOT, options={"silence_timeout": 3.0}) as h:
        await h.wait_all_live(30)
        first = next(iter(h.feed.connections.values()))
        await asyncio.sleep(0)  # the watch is armed with the read loop
        assert any(t.get_name().endswith("-silence") and not t.done() for t in first.tasks)
        # dropping it must not wait aiohttp's default 10 s for a close reply a dead path never sends
        assert first.ws is not None and first.ws._timeout.ws_close == h.feed.close_timeout == 2.0
        h.venue.inject(Fault.SILENT, SYM)
        await wait_for(lambda: h.feed.reconnects == 1, 30, "the silent connection dropped")
        assert first.silenced
        assert any("no frame for 3.0s" in r.getMessage() for r in caplog.records), caplog.text
        await h.wait_all_live(30)
        replacement = next(iter(h.feed.connections.values()))
        assert replacement is not first and not replacement.silenced
