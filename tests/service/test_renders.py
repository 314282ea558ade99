"""The render cache: one rendering per change, served until the next, always equal to a fresh rendering.

The books are driven synchronously and the aggregator is flushed by hand, so which change the cache
has heard of is exact; the clock is passed explicitly where a payload shows ages.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from aggbook.book.sync import Reason
from aggbook.service.aggregator import Aggregator, SymbolChange
from aggbook.service.renders import RenderCache
from aggbook.service.runtime import Service
from aggbook.service.views import ladder_json, quote_json
from tests.service.fakes import FakeFeeds, fake_config, load_all, serving

SYMBOL = "BTC-USDT"
VENUE_SETS = (None, ("alpha",), ("beta", "alpha"), ("beta", "beta"))


@pytest.fixture
async def books() -> tuple[Aggregator, RenderCache, FakeFeeds]:
    feeds = FakeFeeds()
    agg = Aggregator(fake_config(), feed_factory=feeds)
    cache = RenderCache(agg)
    for feed in feeds.feeds.values():
        await feed.start()  # publishes the books; the aggregator's staleness timer is never started
    load_all(feeds)
    agg.flush()
    return agg, cache, feeds


def fresh_quote(agg: Aggregator, symbol: str, fees: bool, now: float, ages: bool = True) -> bytes:
    return orjson.dumps(quote_json(agg.consolidated[symbol].quote(fees=fees, now=now), fees=fees, ages=ages))


def fresh_ladder(agg: Aggregator, symbol: str, depth: int, venues: tuple[str, ...] | None) -> bytes:
    return orjson.dumps(ladder_json(agg.consolidated[symbol].ladder(depth, venues), depth))


def assert_all_equal_fresh(agg: Aggregator, cache: RenderCache) -> None:
    """Every payload the cache serves, asked twice, is what rendering from scratch gives."""
    for _ in range(2):
        now = time.monotonic()
        for symbol, fees in itertools.product(agg.consolidated, (False, True)):
            assert cache.quote_http(symbol, fees, now) == fresh_quote(agg, symbol, fees, now)
            assert cache.quote_stream(symbol, fees) == fresh_quote(agg, symbol, fees, now, ages=False)
        for depth, venues in itertools.product((1, 2, 5), VENUE_SETS):
            assert cache.ladder(SYMBOL, depth, venues) == fresh_ladder(agg, SYMBOL, depth, venues)
        for fees in (False, True):
            expected = orjson.dumps({"quotes": [
                quote_json(b.quote(fees=fees, now=now), fees=fees) for b in agg.consolidated.values()
            ]})
            assert cache.quotes_http(agg.consolidated, fees, now) == expected


async def test_the_same_bytes_are_served_until_a_change(books) -> None:
    agg, cache, feeds = books
    first = cache.ladder(SYMBOL, 5)
    assert cache.ladder(SYMBOL, 5) is first
    assert cache.ladder(SYMBOL, 5, ["beta", "alpha"]) is cache.ladder(SYMBOL, 5, ["alpha", "beta", "beta"])
    now = time.monotonic()
    assert cache.quote_http(SYMBOL, True, now) == cache.quote_http(SYMBOL, True, now)
    assert cache.quote_stream(SYMBOL, True) is cache.quote_stream(SYMBOL, True)
    assert (cache.renders, cache.hits) == (4, 4)

    feeds["alpha"].delta(SYMBOL, bids=[("100.2", "3")])
    agg.flush()
    changed = cache.ladder(SYMBOL, 5)
    assert changed != first and b'"price":"100.2","size":"3"' in changed
    assert cache.renders == 5
    assert cache.ladder(SYMBOL, 5) is changed
    # the other symbol did not change: its payloads survive
    other = cache.ladder("ETH-USDT", 1)
    feeds["beta"].delta(SYMBOL, asks=[("100.4", "1")])
    agg.flush()
    assert cache.ladder("ETH-USDT", 1) is other


class Recorder:
    def __init__(self) -> None:
        self.changes: list[SymbolChange] = []

    def on_symbol_changed(self, change: SymbolChange) -> None:
        self.changes.append(change)


async def test_the_aggregator_quote_seeds_the_next_rendering(books) -> None:
    agg, cache, feeds = books
    recorder = Recorder()
    agg.subscribe(recorder)
    feeds["alpha"].delta(SYMBOL, bids=[("100.3", "1")])
    agg.flush()
    (change,) = recorder.changes
    assert change.quote is not None
    stream = cache.quote_stream(SYMBOL, False)
    assert b'"price":"100.3"' in stream
    assert cache._entries[SYMBOL][("quotes", False)].quote is change.quote  # noqa: SLF001 - not recomputed
    assert cache.quote_stream(SYMBOL, False) is stream


async def test_every_payload_equals_a_fresh_rendering_through_changes(books) -> None:
    agg, cache, feeds = books
    assert_all_equal_fresh(agg, cache)
    feeds["alpha"].delta(SYMBOL, bids=[("100.5", "2")])  # a new best bid: crossed with beta's ask
    agg.flush()
    assert_all_equal_fresh(agg, cache)
    feeds["beta"].delta(SYMBOL, bids=[("98", "7")])  # below the top: ladder and last_id move
    agg.flush()
    assert_all_equal_fresh(agg, cache)
    feeds["alpha"].gap(SYMBOL)  # a transition: alpha leaves the consolidated view
    agg.flush()
    assert_all_equal_fresh(agg, cache)
    feeds["beta"].current[SYMBOL].fail(Reason.DISCONNECT, "test")
    agg.flush()
    assert_all_equal_fresh(agg, cache)


async def test_staleness_without_a_change_is_never_served_from_the_cache(books) -> None:
    agg, cache, feeds = books
    before = cache.ladder(SYMBOL, 5)
    quote_before = cache.quote_stream(SYMBOL, False)
    sync = feeds["beta"].current[SYMBOL]
    assert sync.updated_at is not None
    sync.updated_at -= 2 * agg.config.stale_after  # beta goes quiet: no frame, no change
    assert_all_equal_fresh(agg, cache)
    after = orjson.loads(cache.ladder(SYMBOL, 5))
    assert after["venues"] == ["alpha"] and after["excluded"] == {"beta": "stale"}
    assert cache.ladder(SYMBOL, 5) != before and cache.quote_stream(SYMBOL, False) != quote_before
    sync.touch()  # a heartbeat: beta is current again, still without a change
    assert cache.ladder(SYMBOL, 5) == before


async def test_ages_are_read_at_every_request(books) -> None:
    agg, cache, feeds = books
    now = time.monotonic()
    first = orjson.loads(cache.quote_http(SYMBOL, False, now))
    later = orjson.loads(cache.quote_http(SYMBOL, False, now + 5.0))
    assert cache.renders == 1
    for a, b in zip(first["venues"], later["venues"], strict=True):
        assert round(b["age_seconds"] - a["age_seconds"], 6) == 5.0
        a.pop("age_seconds"), b.pop("age_seconds")
    assert first == later
    alpha = feeds["alpha"].current[SYMBOL]
    alpha.touch()  # the venue proved itself current without a change: its age restarts
    assert alpha.updated_at is not None
    touched = orjson.loads(cache.quote_http(SYMBOL, False, now + 5.0))["venues"][0]["age_seconds"]
    assert touched == round(max(0.0, now + 5.0 - alpha.updated_at), 6)
    assert cache.renders == 1


async def test_entries_per_symbol_are_capped(books) -> None:
    agg, cache, _ = books
    cache.max_entries = 4
    first = cache.ladder(SYMBOL, 1)
    for depth in range(2, 10):
        cache.ladder(SYMBOL, depth)
    assert len(cache._entries[SYMBOL]) == 4  # noqa: SLF001 - the cap is the point
    assert cache.ladder(SYMBOL, 1) == first and cache.renders == 10  # evicted, so rendered again


# ---------------------------------------------------------------------- through the service
@pytest.fixture
async def svc() -> AsyncIterator[tuple[Service, FakeFeeds, aiohttp.ClientSession]]:
    async with serving(fake_config(heartbeat=30.0), loaded=True) as running:
        yield running


async def body(http: aiohttp.ClientSession, path: str) -> bytes:
    async with http.get(path) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        return await resp.read()


async def test_http_and_websocket_share_one_rendering_per_change(svc) -> None:
    service, feeds, http = svc
    cache = service.renders
    assert service.hub.renders is cache
    first = await body(http, "/v1/books/btc-usdt?depth=3&venues=beta,alpha")
    renders = cache.renders
    assert await body(http, "/v1/books/BTC-USDT?depth=3&venues=alpha,beta") == first
    assert cache.renders == renders
    async with http.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "channel": "book", "symbol": SYMBOL, "depth": 3,
                            "venues": ["alpha", "beta"]})
        msgs = [orjson.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        assert [m["type"] for m in msgs] == ["ack", "snapshot"]
        assert msgs[1]["data"] == orjson.loads(first)
        assert cache.renders == renders  # the snapshot reused the HTTP rendering

        feeds["alpha"].delta(SYMBOL, bids=[("100.25", "4")])
        update = orjson.loads((await ws.receive(timeout=5)).data)
        assert update["type"] == "update" and update["data"]["bids"][0]["price"] == "100.25"
        renders = cache.renders
        second = await body(http, "/v1/books/BTC-USDT?depth=3&venues=alpha,beta")
        assert second != first and orjson.loads(second) == update["data"]
        assert cache.renders == renders  # the hub's rendering of the change answered the request


async def test_http_quotes_equal_the_uncached_rendering(svc) -> None:
    service, feeds, http = svc
    agg = service.aggregator
    for path, fees in (("/v1/quotes/BTC-USDT", False), ("/v1/quotes/BTC-USDT?fees=true", True)):
        got = orjson.loads(await body(http, path))
        want = orjson.loads(fresh_quote(agg, SYMBOL, fees, agg.clock()))
        for a, b in zip(got["venues"], want["venues"], strict=True):
            assert a.pop("age_seconds") >= 0 and b.pop("age_seconds") >= 0  # read a moment apart
        assert got == want
    everything = orjson.loads(await body(http, "/v1/quotes"))
    assert [q["symbol"] for q in everything["quotes"]] == ["BTC-USDT", "ETH-USDT"]
