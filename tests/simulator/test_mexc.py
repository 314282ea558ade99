"""Conformance of the simulated MEXC Spot v3 venue, spoken to with a raw aiohttp client.

The client here is written from MEXC's Spot v3 documentation alone (text JSON control frames, binary
protobuf data frames decoded with ``proto.mexc_push_pb2``, REST snapshot) and keeps a tiny reference
book built with MEXC's "How to Properly Maintain a Local Copy of the Order Book" algorithm, so a
passing test shows that snapshot + diffs reproduce ``venue.truth()`` exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import orjson
import pytest
from google.protobuf.message import DecodeError

from aggbook.proto import mexc_push_pb2 as pb
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import DEFAULT_SYMBOLS, TruthBook
from aggbook.simulator.mexc import KLINE_INTERVALS, MexcVenue

SYM = "BTCUSDT"
OTHER = "ETHUSDT"
DEPTH = f"spot@public.aggre.depth.v3.api.pb@100ms@{SYM}"
DEPTH_10MS = f"spot@public.aggre.depth.v3.api.pb@10ms@{SYM}"
BARRIER = f"spot@public.limit.depth.v3.api.pb@{OTHER}@5"  # published after SYM in every step
REJECT = "Not Subscribed successfully! [{}].  Reason\uff1a Blocked! "


# ---------------------------------------------------------------------- helpers
async def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll every 10 ms until ``cond()`` is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Client:
    """A raw MEXC WebSocket client: dispatches on the frame opcode, never on content."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, conn_id: int) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.texts: list[dict] = []
        self.binaries: list[bytes] = []
        self.closed = False
        self.close_code: int | None = None
        self._diff_cursor = 0
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.texts.append(orjson.loads(msg.data))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self.binaries.append(msg.data)
        self.close_code = self.ws.close_code
        self.closed = True

    async def send(self, obj: object) -> None:
        await self.ws.send_str(orjson.dumps(obj).decode())

    async def request(self, obj: object) -> dict:
        """Send a command and return the next text reply."""
        seen = len(self.texts)
        await self.send(obj)
        await wait_for(lambda: len(self.texts) > seen, what=f"reply to {obj}")
        return self.texts[seen]

    async def subscribe(self, *channels: str) -> dict:
        return await self.request({"method": "SUBSCRIPTION", "params": list(channels)})

    def wrappers(self) -> list[pb.PushDataV3ApiWrapper | None]:
        """Every binary frame decoded; None for a frame that does not parse."""
        out: list[pb.PushDataV3ApiWrapper | None] = []
        for data in self.binaries:
            try:
                out.append(pb.PushDataV3ApiWrapper.FromString(data))
            except DecodeError:
                out.append(None)
        return out

    def on(self, channel: str) -> list[pb.PushDataV3ApiWrapper]:
        return [w for w in self.wrappers() if w is not None and w.channel == channel]

    def diffs(self, channel: str = DEPTH) -> list[pb.PublicAggreDepthsV3Api]:
        return [w.publicAggreDepths for w in self.on(channel) if w.WhichOneof("body") == "publicAggreDepths"]

    def new_diffs(self, channel: str = DEPTH) -> list[pb.PublicAggreDepthsV3Api]:
        diffs = self.diffs(channel)
        fresh, self._diff_cursor = diffs[self._diff_cursor:], len(diffs)
        return fresh

    def last_to(self, channel: str = DEPTH) -> int | None:
        diffs = self.diffs(channel)
        return int(diffs[-1].toVersion) if diffs else None

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def connect(venue: MexcVenue, session: aiohttp.ClientSession) -> Client:
    before = set(venue.connections)
    ws = await session.ws_connect(venue.urls()["ws_url"])
    await wait_for(lambda: set(venue.connections) - before, what="server-side connection")
    (conn_id,) = set(venue.connections) - before
    return Client(ws, conn_id)


async def get(session: aiohttp.ClientSession, venue: MexcVenue, path: str) -> tuple[int, dict, dict]:
    async with session.get(venue.urls()["rest_url"] + path) as resp:
        return resp.status, dict(resp.headers), orjson.loads(await resp.read())


async def snapshot(session: aiohttp.ClientSession, venue: MexcVenue, symbol: str = SYM) -> dict:
    status, _, body = await get(session, venue, f"/api/v3/depth?symbol={symbol}&limit=5000")
    assert status == 200, body
    return body


class RefBook:
    """MEXC's "How to Properly Maintain a Local Copy of the Order Book", as small as it can be."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.buf: list[pb.PublicAggreDepthsV3Api] = []
        self.local = 0
        self.live = False
        self.first = True
        self.resyncs = 0
        self.duplicates = 0

    def feed(self, diffs: list[pb.PublicAggreDepthsV3Api]) -> None:
        for diff in diffs:
            if self.live:
                self._apply_live(diff)
            else:
                self.buf.append(diff)

    def on_snapshot(self, snap: dict) -> bool:
        """Load the snapshot; False = too old (``L < F - 1``), fetch again."""
        last = int(snap["lastUpdateId"])
        if self.buf and last < int(self.buf[0].fromVersion) - 1:
            return False
        self.bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
        self.asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
        self.local, self.live, self.first = last, True, True
        pending, self.buf = [d for d in self.buf if int(d.toVersion) > last], []
        for diff in pending:
            if not self.live:
                break
            self._apply_live(diff)
        return True

    def _apply_live(self, diff: pb.PublicAggreDepthsV3Api) -> None:
        start, end = int(diff.fromVersion), int(diff.toVersion)
        if end <= self.local:
            self.duplicates += 1
            return
        ok = start <= self.local + 1 if self.first else start == self.local + 1
        if not ok:
            self.live, self.buf, self.bids, self.asks = False, [], {}, {}
            self.resyncs += 1
            return
        for side, levels in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for level in levels:
                price, qty = Decimal(level.price), Decimal(level.quantity)
                if qty == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.local, self.first = end, False

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def book(self) -> TruthBook:
        return TruthBook(
            self.local,
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )


def contiguous(diffs: list[pb.PublicAggreDepthsV3Api]) -> bool:
    return all(int(b.fromVersion) == int(a.toVersion) + 1 for a, b in zip(diffs, diffs[1:], strict=False))


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
async def venue() -> AsyncIterator[MexcVenue]:
    v = MexcVenue(DEFAULT_SYMBOLS[:2], seed=7, autostart_pump=False)
    await v.start()
    yield v
    await v.stop()



async def settle(venue: MexcVenue, *clients: Client, channel: str = DEPTH) -> None:
    """Wait until every client has the diff that brings it to the venue's current version."""
    for client in clients:
        await wait_for(lambda c=client: c.last_to(channel) == venue.current_seq(SYM), what="latest diff")


# ---------------------------------------------------------------------- frames and control
async def test_urls_point_at_ws_path(venue: MexcVenue) -> None:
    urls = venue.urls()
    assert urls["rest_url"] == f"http://127.0.0.1:{venue.port}"
    assert urls["ws_url"] == f"ws://127.0.0.1:{venue.port}/ws"


async def test_control_is_text_and_data_is_binary(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    client = await connect(venue, session)
    assert await client.subscribe(DEPTH) == {"id": 0, "code": 0, "msg": DEPTH}
    assert await client.request({"method": "PING"}) == {"id": 0, "code": 0, "msg": "PONG"}
    assert client.binaries == []
    await venue.step_all(3)
    await settle(venue, client)
    assert all(isinstance(b, bytes) for b in client.binaries)
    assert len(client.texts) == 2  # data never arrives as text
    assert await client.request({"method": "UNSUBSCRIPTION", "params": [DEPTH]}) == {
        "id": 0, "code": 0, "msg": DEPTH,
    }
    await client.subscribe(BARRIER)
    seen = len(client.diffs())
    await venue.step_all(1)
    await wait_for(lambda: client.on(BARRIER), what="barrier frame")
    assert len(client.diffs()) == seen  # unsubscribed: nothing more for SYM
    await client.close()


async def test_diff_frames_follow_the_schema_and_version_rule(venue: MexcVenue,
                                                              session: aiohttp.ClientSession) -> None:
    client = await connect(venue, session)
    await client.subscribe(DEPTH)
    await venue.step_all(60)
    await settle(venue, client)
    wrappers = client.on(DEPTH)
    assert wrappers and len(wrappers) == len(client.binaries)
    for w in wrappers:
        assert w.WhichOneof("body") == "publicAggreDepths"
        assert w.symbol == SYM and w.symbolId and w.sendTime > 1_600_000_000_000
        body = w.publicAggreDepths
        assert body.eventType == "spot@public.aggre.depth.v3.api.pb@100ms"
        assert body.fromVersion.isdigit() and body.toVersion.isdigit()
        assert int(body.toVersion) >= int(body.fromVersion) > 2**32
        assert body.lastOrderCreateTime == 0  # not in MEXC's documented frame: off by default
        for level in [*body.bids, *body.asks]:
            assert Decimal(level.price) > 0 and Decimal(level.quantity) >= 0
    diffs = client.diffs()
    assert contiguous(diffs)
    assert any(int(d.toVersion) > int(d.fromVersion) for d in diffs), "no multi-version push"
    assert any(not d.bids and not d.asks for d in diffs), "no empty push"
    assert any(Decimal(lv.quantity) == 0 for d in diffs for lv in [*d.bids, *d.asks]), "no removal"
    await client.close()


async def test_snapshot_plus_diffs_reproduce_truth(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    client = await connect(venue, session)
    await client.subscribe(DEPTH)
    ref = RefBook()
    await venue.step_all(5)
    await settle(venue, client)
    ref.feed(client.new_diffs())
    snap = await snapshot(session, venue)
    assert isinstance(snap["lastUpdateId"], int) and snap["lastUpdateId"] == venue.current_seq(SYM)
    assert ref.on_snapshot(snap)
    await venue.step_all(30)
    await settle(venue, client)
    ref.feed(client.new_diffs())
    assert ref.live and ref.resyncs == 0
    assert ref.book() == venue.truth(SYM)
    await client.close()


async def test_snapshot_inside_the_buffered_range(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    """An older snapshot still covered by the buffer: diffs with toVersion <= L are dropped."""
    client = await connect(venue, session)
    await client.subscribe(DEPTH)
    await venue.step_all(8)
    await settle(venue, client)
    ref = RefBook()
    ref.feed(client.new_diffs())
    venue.inject(Fault.STALE_SNAPSHOT, SYM, steps_back=3)
    snap = await snapshot(session, venue)
    first_from = int(client.diffs()[0].fromVersion)
    assert first_from - 1 <= snap["lastUpdateId"] < venue.current_seq(SYM)
    assert ref.on_snapshot(snap)
    assert ref.book() == venue.truth(SYM)
    await client.close()


async def test_sync_while_the_pump_runs(session: aiohttp.ClientSession) -> None:
    venue = MexcVenue(DEFAULT_SYMBOLS[:1], seed=3, rate=200.0)
    await venue.start()
    try:
        client = await connect(venue, session)
        await client.subscribe(DEPTH_10MS)
        await wait_for(lambda: len(client.diffs(DEPTH_10MS)) >= 3, what="buffered diffs")
        ref = RefBook()
        ref.feed(client.new_diffs(DEPTH_10MS))
        assert ref.on_snapshot(await snapshot(session, venue))
        await wait_for(lambda: len(client.diffs(DEPTH_10MS)) >= 40, what="live diffs")
        venue.pause()
        await settle(venue, client, channel=DEPTH_10MS)
        ref.feed(client.new_diffs(DEPTH_10MS))
        assert ref.live
        assert ref.book() == venue.truth(SYM)
        await client.close()
    finally:
        await venue.stop()


async def test_multi_channel_ack_and_rejections(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    client = await connect(venue, session)
    both = [DEPTH, BARRIER]
    reply = await client.subscribe(*both)
    assert reply["id"] == 0 and reply["code"] == 0
    assert set(reply["msg"].split(",")) == set(both)
    for bad in (
        "spot@public.aggre.depth.v3.api.pb@100ms@btcusdt",  # lowercase symbol
        "spot@public.increase.depth.v3.api@BTCUSDT",  # retired JSON channel (no .pb)
        "spot@public.aggre.depth.v3.api.pb@100ms@NOPEUSDT",  # unknown symbol
        "spot@public.limit.depth.v3.api.pb@BTCUSDT@7",  # no such level count
    ):
        assert await client.subscribe(bad) == {"id": 0, "code": 0, "msg": REJECT.format(bad)}
    assert set(venue.connections[client.conn_id].subscriptions) == set(both)
    await client.close()


async def test_malformed_commands_get_no_reply_and_keep_the_socket(venue: MexcVenue,
                                                                   session: aiohttp.ClientSession) -> None:
    """MEXC documents no error frame for a bad command: it is ignored and the socket stays usable."""
    client = await connect(venue, session)
    for bad in ('{"method":"SUBSCRIPTION","params":["spot@public.aggre', "not json", "[1, 2]",
                '{"method":"NOPE"}'):
        await client.ws.send_str(bad)
    # the next text frame answers the PING: none of the bad commands produced a reply
    assert await client.request({"method": "PING"}) == {"id": 0, "code": 0, "msg": "PONG"}
    assert len(client.texts) == 1 and client.conn_id in venue.connections
    status, _, body = await get(session, venue, f"/api/v3/depth?symbol={SYM}&limit=abc")
    assert (status, body["code"]) == (400, -1100)
    await client.close()


async def test_31st_subscription_is_silently_invalid(venue: MexcVenue,
                                                     session: aiohttp.ClientSession) -> None:
    channels: list[str] = []
    for sym in (SYM, OTHER):
        channels += [f"spot@public.limit.depth.v3.api.pb@{sym}@{n}" for n in (5, 10, 20)]
        channels += [f"spot@public.aggre.depth.v3.api.pb@{i}@{sym}" for i in ("100ms", "10ms")]
        channels += [f"spot@public.aggre.bookTicker.v3.api.pb@{i}@{sym}" for i in ("100ms", "10ms")]
        channels += [f"spot@public.aggre.deals.v3.api.pb@{i}@{sym}" for i in ("100ms", "10ms")]
        channels += [f"spot@public.bookTicker.batch.v3.api.pb@{sym}"]
        channels += [f"spot@public.kline.v3.api.pb@{sym}@{k}" for k in KLINE_INTERVALS]
    extra = f"spot@public.limit.depth.v3.api.pb@{OTHER}@20"
    first30 = [c for c in channels if c != extra][:30]
    assert BARRIER in first30 and len(first30) == 30
    client = await connect(venue, session)
    reply = await client.subscribe(*first30)
    assert set(reply["msg"].split(",")) == set(first30)
    reply = await client.subscribe(extra)
    assert reply["code"] == 0 and reply["msg"] != extra  # the ack does not match: not subscribed
    await venue.step_all(1)
    await wait_for(lambda: client.on(BARRIER), what="barrier frame")
    assert client.on(extra) == []
    await client.close()


async def test_limit_depth_tickers_and_deals(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    limits = {n: f"spot@public.limit.depth.v3.api.pb@{SYM}@{n}" for n in (5, 10, 20)}
    ticker = f"spot@public.aggre.bookTicker.v3.api.pb@100ms@{SYM}"
    batch = f"spot@public.bookTicker.batch.v3.api.pb@{SYM}"
    deals = f"spot@public.aggre.deals.v3.api.pb@100ms@{SYM}"
    client = await connect(venue, session)
    await client.subscribe(*limits.values(), ticker, batch, deals, BARRIER)
    for _ in range(3):
        await venue.step_all(1)
        await wait_for(lambda: client.on(BARRIER) and client.on(limits[20])
                       and client.on(limits[20])[-1].publicLimitDepths.version == str(venue.current_seq(SYM)),
                       what="limit depth at the current version")
        truth = venue.truth(SYM)
        for n, channel in limits.items():
            frame = client.on(channel)[-1]
            assert frame.WhichOneof("body") == "publicLimitDepths"
            body = frame.publicLimitDepths
            assert body.eventType == "spot@public.limit.depth.v3.api.pb"
            assert len(body.bids) == len(body.asks) == n
            got = (tuple((Decimal(x.price), Decimal(x.quantity)) for x in body.bids),
                   tuple((Decimal(x.price), Decimal(x.quantity)) for x in body.asks))
            assert got == (truth.bids[:n], truth.asks[:n])
        best = (truth.bids[0][0], truth.bids[0][1], truth.asks[0][0], truth.asks[0][1])
        top = client.on(ticker)[-1].publicAggreBookTicker
        assert tuple(map(Decimal, (top.bidPrice, top.bidQuantity, top.askPrice, top.askQuantity))) == best
        assert top.version == "" and not client.on(batch)[-1].publicBookTickerBatch.version  # as documented
        item = client.on(batch)[-1].publicBookTickerBatch.items[-1]
        assert tuple(map(Decimal, (item.bidPrice, item.bidQuantity, item.askPrice, item.askQuantity))) == best
    await venue.step_all(40)
    await wait_for(lambda: client.on(deals), what="a deals push")
    body = client.on(deals)[0].publicAggreDeals
    assert body.eventType == "spot@public.aggre.deals.v3.api.pb@100ms"
    assert body.deals
    assert all(d.tradeType in (1, 2) and Decimal(d.quantity) > 0 and not d.tradeId for d in body.deals)
    await client.close()


async def test_schema_drift_and_string_snapshot_id(session: aiohttp.ClientSession) -> None:
    venue = MexcVenue(DEFAULT_SYMBOLS[:1], seed=5, autostart_pump=False, unknown_fields=True,
                      fields_2026=True, snapshot_id_as_string=True)
    await venue.start()
    try:
        kline = f"spot@public.kline.v3.api.pb@{SYM}@Min15"
        client = await connect(venue, session)
        await client.subscribe(DEPTH, kline)
        await venue.step_all(3)
        await wait_for(lambda: len(client.on(kline)) == 3, what="kline frames")
        for w in client.on(kline):
            assert w.WhichOneof("body") is None  # member 308 is not declared: skipped
            assert w.symbol == SYM
        for data, w in zip(client.binaries, client.wrappers(), strict=True):
            assert w is not None and b"\x98\x06\x01" in data  # unknown field #99 tolerated
        assert all(d.lastOrderCreateTime > 0 for d in client.diffs())  # 2026-06 field tolerated
        ref = RefBook()
        ref.feed(client.new_diffs())
        snap = await snapshot(session, venue)
        assert isinstance(snap["lastUpdateId"], str)
        assert ref.on_snapshot(snap) and ref.book() == venue.truth(SYM)
        await client.close()
    finally:
        await venue.stop()


# ---------------------------------------------------------------------- REST
async def test_rest_depth_and_exchange_info(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    status, _, body = await get(session, venue, f"/api/v3/depth?symbol={SYM}&limit=5")
    assert status == 200 and len(body["bids"]) == len(body["asks"]) == 5
    assert all(isinstance(p, str) and isinstance(q, str) for p, q in body["bids"] + body["asks"])
    truth = venue.truth(SYM)
    assert [[Decimal(p), Decimal(q)] for p, q in body["bids"]] == [list(x) for x in truth.bids[:5]]
    status, _, body = await get(session, venue, f"/api/v3/depth?symbol={SYM}")
    assert status == 200 and len(body["bids"]) == min(100, len(truth.bids))
    for bad in ("NOPEUSDT", "btcusdt"):
        status, _, body = await get(session, venue, f"/api/v3/depth?symbol={bad}")
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, _, body = await get(session, venue, "/api/v3/depth")
    assert status == 400
    status, _, info = await get(session, venue, "/api/v3/exchangeInfo")
    assert status == 200
    by_symbol = {s["symbol"]: s for s in info["symbols"]}
    assert set(by_symbol) == {SYM, OTHER}
    btc = by_symbol[SYM]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["quotePrecision"], btc["baseAssetPrecision"]) == (
        "BTC", "USDT", 2, 6,
    )
    assert btc["baseSizePrecision"] == "0.000001" == str(venue.specs[SYM].lot)  # the lot its book is on
    assert btc["status"] == "1" and isinstance(btc["filters"], list)
    status, _, info = await get(session, venue, f"/api/v3/exchangeInfo?symbol={OTHER}")
    assert [s["symbol"] for s in info["symbols"]] == [OTHER]
    status, _, body = await get(session, venue, "/api/v3/exchangeInfo?symbol=NOPEUSDT")
    assert (status, body["code"]) == (400, -1121)


@pytest.mark.parametrize(("fault", "status", "retry"), [(Fault.SNAPSHOT_429, 429, "3"),
                                                        (Fault.SNAPSHOT_418, 418, "120")])
async def test_rate_limit_faults(venue: MexcVenue, session: aiohttp.ClientSession, fault: Fault, status: int,
                                 retry: str) -> None:
    venue.inject(fault, SYM, retry_after=int(retry))
    got, headers, body = await get(session, venue, f"/api/v3/depth?symbol={SYM}")
    assert got == status and headers["Retry-After"] == retry and body["code"] == status and body["msg"]
    got, _, _ = await get(session, venue, f"/api/v3/depth?symbol={SYM}")
    assert got == 200


async def test_unknown_symbol_fault(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    venue.inject(Fault.UNKNOWN_SYMBOL, SYM)
    status, _, body = await get(session, venue, f"/api/v3/depth?symbol={SYM}")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert (await snapshot(session, venue))["lastUpdateId"] == venue.current_seq(SYM)


async def test_slow_snapshot_is_taken_after_the_delay(venue: MexcVenue,
                                                      session: aiohttp.ClientSession) -> None:
    venue.inject(Fault.SLOW_SNAPSHOT, SYM, delay=1.0)
    task = asyncio.create_task(snapshot(session, venue))
    await wait_for(lambda: venue.faults.pending(Fault.SLOW_SNAPSHOT) == 0, what="request held")
    seq_when_asked = venue.current_seq(SYM)
    await venue.step_all(3)
    assert not task.done()
    snap = await task
    assert snap["lastUpdateId"] == venue.current_seq(SYM) != seq_when_asked


@pytest.mark.parametrize("steps", [3, 100])  # 100 > the venue's 64-step history
async def test_stale_snapshot_is_older_than_the_buffer(venue: MexcVenue, session: aiohttp.ClientSession,
                                                       steps: int) -> None:
    client = await connect(venue, session)
    await client.subscribe(DEPTH)
    await venue.step_all(steps)
    await settle(venue, client)
    ref = RefBook()
    ref.feed(client.new_diffs())
    venue.inject(Fault.STALE_SNAPSHOT, SYM)
    stale = await snapshot(session, venue)
    assert stale["lastUpdateId"] < int(client.diffs()[0].fromVersion) - 1
    assert not ref.on_snapshot(stale)
    assert ref.on_snapshot(await snapshot(session, venue))
    await venue.step_all(3)
    await settle(venue, client)
    ref.feed(client.new_diffs())
    assert ref.book() == venue.truth(SYM)
    await client.close()


# ---------------------------------------------------------------------- stream faults
@pytest.mark.parametrize("fault", [Fault.GAP, Fault.DUPLICATE, Fault.REORDER, Fault.MALFORMED, Fault.CROSSED])
async def test_stream_fault_hits_only_its_connection(venue: MexcVenue, session: aiohttp.ClientSession,
                                                     fault: Fault) -> None:
    victim, bystander = await connect(venue, session), await connect(venue, session)
    for client in (victim, bystander):
        await client.subscribe(DEPTH)
    await venue.step_all(2)
    await settle(venue, victim, bystander)
    ref = RefBook()
    ref.feed(victim.new_diffs())
    assert ref.on_snapshot(await snapshot(session, venue))
    before = len(victim.binaries)
    venue.inject(fault, SYM, conn_id=victim.conn_id)
    await venue.step_all(6)
    await wait_for(lambda: venue.current_seq(SYM) in [int(d.toVersion) for d in victim.diffs()],
                   what="victim caught up")
    await settle(venue, bystander)
    assert contiguous(bystander.diffs())
    assert venue.faults.fired[fault.value] == 1

    new_frames = victim.wrappers()[before - 1:]  # from the last frame before the fault
    new = [w.publicAggreDepths for w in new_frames if w is not None]
    pairs = list(zip(new, new[1:], strict=False))
    if fault == Fault.GAP:
        assert sum(int(b.fromVersion) > int(a.toVersion) + 1 for a, b in pairs) == 1
    elif fault == Fault.DUPLICATE:
        assert sum(a == b for a, b in pairs) == 1
    elif fault == Fault.REORDER:
        assert sum(int(b.toVersion) < int(a.fromVersion) for a, b in pairs) == 1
    elif fault == Fault.MALFORMED:
        assert new_frames.count(None) == 1
        with pytest.raises(DecodeError):
            pb.PushDataV3ApiWrapper.FromString(victim.binaries[before - 1 + new_frames.index(None)])
    elif fault == Fault.CROSSED:
        crossed_seen = False
        for diff in victim.new_diffs():
            ref.feed([diff])
            crossed_seen = crossed_seen or ref.crossed()
        assert crossed_seen  # a client must notice and resync
        return

    ref.feed(victim.new_diffs())
    if fault == Fault.DUPLICATE:
        assert ref.duplicates == 1 and ref.live and ref.book() == venue.truth(SYM)
        return
    # GAP / REORDER / MALFORMED (its diff is lost) break continuity: resync, then recover
    assert not ref.live and ref.resyncs == 1
    await venue.step_all(2)
    await settle(venue, victim)
    ref.feed(victim.new_diffs())
    assert ref.on_snapshot(await snapshot(session, venue))
    await venue.step_all(3)
    await settle(venue, victim)
    ref.feed(victim.new_diffs())
    assert ref.live and ref.book() == venue.truth(SYM)


async def test_disconnect_fault_drops_tcp(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    victim, bystander = await connect(venue, session), await connect(venue, session)
    for client in (victim, bystander):
        await client.subscribe(DEPTH)
    venue.inject(Fault.DISCONNECT, SYM, conn_id=victim.conn_id)
    await venue.step_all(3)
    await wait_for(lambda: victim.closed, what="victim dropped")
    assert victim.close_code != 1000  # no close handshake
    assert victim.diffs() == []
    await settle(venue, bystander)
    assert not bystander.closed


async def test_server_close_fault_is_an_orderly_close(venue: MexcVenue,
                                                      session: aiohttp.ClientSession) -> None:
    client = await connect(venue, session)
    await client.subscribe(DEPTH)
    venue.inject(Fault.SERVER_CLOSE, SYM, conn_id=client.conn_id)
    await venue.step_all(1)
    await wait_for(lambda: client.closed, what="server close")
    assert client.close_code == 1000


async def test_silent_fault_stops_data_and_pongs(venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    victim, bystander = await connect(venue, session), await connect(venue, session)
    await victim.subscribe(DEPTH)
    await bystander.subscribe(DEPTH, BARRIER)
    venue.inject(Fault.SILENT, SYM, conn_id=victim.conn_id)
    await venue.step_all(1)
    await wait_for(lambda: bystander.on(BARRIER), what="barrier")
    assert venue.connections[victim.conn_id].silent
    pinged_at = venue.connections[victim.conn_id].state["last_ping"]
    texts = len(victim.texts)
    await victim.send({"method": "PING"})
    await wait_for(lambda: venue.connections[victim.conn_id].state["last_ping"] != pinged_at,
                   what="server saw the PING")
    await venue.step_all(2)
    await wait_for(lambda: len(bystander.on(BARRIER)) == 3, what="barrier")
    assert victim.diffs() == [] and len(victim.texts) == texts and not victim.closed
    await victim.close()


# ---------------------------------------------------------------------- server timers
@pytest.fixture
async def quick_venue() -> AsyncIterator[MexcVenue]:
    v = MexcVenue(DEFAULT_SYMBOLS[:1], seed=2, autostart_pump=False, no_subscription_timeout=0.3,
                  idle_timeout=0.3, max_lifetime=60.0, timer_tick=0.02)
    await v.start()
    yield v
    await v.stop()


async def test_no_subscription_closes(quick_venue: MexcVenue, session: aiohttp.ClientSession) -> None:
    client = await connect(quick_venue, session)
    await wait_for(lambda: client.closed, what="close without subscription")
    assert client.close_code == 1000
    # a rejected subscription is not a valid one
    client = await connect(quick_venue, session)
    await client.subscribe("spot@public.aggre.depth.v3.api.pb@100ms@btcusdt")
    await wait_for(lambda: client.closed, what="close after a rejected subscription")


async def test_unsubscribing_everything_restarts_the_30s_rule(quick_venue: MexcVenue,
                                                              session: aiohttp.ClientSession) -> None:
    client = await connect(quick_venue, session)
    await client.subscribe(DEPTH)
    await client.request({"method": "UNSUBSCRIPTION", "params": [DEPTH]})
    await wait_for(lambda: client.closed, what="close after unsubscribing")


async def test_idle_subscription_closes_without_ping(quick_venue: MexcVenue,
                                                     session: aiohttp.ClientSession) -> None:
    client = await connect(quick_venue, session)
    await client.subscribe(DEPTH)  # paused venue: no data, and the client never pings
    await wait_for(lambda: client.closed, what="idle close")
    assert client.close_code == 1000


async def test_ping_or_data_keeps_a_subscription_open(quick_venue: MexcVenue,
                                                      session: aiohttp.ClientSession) -> None:
    pinger, fed = await connect(quick_venue, session), await connect(quick_venue, session)
    await pinger.subscribe(f"spot@public.aggre.bookTicker.v3.api.pb@100ms@{SYM}")
    await fed.subscribe(DEPTH)
    started = time.monotonic()
    while time.monotonic() - started < 3 * quick_venue.idle_timeout:
        assert await pinger.request({"method": "PING"}) == {"id": 0, "code": 0, "msg": "PONG"}
        before = len(fed.binaries)
        await quick_venue.step_all(1)
        await wait_for(lambda b=before: len(fed.binaries) > b, what="data")
        await asyncio.sleep(0.05)
    assert not pinger.closed and not fed.closed
    await pinger.close()
    await fed.close()


async def test_lifetime_limit_closes(session: aiohttp.ClientSession) -> None:
    venue = MexcVenue(DEFAULT_SYMBOLS[:1], autostart_pump=False, max_lifetime=0.3, timer_tick=0.02)
    await venue.start()
    try:
        client = await connect(venue, session)
        await client.subscribe(DEPTH)

        async def keep_pinging() -> None:
            while True:
                await client.send({"method": "PING"})  # an active client is closed all the same
                await asyncio.sleep(0.02)

        pinger = asyncio.create_task(keep_pinging())
        await wait_for(lambda: client.closed, what="lifetime close")
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await pinger
        assert client.close_code == 1000
    finally:
        await venue.stop()
