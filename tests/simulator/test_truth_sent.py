"""``truth_sent``: the truth book at the last sequence id a venue actually wrote to one connection.

A client whose stream stopped (silent, cut, or simply not read further) must hold exactly that book,
so the mark has to follow the wire, not the market: each test here speaks a venue's protocol with a
bare aiohttp client (no project feed code), builds a reference book from the frames it received, and
checks that ``truth_sent`` has the client's last seq and the client's book.  A GAP-dropped frame must
leave the mark where it was.  The market is stepped by hand (no pump); a request whose reply comes
back on the same socket is the barrier after which every earlier frame has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import orjson
import pytest

from aggbook.proto import mexc_push_pb2 as pb
from aggbook.simulator.binance import BinanceCoinMVenue, BinanceFuturesVenue, BinanceSpotVenue, _BinanceVenue
from aggbook.simulator.bitv import BitvVenue
from aggbook.simulator.btse import BtseVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import DEFAULT_SYMBOLS, TruthBook
from aggbook.simulator.mexc import MexcVenue
from aggbook.simulator.nhex import NhexVenue
from aggbook.simulator.venue import VenueServer
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SYMBOLS = DEFAULT_SYMBOLS[:2]  # BTC-USDT, ETH-USDT
CANONICAL = "BTC-USDT"

Side = dict[Decimal, Decimal]


class RefBook:
    """Snapshot, then absolute-size updates (size 0 removes) newer than the book: every venue here."""

    def __init__(self, seq: int, bids: list, asks: list) -> None:
        self.seq = seq
        self.bids: Side = {}
        self.asks: Side = {}
        self._set(bids, asks)

    def _set(self, bids: list, asks: list) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if Decimal(size) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = Decimal(size)

    def apply(self, seq: int, bids: list, asks: list) -> None:
        if seq > self.seq:
            self._set(bids, asks)
            self.seq = seq

    def same_as(self, truth: TruthBook) -> bool:
        bids = tuple(sorted(self.bids.items(), reverse=True))
        asks = tuple(sorted(self.asks.items()))
        return (self.seq, bids, asks) == (truth.seq, truth.bids, truth.asks)


class RawClient:
    """What every venue's client here shares: a socket, a reader task, the frames as parsed objects.

    ``updates`` holds ``(seq, bids, asks)`` of every book frame received, in order; a subclass
    knows how the venue spells them, how to subscribe, fetch a snapshot and ask for a barrier reply.
    """

    def __init__(self, venue: VenueServer, session: aiohttp.ClientSession) -> None:
        self.venue, self.session = venue, session
        self.updates: list[tuple[int, list, list]] = []
        self.replies: list[dict] = []
        self.conn_id = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None
        self._barriers = 0

    async def connect(self, url: str) -> None:
        before = set(self.venue.connections)
        self.ws = await self.session.ws_connect(url)
        await wait_for(lambda: set(self.venue.connections) - before, what="server registration")
        (self.conn_id,) = set(self.venue.connections) - before
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.on_frame(msg.data)

    def on_frame(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def send(self, obj: object) -> None:
        assert self.ws is not None
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def barrier(self) -> None:
        """Send a request answered on this socket; once the answer is in, every earlier frame is."""
        self._barriers += 1
        token = self._barriers
        await self.send(self.barrier_request(token))
        await wait_for(lambda: any(self.is_barrier_reply(r, token) for r in self.replies),
                       what=f"barrier {token}")

    def barrier_request(self, token: int) -> object:
        raise NotImplementedError

    def is_barrier_reply(self, reply: dict, token: int) -> bool:
        raise NotImplementedError

    async def subscribe(self) -> None:
        raise NotImplementedError

    async def snapshot(self) -> RefBook:
        """A reference book the client's later updates apply to."""
        raise NotImplementedError

    def last_seq(self) -> int:
        assert self.updates, "no book frame received"
        return self.updates[-1][0]

    def ref_book(self, ref: RefBook) -> RefBook:
        for seq, bids, asks in self.updates:
            ref.apply(seq, bids, asks)
        return ref

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class BinanceClient(RawClient):
    """``<symbol>@depth`` on a raw stream; REST depth for the snapshot; LIST_SUBSCRIPTIONS as barrier."""

    symbol = "BTCUSDT"

    def on_frame(self, data: str | bytes) -> None:
        obj = json.loads(data)
        if obj.get("e") == "depthUpdate":
            self.updates.append((obj["u"], obj["b"], obj["a"]))
        else:
            self.replies.append(obj)

    def barrier_request(self, token: int) -> object:
        return {"method": "LIST_SUBSCRIPTIONS", "id": token}

    def is_barrier_reply(self, reply: dict, token: int) -> bool:
        return reply.get("id") == token

    @property
    def venue_symbol(self) -> str:
        return self.venue.resolve_symbol("BTC-USDT")  # BTCUSDT; COIN-M BTCUSD_PERP

    async def subscribe(self) -> None:
        assert isinstance(self.venue, _BinanceVenue)
        prefix = self.venue.endpoint.ws_url_path
        await self.connect(self.venue.base_url.replace("http://", "ws://")
                           + f"{prefix}/ws/{self.venue_symbol.lower()}@depth")

    async def snapshot(self) -> RefBook:
        assert isinstance(self.venue, _BinanceVenue)
        url = f"{self.venue.base_url}{self.venue.endpoint.rest_prefix}/depth"
        async with self.session.get(f"{url}?symbol={self.venue_symbol}&limit=1000") as resp:
            body = await resp.json()
        return RefBook(body["lastUpdateId"], body["bids"], body["asks"])


class MexcClient(RawClient):
    """The aggregated protobuf diff channel; REST depth for the snapshot; PING/PONG as barrier."""

    symbol = "BTCUSDT"
    channel = "spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT"

    def on_frame(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.replies.append(orjson.loads(data))
            return
        wrapper = pb.PushDataV3ApiWrapper.FromString(data)
        if wrapper.WhichOneof("body") == "publicAggreDepths":
            body = wrapper.publicAggreDepths
            self.updates.append((int(body.toVersion), [(b.price, b.quantity) for b in body.bids],
                                 [(a.price, a.quantity) for a in body.asks]))

    def barrier_request(self, token: int) -> object:
        return {"method": "PING"}

    def is_barrier_reply(self, reply: dict, token: int) -> bool:
        return sum(r.get("msg") == "PONG" for r in self.replies) >= token

    async def subscribe(self) -> None:
        await self.connect(self.venue.urls()["ws_url"])
        await self.send({"method": "SUBSCRIPTION", "params": [self.channel]})
        await wait_for(lambda: any(r.get("msg") == self.channel for r in self.replies), what="MEXC ack")

    async def snapshot(self) -> RefBook:
        url = f"{self.venue.base_url}/api/v3/depth?symbol={self.symbol}&limit=1000"
        async with self.session.get(url) as resp:
            body = await resp.json()
        return RefBook(body["lastUpdateId"], body["bids"], body["asks"])


class BtseClient(RawClient):
    """``update:BTC-USDT_0``: its own snapshot frame starts the book; ``ping``/``pong`` as barrier."""

    symbol = "BTC-USDT"

    def __init__(self, venue: VenueServer, session: aiohttp.ClientSession) -> None:
        super().__init__(venue, session)
        self.snapshots: list[RefBook] = []

    def on_frame(self, data: str | bytes) -> None:
        if data == "pong":
            self.replies.append({"pong": True})
            return
        obj = orjson.loads(data)
        book = obj.get("data") if isinstance(obj, dict) else None
        if isinstance(book, dict) and book.get("type") == "snapshot":
            self.snapshots.append(RefBook(book["seqNum"], book["bids"], book["asks"]))
            self.updates.append((book["seqNum"], [], []))
        elif isinstance(book, dict) and book.get("type") == "delta":
            self.updates.append((book["seqNum"], book["bids"], book["asks"]))
        else:
            self.replies.append(obj)

    def barrier_request(self, token: int) -> object:
        return "ping"

    def is_barrier_reply(self, reply: dict, token: int) -> bool:
        return sum("pong" in r for r in self.replies) >= token

    async def subscribe(self) -> None:
        await self.connect(self.venue.urls()["ws_url"])
        await self.send({"op": "subscribe", "args": [f"update:{self.symbol}_0"]})
        await wait_for(lambda: self.snapshots, what="BTSE snapshot")

    async def snapshot(self) -> RefBook:
        first = self.snapshots[-1]
        return RefBook(first.seq, list(first.bids.items()), list(first.asks.items()))

    def ref_book(self, ref: RefBook) -> RefBook:
        # only the deltas after the latest snapshot frame belong to the book it started
        start = max(i for i, (seq, _, _) in enumerate(self.updates) if seq == ref.seq)
        for seq, bids, asks in self.updates[start + 1:]:
            ref.apply(seq, bids, asks)
        return ref


class GzipMbpClient(RawClient):
    """``market.btcusdt.mbp.150`` on ``/feed``; a ``req`` for the snapshot; ping/pong as barrier."""

    symbol = "btcusdt"
    levels = 150

    @property
    def topic(self) -> str:
        return f"market.{self.symbol}.mbp.{self.levels}"

    def on_frame(self, data: str | bytes) -> None:
        assert isinstance(data, bytes)
        obj = json.loads(gzip.decompress(data), parse_float=Decimal)
        if "tick" in obj:
            tick = obj["tick"]
            self.updates.append((tick["seqNum"], tick.get("bids", []), tick.get("asks", [])))
        else:
            self.replies.append(obj)

    def barrier_request(self, token: int) -> object:
        return {"ping": token}  # the old Huobi client ping, answered {"pong": token} on the same queue

    def is_barrier_reply(self, reply: dict, token: int) -> bool:
        return reply.get("pong") == token

    async def subscribe(self) -> None:
        await self.connect(self.venue.urls()["ws_url"])
        await self.send({"sub": self.topic, "id": "sub"})
        await wait_for(lambda: any(r.get("id") == "sub" for r in self.replies), what="Huobi sub ack")

    async def snapshot(self) -> RefBook:
        await self.send({"req": self.topic, "id": "req"})
        await wait_for(lambda: any(r.get("id") == "req" for r in self.replies), what="Huobi req reply")
        data = next(r for r in self.replies if r.get("id") == "req")["data"]
        return RefBook(data["seqNum"], data["bids"], data["asks"])


# NHEX/BitV with the timer pushes and pings off and no req spacing: only what a test writes is sent
MBP_QUIET = {"mbp_interval": None, "ping_interval": 60.0, "req_min_interval": 0.0}

VENUES: dict[str, tuple[type[VenueServer], type[RawClient], dict]] = {
    "binance": (BinanceSpotVenue, BinanceClient, {"max_incoming_per_sec": 1000}),
    "binance-futures": (BinanceFuturesVenue, BinanceClient, {"max_incoming_per_sec": 1000}),
    "binance-coinm": (BinanceCoinMVenue, BinanceClient, {"max_incoming_per_sec": 1000}),
    "mexc": (MexcVenue, MexcClient, {"empty_push_probability": 0.0}),
    "btse": (BtseVenue, BtseClient, {}),
    "nhex": (NhexVenue, GzipMbpClient, MBP_QUIET),
    "bitv": (BitvVenue, GzipMbpClient, MBP_QUIET),
}



@contextlib.asynccontextmanager
async def running(name: str, **extra: object) -> AsyncIterator[VenueServer]:
    cls, _, kwargs = VENUES[name]
    venue = cls(SYMBOLS, seed=3, autostart_pump=False, **{**kwargs, **extra})
    await venue.start()
    venue.pause()  # no market event but the ones the test steps itself
    try:
        yield venue
    finally:
        await venue.stop()


async def advance(venue: VenueServer) -> None:
    """One book event for BTC-USDT: market steps until its seq moves (plus the mbp.150 timer push)."""
    before = venue.current_seq(CANONICAL)
    for _ in range(1000):
        await venue.step_all(1)
        if isinstance(venue, GzipMbpVenue):
            await venue.interval_tick()
        if venue.current_seq(CANONICAL) != before:
            return
    raise AssertionError("the market produced no event")


def wire_seq_now(venue: VenueServer, client: RawClient) -> int:
    """The current truth's seq as this connection's frames spell it."""
    if isinstance(venue, BtseVenue):
        return venue.truth_seq_for(client.conn_id, CANONICAL)
    return venue.current_seq(CANONICAL)


@pytest.mark.parametrize("name", list(VENUES))
async def test_truth_sent_follows_the_wire_and_a_gap_does_not_move_it(
        name: str, session: aiohttp.ClientSession) -> None:
    async with running(name) as venue:
        client = VENUES[name][1](venue, session)
        await client.subscribe()
        ref = await client.snapshot()
        for _ in range(6):
            await advance(venue)
        await client.barrier()

        sent = venue.truth_sent(client.conn_id, CANONICAL)
        assert sent.seq == client.last_seq() == wire_seq_now(venue, client)
        assert client.ref_book(ref).same_as(sent), "the truth at the mark is the book the client holds"
        if not isinstance(venue, BtseVenue):  # BTSE answers in its subscription's seq space
            assert sent == venue.truth_at(CANONICAL, sent.seq)
        assert venue.truth_sent(client.conn_id, CANONICAL, depth=3) == sent.top(3)

        # a GAP-dropped frame was never written: the mark stays at the last frame received
        venue.inject(Fault.GAP, CANONICAL, conn_id=client.conn_id)
        received = len(client.updates)
        await advance(venue)
        await client.barrier()
        assert venue.faults.pending(Fault.GAP) == 0
        assert len(client.updates) == received
        assert wire_seq_now(venue, client) != sent.seq, "the market moved on"
        assert venue.truth_sent(client.conn_id, CANONICAL) == sent

        # the next frame goes out, and the mark follows it past the hole
        await advance(venue)
        await client.barrier()
        after = venue.truth_sent(client.conn_id, CANONICAL)
        assert after.seq == client.last_seq() == wire_seq_now(venue, client) != sent.seq
        if isinstance(venue, BtseVenue):
            assert after == venue.truth_for(client.conn_id, CANONICAL)
        else:
            assert after == venue.truth_at(CANONICAL, after.seq) == venue.truth(CANONICAL)
        await client.close()


@pytest.mark.parametrize("name", ["binance", "mexc", "btse", "nhex"])
async def test_a_held_reordered_frame_counts_once_written(name: str, session: aiohttp.ClientSession) -> None:
    async with running(name) as venue:
        client = VENUES[name][1](venue, session)
        await client.subscribe()
        await advance(venue)
        await client.barrier()
        first = venue.truth_sent(client.conn_id, CANONICAL)
        venue.inject(Fault.REORDER, CANONICAL, conn_id=client.conn_id)
        await advance(venue)  # held back: nothing new written yet
        await client.barrier()
        assert venue.truth_sent(client.conn_id, CANONICAL) == first == TruthBook(
            client.last_seq(), first.bids, first.asks)
        await advance(venue)  # the next frame, then the held one, older: the mark is the newest
        await client.barrier()
        assert [seq for seq, _, _ in client.updates[-2:]][0] > client.updates[-1][0]
        newest = max(seq for seq, _, _ in client.updates)
        assert venue.truth_sent(client.conn_id, CANONICAL).seq == newest == wire_seq_now(venue, client)
        await client.close()


async def test_btse_snapshot_frames_set_the_mark_in_each_subscriptions_seq_space(
        session: aiohttp.ClientSession) -> None:
    async with running("btse") as venue:
        assert isinstance(venue, BtseVenue)
        client = BtseClient(venue, session)
        await client.subscribe()  # before any market step: the history holds nothing yet
        sent = venue.truth_sent(client.conn_id, CANONICAL)
        assert sent == venue.truth_for(client.conn_id, CANONICAL)
        assert (await client.snapshot()).same_as(sent) and sent.seq == client.last_seq()
        await advance(venue)
        await client.barrier()
        old_space = venue.truth_sent(client.conn_id, CANONICAL).seq
        await client.send({"op": "subscribe", "args": ["update:BTC-USDT_0"]})  # a fresh seq base
        await wait_for(lambda: len(client.snapshots) == 2, what="the second snapshot")
        resent = venue.truth_sent(client.conn_id, CANONICAL)
        assert resent.seq == client.snapshots[-1].seq == client.last_seq() != old_space
        assert client.snapshots[-1].same_as(resent)
        await client.close()


@pytest.mark.parametrize("cls", [NhexVenue, BitvVenue], ids=lambda c: c.name)
async def test_gzip_mbp_marks_are_per_topic(cls: type[GzipMbpVenue], session: aiohttp.ClientSession) -> None:
    async with running(cls.name) as venue:
        assert isinstance(venue, GzipMbpVenue)
        client = GzipMbpClient(venue, session)
        await client.subscribe()  # mbp.150
        await client.send({"sub": "market.btcusdt.mbp.5", "id": "sub5"})
        await wait_for(lambda: any(r.get("id") == "sub5" for r in client.replies), what="mbp.5 ack")
        for _ in range(5):
            await advance(venue)
        await client.barrier()
        received = {"5": 0, "150": 0}
        for seq, _, _ in client.updates:  # the two chains are unrelated: sort by which topic has it
            for levels in (5, 150):
                if any(b.seq == seq for b in venue.topic(CANONICAL, levels).history):
                    received[str(levels)] = max(received[str(levels)], seq)
        five = venue.truth_sent(client.conn_id, CANONICAL, levels=5)
        assert five == venue.topic_truth(CANONICAL, 5) and five.seq == received["5"]
        default = venue.truth_sent(client.conn_id, CANONICAL)  # several topics: mbp.150, the default
        assert default == venue.topic_truth(CANONICAL, 150) and default.seq == received["150"]
        with pytest.raises(KeyError):
            venue.truth_sent(client.conn_id, CANONICAL, levels=20)  # subscribed to nothing there
        await client.close()


async def test_gzip_mbp_a_push_still_queued_when_the_socket_went_silent_was_not_sent(
        session: aiohttp.ClientSession) -> None:
    """NHEX/BitV write through a per-connection queue: the mark moves at the write, not at the enqueue."""
    async with running("nhex") as venue:
        assert isinstance(venue, GzipMbpVenue)
        client = GzipMbpClient(venue, session)
        await client.subscribe()
        await advance(venue)
        await client.barrier()
        sent = venue.truth_sent(client.conn_id, CANONICAL)
        assert sent.seq == client.last_seq()
        conn = venue.connections[client.conn_id]
        await venue.interval_tick()  # enqueues an mbp.150 push; nothing here yields to the writer
        assert not conn.state["outq"].empty() and venue.topic_seq(CANONICAL, 150) != sent.seq
        conn.silent = True  # what a SILENT fault sets: from now on the writer swallows every frame
        await wait_for(lambda: conn.state["outq"].empty(), what="the writer drained its queue")
        assert venue.truth_sent(client.conn_id, CANONICAL) == sent
        await client.close()


async def test_mexc_first_diff_of_a_two_diff_step_reads_the_steps_book(
        session: aiohttp.ClientSession) -> None:
    """A step that also pushes an empty diff: the first diff's toVersion is not a history entry."""
    async with running("mexc", empty_push_probability=1.0) as venue:
        assert isinstance(venue, MexcVenue)
        client = MexcClient(venue, session)
        await client.subscribe()
        await advance(venue)
        await client.barrier()
        first_to, last_to = client.updates[-2][0], client.updates[-1][0]
        assert first_to < last_to == venue.truth_sent(client.conn_id, CANONICAL).seq
        conn = venue.sent_connection(client.conn_id)
        conn.sent[venue.resolve_symbol(CANONICAL)] = first_to  # as if the empty diff had been dropped
        book = venue.truth_sent(client.conn_id, CANONICAL)
        assert (book.bids, book.asks) == (venue.truth(CANONICAL).bids, venue.truth(CANONICAL).asks)
        await client.close()


async def test_http_truth_at_the_last_seq_sent_on_a_connection(session: aiohttp.ClientSession) -> None:
    async with running("binance", history_len=4) as venue:
        base = venue.base_url
        async with session.get(f"{base}/_sim/") as resp:
            endpoints = (await resp.json())["endpoints"]
        assert any("conn=" in route for route in endpoints)

        client = BinanceClient(venue, session)
        await client.subscribe()

        async def truth(query: str) -> tuple[int, dict]:
            async with session.get(f"{base}/_sim/truth/{CANONICAL}?{query}") as resp:
                assert resp.content_type == "application/json"
                return resp.status, await resp.json()

        status, body = await truth(f"conn={client.conn_id}")
        assert status == 404 and "nothing" in body["error"]  # connected, but no frame sent yet
        await advance(venue)
        await client.barrier()
        status, body = await truth(f"conn={client.conn_id}&depth=2")
        sent = venue.truth_sent(client.conn_id, CANONICAL, depth=2)
        market = venue.markets["BTCUSDT"]
        assert status == 200 and body == {
            "venue": venue.name, "seq": client.last_seq(), "conn": client.conn_id,
            "bids": [[market.fmt_price(p), market.fmt_size(s)] for p, s in sent.bids],
            "asks": [[market.fmt_price(p), market.fmt_size(s)] for p, s in sent.asks]}

        # a SILENT connection is sent nothing more: the mark stays while the market moves on
        venue.inject(Fault.SILENT, CANONICAL, conn_id=client.conn_id)
        await advance(venue)
        assert venue.connections[client.conn_id].silent
        assert (await truth(f"conn={client.conn_id}"))[1]["seq"] == client.last_seq()
        for _ in range(5):  # ... until the mark falls out of the 4 books kept
            await advance(venue)
        status, body = await truth(f"conn={client.conn_id}")
        assert status == 404 and "no truth kept" in body["error"]

        for query, expected in (("conn=abc", 400), (f"conn={client.conn_id}&seq=1", 400),
                                (f"conn={client.conn_id}&levels=5", 400), ("levels=5", 400),
                                ("conn=987654", 404)):
            assert (await truth(query))[0] == expected, query
        await client.close()


async def test_the_mark_outlives_the_connection(session: aiohttp.ClientSession) -> None:
    async with running("btse") as venue:
        client = BtseClient(venue, session)
        await client.subscribe()
        await advance(venue)
        await client.barrier()
        sent = venue.truth_sent(client.conn_id, CANONICAL)
        await client.close()
        await wait_for(lambda: client.conn_id not in venue.connections, what="server-side close")
        assert venue.truth_sent(client.conn_id, CANONICAL) == sent
        async with session.get(f"{venue.base_url}/_sim/truth/{CANONICAL}?conn={client.conn_id}") as resp:
            assert resp.status == 200 and (await resp.json())["seq"] == sent.seq == client.last_seq()
