"""Conformance of the simulated BTSE spot venue, checked with a raw aiohttp client.

A ``ping`` sent after ``step_all`` works as a barrier: the venue writes every frame of a step before
``step_all`` returns and answers ``pong`` in order, so everything before ``pong`` is the whole output.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from aggbook.simulator.btse import BtseVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS

SYMBOLS = DEFAULT_SYMBOLS[:2]  # BTC-USDT, ETH-USDT
BTC = "BTC-USDT"
ETH = "ETH-USDT"
BTC_TOPIC = "update:BTC-USDT_0"
ETH_TOPIC = "update:ETH-USDT_0"
TIMEOUT = 5.0


# ---------------------------------------------------------------------- helpers
async def wait_for(cond: Callable[[], object], timeout: float = TIMEOUT) -> None:
    """Poll ``cond`` every 10 ms until it is truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Client:
    """A bare WebSocket client speaking BTSE's OSS protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, conn_id: int) -> None:
        self.ws = ws
        self.conn_id = conn_id

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, venue: BtseVenue,
                   path: str = "/ws/oss/spot") -> Client:
        before = set(venue.connections)
        ws = await session.ws_connect(venue.base_url.replace("http://", "ws://") + path, autoping=True)
        await wait_for(lambda: set(venue.connections) - before)
        (conn_id,) = set(venue.connections) - before
        return cls(ws, conn_id)

    async def send(self, obj: object) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def subscribe(self, *topics: str) -> None:
        await self.send({"op": "subscribe", "args": list(topics)})

    async def unsubscribe(self, *topics: str) -> None:
        await self.send({"op": "unsubscribe", "args": list(topics)})

    async def recv(self, timeout: float = TIMEOUT) -> str:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
        return msg.data

    async def recv_json(self, timeout: float = TIMEOUT) -> dict:
        return orjson.loads(await self.recv(timeout))

    async def drain(self) -> list[str]:
        """Every text frame the venue sent before answering a fresh ``ping``."""
        await self.send("ping")
        frames = []
        while (text := await self.recv()) != "pong":
            frames.append(text)
        return frames

    async def drain_json(self) -> list[dict]:
        return [orjson.loads(t) for t in await self.drain()]


class RefBook:
    """Minimal reference book: snapshot replaces, deltas set absolute sizes, seq must be contiguous."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq: int | None = None

    def apply(self, data: dict) -> None:
        if data["type"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
        else:
            assert self.seq is not None, "delta before snapshot"
            assert data["prevSeqNum"] == self.seq, (data["prevSeqNum"], self.seq)
        assert data["seqNum"] == data["prevSeqNum"] + 1
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for price, size in levels:
                assert isinstance(price, str) and isinstance(size, str)
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(size)
        self.seq = data["seqNum"]

    def book(self) -> tuple[int | None, tuple, tuple]:
        bids = tuple(sorted(self.bids.items(), reverse=True))
        asks = tuple(sorted(self.asks.items()))
        return self.seq, bids, asks

    def crossed(self) -> bool:
        return bool(self.bids and self.asks) and max(self.bids) >= min(self.asks)


async def read_until(client: Client, cond: Callable[[], object], timeout: float = TIMEOUT) -> list[dict]:
    """Every frame the client gets until ``cond()`` holds, reading all the while.

    A running pump blocks on a socket its client does not read: waiting for the pump without
    reading (a burst after a stall fills the socket) would wait for a pump that waits for us.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    frames = await client.drain_json()
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        frames += await client.drain_json()
    return frames


def truth_tuple(venue: BtseVenue, client: Client, symbol: str) -> tuple[int, tuple, tuple]:
    book = venue.truth_for(client.conn_id, symbol)
    return book.seq, book.bids, book.asks


def book_frames(frames: list[dict], symbol: str) -> list[dict]:
    return [f["data"] for f in frames if f.get("topic", "").startswith("update:") and
            f["data"]["symbol"] == symbol]


async def subscribed(session: aiohttp.ClientSession, venue: BtseVenue,
                     topic: str = BTC_TOPIC) -> tuple[Client, RefBook]:
    """A client subscribed to ``topic`` whose reference book holds the snapshot."""
    client = await Client.open(session, venue)
    await client.subscribe(topic)
    assert await client.recv_json() == {"event": "subscribe", "channel": [topic]}
    snap = (await client.recv_json())["data"]
    assert snap["type"] == "snapshot"
    ref = RefBook()
    ref.apply(snap)
    return client, ref


def make_venue(**kwargs: object) -> BtseVenue:
    kwargs.setdefault("autostart_pump", False)
    return BtseVenue(SYMBOLS, seed=7, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def venue():
    v = make_venue(bare_topic_fraction=0.3)
    await v.start()
    yield v
    await v.stop()



# ---------------------------------------------------------------------- stream
async def test_urls_follow_the_agreed_layout(venue: BtseVenue) -> None:
    urls = venue.urls()
    assert urls["rest_url"] == f"http://127.0.0.1:{venue.port}/spot"
    assert urls["ws_url"] == f"ws://127.0.0.1:{venue.port}/ws/oss/spot"
    assert venue.venue_symbol(SYMBOLS[0]) == BTC


async def test_snapshot_then_deltas_reproduce_truth(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client = await Client.open(session, venue)
    await client.subscribe(BTC_TOPIC, ETH_TOPIC)
    assert await client.recv_json() == {"event": "subscribe", "channel": [BTC_TOPIC, ETH_TOPIC]}
    refs = {BTC: RefBook(), ETH: RefBook()}
    for _ in range(2):
        frame = await client.recv_json()
        data = frame["data"]
        assert frame["topic"] == f"update:{data['symbol']}_0"
        assert set(data) == {"bids", "asks", "seqNum", "prevSeqNum", "type", "timestamp", "symbol"}
        assert data["type"] == "snapshot" and data["prevSeqNum"] == data["seqNum"] - 1
        assert isinstance(data["timestamp"], int) and data["timestamp"] > 10**12  # milliseconds
        bids = [Decimal(p) for p, _ in data["bids"]]
        asks = [Decimal(p) for p, _ in data["asks"]]
        assert bids == sorted(bids, reverse=True)
        assert asks == sorted(asks, reverse=True), "asks are listed descending, like the doc sample"
        assert 0 < len(bids) <= 50 and 0 < len(asks) <= 50
        refs[data["symbol"]].apply(data)
        assert refs[data["symbol"]].book() == truth_tuple(venue, client, data["symbol"])
    assert refs[BTC].seq != refs[ETH].seq

    await venue.step_all(300)
    frames = await client.drain_json()
    topics = set()
    zero_forms = set()
    for frame in frames:
        data = frame["data"]
        assert data["type"] == "delta"
        topics.add(frame["topic"].replace(data["symbol"], "SYM"))
        zero_forms.update(s for _, s in data["bids"] + data["asks"] if Decimal(s) == 0)
        refs[data["symbol"]].apply(data)
    assert len(frames) == 600  # one delta per step per symbol
    assert topics == {"update:SYM_0", "update:SYM"}, "some deltas carry the legacy topic without _0"
    assert "0" in zero_forms and len(zero_forms) > 1
    for symbol, ref in refs.items():
        assert ref.book() == truth_tuple(venue, client, symbol)
        assert venue.truth_seq_for(client.conn_id, symbol) == (
            venue.current_seq(symbol) + venue.seq_offset(client.conn_id, symbol))
        assert venue.truth(symbol).seq == venue.current_seq(symbol)


async def test_snapshot_is_capped_at_50_levels(session: aiohttp.ClientSession) -> None:
    venue = make_venue(depth=60)
    async with venue:
        client, ref = await subscribed(session, venue)
        seq, bids, asks = ref.book()
        truth = venue.truth_for(client.conn_id, BTC)
        assert len(truth.bids) == 60 and len(bids) == 50 and len(asks) == 50
        assert (seq, bids, asks) == (truth.seq, truth.bids[:50], truth.asks[:50])


async def test_grouped_topic_streams_the_rest_group_grid(venue: BtseVenue,
                                                        session: aiohttp.ClientSession) -> None:
    """``update:<symbol>_<grouping>`` with grouping 1-8 is served (the doc's topic format): snapshot
    and deltas on the grid of REST ``group``, contiguous seq; the ``_0`` stream beside it still
    carries the truth."""
    grouped = "update:BTC-USDT_2"
    client = await Client.open(session, venue)
    await client.subscribe(BTC_TOPIC, grouped)
    assert await client.recv_json() == {"event": "subscribe", "channel": [BTC_TOPIC, grouped]}
    refs = {BTC_TOPIC: RefBook(), grouped: RefBook()}
    for _ in range(2):
        frame = await client.recv_json()
        assert frame["data"]["type"] == "snapshot"
        refs[frame["topic"]].apply(frame["data"])

    async def rest_group_book() -> tuple[tuple, tuple]:
        _, _, text = await get(session, venue, "/orderbook", symbol=BTC, group=2)
        body = orjson.loads(text)
        return tuple(quotes(body["buyQuote"])), tuple(reversed(quotes(body["sellQuote"])))

    step = SYMBOLS[0].tick * 10
    assert refs[grouped].book()[1:] == await rest_group_book()
    assert all(p % step == 0 for p, _ in refs[grouped].book()[1] + refs[grouped].book()[2])
    await venue.step_all(200)
    frames = await client.drain_json()
    assert sum(f["topic"] == grouped for f in frames) == 200  # one delta per step, empty sides allowed
    for frame in frames:
        topic = grouped if frame["topic"] == grouped else BTC_TOPIC
        refs[topic].apply(frame["data"])
    assert refs[grouped].book()[1:] == await rest_group_book()
    assert refs[BTC_TOPIC].book() == truth_tuple(venue, client, BTC)
    assert venue.truth_sent(client.conn_id, BTC).seq == refs[BTC_TOPIC].seq


async def test_resubscribe_gives_fresh_snapshot_on_new_seq_base(venue: BtseVenue,
                                                               session: aiohttp.ClientSession) -> None:
    client, ref = await subscribed(session, venue)
    await venue.step_all(5)
    for data in book_frames(await client.drain_json(), BTC):
        ref.apply(data)
    old_seq = ref.seq

    await client.unsubscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "unsubscribe", "channel": [BTC_TOPIC]}
    await venue.step_all(5)
    assert await client.drain() == [], "no deltas after the unsubscribe ack"

    await client.subscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "subscribe", "channel": [BTC_TOPIC]}
    snap = (await client.recv_json())["data"]
    assert snap["type"] == "snapshot"
    assert abs(snap["seqNum"] - old_seq) >= 100_000, "each subscription starts an unrelated seq base"
    ref.apply(snap)
    assert ref.book() == truth_tuple(venue, client, BTC)
    await venue.step_all(5)
    for data in book_frames(await client.drain_json(), BTC):
        ref.apply(data)
    assert ref.book() == truth_tuple(venue, client, BTC)


async def test_resubscribe_does_not_disturb_other_subscribers(venue: BtseVenue,
                                                             session: aiohttp.ClientSession) -> None:
    a, ref_a = await subscribed(session, venue)
    b, ref_b = await subscribed(session, venue)
    await venue.step_all(3)
    await a.unsubscribe(BTC_TOPIC)
    await a.subscribe(BTC_TOPIC)
    await venue.step_all(3)
    for data in book_frames(await b.drain_json(), BTC):
        ref_b.apply(data)
    assert ref_b.book() == truth_tuple(venue, b, BTC)
    for data in book_frames([f for f in await a.drain_json() if "data" in f], BTC):
        if data["type"] == "snapshot" or ref_a.seq == data["prevSeqNum"]:
            ref_a.apply(data)
    assert ref_a.book() == truth_tuple(venue, a, BTC)


async def test_live_pump_with_repeated_resubscribes(session: aiohttp.ClientSession) -> None:
    """With the pump running, every (re)subscription is snapshot + contiguous deltas, never out of order."""
    venue = make_venue(autostart_pump=True, rate=400.0)
    async with venue:
        client, ref = await subscribed(session, venue)
        awaiting_snapshot = False
        for round_ in range(8):
            frames = await read_until(client, lambda t=venue.steps_published + 40: venue.steps_published >= t)
            for data in book_frames(frames, BTC):
                if data["type"] == "snapshot":
                    awaiting_snapshot = False
                if not awaiting_snapshot:  # frames between unsubscribe and the new snapshot are stale
                    ref.apply(data)
            assert not awaiting_snapshot
            if round_ % 2:
                await client.unsubscribe(BTC_TOPIC)
            await client.subscribe(BTC_TOPIC)
            awaiting_snapshot = True
        venue.pause()

        async def settled() -> bool:
            nonlocal awaiting_snapshot
            for data in book_frames([f for f in await client.drain_json() if "data" in f], BTC):
                if data["type"] == "snapshot":
                    awaiting_snapshot = False
                if not awaiting_snapshot:
                    ref.apply(data)
            return not awaiting_snapshot and ref.book() == truth_tuple(venue, client, BTC)

        for _ in range(100):
            if await settled():
                break
        else:
            raise AssertionError("reference book never matched the truth")
        assert venue.steps_published >= 320


async def test_snapshot_l1_topic(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client = await Client.open(session, venue)
    await client.subscribe("snapshotL1:BTC-USDT")
    assert await client.recv_json() == {"event": "subscribe", "channel": ["snapshotL1:BTC-USDT"]}
    await venue.step_all(30)
    frames = [await client.recv_json()] + await client.drain_json()
    assert len(frames) > 2
    last = frames[-1]
    assert last["topic"] == "snapshotL1:BTC-USDT"
    assert set(last["data"]) == {"bids", "asks", "type", "symbol", "timestamp"}
    assert last["data"]["type"] == "snapshotL1" and "seqNum" not in last["data"]
    truth = venue.truth(BTC, 1)
    assert [[Decimal(p), Decimal(s)] for p, s in last["data"]["bids"]] == [list(truth.bids[0])]
    assert [[Decimal(p), Decimal(s)] for p, s in last["data"]["asks"]] == [list(truth.asks[0])]


# ---------------------------------------------------------------------- control frames and errors
async def test_text_ping_gets_text_pong_on_both_sockets(venue: BtseVenue,
                                                        session: aiohttp.ClientSession) -> None:
    for path in ("/ws/oss/spot", "/ws/spot"):
        client = await Client.open(session, venue, path)
        await client.send("ping")
        msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "pong")


async def test_main_socket_rejects_book_topics(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client = await Client.open(session, venue, "/ws/spot")
    await client.subscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "subscribe", "channel": []}
    err = await client.recv_json()
    assert err["errors"][0]["arg"] == BTC_TOPIC and err["errors"][0]["error"]["code"] == 1005
    await venue.step_all(3)
    assert await client.drain() == []


async def test_idle_connection_is_dropped_pinging_one_is_kept(session: aiohttp.ClientSession) -> None:
    venue = make_venue(idle_timeout=0.4)
    async with venue:
        pinger = await Client.open(session, venue)
        idle = await Client.open(session, venue)
        closed = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while closed is None:
            assert loop.time() < deadline, "idle connection was not dropped"
            await pinger.send("ping")
            assert await pinger.recv() == "pong"
            try:
                closed = await asyncio.wait_for(idle.ws.receive(), 0.1)
            except TimeoutError:
                pass
        assert closed.type == WSMsgType.CLOSE
        assert closed.extra == "idle timeout"
        await pinger.send("ping")
        assert await pinger.recv() == "pong", "a connection that pings stays open"


async def test_subscribe_error_frames(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client = await Client.open(session, venue)
    bad = ["update:BTCC-USD_0", "trades:BTC-USDT", "update:BTC-USDT_9", "update:BTC-USDT"]
    await client.subscribe(BTC_TOPIC, *bad)
    assert await client.recv_json() == {"event": "subscribe", "channel": [BTC_TOPIC]}
    err = await client.recv_json()
    assert err["severity"] == "ERROR"
    assert [(e["arg"], e["error"]["code"]) for e in err["errors"]] == [
        ("update:BTCC-USD_0", 1000), ("trades:BTC-USDT", 1005), ("update:BTC-USDT_9", 1005),
        ("update:BTC-USDT", 1005)]
    assert err["errors"][0]["error"]["message"] == "Market pair provided is currently not supported."
    assert (await client.recv_json())["data"]["type"] == "snapshot"

    await client.send('{"op":"subscribe","args":["update:BTC')
    assert (await client.recv_json())["errors"][0]["error"]["code"] == 1002
    await client.send({"op": "subscribe"})
    assert (await client.recv_json())["errors"][0]["error"]["code"] == 1002
    await client.send({"op": "login", "args": []})
    err = await client.recv_json()
    assert err["errors"] == [{"arg": "login", "error": {"code": 1001, "message":
                                                       "Operation provided is currently not supported."}}]


async def test_too_many_failed_attempts_sends_1008_and_closes(session: aiohttp.ClientSession) -> None:
    venue = make_venue(max_failed_attempts=3)
    async with venue:
        client = await Client.open(session, venue)
        for _ in range(2):
            await client.send({"op": "nope", "args": []})
            assert (await client.recv_json())["errors"][0]["error"]["code"] == 1001
        await client.send({"op": "nope", "args": []})
        assert (await client.recv_json())["errors"][0]["error"]["code"] == 1001
        err = await client.recv_json()
        assert err["severity"] == "ERROR" and err["errors"][0]["error"]["code"] == 1008
        msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1008


# ---------------------------------------------------------------------- faults
async def deltas_after_fault(venue: BtseVenue, session: aiohttp.ClientSession, fault: Fault,
                             steps: int = 4, **params: object) -> tuple[Client, RefBook, int, list[str]]:
    client, ref = await subscribed(session, venue)
    base = ref.seq
    assert base is not None
    venue.inject(fault, BTC, conn_id=client.conn_id, **params)
    await venue.step_all(steps)
    return client, ref, base, [t for t in await client.drain() if '"ETH-USDT"' not in t]


def seqs(frames: list[str]) -> list[int]:
    return [orjson.loads(t)["data"]["seqNum"] for t in frames]


async def test_gap_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.GAP)
    assert seqs(frames) == [s + 2, s + 3, s + 4]
    assert orjson.loads(frames[0])["data"]["prevSeqNum"] == s + 1


async def test_duplicate_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.DUPLICATE)
    assert seqs(frames) == [s + 1, s + 1, s + 2, s + 3, s + 4]


async def test_reorder_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.REORDER)
    assert seqs(frames) == [s + 2, s + 1, s + 3, s + 4]


async def test_reordered_frame_arrives_after_unsubscribe_ack(venue: BtseVenue,
                                                            session: aiohttp.ClientSession) -> None:
    client, _, s, frames = await deltas_after_fault(venue, session, Fault.REORDER, steps=1)
    assert frames == []
    await client.unsubscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "unsubscribe", "channel": [BTC_TOPIC]}
    stale = await client.recv_json()
    assert stale["data"]["type"] == "delta" and stale["data"]["seqNum"] == s + 1


async def test_malformed_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.MALFORMED)
    assert frames[0].startswith('{"topic":"update:BTC-USDT')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(frames[0])
    assert seqs(frames[1:]) == [s + 2, s + 3, s + 4]


@pytest.mark.parametrize(("side", "lock"), [("bid", False), ("bid", True), ("ask", False), ("ask", True)])
async def test_crossed_fault(venue: BtseVenue, session: aiohttp.ClientSession, side: str, lock: bool) -> None:
    _, ref, s, frames = await deltas_after_fault(venue, session, Fault.CROSSED, steps=1, side=side, lock=lock)
    (data,) = [orjson.loads(t)["data"] for t in frames]
    assert data["seqNum"] == s + 1
    ref.apply(data)
    assert ref.crossed()
    assert (max(ref.bids) == min(ref.asks)) is lock


async def test_buffer_full_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.BUFFER_FULL, steps=5, drop=3)
    assert orjson.loads(frames[0]) == {"severity": "ERROR", "errors": [
        {"arg": BTC_TOPIC, "error": {"code": 1007, "message": "User message buffer is full."}}]}
    assert seqs(frames[1:]) == [s + 4, s + 5]


async def test_stream_fault_hits_only_its_connection(venue: BtseVenue,
                                                     session: aiohttp.ClientSession) -> None:
    other, ref = await subscribed(session, venue)
    _, _, s, frames = await deltas_after_fault(venue, session, Fault.GAP)
    assert seqs(frames) == [s + 2, s + 3, s + 4]
    for data in book_frames(await other.drain_json(), BTC):
        ref.apply(data)
    assert ref.book() == truth_tuple(venue, other, BTC)


async def test_disconnect_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client, _ = await subscribed(session, venue)
    venue.inject(Fault.DISCONNECT, BTC, conn_id=client.conn_id)
    await venue.step_all(1)
    msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
    assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR), "abrupt close, no close handshake"


async def test_server_close_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client, _ = await subscribed(session, venue)
    venue.inject(Fault.SERVER_CLOSE, BTC, conn_id=client.conn_id)
    await venue.step_all(1)
    msg = await asyncio.wait_for(client.ws.receive(), TIMEOUT)
    assert msg.type == WSMsgType.CLOSE and msg.data == 1000


async def test_silent_fault(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client, _ = await subscribed(session, venue)
    venue.inject(Fault.SILENT, BTC, conn_id=client.conn_id)
    await venue.step_all(3)
    assert venue.connections[client.conn_id].silent
    await client.send("ping")
    with pytest.raises(TimeoutError):
        await client.recv(timeout=0.3)  # neither deltas nor pong
    assert not client.ws.closed


async def test_unknown_symbol_fault_on_subscribe(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    client = await Client.open(session, venue)
    venue.inject(Fault.UNKNOWN_SYMBOL, BTC)
    await client.subscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "subscribe", "channel": []}
    err = await client.recv_json()
    assert err["errors"][0]["arg"] == BTC_TOPIC and err["errors"][0]["error"]["code"] == 1000
    await client.subscribe(BTC_TOPIC)
    assert await client.recv_json() == {"event": "subscribe", "channel": [BTC_TOPIC]}
    assert (await client.recv_json())["data"]["type"] == "snapshot"


# ---------------------------------------------------------------------- REST
async def get(session: aiohttp.ClientSession, venue: BtseVenue, path: str,
              **params: object) -> tuple[int, dict, str]:
    url = venue.urls()["rest_url"] + "/api/v3.3" + path
    async with session.get(url, params={k: str(v) for k, v in params.items()}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


def quotes(levels: tuple) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(q["price"]), Decimal(q["size"])) for q in levels]


async def test_rest_l2_and_grouped_orderbook(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    await venue.step_all(10)
    truth = venue.truth(BTC)
    status, _, text = await get(session, venue, "/orderbook/L2", symbol=BTC, depth=5)
    body = orjson.loads(text)
    assert status == 200 and set(body) == {"buyQuote", "sellQuote", "timestamp", "symbol"}
    assert body["symbol"] == BTC and isinstance(body["timestamp"], int)
    assert all(isinstance(q["price"], str) and isinstance(q["size"], str) for q in body["buyQuote"])
    assert quotes(body["buyQuote"]) == list(truth.bids[:5])
    assert quotes(body["sellQuote"]) == list(reversed(truth.asks[:5])), "asks listed descending"

    status, _, text = await get(session, venue, "/orderbook", symbol=BTC, group=0, limit_bids=3, limit_asks=4)
    body = orjson.loads(text)
    assert quotes(body["buyQuote"]) == list(truth.bids[:3])
    assert quotes(body["sellQuote"]) == list(reversed(truth.asks[:4]))

    status, _, text = await get(session, venue, "/orderbook", symbol=BTC, group=1)
    body = orjson.loads(text)
    step = SYMBOLS[0].tick * 5
    expected_bids: dict[Decimal, Decimal] = {}
    for price, size in truth.bids:
        key = (price // step) * step
        expected_bids[key] = expected_bids.get(key, Decimal(0)) + size
    assert quotes(body["buyQuote"]) == sorted(expected_bids.items(), reverse=True)
    assert sum(s for _, s in quotes(body["sellQuote"])) == sum(s for _, s in truth.asks)
    assert all(p % step == 0 for p, _ in quotes(body["sellQuote"]))


async def test_rest_errors_and_snapshot_faults(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    status, _, text = await get(session, venue, "/orderbook/L2", symbol="BTCC-USD")
    assert status == 400 and orjson.loads(text)["code"] == 400
    status, _, _ = await get(session, venue, "/orderbook/L2")
    assert status == 400
    status, _, _ = await get(session, venue, "/orderbook/L2", symbol=BTC, depth="x")
    assert status == 400
    status, _, _ = await get(session, venue, "/orderbook", symbol=BTC, group=9)
    assert status == 400

    venue.inject(Fault.SNAPSHOT_429, BTC, retry_after=2)
    status, headers, text = await get(session, venue, "/orderbook/L2", symbol=BTC)
    assert status == 429 and headers["Retry-After"] == "2" and orjson.loads(text)["code"] == 429
    status, _, _ = await get(session, venue, "/orderbook/L2", symbol=BTC)
    assert status == 200

    venue.inject(Fault.UNKNOWN_SYMBOL, BTC)
    status, _, _ = await get(session, venue, "/orderbook", symbol=BTC)
    assert status == 400

    await venue.step_all(20)
    venue.inject(Fault.STALE_SNAPSHOT, BTC, steps_back=10)
    _, _, text = await get(session, venue, "/orderbook/L2", symbol=BTC)
    stale = venue.history[BTC][-11]
    assert quotes(orjson.loads(text)["buyQuote"]) == list(stale.bids)
    assert stale.bids != venue.truth(BTC).bids or stale.asks != venue.truth(BTC).asks

    venue.inject(Fault.SLOW_SNAPSHOT, BTC, delay=0.05)
    status, _, _ = await get(session, venue, "/orderbook/L2", symbol=BTC)
    assert status == 200 and venue.faults.fired["slow_snapshot"] == 1


async def test_rest_market_summary_and_time(venue: BtseVenue, session: aiohttp.ClientSession) -> None:
    status, _, text = await get(session, venue, "/market_summary")
    assert status == 200
    items = json.loads(text, parse_float=Decimal)
    assert [i["symbol"] for i in items] == [BTC, ETH]
    btc = items[0]
    assert '"minPriceIncrement":0.01,' in text  # exact decimal text, not a float rendering
    assert btc["minPriceIncrement"] == btc["minValidPrice"] == Decimal("0.01")
    assert btc["minSizeIncrement"] == btc["minOrderSize"] == Decimal("0.00001")
    assert btc["base"] == "BTC" and btc["quote"] == "USDT" and btc["active"] is True
    assert btc["futures"] is False and btc["isMarketOpenToSpot"] is True
    truth = venue.truth(BTC)
    assert btc["highestBid"] == truth.bids[0][0] and btc["lowestAsk"] == truth.asks[0][0]

    _, _, text = await get(session, venue, "/market_summary", symbol=ETH)
    assert [i["symbol"] for i in orjson.loads(text)] == [ETH]
    status, _, _ = await get(session, venue, "/market_summary", symbol="NOPE-USD")
    assert status == 400

    status, _, text = await get(session, venue, "/time")
    body = orjson.loads(text)
    assert status == 200 and body["iso"].endswith("Z") and isinstance(body["epoch"], int)
