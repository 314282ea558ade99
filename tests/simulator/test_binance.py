"""Conformance of the simulated Binance Spot and USDⓈ-M Futures venues with Binance's API documentation.

Everything here talks to the venue over real sockets with a bare aiohttp client, and a few-line
reference book follows Binance's "How to manage a local order book correctly" (the spot WebSocket
Streams page and the USDⓈ-M Futures "Diff. Book Depth Streams" page) to show that snapshot + diffs
reproduce ``venue.truth()``, also after every injected fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import WSMsgType

from aggbook.feeds.binance_sbe import decode_depth_diff
from aggbook.simulator.binance import WEIGHT_HEADER, BinanceCoinMVenue, BinanceFuturesVenue, BinanceSpotVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS, TruthBook
from aggbook.simulator.venue import VenueServer

SYMBOLS = DEFAULT_SYMBOLS[:2]  # BTCUSDT, ETHUSDT
SYM = "BTCUSDT"


# ---------------------------------------------------------------------------- helpers
async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition every 10 ms; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def publish(venue: VenueServer, symbol: str, events: int) -> None:
    """Step the paused market until ``events`` diff events were published for ``symbol``."""
    for _ in range(10_000):
        if events == 0:
            return
        before = venue.current_seq(symbol)
        await venue.step_all(1)
        if venue.current_seq(symbol) != before:
            events -= 1
    raise AssertionError("market produced no events")


class Client:
    """A raw WebSocket client; answers server pings per ``pong``: "echo", "empty" or "none"."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pong: str) -> None:
        self.ws = ws
        self.pong = pong
        self.pings: list[bytes] = []
        self.queue: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.PING:
                self.pings.append(msg.data)
                if self.pong != "none":
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.ws.pong(msg.data if self.pong == "echo" else b"")
                continue
            await self.queue.put(msg)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    async def next(self, timeout: float = 5.0) -> aiohttp.WSMessage:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def text(self) -> str:
        msg = await self.next()
        assert msg.type == WSMsgType.TEXT, msg
        return msg.data

    async def json(self) -> dict:
        return json.loads(await self.text())

    async def event(self) -> dict:
        """The next data payload, unwrapped from a combined-stream envelope."""
        obj = await self.json()
        return obj["data"] if set(obj) == {"stream", "data"} else obj

    async def closed(self) -> aiohttp.WSMessage:
        """Skip frames until the server closes; returns the closing message."""
        while True:
            msg = await self.next()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                return msg

    async def control(self, request: dict | str) -> dict:
        await self.ws.send_str(request if isinstance(request, str) else json.dumps(request))
        return await self.json()

    async def aclose(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def venue_running(cls: type[VenueServer], **kwargs: object) -> AsyncIterator[VenueServer]:
    venue = cls(SYMBOLS, seed=5, autostart_pump=False, **kwargs)
    await venue.start()
    try:
        yield venue
    finally:
        await venue.stop()



@pytest.fixture
async def spot() -> AsyncIterator[VenueServer]:
    async with venue_running(BinanceSpotVenue) as venue:
        yield venue


@pytest.fixture
async def futures() -> AsyncIterator[VenueServer]:
    async with venue_running(BinanceFuturesVenue) as venue:
        yield venue


@pytest.fixture
async def coinm() -> AsyncIterator[VenueServer]:
    async with venue_running(BinanceCoinMVenue) as venue:
        yield venue


async def connect(session: aiohttp.ClientSession, venue: VenueServer, path: str,
                  pong: str = "echo") -> tuple[Client, int]:
    """Open ``ws_url + path``; returns the client and the venue's connection id for it."""
    known = set(venue.connections)
    ws = await session.ws_connect(venue.urls()["ws_url"] + path, autoping=False)
    await wait_until(lambda: set(venue.connections) - known != set())
    (conn_id,) = set(venue.connections) - known
    return Client(ws, pong), conn_id


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict, dict]:
    async with session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


def spot_depth_url(venue: VenueServer, query: str = f"symbol={SYM}&limit=1000") -> str:
    return f"{venue.urls()['rest_url']}/api/v3/depth?{query}"


def futures_depth_url(venue: VenueServer, query: str = f"symbol={SYM}&limit=1000") -> str:
    return f"{venue.urls()['rest_url']}/fapi/v1/depth?{query}"


class RefBook:
    """The documented local-book procedure, in as few lines as it takes."""

    def __init__(self, futures: bool = False) -> None:
        self.futures = futures
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.id = -1
        self.first = True  # futures: the first processed event is checked against L, not pu

    def load(self, snap: dict) -> None:
        self.bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
        self.asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
        self.id, self.first = snap["lastUpdateId"], True

    def apply(self, ev: dict) -> str:
        """"ok", "skip" (stale, ignored) or "gap" (resync needed)."""
        if self.futures:
            if self.first:
                if ev["u"] < self.id:
                    return "skip"
                if not ev["U"] <= self.id <= ev["u"]:
                    return "gap"
            elif ev["pu"] != self.id:
                return "gap"
        else:
            if ev["u"] < self.id:
                return "skip"
            if ev["U"] > self.id + 1:
                return "gap"
        for side, levels in ((self.bids, ev["b"]), (self.asks, ev["a"])):
            for p, q in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)
        self.id, self.first = ev["u"], False
        return "ok"

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def matches(self, venue: VenueServer, symbol: str = SYM) -> bool:
        return self.matches_book(venue.truth(symbol))

    def matches_book(self, truth: TruthBook) -> bool:
        return (sorted(self.bids.items(), reverse=True) == list(truth.bids)
                and sorted(self.asks.items()) == list(truth.asks))


async def sync(session: aiohttp.ClientSession, venue: VenueServer, client: Client,
               symbol: str = SYM) -> tuple[RefBook, int]:
    """(Re)build a book on a live connection: buffer, snapshot (again if stale), replay.

    Returns the book and how many snapshots it took.  Keeping the socket on a spot gap
    is the test's choice; the docs would reconnect.
    """
    is_futures = isinstance(venue, BinanceFuturesVenue)
    buffered = []
    await publish(venue, symbol, 2)
    buffered = [await client.event() for _ in range(2)]
    fetches = 0
    url = f"{venue.urls()['rest_url']}{venue.endpoint.rest_prefix}/depth?symbol={symbol}&limit=1000"  # type: ignore[attr-defined]
    while True:
        status, _, snap = await get(session, url)
        assert status == 200, snap
        fetches += 1
        if snap["lastUpdateId"] >= buffered[0]["U"]:
            break
        assert fetches < 5, "snapshot keeps being older than the stream"
    book = RefBook(futures=is_futures)
    book.load(snap)
    last = snap["lastUpdateId"]
    for ev in buffered:
        if (ev["u"] <= last) if not is_futures else (ev["u"] < last):
            continue
        assert book.apply(ev) == "ok"
    return book, fetches


async def run(venue: VenueServer, client: Client, book: RefBook, events: int, symbol: str = SYM) -> None:
    """Publish ``events`` events and apply them; every one must apply cleanly."""
    await publish(venue, symbol, events)
    for _ in range(events):
        assert book.apply(await client.event()) == "ok"


def check_levels(levels: list, decimals: int) -> None:
    for price, qty in levels:
        assert isinstance(price, str) and isinstance(qty, str)
        assert len(price.split(".")[1]) == decimals and len(qty.split(".")[1]) == decimals


# ---------------------------------------------------------------------------- spot: streams
async def test_spot_diff_events_and_snapshot_reproduce_truth(spot, session) -> None:
    client, _ = await connect(session, spot, f"/ws/{SYM.lower()}@depth")
    book, fetches = await sync(session, spot, client)
    assert fetches == 1
    await publish(spot, SYM, 12)
    events = [await client.event() for _ in range(12)]
    for prev, ev in zip([None, *events], events, strict=False):
        assert set(ev) == {"e", "E", "s", "U", "u", "b", "a"}
        assert ev["e"] == "depthUpdate" and ev["s"] == SYM and isinstance(ev["E"], int)
        check_levels(ev["b"] + ev["a"], 8)  # spot writes 8 decimals: "93180.10000000"
        assert ev["u"] - ev["U"] + 1 >= len(ev["b"]) + len(ev["a"])
        if prev is not None:
            assert ev["U"] == prev["u"] + 1
        assert book.apply(ev) == "ok"
    # ids advance by more than the visible level changes
    assert any(ev["u"] - ev["U"] + 1 > len(ev["b"]) + len(ev["a"]) for ev in events)
    assert book.matches(spot)
    assert book.id == spot.current_seq(SYM)
    await client.aclose()


async def test_spot_combined_stream_wraps_and_carries_both_symbols(spot, session) -> None:
    client, _ = await connect(session, spot, "/stream?streams=btcusdt@depth@100ms/ethusdt@depth")
    await spot.step_all(3)
    seen: dict[str, str] = {}
    while len(seen) < 2:
        frame = await client.json()
        assert set(frame) == {"stream", "data"}
        seen[frame["data"]["s"]] = frame["stream"]
    assert seen == {"BTCUSDT": "btcusdt@depth@100ms", "ETHUSDT": "ethusdt@depth"}
    await client.aclose()


async def test_spot_snapshot_shape_limits_and_errors(spot, session) -> None:
    status, headers, snap = await get(session, spot_depth_url(spot, f"symbol={SYM}&limit=3"))
    assert status == 200 and set(snap) == {"lastUpdateId", "bids", "asks"}
    assert len(snap["bids"]) == 3 and len(snap["asks"]) == 3
    check_levels(snap["bids"] + snap["asks"], 8)
    assert snap["lastUpdateId"] == spot.current_seq(SYM)
    truth = spot.truth(SYM)
    assert [(Decimal(p), Decimal(q)) for p, q in snap["bids"]] == list(truth.bids[:3])
    # truncated to 5000
    status, _, snap = await get(session, spot_depth_url(spot, f"symbol={SYM}&limit=9999"))
    assert status == 200 and len(snap["bids"]) == len(truth.bids)
    cases = {
        "limit=5": (-1102, "Mandatory parameter 'symbol'"),
        f"symbol={SYM.lower()}": (-1100, "Illegal characters found in parameter 'symbol'"),
        "symbol=NOPEUSDT": (-1121, "Invalid symbol."),
        f"symbol={SYM}&limit=abc": (-1100, "Illegal characters found in parameter 'limit'"),
        f"symbol={SYM}&limit=0": (-1130, "Data sent for parameter 'limit' is not valid."),
        f"symbol={SYM}&symbolStatus=HALT": (-1220, "The symbol's status does not match"),
    }
    for query, (code, msg) in cases.items():
        status, headers, body = await get(session, spot_depth_url(spot, query))
        assert status == 400, query
        assert body["code"] == code and body["msg"].startswith(msg), (query, body)
        assert WEIGHT_HEADER in headers


async def test_spot_weight_header_follows_limit_table(spot, session) -> None:
    used = 0
    for limit, weight in ((1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50), (1001, 250),
                          (5000, 250)):
        status, headers, _ = await get(session, spot_depth_url(spot, f"symbol={SYM}&limit={limit}"))
        used += weight
        assert status == 200 and headers[WEIGHT_HEADER] == str(used), limit
    _, headers, _ = await get(session, spot_depth_url(spot, f"symbol={SYM}"))  # default limit 100
    assert headers[WEIGHT_HEADER] == str(used + 5)
    _, headers, _ = await get(session, f"{spot.base_url}/api/v3/exchangeInfo")
    assert headers[WEIGHT_HEADER] == str(used + 5 + 20)


async def test_spot_weight_budget_gives_429_then_418(session) -> None:
    async with venue_running(BinanceSpotVenue, weight_limit=12, ban_seconds=30) as venue:
        for expected in ("5", "10"):
            status, headers, _ = await get(session, spot_depth_url(venue, f"symbol={SYM}"))
            assert status == 200 and headers[WEIGHT_HEADER] == expected
        status, headers, body = await get(session, spot_depth_url(venue, f"symbol={SYM}"))
        assert status == 429 and body["code"] == -1003 and "current limit is 12" in body["msg"]
        assert 1 <= int(headers["Retry-After"]) <= 60
        for _ in range(2):  # any request during the 429 window is banned, and stays banned
            status, headers, body = await get(session, spot_depth_url(venue, f"symbol={SYM}"))
            assert status == 418 and body["code"] == -1003 and "IP banned until" in body["msg"]
            assert 1 <= int(headers["Retry-After"]) <= 30


async def test_spot_exchange_info(spot, session) -> None:
    status, headers, info = await get(session, f"{spot.base_url}/api/v3/exchangeInfo")
    assert status == 200
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
            "limit": 6000} in info["rateLimits"]
    by_name = {s["symbol"]: s for s in info["symbols"]}
    assert set(by_name) == {"BTCUSDT", "ETHUSDT"}
    btc = by_name["BTCUSDT"]
    assert btc["status"] == "TRADING"
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    _, _, one = await get(session, f"{spot.base_url}/api/v3/exchangeInfo?symbol=ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    _, _, two = await get(session, f'{spot.base_url}/api/v3/exchangeInfo?symbols=["ETHUSDT","BTCUSDT"]')
    assert [s["symbol"] for s in two["symbols"]] == ["ETHUSDT", "BTCUSDT"]
    status, _, body = await get(session, f"{spot.base_url}/api/v3/exchangeInfo?symbol=NOPE")
    assert status == 400 and body["code"] == -1121


# ---------------------------------------------------------------------------- spot: control messages
async def test_spot_control_methods(session) -> None:
    async with venue_running(BinanceSpotVenue, max_incoming_per_sec=100) as spot:  # 6 requests > 5/s
        await _control_methods(spot, session)


async def _control_methods(spot: VenueServer, session: aiohttp.ClientSession) -> None:
    client, _ = await connect(session, spot, "/ws")
    sub = {"method": "SUBSCRIBE", "params": ["btcusdt@depth", "ethusdt@depth@100ms"], "id": 1}
    assert await client.control(sub) == {"result": None, "id": 1}
    assert await client.control({"method": "UNSUBSCRIBE", "params": ["ethusdt@depth@100ms"], "id": 312}) == {
        "result": None, "id": 312}
    assert await client.control({"method": "LIST_SUBSCRIPTIONS", "id": "abc123"}) == {
        "result": ["btcusdt@depth"], "id": "abc123"}
    assert await client.control({"method": "GET_PROPERTY", "params": ["combined"], "id": None}) == {
        "result": False, "id": None}
    await publish(spot, SYM, 1)
    assert (await client.json())["e"] == "depthUpdate"  # raw payload
    assert await client.control({"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}) == {
        "result": None, "id": 5}
    assert await client.control({"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {
        "result": True, "id": 2}
    await publish(spot, SYM, 1)
    frame = await client.json()
    assert frame["stream"] == "btcusdt@depth" and frame["data"]["s"] == SYM
    await client.aclose()


async def test_spot_control_errors(session) -> None:
    async with venue_running(BinanceSpotVenue, max_incoming_per_sec=100) as venue:
        client, _ = await connect(session, venue, "/stream")
        cases: list[tuple[dict | str, int, str]] = [
            ({"method": "SET_PROPERTY", "params": ["colour", True], "id": 1}, 0, "Unknown property"),
            ({"method": "GET_PROPERTY", "params": ["colour"], "id": 1}, 0, "Unknown property"),
            ({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}, 1,
             "Invalid value type: expected Boolean"),
            ({"method": "SET_PROPERTY", "params": [7, True], "id": 1}, 2,
             "Invalid request: property name must be a string"),
            ({"method": "GET_PROPERTY", "id": 1}, 2, "Invalid request: property name must be a string"),
            ({"method": "LIST_SUBSCRIPTIONS", "id": 1.5}, 2,
             "Invalid request: request ID must be an unsigned integer"),
            ({"method": "LIST_SUBSCRIPTIONS", "id": "has space"}, 2,
             "Invalid request: request ID must be an unsigned integer"),
            ({"method": "SUBSCRIBE", "params": ["x@depth"]}, 2,
             "Invalid request: request ID must be an unsigned integer"),
            ({"method": "SUBSCRIB", "params": [], "id": 1}, 2, "Invalid request: unknown variant `SUBSCRIB`"),
            ({"method": "GET_PROPERTY", "params": ["combined", 1], "id": 1}, 2,
             "Invalid request: too many parameters"),
            ({"method": "LIST_SUBSCRIPTIONS", "params": ["x"], "id": 1}, 2,
             "Invalid request: too many parameters"),
            ({"params": [], "id": 1}, 2, "Invalid request: missing field `method`"),
            ({"method": "SUBSCRIBE", "params": ["BTCUSDT@depth"], "id": 1}, 2,
             "Invalid request: invalid stream"),
            ('{"method": "SUBSCRIBE", ', 3, "Invalid JSON: expected value at line 1 column"),
        ]
        for request, code, msg in cases:
            reply = await client.control(request)
            assert reply["error"]["code"] == code, (request, reply)
            assert reply["error"]["msg"].startswith(msg), (request, reply)
        # spot keeps the connection after invalid JSON
        assert await client.control({"method": "LIST_SUBSCRIPTIONS", "id": 9}) == {"result": [], "id": 9}
        await client.aclose()


async def test_url_segment_that_is_no_stream_connects_with_no_subscription(spot, session) -> None:
    """``/ws/0`` (how ccxt connects before its SUBSCRIBE frames) opens and subscribes to nothing."""
    client, _ = await connect(session, spot, "/ws/0")
    assert await client.control({"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}
    await client.aclose()


async def test_spot_stream_limit_per_connection(session) -> None:
    async with venue_running(BinanceSpotVenue, max_streams=2) as venue:
        client, _ = await connect(session, venue, "/ws/btcusdt@depth")
        reply = await client.control({"method": "SUBSCRIBE", "params": ["a@depth", "b@depth"], "id": 1})
        assert reply["error"]["code"] == 2 and "too many streams" in reply["error"]["msg"]
        assert await client.control({"method": "SUBSCRIBE", "params": ["a@depth"], "id": 2}) == {
            "result": None, "id": 2}
        await client.aclose()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{venue.urls()['ws_url']}/stream?streams=a@depth/b@depth/c@depth")


async def test_spot_incoming_message_limit_disconnects(spot, session) -> None:
    client, _ = await connect(session, spot, "/ws")
    for i in range(12):  # well over 5 per second
        await client.ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    replies = 0
    while True:
        msg = await client.next()
        if msg.type != WSMsgType.TEXT:
            break
        replies += 1
    assert msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert replies == 5
    await client.aclose()


# ---------------------------------------------------------------------------- heartbeats and lifetime
@pytest.mark.parametrize("cls", [BinanceSpotVenue, BinanceFuturesVenue])
async def test_ping_answered_keeps_connection_and_missing_pong_drops_it(cls, session) -> None:
    async with venue_running(cls, ping_interval=0.25, pong_timeout=0.6) as venue:
        good, good_id = await connect(session, venue, "/ws/btcusdt@depth", pong="echo")
        mute, _ = await connect(session, venue, "/ws/btcusdt@depth", pong="none")
        msg = await mute.closed()
        assert msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert mute.pings, "the server pinged before giving up"
        await wait_until(lambda: len(good.pings) >= 4)  # 4 pings = 1 s > the 0.6 s deadline
        assert good_id in venue.connections and not good.ws.closed
        assert len(set(good.pings)) == len(good.pings)  # every ping has its own payload
        await good.aclose()
        await mute.aclose()


async def test_unsolicited_pong_does_not_count_on_spot_but_does_on_futures(session) -> None:
    async with venue_running(BinanceSpotVenue, ping_interval=0.25, pong_timeout=0.6) as venue:
        client, _ = await connect(session, venue, "/ws/btcusdt@depth", pong="empty")
        msg = await client.closed()
        assert msg.type == WSMsgType.CLOSE and len(client.pings) >= 2
        await client.aclose()
    async with venue_running(BinanceFuturesVenue, ping_interval=0.25, pong_timeout=0.6) as venue:
        client, conn_id = await connect(session, venue, "/ws/btcusdt@depth", pong="empty")
        await wait_until(lambda: len(client.pings) >= 4)
        assert conn_id in venue.connections
        await client.aclose()


async def test_futures_with_the_changelog_pong_rule_drops_a_connection_that_does_not_echo(session) -> None:
    """pong_must_echo=True: the 2024-02-09 futures rule (echo the ping's payload; unsolicited pongs
    do not prevent disconnection)."""
    async with venue_running(BinanceFuturesVenue, ping_interval=0.25, pong_timeout=0.6,
                             pong_must_echo=True) as venue:
        mute, _ = await connect(session, venue, "/ws/btcusdt@depth", pong="empty")
        good, good_id = await connect(session, venue, "/ws/btcusdt@depth", pong="echo")
        msg = await mute.closed()
        assert msg.type == WSMsgType.CLOSE and len(mute.pings) >= 2
        await wait_until(lambda: venue.connections[good_id].state["pings_sent"] >= 4)
        assert good_id in venue.connections and not good.ws.closed
        for client in (mute, good):
            await client.aclose()


async def test_spot_late_pong_clears_its_ping_and_older_ones_only(session) -> None:
    """A pong echoing an older ping, sent after newer pings arrived, still counts for that ping.

    The deadline is per ping: the late echo settles it and every ping before it, while a ping
    sent after it stays outstanding until its own payload comes back.
    """
    async with venue_running(BinanceSpotVenue, ping_interval=0.3, pong_timeout=30.0) as venue:
        client, conn_id = await connect(session, venue, "/ws/btcusdt@depth", pong="none")
        await wait_until(lambda: len(client.pings) >= 3)
        outstanding = venue.connections[conn_id].state["pings"]
        first, second, third = client.pings[:3]
        await client.ws.pong(second)
        await wait_until(lambda: second not in outstanding)
        assert first not in outstanding and third in outstanding
        await client.ws.pong(b"never-sent")  # an echo of nothing settles nothing
        await client.ws.pong(third)
        await wait_until(lambda: third not in outstanding)
        assert conn_id in venue.connections and not client.ws.closed
        await client.aclose()


async def test_spot_rollover_sends_server_shutdown_then_closes(session) -> None:
    async with venue_running(BinanceSpotVenue, max_connection_age=0.3, shutdown_grace=0.2) as venue:
        raw, _ = await connect(session, venue, "/ws/btcusdt@depth")
        combined, _ = await connect(session, venue, "/stream?streams=btcusdt@depth")
        notice = await raw.json()
        assert set(notice) == {"e", "E"} and notice["e"] == "serverShutdown" and isinstance(notice["E"], int)
        wrapped = await combined.json()
        assert wrapped["stream"] == "!serverShutdown" and wrapped["data"]["e"] == "serverShutdown"
        for client in (raw, combined):
            msg = await client.closed()
            assert msg.type == WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.OK
            await client.aclose()


# ---------------------------------------------------------------------------- stream faults (spot)
async def synced_spot(session, venue) -> tuple[Client, int, RefBook]:
    client, conn_id = await connect(session, venue, f"/ws/{SYM.lower()}@depth")
    book, _ = await sync(session, venue, client)
    await run(venue, client, book, 2)
    return client, conn_id, book


async def resync_and_match(session, venue, client: Client) -> None:
    book, _ = await sync(session, venue, client)
    await run(venue, client, book, 3)
    assert book.matches(venue)


async def test_fault_gap_skips_one_event(spot, session) -> None:
    client, conn_id, book = await synced_spot(session, spot)
    spot.inject(Fault.GAP, SYM, conn_id)
    await publish(spot, SYM, 2)  # the first of them is never sent on this connection
    after_gap = await client.event()
    assert after_gap["U"] > book.id + 1
    assert book.apply(after_gap) == "gap"
    assert spot.faults.fired[Fault.GAP] == 1
    await resync_and_match(session, spot, client)
    await client.aclose()


async def test_fault_duplicate_sends_an_event_twice(spot, session) -> None:
    client, conn_id, book = await synced_spot(session, spot)
    spot.inject(Fault.DUPLICATE, SYM, conn_id)
    await publish(spot, SYM, 2)
    texts = [await client.text() for _ in range(3)]
    assert texts[0] == texts[1] and texts[1] != texts[2]
    assert [book.apply(json.loads(t)) for t in texts] == ["ok", "ok", "ok"]  # u == book.id: a no-op
    assert book.matches(spot)
    await client.aclose()


async def test_fault_reorder_swaps_two_events(spot, session) -> None:
    client, conn_id, book = await synced_spot(session, spot)
    spot.inject(Fault.REORDER, SYM, conn_id)
    await publish(spot, SYM, 2)
    late_second, early_first = await client.event(), await client.event()
    assert late_second["U"] == early_first["u"] + 1
    assert book.apply(late_second) == "gap"
    await resync_and_match(session, spot, client)
    await client.aclose()


async def test_fault_malformed_sends_a_truncated_frame(spot, session) -> None:
    client, conn_id, book = await synced_spot(session, spot)
    spot.inject(Fault.MALFORMED, SYM, conn_id)
    await publish(spot, SYM, 2)
    bad = await client.text()
    assert bad.startswith('{"e":"depthUpdate"')
    with pytest.raises(ValueError):
        json.loads(bad)
    assert book.apply(await client.event()) == "gap"  # the truncated event's ids are lost with it
    await resync_and_match(session, spot, client)
    await client.aclose()


async def test_fault_crossed_sends_a_bid_above_the_best_ask(spot, session) -> None:
    client, conn_id, book = await synced_spot(session, spot)
    spot.inject(Fault.CROSSED, SYM, conn_id)
    await publish(spot, SYM, 1)
    ev = await client.event()
    best_ask = spot.truth(SYM).asks[0][0]
    assert Decimal(ev["b"][-1][0]) > best_ask  # ids are in sequence: only the prices tell
    assert book.apply(ev) == "ok" and book.crossed()
    assert not book.matches(spot)  # the bogus bid is not in the truth
    await resync_and_match(session, spot, client)
    await client.aclose()


async def test_fault_disconnect_drops_the_socket(spot, session) -> None:
    client, conn_id, _ = await synced_spot(session, spot)
    spot.inject(Fault.DISCONNECT, SYM, conn_id)
    await publish(spot, SYM, 1)
    msg = await client.closed()
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)  # no close handshake
    await client.aclose()


async def test_fault_silent_stops_data_and_pings(session) -> None:
    async with venue_running(BinanceSpotVenue, ping_interval=0.3, pong_timeout=5.0) as venue:
        silent, silent_id, _ = await synced_spot(session, venue)
        witness, _ = await connect(session, venue, f"/ws/{SYM.lower()}@depth")
        venue.inject(Fault.SILENT, SYM, silent_id)
        await publish(venue, SYM, 3)
        for _ in range(3):
            await witness.event()
        pings_at_fault = len(silent.pings)
        await wait_until(lambda: len(witness.pings) >= 3)
        assert silent.queue.empty() and len(silent.pings) == pings_at_fault
        assert silent_id in venue.connections  # still open
        await silent.aclose()
        await witness.aclose()


async def test_fault_server_close_is_an_early_rollover(spot, session) -> None:
    client, conn_id, _ = await synced_spot(session, spot)
    spot.inject(Fault.SERVER_CLOSE, SYM, conn_id)
    await publish(spot, SYM, 1)
    assert (await client.json())["e"] == "serverShutdown"
    msg = await client.closed()
    assert msg.type == WSMsgType.CLOSE
    await client.aclose()


# ---------------------------------------------------------------------------- snapshot faults
async def test_fault_stale_snapshot_is_older_than_the_stream(spot, session) -> None:
    await publish(spot, SYM, 5)  # some history to be stale from
    client, _ = await connect(session, spot, f"/ws/{SYM.lower()}@depth")
    spot.inject(Fault.STALE_SNAPSHOT, SYM)
    book, fetches = await sync(session, spot, client)
    assert fetches == 2 and spot.faults.fired[Fault.STALE_SNAPSHOT] == 1
    await run(spot, client, book, 3)
    assert book.matches(spot)
    # also right after start, with no older history: the id alone is stale
    async with venue_running(BinanceSpotVenue) as fresh:
        other, _ = await connect(session, fresh, f"/ws/{SYM.lower()}@depth")
        await publish(fresh, SYM, 1)
        first = await other.event()
        fresh.inject(Fault.STALE_SNAPSHOT, SYM)
        _, _, snap = await get(session, spot_depth_url(fresh))
        assert snap["lastUpdateId"] < first["U"] - 1
        await other.aclose()
    await client.aclose()


@pytest.mark.parametrize("fault,status", [(Fault.SNAPSHOT_429, 429), (Fault.SNAPSHOT_418, 418)])
async def test_fault_snapshot_rate_limited(spot, session, fault, status) -> None:
    spot.inject(fault, SYM, retry_after=7)
    got, headers, body = await get(session, spot_depth_url(spot))
    assert got == status and headers["Retry-After"] == "7" and body["code"] == -1003
    assert WEIGHT_HEADER in headers
    got, _, _ = await get(session, spot_depth_url(spot))
    assert got == 200


async def test_fault_unknown_symbol(spot, session) -> None:
    spot.inject(Fault.UNKNOWN_SYMBOL, SYM)
    status, _, body = await get(session, spot_depth_url(spot))
    assert status == 400 and body == {"code": -1121, "msg": "Invalid symbol."}
    assert (await get(session, spot_depth_url(spot)))[0] == 200


async def test_fault_slow_snapshot_arrives_already_old(spot, session) -> None:
    spot.inject(Fault.SLOW_SNAPSHOT, SYM, delay=1.0)
    seq_at_request = spot.current_seq(SYM)
    pending = asyncio.create_task(get(session, spot_depth_url(spot)))
    await wait_until(lambda: spot.faults.fired[Fault.SLOW_SNAPSHOT] == 1)
    await publish(spot, SYM, 2)
    assert not pending.done()
    status, _, snap = await pending
    assert status == 200 and snap["lastUpdateId"] == seq_at_request < spot.current_seq(SYM)


# ---------------------------------------------------------------------------- futures
async def test_futures_pu_chain_and_snapshot_reproduce_truth(futures, session) -> None:
    client, _ = await connect(session, futures, "/stream?streams=btcusdt@depth")
    book, fetches = await sync(session, futures, client)
    await publish(futures, SYM, 30)
    events = [await client.event() for _ in range(30)]
    for prev, ev in zip([None, *events], events, strict=False):
        assert set(ev) == {"e", "E", "T", "s", "U", "u", "pu", "b", "a"}
        assert ev["T"] <= ev["E"]
        spec = futures.specs[SYM]  # the contract's own tick and lot: 0.1 and 0.001
        for price, qty in ev["b"] + ev["a"]:  # futures writes the tick's and lot's decimals
            assert len(price.split(".")[1]) == 1 and len(qty.split(".")[1]) == 3
            assert Decimal(price) % spec.tick == 0 and Decimal(qty) % spec.lot == 0
        if prev is not None:
            assert ev["pu"] == prev["u"]
        assert book.apply(ev) == "ok"
    assert any(ev["U"] != ev["pu"] + 1 for ev in events)  # U may jump: only pu proves continuity
    assert book.matches(futures)
    await client.aclose()


async def test_futures_snapshot_shape_limits_and_weights(futures, session) -> None:
    status, headers, snap = await get(session, futures_depth_url(futures, f"symbol={SYM}"))
    assert status == 200 and headers[WEIGHT_HEADER] == "10"  # default limit 500
    assert set(snap) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert snap["bids"][0][0] == str(futures.truth(SYM).bids[0][0])  # tick decimals: "93180.08"
    used = 10
    for limit, weight in ((5, 2), (10, 2), (20, 2), (50, 2), (100, 5), (500, 10), (1000, 20)):
        status, headers, snap = await get(session, futures_depth_url(futures, f"symbol={SYM}&limit={limit}"))
        used += weight
        assert status == 200 and headers[WEIGHT_HEADER] == str(used)
        assert len(snap["bids"]) == min(limit, len(futures.truth(SYM).bids))
    for query, code in ((f"symbol={SYM}&limit=7", -1130), ("symbol=NOPE", -1121), ("limit=5", -1102)):
        status, _, body = await get(session, futures_depth_url(futures, query))
        assert status == 400 and body["code"] == code, query
    status, _, info = await get(session, f"{futures.base_url}/fapi/v1/exchangeInfo")
    filters = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.1" and filters["LOT_SIZE"]["stepSize"] == "0.001"
    assert futures.specs[SYM].tick == Decimal("0.1") and futures.specs[SYM].lot == Decimal("0.001")


async def test_futures_legacy_unrouted_paths_still_serve_depth(futures, session) -> None:
    assert futures.urls()["ws_url"].endswith("/public")
    base = futures.urls()["ws_url"].removesuffix("/public")
    ws = await session.ws_connect(f"{base}/ws/btcusdt@depth", autoping=False)
    client = Client(ws, "echo")
    await publish(futures, SYM, 1)
    assert (await client.event())["e"] == "depthUpdate"
    await client.aclose()


async def test_futures_control_replies_and_invalid_json_disconnect(futures, session) -> None:
    client, _ = await connect(session, futures, "/ws")
    assert await client.control({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1}) == {
        "result": None, "id": 1}
    reply = await client.control({"method": "LIST_SUBSCRIPTIONS", "id": "abc"})  # futures: unsigned int
    assert reply["error"]["code"] == 2 and "unsigned integer" in reply["error"]["msg"]
    reply = await client.control("{not json")
    assert reply == {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2"}}
    msg = await client.closed()
    assert msg.type == WSMsgType.CLOSE
    await client.aclose()


async def test_futures_incoming_limit_is_ten_per_second(futures, session) -> None:
    client, _ = await connect(session, futures, "/ws")
    for i in range(15):
        await client.ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    replies = 0
    while (msg := await client.next()).type == WSMsgType.TEXT:
        replies += 1
    assert replies == 10 and msg.type == WSMsgType.CLOSE
    await client.aclose()


async def test_futures_gap_breaks_the_pu_chain_and_resync_recovers(futures, session) -> None:
    client, conn_id = await connect(session, futures, "/ws/btcusdt@depth")
    book, _ = await sync(session, futures, client)
    futures.inject(Fault.GAP, SYM, conn_id)
    await publish(futures, SYM, 2)
    assert book.apply(await client.event()) == "gap"
    await resync_and_match(session, futures, client)
    await client.aclose()


async def test_futures_server_close_has_no_notice(futures, session) -> None:
    client, conn_id = await connect(session, futures, "/ws/btcusdt@depth")
    futures.inject(Fault.SERVER_CLOSE, SYM, conn_id)
    await publish(futures, SYM, 1)
    msg = await client.next()
    assert msg.type == WSMsgType.CLOSE
    await client.aclose()


async def test_futures_stale_snapshot_refetched(futures, session) -> None:
    await publish(futures, SYM, 5)
    client, _ = await connect(session, futures, "/ws/btcusdt@depth")
    futures.inject(Fault.STALE_SNAPSHOT, SYM)
    book, fetches = await sync(session, futures, client)
    assert fetches == 2
    await run(futures, client, book, 3)
    assert book.matches(futures)
    await client.aclose()


def test_depth_stream_names_are_the_documented_ones() -> None:
    """Spot pushes <sym>@depth and @depth@100ms; futures @depth, @depth@500ms and @depth@100ms."""
    assert BinanceSpotVenue()._depth_stream_names("BTCUSDT") == {"btcusdt@depth", "btcusdt@depth@100ms"}
    assert BinanceFuturesVenue()._depth_stream_names("BTCUSDT") == {
        "btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@depth@500ms"}


# ---------------------------------------------------------------------------- COIN-M
CM = "BTCUSD_PERP"


async def test_coinm_pu_chain_and_snapshot_reproduce_truth(coinm, session) -> None:
    """dstream has no /public routing; events add ``ps``; sizes are whole contracts."""
    assert coinm.urls()["ws_url"] == coinm.base_url.replace("http://", "ws://")
    assert coinm.resolve_symbol("BTC-USDT") == CM
    client, _ = await connect(session, coinm, "/stream?streams=btcusd_perp@depth@100ms")
    book, _ = await sync(session, coinm, client, CM)
    await publish(coinm, CM, 30)
    events = [await client.event() for _ in range(30)]
    for prev, ev in zip([None, *events], events, strict=False):
        assert set(ev) == {"e", "E", "T", "s", "ps", "U", "u", "pu", "b", "a"}
        assert ev["s"] == CM and ev["ps"] == "BTCUSD"
        for _price, qty in ev["b"] + ev["a"]:
            assert qty.isdigit()  # contracts
        if prev is not None:
            assert ev["pu"] == prev["u"]
        assert book.apply(ev) == "ok"
    assert book.matches(coinm, CM)
    await client.aclose()


async def test_coinm_snapshot_exchange_info_and_weights(coinm, session) -> None:
    base = coinm.urls()["rest_url"]
    status, headers, snap = await get(session, f"{base}/dapi/v1/depth?symbol={CM}")
    assert status == 200 and headers[WEIGHT_HEADER] == "10"  # default limit 500
    assert set(snap) == {"lastUpdateId", "symbol", "pair", "E", "T", "bids", "asks"}
    assert (snap["symbol"], snap["pair"]) == (CM, "BTCUSD")
    status, headers, _ = await get(session, f"{base}/dapi/v1/depth?symbol={CM}&limit=1000")
    assert headers[WEIGHT_HEADER] == "30"
    status, _, body = await get(session, f"{base}/dapi/v1/depth?symbol={CM}&limit=7")
    assert status == 400 and body["code"] == -1130
    async with session.get(f"{base}/fapi/v1/depth?symbol={CM}") as resp:
        assert resp.status == 404  # dapi only
    status, _, info = await get(session, f"{base}/dapi/v1/exchangeInfo")
    item = next(s for s in info["symbols"] if s["symbol"] == CM)
    assert item["contractStatus"] == "TRADING" and "status" not in item
    assert item["contractSize"] == 100 and item["quoteAsset"] == "USD"
    filters = {f["filterType"]: f for f in item["filters"]}
    assert filters["LOT_SIZE"]["stepSize"] == "1" and filters["PRICE_FILTER"]["tickSize"] == "0.1"
    assert info["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                     "intervalNum": 1, "limit": 2400}


async def test_coinm_gap_breaks_the_pu_chain_and_resync_recovers(coinm, session) -> None:
    client, conn_id = await connect(session, coinm, "/ws/btcusd_perp@depth")
    book, _ = await sync(session, coinm, client, CM)
    coinm.inject(Fault.GAP, CM, conn_id)
    await publish(coinm, CM, 2)
    assert book.apply(await client.event()) == "gap"
    book, _ = await sync(session, coinm, client, CM)
    await run(coinm, client, book, 3, CM)
    assert book.matches(coinm, CM)
    await client.aclose()


# ---------------------------------------------------------------------------- USD-M RPI book
async def test_futures_rpi_snapshot_and_stream_reproduce_the_rpi_book(futures, session) -> None:
    """/fapi/v1/rpiDepth + <sym>@rpiDepth@500ms, by the documented pu procedure, give rpi_truth;
    the ordinary /depth leaves the RPI orders out."""
    client, _ = await connect(session, futures, "/ws/btcusdt@rpiDepth@500ms")
    base = futures.urls()["rest_url"]
    await publish(futures, SYM, 3)  # the market is paused between steps: the snapshot is current
    status, headers, snap = await get(session, f"{base}/fapi/v1/rpiDepth?symbol={SYM}")
    assert status == 200 and headers[WEIGHT_HEADER] == "20"
    assert set(snap) == {"lastUpdateId", "E", "T", "bids", "asks"}
    assert snap["lastUpdateId"] == futures.rpi_truth(SYM).seq
    book = RefBook(futures=True)
    book.load(snap)
    while True:  # drop what the snapshot already holds (u < L, or the event ending at L)
        ev = await client.event()
        if ev["u"] == book.id:
            break
        assert ev["u"] < book.id
    book.first = False  # from here each event's pu must be the last u: the snapshot's id first
    differed = False
    for _ in range(40):
        await futures.step_all(1)
        while futures.rpi_truth(SYM).seq != book.id:
            ev = await client.event()
            assert set(ev) == {"e", "E", "T", "s", "U", "u", "pu", "b", "a"}
            assert book.apply(ev) == "ok"
        assert book.matches_book(futures.rpi_truth(SYM))
        assert not book.crossed()
        plain = futures.truth(SYM)
        differed = differed or (book.bids != dict(plain.bids) or book.asks != dict(plain.asks))
    assert differed, "no RPI order was ever in the book"
    status, _, body = await get(session, f"{base}/fapi/v1/rpiDepth?symbol={SYM}&limit=500")
    assert status == 400 and body["code"] == -1130
    await client.aclose()


async def test_coinm_serves_no_rpi_book(coinm, session) -> None:
    async with session.get(f"{coinm.urls()['rest_url']}/dapi/v1/rpiDepth?symbol={CM}") as resp:
        assert resp.status == 404


# ---------------------------------------------------------------------------- spot SBE streams
async def test_spot_sbe_endpoint_sends_depth_diffs_as_sbe_frames(spot, session) -> None:
    """The same events as the JSON stream, as DepthDiffStreamEvent binary frames (µs event time)."""
    json_client, _ = await connect(session, spot, "/ws/btcusdt@depth")
    known = set(spot.connections)
    ws = await session.ws_connect(spot.urls()["ws_url"] + "/sbe/stream?streams=btcusdt@depth",
                                  autoping=False, headers={"X-MBX-APIKEY": "key"})
    await wait_until(lambda: set(spot.connections) - known != set())
    sbe_client = Client(ws, "echo")
    await publish(spot, SYM, 3)
    for _ in range(3):
        ev = await json_client.event()
        msg = await sbe_client.next()
        assert msg.type == WSMsgType.BINARY
        diff = decode_depth_diff(msg.data)
        assert (diff.first_update_id, diff.last_update_id, diff.symbol) == (ev["U"], ev["u"], SYM)
        assert diff.event_time_us == ev["E"] * 1000
        for sbe_side, json_side in ((diff.bids, ev["b"]), (diff.asks, ev["a"])):
            assert [(Decimal(p), Decimal(q)) for p, q in sbe_side] == [
                (Decimal(p), Decimal(q)) for p, q in json_side]
    await json_client.aclose()
    await sbe_client.aclose()
