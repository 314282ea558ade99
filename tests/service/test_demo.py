"""The service against the demo set-up: five simulated venues, real feeds, real sockets on 127.0.0.1.

Each test starts its own simulator and service on free ports (the set-up is live in
well under a second), so a test that breaks venues cannot disturb another.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import orjson
import pytest

from aggbook.book.sync import SyncState
from aggbook.service.config import WebSocketSettings
from aggbook.service.demo import DEMO_VENUES, demo_config, demo_exchange
from aggbook.service.runtime import Service
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.faults import Fault
from tests.conftest import wait_for
from tests.service.test_api import METRICS, has_series, value
from tests.service.test_openapi import check_documented

pytestmark = pytest.mark.integration
SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
FAST_RECONNECT = {"backoff_base": 0.05, "backoff_cap": 0.3}
# generous: every simulated venue and the service run in the test's process, which a loaded 2-core
# machine has left a tenth of a core for seconds at a time; a wait ends when its condition holds
WAIT = 60.0


@dataclass
class Demo:
    sim: SimulatedExchange
    svc: Service
    http: aiohttp.ClientSession

    async def get(self, path: str, status: int = 200) -> dict:
        async with self.http.get(path) as resp:
            body = await resp.json()
            assert resp.status == status, (path, body)
            return body

    async def status_of(self, path: str) -> int:
        async with self.http.get(path) as resp:
            await resp.read()
            return resp.status

    async def metrics(self) -> str:
        async with self.http.get("/metrics") as resp:
            return await resp.text()


@pytest.fixture
async def demo(request) -> AsyncIterator[Demo]:
    params = getattr(request, "param", {})
    sim = demo_exchange(rate=params.get("rate", 40.0))
    await sim.start()
    config = demo_config(
        sim,
        port=0,
        websocket=WebSocketSettings(**params.get("ws", {})),
        options={**FAST_RECONNECT, **params.get("options", {})},
    )
    svc = Service(config)
    await svc.start()
    try:
        async with aiohttp.ClientSession(base_url=svc.url) as http:
            d = Demo(sim, svc, http)
            ready = False

            async def poll() -> None:
                nonlocal ready
                while not ready:
                    ready = await d.status_of("/readyz") == 200
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(poll(), WAIT)
            yield d
    finally:
        await svc.stop()
        await sim.stop()


def truth_top(sim: SimulatedExchange, venue: str, symbol: str, depth: int):
    server = sim.venues[venue]
    t = server.truth(server.resolve_symbol(symbol), depth)
    return list(t.bids), list(t.asks)


def book_top(svc: Service, venue: str, symbol: str, depth: int):
    sync = svc.aggregator.consolidated[symbol].syncs[venue]
    if not sync.live:
        return None
    return (
        [(Decimal(p), Decimal(s)) for p, s in sync.book.bids(depth)],
        [(Decimal(p), Decimal(s)) for p, s in sync.book.asks(depth)],
    )


def levels(rows) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(s)) for p, s in rows]


# ---------------------------------------------------------------------- HTTP against the truth
async def test_every_endpoint_agrees_with_the_simulators_truth(demo: Demo) -> None:
    sim, svc = demo.sim, demo.svc
    sim.pause()  # freeze the markets so the books can be compared with the truth exactly
    depth = 10
    await wait_for(
        lambda: all(
            book_top(svc, v, s, depth) == truth_top(sim, v, s, depth) for v in DEMO_VENUES for s in SYMBOLS
        ),
        what="books equal the truth",
    )
    assert (await demo.get("/healthz"))["status"] == "ok"
    ready = await demo.get("/readyz")
    assert ready["ready"] is True and all(len(v["live_venues"]) == 5 for v in ready["symbols"].values())
    symbols = await demo.get("/v1/symbols")
    assert [s["symbol"] for s in symbols["symbols"]] == list(SYMBOLS)
    assert symbols["symbols"][0]["venues"] == {
        "binance": "BTCUSDT",
        "mexc": "BTCUSDT",
        "btse": "BTC-USDT",
        "nhex": "btcusdt",
        "bitv": "btcusdt",
    }
    for symbol in SYMBOLS:
        truths = {v: truth_top(sim, v, symbol, 1000) for v in DEMO_VENUES}
        # one venue's book
        for venue in DEMO_VENUES:
            one = await demo.get(f"/v1/books/{symbol}/{venue}?depth={depth}")
            assert one["state"] == "live" and one["included"] is True
            assert (levels(one["bids"]), levels(one["asks"])) == (
                truths[venue][0][:depth],
                truths[venue][1][:depth],
            )
        # the merged ladder: per price, the sum over venues
        merged = await demo.get(f"/v1/books/{symbol}?depth={depth}")
        for side, idx, best_first in (("bids", 0, True), ("asks", 1, False)):
            expect: dict[Decimal, Decimal] = {}
            for venue in DEMO_VENUES:
                for price, size in truths[venue][idx]:
                    expect[price] = expect.get(price, Decimal(0)) + size
            prices = sorted(expect, reverse=best_first)[:depth]
            got = [(Decimal(lv["price"]), Decimal(lv["size"])) for lv in merged[side]]
            assert got == [(p, expect[p]) for p in prices], (symbol, side)
            assert all(
                sum(Decimal(s) for s in lv["venues"].values()) == Decimal(lv["size"]) for lv in merged[side]
            )
        # the consolidated quote
        q = await demo.get(f"/v1/quotes/{symbol}")
        best_bid = max(t[0][0][0] for t in truths.values())
        best_ask = min(t[1][0][0] for t in truths.values())
        assert Decimal(q["bid"]["price"]) == best_bid and Decimal(q["ask"]["price"]) == best_ask
        assert {v["venue"] for v in q["bid"]["venues"]} == {
            v for v, t in truths.items() if t[0][0][0] == best_bid
        }
        assert Decimal(q["spread"]) == best_ask - best_bid  # venues differ: crossed or locked now and then
        assert (q["crossed"], q["locked"]) == (best_bid > best_ask, best_bid == best_ask)
        fq = await demo.get(f"/v1/quotes/{symbol}?fees=true")
        assert fq["fees"] is True and Decimal(fq["bid"]["price"]) < best_bid
        # the sweep: walk every level of every venue independently
        asks = sorted((p, s) for t in truths.values() for p, s in t[1])
        qty = sum(s for _, s in asks[:7]) + (asks[7][1] / 2).quantize(Decimal(1).scaleb(-18))
        sw = await demo.get(f"/v1/sweep/{symbol}?side=buy&qty={qty}")
        remaining, notional, worst = qty, Decimal(0), None
        for price, size in asks:
            if remaining <= 0:
                break
            take = min(size, remaining)
            notional += price * take
            remaining -= take
            worst = price
        assert sw["complete"] is True and Decimal(sw["filled"]) == qty
        assert Decimal(sw["notional"]) == notional and Decimal(sw["worst_price"]) == worst
        assert sum(Decimal(a["qty"]) for a in sw["allocation"]) == qty
    quotes = await demo.get("/v1/quotes")
    assert [q["symbol"] for q in quotes["quotes"]] == list(SYMBOLS)
    status = await demo.get("/v1/status")
    assert status["ready"] is True and [v["venue"] for v in status["venues"]] == list(DEMO_VENUES)
    for venue in status["venues"]:
        assert venue["connections"] and all(c["state"] == "open" for c in venue["connections"])
        for symbol in SYMBOLS:
            book = venue["symbols"][symbol]
            assert book["state"] == "live" and book["last_id"] is not None and book["levels"]["bids"] > 0
    doc = await demo.get("/openapi.json")
    assert "/v1/sweep/{symbol}" in doc["paths"]
    assert (await demo.get("/"))["symbols"] == list(SYMBOLS)
    assert "aggbook_book_live" in await demo.metrics()
    sim.resume()


async def test_real_answers_match_the_openapi_document(demo: Demo) -> None:
    """Live books fed by the five real feeds (each with its own status report) answer as documented."""
    doc = await demo.get("/openapi.json")
    requests = [
        ("/", "/"),
        ("/v1/symbols", "/v1/symbols"),
        ("/v1/quotes", "/v1/quotes"),
        ("/v1/quotes", "/v1/quotes?fees=true"),
        ("/v1/quotes/{symbol}", "/v1/quotes/SOL-USDT?fees=true"),
        ("/v1/books/{symbol}", "/v1/books/BTC-USDT?depth=20"),
        ("/v1/books/{symbol}", "/v1/books/ETH-USDT?depth=5&venues=mexc,nhex"),
        ("/v1/sweep/{symbol}", "/v1/sweep/BTC-USDT?side=buy&qty=2&fees=true"),
        ("/v1/sweep/{symbol}", "/v1/sweep/ETH-USDT?side=sell&qty=3.5&fees=true"),
        ("/v1/sweep/{symbol}", "/v1/sweep/SOL-USDT?side=sell&qty=999999999"),
        ("/v1/status", "/v1/status"),
        ("/readyz", "/readyz"),
        ("/healthz", "/healthz"),
    ]
    requests += [("/v1/books/{symbol}/{venue}", f"/v1/books/BTC-USDT/{v}?depth=5") for v in DEMO_VENUES]
    for template, path in requests:
        check_documented(doc, template, 200, await demo.get(path))
    status = await demo.get("/v1/status")
    assert {v["kind"] for v in status["venues"]} == set(DEMO_VENUES) and all(
        v["connections"] for v in status["venues"]
    )


async def test_every_error(demo: Demo) -> None:
    cases = [
        ("/v1/quotes/NOPE-USDT", 404, "unknown_symbol"),
        ("/v1/quotes/BTC-USDT?fees=perhaps", 400, "bad_request"),
        ("/v1/quotes?depth=3", 400, "bad_request"),
        ("/v1/books/NOPE-USDT", 404, "unknown_symbol"),
        ("/v1/books/BTC-USDT?depth=0", 400, "bad_request"),
        ("/v1/books/BTC-USDT?depth=x", 400, "bad_request"),
        ("/v1/books/BTC-USDT?venues=binance,kraken", 404, "unknown_venue"),
        ("/v1/books/BTC-USDT/kraken", 404, "unknown_venue"),
        ("/v1/books/NOPE-USDT/binance", 404, "unknown_symbol"),
        ("/v1/books/BTC-USDT/binance?depth=-2", 400, "bad_request"),
        ("/v1/sweep/BTC-USDT?side=buy", 400, "bad_request"),
        ("/v1/sweep/BTC-USDT?qty=1", 400, "bad_request"),
        ("/v1/sweep/BTC-USDT?side=short&qty=1", 400, "bad_request"),
        ("/v1/sweep/BTC-USDT?side=sell&qty=-1", 400, "bad_request"),
        ("/v1/sweep/BTC-USDT?side=sell&qty=1&venues=kraken", 404, "unknown_venue"),
        ("/v1/sweep/NOPE-USDT?side=sell&qty=1", 404, "unknown_symbol"),
        ("/v1/status?verbose=1", 400, "bad_request"),
        ("/v1/nothing", 404, "not_found"),
        ("/v1/ws", 400, "bad_request"),
    ]
    for path, status, code in cases:
        body = await demo.get(path, status)
        assert body["error"]["code"] == code and body["error"]["message"], path
    async with demo.http.delete("/v1/quotes") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------------- WebSocket
class Reader:
    """Reads a WebSocket in the background and keeps everything per subscription."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.msgs: list[dict] = []
        self.by_sub: dict[str, list[dict]] = {}
        self.close_code: int | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(msg.data)
            self.msgs.append(data)
            if data["type"] in ("snapshot", "update"):
                self.by_sub.setdefault(data["sub"], []).append(data)
        self.close_code = self.ws.close_code

    def statuses(self, venue: str, state: str) -> list[dict]:
        return [m for m in self.msgs if m["type"] == "status" and m["venue"] == venue and m["state"] == state]

    def assert_gap_free(self) -> None:
        for sub, frames in self.by_sub.items():
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), sub
            assert frames[0]["type"] == "snapshot" and frames[0]["reason"] == "subscribe"


async def subscribe_all(ws: aiohttp.ClientWebSocketResponse, depth: int) -> None:
    await ws.send_json({"op": "subscribe", "channel": "quotes", "symbols": list(SYMBOLS)})
    for symbol in SYMBOLS:
        await ws.send_json({"op": "subscribe", "channel": "book", "symbol": symbol, "depth": depth})


async def test_sequence_continuity_across_venue_resyncs(demo: Demo) -> None:
    async with aiohttp.ClientSession() as http:
        reader = Reader(await http.ws_connect(f"{demo.svc.url}/v1/ws"))
        await subscribe_all(reader.ws, depth=5)
        await wait_for(lambda: len(reader.by_sub) == 6, WAIT, what="six snapshots")
        for venue in ("binance", "btse", "nhex"):  # REST snapshot, in-stream snapshot, req snapshot
            demo.sim.venues[venue].inject("gap", "BTC-USDT")
            await wait_for(lambda v=venue: reader.statuses(v, "resyncing"), WAIT, what=f"{venue} resyncing")
            await wait_for(lambda v=venue: reader.statuses(v, "live"), WAIT, what=f"{venue} live again")
            assert reader.statuses(venue, "resyncing")[0]["symbol"] == "BTC-USDT"
        before = len(reader.by_sub["book:BTC-USDT:5"])
        await wait_for(lambda: len(reader.by_sub["book:BTC-USDT:5"]) > before + 20, WAIT, what="more updates")
        reader.assert_gap_free()
        assert not any(f.get("reason") == "conflated" for frames in reader.by_sub.values() for f in frames)
        client = next(iter(demo.svc.hub.clients))
        assert client.dropped == 0
        text = await demo.metrics()
        for venue in ("binance", "btse", "nhex"):
            # a gap right after a snapshot is classified as a stale snapshot by the book core
            reason = reader.statuses(venue, "resyncing")[0]["reason"]
            assert reason in ("gap", "stale_snapshot")
            assert (
                value(text, "aggbook_book_resyncs_total", venue=venue, symbol="BTC-USDT", reason=reason) >= 1
            )
            assert value(text, "aggbook_book_gaps_total", venue=venue, symbol="BTC-USDT") >= (reason == "gap")
        await reader.ws.close()
        await reader.task


def small_receive_buffer(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.mark.parametrize(
    "demo",
    [{"rate": 60.0,
      # the slow client never reads, so it cannot answer the server's pings: on a slowly running
      # market a heartbeat would (rightly) drop it as dead, with 1006, and a send blocked for
      # stall_timeout would close it, before it fell max_behind updates behind, which is tested here
      "ws": {"queue_size": 40, "queue_bytes": 400_000, "max_behind": 100, "heavy_depth": 1000,
             "heartbeat": 3600.0, "stall_timeout": 3600.0}}],
    indirect=True,
)
async def test_slow_client_is_bounded_and_closed_while_fast_client_keeps_up(
    demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aggbook.ws")
    hub = demo.svc.hub
    async with (
        aiohttp.ClientSession() as fast_http,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        ) as slow_http,
    ):
        fast = Reader(await fast_http.ws_connect(f"{demo.svc.url}/v1/ws"))
        await wait_for(lambda: len(hub.clients) == 1, WAIT, what="fast client registered")
        fast_client = next(iter(hub.clients))
        slow_ws = await slow_http.ws_connect(f"{demo.svc.url}/v1/ws")  # never read until the end
        await wait_for(lambda: len(hub.clients) == 2, WAIT, what="slow client registered")
        slow_client = next(c for c in hub.clients if c is not fast_client)
        # the server's side of the slow socket small too: it fills after a few frames, not megabytes
        slow_client.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await subscribe_all(fast.ws, depth=100)
        await subscribe_all(slow_ws, depth=100)
        await wait_for(lambda: slow_client.close_code is not None, timeout=60, what="slow client closed")
        assert slow_client.close_code == 4008
        fast_updates_at_close = sum(len(f) for f in fast.by_sub.values())
        # read the slow client from now on: the service aborts a closed peer's socket a few seconds
        # after its close frame, and the checks of the fast client can take that long under load
        slow = Reader(slow_ws)

        # bounded: the queue never held more than its limit plus one marker per subscription (+ control)
        assert slow_client.max_queued <= 40 + 6 + 8, slow_client.max_queued
        assert slow_client.max_queued_bytes <= 400_000 + 200_000, slow_client.max_queued_bytes
        assert slow_client.dropped > 100
        # the fast client lost nothing and kept receiving: everything the server queued for it arrived
        more = fast_updates_at_close + 30
        await wait_for(lambda: sum(len(f) for f in fast.by_sub.values()) > more, what="fast keeps its rate")
        assert fast_client.dropped == 0 and fast_client.total_conflations == 0
        demo.sim.pause()  # a running market keeps refilling the fast queue: empty only now and then
        await wait_for(lambda: not fast_client.queue, WAIT, what="fast drained")
        queued_for_fast = {s.key: s.seq for s in fast_client.subs.values()}
        await wait_for(
            lambda: all(len(fast.by_sub.get(k, [])) >= n for k, n in queued_for_fast.items()),
            what="fast received everything queued",
        )
        fast.assert_gap_free()
        # the slow client finds gap-free sequences and then close code 4008
        await asyncio.wait_for(slow.task, 20)
        assert slow.close_code == 4008
        slow.assert_gap_free()
        # the log names the code that was sent, not the peer's echo of it
        await wait_for(lambda: any(r.getMessage() == "websocket client disconnected"
                                   and getattr(r, "code", None) == 4008 for r in caplog.records),
                       what="disconnect logged with code 4008")
        text = await demo.metrics()
        assert value(text, "aggbook_ws_dropped_messages_total") >= slow_client.dropped
        assert value(text, "aggbook_ws_clients") == 1
        await fast.ws.close()
        await fast.task


# deep books not held back as heavy: this client must fill its socket
@pytest.mark.parametrize("demo", [{"ws": {"heavy_depth": 1000}}], indirect=True)
async def test_shutdown_closes_a_client_that_never_reads(demo: Demo) -> None:
    """A peer whose socket is full must not hold up shutdown: it is closed with 1001 all the same."""
    hub = demo.svc.hub
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    ) as http:
        ws = await http.ws_connect(f"{demo.svc.url}/v1/ws")  # never read
        await subscribe_all(ws, depth=1000)
        await wait_for(lambda: len(hub.clients) == 1, WAIT, what="client registered")
        client = next(iter(hub.clients))
        await wait_for(
            lambda: client.sending_since is not None and len(client.queue) > 3, what="server blocked writing"
        )
        await asyncio.wait_for(hub.close_all(), 30)  # a guard against hanging, not a timing assertion
        assert client.close_code == 1001 and not client.queue
        await ws.close()


# ---------------------------------------------------------------------- the consolidated view
async def test_consolidated_best_comes_from_several_venues_and_now_and_then_crosses(demo: Demo) -> None:
    """Through the real feeds and consolidated books: each venue runs its own market, so the best bid
    and ask are taken by different venues over a run, crossed or locked moments occur, and fees move
    the best to another venue."""
    books = demo.svc.aggregator.consolidated
    bid_venues: set[str] = set()
    ask_venues: set[str] = set()
    seen = {"crossed": 0, "locked": 0, "fees": 0, "samples": 0}

    def observed() -> bool:
        for book in books.values():
            quote, fee_quote = book.quote(), book.quote(fees=True)
            if quote.bid is None or quote.ask is None or fee_quote.bid is None:
                continue
            seen["samples"] += 1
            if len(quote.bid.venues) == 1:  # one venue alone at the best, not all tied as copies would be
                bid_venues.add(quote.bid.venues[0].venue)
            if len(quote.ask.venues) == 1:
                ask_venues.add(quote.ask.venues[0].venue)
            seen["crossed"] += quote.crossed
            seen["locked"] += quote.locked
            seen["fees"] += {v.venue for v in fee_quote.bid.venues} != {v.venue for v in quote.bid.venues}
        return (len(bid_venues) >= 3 and len(ask_venues) >= 3 and seen["crossed"] > 0 and seen["locked"] > 0
                and seen["fees"] > 0)

    await wait_for(observed, 60, "several venues at the top, a crossed and a locked moment, a fee-moved best")
    assert seen["crossed"] + seen["locked"] < seen["samples"] // 2, seen  # moments, not the rule
    assert {*bid_venues, *ask_venues} <= set(DEMO_VENUES)


# ---------------------------------------------------------------------- metrics, readiness
async def test_every_metric_is_exported_after_running(demo: Demo) -> None:
    svc = demo.svc
    async with aiohttp.ClientSession() as http:
        reader = Reader(await http.ws_connect(f"{svc.url}/v1/ws"))
        await subscribe_all(reader.ws, depth=5)
        await demo.get("/v1/quotes")
        await wait_for(lambda: len(reader.msgs) > 20, WAIT, what="WebSocket traffic")
        text = ""

        def has_run() -> bool:
            nonlocal text
            text = svc.metrics.render().decode()
            # /readyz (the fixture's wait) needs one venue per symbol; every venue's books are live
            # only once each has had its snapshot, later when a venue answered a request with 429
            books = svc.aggregator.consolidated.values()
            every_book_live = all(s.live for b in books for s in b.syncs.values())
            return every_book_live and value(text, "aggbook_event_loop_lag_seconds") >= 4  # ~1 s of samples

        await wait_for(has_run, 30, "every book live and a second of running")
        text = await demo.metrics()
        for name in METRICS:
            assert has_series(text, name), name
        for venue in DEMO_VENUES:
            assert value(text, "aggbook_feed_messages_total", venue=venue, symbol="BTC-USDT") > 0
            assert value(text, "aggbook_feed_bytes_total", venue=venue, symbol="BTC-USDT") > 0
            assert value(text, "aggbook_book_live", venue=venue, symbol="ETH-USDT") == 1
            assert value(text, "aggbook_book_state", venue=venue, symbol="ETH-USDT", state="live") == 1
            assert value(text, "aggbook_book_state", venue=venue, symbol="ETH-USDT", state="waiting") == 0
            if venue != "btse":  # BTSE's first snapshot comes on the stream unasked
                assert value(text, "aggbook_snapshot_requests_total", venue=venue, result="ok") >= 3
            assert value(text, "aggbook_book_time_to_live_seconds", venue=venue, after="start") == 3
            assert value(text, "aggbook_book_last_update_age_seconds", venue=venue, symbol="SOL-USDT") >= 0
            assert value(text, "aggbook_feed_lag_seconds", venue=venue) > 0  # every venue stamps events
            assert value(text, "aggbook_feed_decode_errors_total", venue=venue) == 0
        for symbol in SYMBOLS:
            assert value(text, "aggbook_consolidated_live_venues", symbol=symbol) == 5
            # each venue runs its own market: now and then one's bid is at or above another's ask
            crossed = value(text, "aggbook_consolidated_crossed", symbol=symbol)
            assert crossed in (0, 1)
            assert (value(text, "aggbook_consolidated_spread", symbol=symbol) <= 0) == (crossed == 1)
            assert value(text, "aggbook_consolidated_bbo_age_seconds", symbol=symbol) >= 0
        assert value(text, "aggbook_ws_clients") == 1
        assert value(text, "aggbook_ws_messages_sent_total") > 20
        assert value(text, "aggbook_http_requests_total", route="/v1/quotes", method="GET", status="200") == 1
        assert value(text, "aggbook_http_request_duration_seconds", route="/v1/quotes") == 1
        await reader.ws.close()
        await reader.task


async def test_readyz_flips_during_an_outage_and_back(demo: Demo) -> None:
    sim, svc = demo.sim, demo.svc
    ports = {name: server.port for name, server in sim.venues.items()}
    await sim.stop()  # every venue goes away: sockets close, reconnects are refused
    not_ready: dict = {}

    async def check(expect: int) -> bool:
        nonlocal not_ready
        async with demo.http.get("/readyz") as resp:
            not_ready = await resp.json()
            return resp.status == expect

    async def until(expect: int, every_symbol_not_ready: bool = False) -> None:
        while not (await check(expect) and (not every_symbol_not_ready or not_ready["not_ready"] == symbols)):
            await asyncio.sleep(0.01)

    symbols = list(SYMBOLS)

    def none_live() -> bool:
        books = svc.aggregator.consolidated.values()
        return all(s.state is not SyncState.LIVE for b in books for s in b.syncs.values())

    # each feed sees its sockets close in its own time: /readyz is 503 as soon as one symbol has no
    # venue left, and names every symbol once every feed has seen its venue go
    await asyncio.wait_for(until(503, every_symbol_not_ready=True), 10)
    assert not_ready["ready"] is False
    await wait_for(none_live, what="no book live while every venue is down")
    for name, server in sim.venues.items():
        await server.start("127.0.0.1", ports[name])  # the venues come back on the same addresses
    await asyncio.wait_for(until(200), 15)
    assert not_ready["ready"] is True
    await wait_for(
        lambda: all(s.live for b in svc.aggregator.consolidated.values() for s in b.syncs.values()),
        what="every venue live again",
    )
    text = await demo.metrics()
    for venue in DEMO_VENUES:
        assert value(text, "aggbook_feed_reconnects_total", venue=venue) >= 1
        assert (
            value(text, "aggbook_book_resyncs_total", venue=venue, symbol="BTC-USDT", reason="disconnect")
            >= 1
        )
    status = await demo.get("/v1/status")
    assert status["venues"][0]["symbols"]["BTC-USDT"]["resyncs"]["disconnect"] >= 1


# ---------------------------------------------------------------------- a delisted symbol
FAST_LISTING = {"listing_check_base": 0.05, "listing_check_cap": 0.2}


@pytest.mark.parametrize("demo", [{"options": FAST_LISTING}], indirect=True)
async def test_delisted_symbol_shows_in_status_and_metrics_until_relisted(demo: Demo) -> None:
    """A symbol BTSE takes off its list: `invalid: delisted` in /v1/status and the gauge, then back."""
    btse = demo.sim.venues["btse"]

    async def btse_status() -> dict:
        body = await demo.get("/v1/status")
        return next(v for v in body["venues"] if v["venue"] == "btse")

    async def until(cond: Callable[[dict], bool]) -> dict:
        while not cond(venue := await btse_status()):
            await asyncio.sleep(0.01)
        return venue

    btse.delist("BTC-USDT")
    btse.inject(Fault.GAP, "BTC-USDT")  # the resubscribe of the resync is refused (error 1000)
    venue = await asyncio.wait_for(until(lambda v: v["symbols"]["BTC-USDT"]["reason"] == "delisted"), 10)
    book = venue["symbols"]["BTC-USDT"]
    assert book["state"] == "invalid" and not book["included"]
    assert book["excluded_reason"] == "invalid: delisted"
    assert venue["listing_checks"]["BTC-USDT"]["reason"] == "delisted"
    assert venue["listing_checks"]["BTC-USDT"]["next_check_at"] > 0
    assert "BTC-USDT" in venue["invalid_symbols"]
    text = await demo.metrics()
    assert value(text, "aggbook_book_delisted", venue="btse", symbol="BTC-USDT") == 1
    assert value(text, "aggbook_book_delisted", venue="btse", symbol="ETH-USDT") == 0
    assert value(text, "aggbook_book_state", venue="btse", symbol="BTC-USDT", state="invalid") == 1
    # neither the refusal nor the verdict is a resync
    assert value(text, "aggbook_book_resyncs_total", venue="btse", symbol="BTC-USDT", reason="gap") == 1
    for reason in ("delisted", "invalid_symbol", "revived"):
        assert f'reason="{reason}"' not in text

    btse.relist("BTC-USDT")
    venue = await asyncio.wait_for(until(lambda v: v["symbols"]["BTC-USDT"]["state"] == "live"), 10)
    assert "BTC-USDT" not in venue["invalid_symbols"] and venue["listing_check_outcomes"]["listed"] == 1
    text = await demo.metrics()
    assert value(text, "aggbook_book_delisted", venue="btse", symbol="BTC-USDT") == 0
