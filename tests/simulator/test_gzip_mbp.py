"""Conformance of the simulated Huobi-style venues (NHEX and BitV) with their API documentation.

The client here is written from that documentation with plain aiohttp (gunzip every frame, decode numbers as
Decimal); it does not use project feed code.  The market pump and the 100 ms timer are off in most
tests: the test steps the market and runs timer ticks itself, and uses a ``req`` reply as a barrier
(frames on one connection arrive in the order the venue produced them).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import pytest

from aggbook.simulator.bitv import FAST_SYMBOLS, BitvVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import TruthBook
from aggbook.simulator.nhex import NhexVenue

pytestmark = pytest.mark.integration

VENUES = [NhexVenue, BitvVenue]
FINE = "btcusdt"  # the first default symbol: sizes with 18 significant decimals
PLAIN = "ethusdt"  # lot-quantised sizes; on BitV's 5/20 list
UNLISTED = "solusdt"  # not on BitV's 5/20 list


@pytest.fixture(params=VENUES, ids=lambda cls: cls.name)
def venue_cls(request: pytest.FixtureRequest) -> type[GzipMbpVenue]:
    return request.param


async def wait_until(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(cls: type[GzipMbpVenue], **kwargs: object) -> AsyncIterator[GzipMbpVenue]:
    opts: dict = {"autostart_pump": False, "mbp_interval": None, "ping_interval": 60.0,
                  "req_min_interval": 0.0}
    opts.update(kwargs)
    venue = cls(**opts)
    await venue.start()
    try:
        yield venue
    finally:
        await venue.stop()


class Client:
    """Raw Huobi market-WS client: JSON text out, gzip binary in, numbers as Decimal."""

    def __init__(self, session: aiohttp.ClientSession, venue: GzipMbpVenue, path: str = "/feed",
                 auto_pong: bool = True) -> None:
        self.session, self.venue, self.path, self.auto_pong = session, venue, path, auto_pong
        self.frames: list[dict] = []
        self.texts: list[str] = []
        self.bad: list[tuple[str, bytes]] = []  # ("gzip" | "json" | "text", payload)
        self.closed = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.conn_id = 0
        self._ids = 0

    async def open(self) -> Client:
        before = set(self.venue.connections)
        self.ws = await self.session.ws_connect(self.venue.base_url.replace("http", "ws") + self.path)
        await wait_until(lambda: set(self.venue.connections) - before, what="server registration")
        self.conn_id = max(set(self.venue.connections) - before)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    self.bad.append(("text", str(msg.data).encode()))
                    continue
                try:
                    text = gzip.decompress(msg.data).decode()
                except (OSError, EOFError, zlib.error):
                    self.bad.append(("gzip", msg.data))
                    continue
                try:
                    obj = json.loads(text, parse_float=Decimal)
                except json.JSONDecodeError:
                    self.bad.append(("json", text.encode()))
                    continue
                self.frames.append(obj)
                self.texts.append(text)
                if self.auto_pong and "ping" in obj:
                    await self.ws.send_str(json.dumps({"pong": obj["ping"]}))
        finally:
            self.closed.set()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        with contextlib.suppress(Exception):
            await self._task

    async def send(self, obj: object) -> None:
        assert self.ws is not None
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    def next_id(self) -> str:
        self._ids += 1
        return f"auto-{self._ids}"

    async def reply(self, msg: dict, timeout: float = 5.0) -> dict:
        """Send ``msg`` (given an id if it has none) and return the frame echoing that id."""
        msg.setdefault("id", self.next_id())
        await self.send(msg)
        found: list[dict] = []

        def match() -> bool:
            found[:] = [f for f in self.frames if "id" in f and f["id"] == msg["id"]]
            return bool(found)

        await wait_until(match, timeout, f"reply to {msg}")
        return found[-1]

    async def wait_id(self, frame_id: object, timeout: float = 5.0) -> dict:
        """The frame echoing ``frame_id`` (for a reply to a message already sent)."""
        await wait_until(lambda: any(f.get("id") == frame_id for f in self.frames), timeout, f"id {frame_id}")
        return next(f for f in self.frames if f.get("id") == frame_id)

    async def sub(self, topic: str) -> dict:
        ack = await self.reply({"sub": topic})
        assert ack["status"] == "ok", ack
        return ack

    async def req(self, topic: str) -> dict:
        return await self.reply({"req": topic})

    def pushes(self, topic: str) -> list[dict]:
        return [f for f in self.frames if f.get("ch") == topic]

    async def wait_pushes(self, topic: str, n: int) -> list[dict]:
        await wait_until(lambda: len(self.pushes(topic)) >= n, what=f"{n} pushes on {topic}")
        return self.pushes(topic)


class RefBook:
    """The documented "Market By Price (incremental update)" book for one topic: snapshot, then chained
    absolute levels, trimmed to N."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.seq = 0

    def load(self, data: dict) -> None:
        self.bids = {p: s for p, s in data["bids"]}
        self.asks = {p: s for p, s in data["asks"]}
        self.seq = data["seqNum"]

    def apply(self, tick: dict) -> None:
        assert tick["prevSeqNum"] == self.seq, (tick["prevSeqNum"], self.seq)
        for key, side in (("bids", self.bids), ("asks", self.asks)):
            for price, size in tick.get(key, []):
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        for side, best_first in ((self.bids, True), (self.asks, False)):
            for price in sorted(side, reverse=best_first)[self.levels:]:
                del side[price]
        self.seq = tick["seqNum"]

    def catch_up(self, pushes: list[dict]) -> None:
        for push in pushes:
            if push["tick"]["seqNum"] > self.seq:
                self.apply(push["tick"])

    def book(self) -> TruthBook:
        bids = tuple(sorted(self.bids.items(), reverse=True))
        return TruthBook(self.seq, bids, tuple(sorted(self.asks.items())))

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))


def topic_of(symbol: str, levels: int) -> str:
    return f"market.{symbol}.mbp.{levels}"


async def synced(client: Client, venue: GzipMbpVenue, symbol: str, levels: int) -> RefBook:
    """sub, make a push happen, req, replay: the documented start (scenario 1)."""
    topic = topic_of(symbol, levels)
    await client.sub(topic)
    ref = RefBook(levels)
    reply = await client.req(topic)
    assert reply["status"] == "ok" and reply["rep"] == topic
    ref.load(reply["data"])
    return ref


# ---------------------------------------------------------------------- frames, acks, sequencing
async def test_acks_are_gzip_and_echo_ids(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        ack = await client.reply({"sub": topic_of(FINE, 150), "id": "id1"})
        assert set(ack) == {"id", "status", "subbed", "ts"}
        assert ack["id"] == "id1" and ack["status"] == "ok" and ack["subbed"] == topic_of(FINE, 150)
        assert isinstance(ack["ts"], int)
        ack = await client.reply({"sub": topic_of(PLAIN, 150), "id": 42})
        assert ack["id"] == 42  # an int id comes back as an int
        unsub = await client.reply({"unsub": topic_of(FINE, 150), "id": "id4"})
        assert unsub == {"id": "id4", "status": "ok", "unsubbed": topic_of(FINE, 150), "ts": unsub["ts"]}
        reply = await client.req(topic_of(PLAIN, 150))
        assert set(reply) == {"id", "rep", "status", "ts", "data"}
        assert set(reply["data"]) == {"seqNum", "bids", "asks"}
        assert not client.bad  # every frame was binary gzip of JSON
        await client.close()
    assert venue.urls()["ws_url"].endswith("/feed") and venue.urls()["rest_url"].startswith("http://")


async def test_mbp150_sync_matches_truth(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        topic = topic_of(FINE, 150)
        await client.sub(topic)
        await venue.step_all(2)
        await venue.interval_tick()
        first = (await client.wait_pushes(topic, 1))[0]
        reply = await client.req(topic)
        assert reply["data"]["seqNum"] == first["tick"]["seqNum"] == venue.topic_seq(FINE, 150)
        ref = RefBook(150)
        ref.load(reply["data"])
        for i in range(30):
            await venue.step_all(1)
            if i % 3 == 0:
                await venue.interval_tick()
        await venue.interval_tick()
        await venue.interval_tick()  # nothing changed since the previous tick
        await client.req(topic)  # barrier
        pushes = client.pushes(topic)
        ref.catch_up(pushes)
        assert ref.book() == venue.topic_truth(FINE, 150) == venue.truth(FINE) == venue.truth("BTC-USDT")
        assert ref.seq == venue.current_seq(FINE)
        ticks = [p["tick"] for p in pushes]
        assert all("bids" in t and "asks" in t for t in ticks)  # 150: both keys always
        assert ticks[-1]["bids"] == [] and ticks[-1]["asks"] == []  # empty push still advances the chain
        assert ticks[-1]["prevSeqNum"] == ticks[-2]["seqNum"] < ticks[-1]["seqNum"]
        assert all(b["prevSeqNum"] == a["seqNum"] for a, b in zip(ticks, ticks[1:], strict=False))
        assert any(t["seqNum"] - t["prevSeqNum"] > 1 for t in ticks)  # not contiguous
        assert all(isinstance(p["ts"], int) for p in pushes)
        await client.close()


@pytest.mark.parametrize("exit_deletes", [True, False], ids=["exit-deletes", "no-exit-deletes"])
async def test_tick_by_tick_5_and_20_alongside_150(venue_cls: type[GzipMbpVenue],
                                                   exit_deletes: bool) -> None:
    async with running(venue_cls, window_exit_deletes=exit_deletes) as venue, \
            aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        refs = {n: await synced(client, venue, PLAIN, n) for n in (5, 20, 150)}
        seqs = {venue.topic_seq(PLAIN, n) for n in (5, 20, 150)}
        assert len(seqs) == 3  # one chain per topic
        exits = entries = quiet_steps = 0
        for i in range(60):
            before = {n: venue.topic_truth(PLAIN, n) for n in (5, 20)}
            market_before = venue.markets[PLAIN].snapshot()
            counts = {n: len(client.pushes(topic_of(PLAIN, n))) for n in (5, 20)}
            await venue.step_all(1)
            if i % 7 == 0:
                await venue.interval_tick()
            reply = await client.req(topic_of(PLAIN, 5))  # barrier; S is the last push
            assert reply["data"]["seqNum"] == venue.topic_seq(PLAIN, 5)
            market = venue.markets[PLAIN]
            for n in (5, 20):
                after = venue.topic_truth(PLAIN, n)
                changed = (after.bids, after.asks) != (before[n].bids, before[n].asks)
                new = client.pushes(topic_of(PLAIN, n))[counts[n]:]
                assert len(new) == (1 if changed else 0)  # a push only when the top-N changed
                quiet_steps += not changed
                for push in new:
                    tick = push["tick"]
                    assert "bids" in tick or "asks" in tick
                    assert all(tick.get(k, [1]) for k in ("bids", "asks"))  # a present side is never []
                    for key, live, old in (("bids", market.bids, market_before[0]),
                                           ("asks", market.asks, market_before[1])):
                        old_prices = {p for p, _ in old}
                        for price, size in tick.get(key, []):
                            exits += size == 0 and price in live  # left the window, still in the market
                            entries += size != 0 and price in old_prices and price not in dict(
                                before[n].bids if key == "bids" else before[n].asks)
        await venue.interval_tick()
        await client.req(topic_of(PLAIN, 20))
        for n, ref in refs.items():
            ref.catch_up(client.pushes(topic_of(PLAIN, n)))
            assert ref.book() == venue.topic_truth(PLAIN, n)
        assert venue.truth(PLAIN, depth=5) == venue.topic_truth(PLAIN, 5)
        assert venue.truth(PLAIN, depth=10) == venue.topic_truth(PLAIN, 150).top(10)
        shapes = [p["tick"] for p in client.pushes(topic_of(PLAIN, 5))]
        assert any("bids" not in t for t in shapes) and any("asks" not in t for t in shapes)
        assert quiet_steps > 0 and entries > 0
        assert (exits > 0) == exit_deletes
        await client.close()


async def test_numbers_as_each_channel_example_writes_them(venue_cls: type[GzipMbpVenue]) -> None:
    """The documents' mbp.5 push example has 18 decimals; their mbp.150 push and req examples short
    numbers: the simulator writes each channel's numbers that way, and exactly."""
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        ref = await synced(client, venue, FINE, 150)
        await venue.step_all(5)
        await venue.interval_tick()
        await client.req(topic_of(FINE, 150))
        ref.catch_up(client.pushes(topic_of(FINE, 150)))
        assert ref.book() == venue.truth(FINE)
        pairs = re.compile(r"\[(-?[0-9.eE+-]+),(-?[0-9.eE+-]+)\]")
        numbers = [n for text in client.texts if '"bids"' in text for n in pairs.findall(text)]
        assert numbers and all(re.fullmatch(r"\d+(\.\d*[1-9])?", x) for pair in numbers for x in pair)
        tick = Client(session, venue)
        await tick.open()
        await synced(tick, venue, FINE, 5)
        await venue.step_all(20)
        await wait_until(lambda: bool(tick.pushes(topic_of(FINE, 5))))
        fives = [n for frame, text in zip(tick.frames, tick.texts, strict=True)
                 if frame.get("ch") == topic_of(FINE, 5) for n in pairs.findall(text)]
        assert fives and all(re.fullmatch(r"\d+\.\d{18}", x) for pair in fives for x in pair)
        await tick.close()
        sizes = [s for _, s in ref.book().bids + ref.book().asks]
        assert any(Decimal(repr(float(s))) != s for s in sizes)  # a float decoder would lose these
        assert any(s.normalize().as_tuple().exponent <= -15 for s in sizes)  # digits past the 15th decimal
        await client.close()


async def test_compact_deletes_key_by_value(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, compact_deletes=True) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        ref = await synced(client, venue, PLAIN, 150)
        for _ in range(20):
            await venue.step_all(1)
            await venue.interval_tick()
        await client.req(topic_of(PLAIN, 150))
        assert any(re.search(r"\[\d+(\.\d{1,17})?,0\]", t) for t in client.texts)  # e.g. [3150.2,0]
        ref.catch_up(client.pushes(topic_of(PLAIN, 150)))
        assert ref.book() == venue.truth(PLAIN)
        await client.close()


async def test_interval_timer_pushes_empty_diffs(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, mbp_interval=0.02) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        await client.sub(topic_of(PLAIN, 150))
        ticks = [p["tick"] for p in await client.wait_pushes(topic_of(PLAIN, 150), 4)]
        assert all(t["bids"] == [] and t["asks"] == [] for t in ticks)  # the market is not moving
        assert all(b["prevSeqNum"] == a["seqNum"] for a, b in zip(ticks, ticks[1:], strict=False))
        await client.close()


# ---------------------------------------------------------------------- heartbeat
async def test_ping_pong_keeps_connection_and_missed_pongs_close(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        good = await Client(session, venue).open()
        deaf = await Client(session, venue, auto_pong=False).open()
        for round_no in range(1, 5):
            venue.ping_round()
            await wait_until(lambda n=round_no: sum("ping" in f for f in good.frames) == n, what="ping")
            await wait_until(lambda: venue.connections[good.conn_id].state["unanswered"] == 0, what="pong")
            if round_no <= 2:
                await wait_until(lambda n=round_no: sum("ping" in f for f in deaf.frames) == n, what="ping")
        await wait_until(deaf.closed.is_set, what="close after two missed pongs")
        pings = [f for f in deaf.frames if "ping" in f]
        assert len(pings) == 2 and all(set(p) == {"ping"} and isinstance(p["ping"], int) for p in pings)
        assert not good.closed.is_set()
        await good.close()


async def test_ping_timer_closes_silent_client(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, ping_interval=0.03, max_missed_pongs=2) as venue, \
            aiohttp.ClientSession() as session:
        deaf = await Client(session, venue, auto_pong=False).open()
        refresh = await Client(session, venue, path="/ws", auto_pong=False).open()
        await wait_until(deaf.closed.is_set, what="close after two missed pongs")
        await wait_until(refresh.closed.is_set, what="close on /ws too")
        assert sum("ping" in f for f in deaf.frames) == 2
        assert deaf.ws is not None and deaf.ws.close_code == 1000


async def test_late_pong_counts_and_a_wrong_one_does_not(venue_cls: type[GzipMbpVenue]) -> None:
    """A pong for the first ping sent after the second ping arrived still saves the connection.

    The rule is "two pings in a row unanswered": any outstanding ping value resets the count, an
    echo of a value never sent is ignored and the next round closes.
    """
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        late = await Client(session, venue, auto_pong=False).open()
        wrong = await Client(session, venue, auto_pong=False).open()

        def pings(client: Client) -> list[int]:
            return [f["ping"] for f in client.frames if "ping" in f]

        for round_no in (1, 2):
            venue.ping_round()
            for client in (late, wrong):
                await wait_until(lambda c=client, n=round_no: len(pings(c)) == n, what=f"ping {round_no}")
        state = venue.connections[late.conn_id].state
        assert state["unanswered"] == 2
        first, second = pings(late)
        assert first != second
        await late.send({"pong": first})  # late: the second ping is already out
        await wrong.send({"pong": max(pings(wrong)) + 12345})
        await wait_until(lambda: state["unanswered"] == 0, what="late pong accepted")
        # frames on one socket are handled in order: this reply shows the wrong pong was read
        reply = await wrong.reply({"unsub": topic_of(FINE, 150)})
        assert reply["status"] == "error"
        assert venue.connections[wrong.conn_id].state["unanswered"] == 2
        venue.ping_round()
        await wait_until(wrong.closed.is_set, what="close after two unanswered pings")
        await wait_until(lambda: len(pings(late)) == 3, what="third ping on the saved connection")
        assert not late.closed.is_set()
        await late.close()


# ---------------------------------------------------------------------- errors and limits
async def test_req_spacing_gives_429(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, req_min_interval=30.0) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        first = await client.req(topic_of(PLAIN, 150))
        assert first["status"] == "ok"
        second = await client.reply({"req": topic_of(PLAIN, 150), "id": "r2"})
        assert second == {"status": "error", "err-code": "bad-request", "err-msg": "429 too many request",
                          "id": "r2", "ts": second["ts"]}
        other = await Client(session, venue).open()  # the spacing is per connection
        assert (await other.req(topic_of(PLAIN, 150)))["status"] == "ok"
        await client.close()
        await other.close()


async def test_documented_errors(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, symbol_states={"XRP-USDT": "pre-online"}) as venue, \
            aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        cases = [
            ({"sub": topic_of(FINE, 7)}, "invalid topic"),
            ({"sub": topic_of(FINE, 400)}, "invalid topic"),  # 400 is off by default
            ({"sub": "market.btcusdt.mbp.refresh.5"}, "invalid topic"),  # refresh lives on /ws
            ({"sub": "market.btcusdt.depth.step0"}, "invalid topic"),
            ({"sub": topic_of("foousdt", 150)}, "invalid symbol"),
            ({"req": topic_of("foousdt", 150), "id": 3}, "invalid symbol"),
            ({"sub": topic_of("xrpusdt", 150)}, "symbol trade not open now"),
            ({"unsub": topic_of(FINE, 150)}, "unsub with not subbed topic"),
            ({"unsub": ["not", "a", "topic"]}, "unsub with not subbed topic"),
            ({"hello": 1}, "invalid topic"),
        ]
        for msg, err in cases:
            reply = await client.reply(dict(msg))
            assert reply["status"] == "error" and reply["err-code"] == "bad-request", reply
            assert reply["err-msg"] == err, (msg, reply)
            assert isinstance(reply["ts"], int)
        await client.send("not json at all")
        await wait_until(lambda: any(f.get("err-msg") == "not json string" for f in client.frames))
        await client.close()


async def test_mbp400_only_where_listed(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, enable_mbp400=True) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        reply = await client.reply({"sub": topic_of(PLAIN, 400)})
        if venue_cls is NhexVenue:
            assert reply["status"] == "ok"
            assert (await client.req(topic_of(PLAIN, 400)))["err-msg"] == "invalid topic"  # req: 5/20/150
            await venue.interval_tick()
            push = (await client.wait_pushes(topic_of(PLAIN, 400), 1))[0]
            assert push["tick"]["bids"] == [] and push["tick"]["asks"] == []
        else:
            assert reply["err-msg"] == "invalid topic"
        await client.close()


async def test_fast_levels_symbol_list(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        for levels in (5, 20):
            sub = await client.reply({"sub": topic_of(UNLISTED, levels)})
            req = await client.req(topic_of(UNLISTED, levels))
            if venue_cls is BitvVenue:
                assert sub["err-msg"] == req["err-msg"] == "invalid topic"
            else:
                assert sub["status"] == req["status"] == "ok"
        assert (await client.reply({"sub": topic_of(UNLISTED, 150)}))["status"] == "ok"
        assert (await client.reply({"sub": topic_of(PLAIN, 5)}))["status"] == "ok"
        if venue_cls is BitvVenue:  # no mbp.5 topic: truth(depth=5) is the top 5 of the mbp.150 truth
            assert venue.truth(UNLISTED, depth=5) == venue.topic_truth(UNLISTED, 150).top(5)
        else:
            assert venue.truth(UNLISTED, depth=5) == venue.topic_truth(UNLISTED, 5)
        await client.close()
    assert UNLISTED not in FAST_SYMBOLS and len(FAST_SYMBOLS) == 9
    async with running(venue_cls, fast_symbols=["solusdt"]) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        assert (await client.reply({"sub": topic_of(UNLISTED, 5)}))["status"] == "ok"
        assert (await client.reply({"sub": topic_of(PLAIN, 5)}))["status"] == "error"
        await client.close()


# ---------------------------------------------------------------------- stream faults
async def _pushed(venue: GzipMbpVenue, client: Client, topic: str, ticks: int) -> list[dict]:
    for _ in range(ticks):
        await venue.step_all(1)
        await venue.interval_tick()
    await client.req(topic)  # barrier
    return [p["tick"] for p in client.pushes(topic)]


async def test_gap_duplicate_reorder_per_connection(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        hit = await Client(session, venue).open()
        clean = await Client(session, venue).open()
        await hit.sub(topic)
        await clean.sub(topic)
        await _pushed(venue, hit, topic, 2)
        venue.inject(Fault.GAP, PLAIN, conn_id=hit.conn_id)
        gap = await _pushed(venue, hit, topic, 2)
        assert gap[-1]["prevSeqNum"] != gap[-2]["seqNum"]  # one push missing
        venue.inject(Fault.DUPLICATE, PLAIN, conn_id=hit.conn_id)
        dup = (await _pushed(venue, hit, topic, 2))[len(gap):]
        assert dup[0] == dup[1] and dup[2]["prevSeqNum"] == dup[1]["seqNum"]
        venue.inject(Fault.REORDER, PLAIN, conn_id=hit.conn_id)
        swapped = (await _pushed(venue, hit, topic, 3))[len(gap) + len(dup):]
        assert swapped[0]["prevSeqNum"] == swapped[1]["seqNum"]  # the later push arrived first
        assert swapped[2]["prevSeqNum"] == swapped[0]["seqNum"]
        await clean.req(topic)
        ticks = [p["tick"] for p in clean.pushes(topic)]
        assert all(b["prevSeqNum"] == a["seqNum"] for a, b in zip(ticks, ticks[1:], strict=False))
        fired = venue.faults.fired
        assert fired["gap"] == fired["duplicate"] == fired["reorder"] == 1
        await hit.close()
        await clean.close()


async def test_malformed_bad_gzip_and_truncated_json(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        await client.sub(topic)
        venue.inject(Fault.MALFORMED, PLAIN, count=2)  # alternates: bad gzip, then truncated JSON
        venue.inject(Fault.MALFORMED, PLAIN, kind="json")
        await _pushed(venue, client, topic, 4)
        assert [kind for kind, _ in client.bad] == ["gzip", "json", "json"]
        assert client.bad[1][1].startswith(b'{"ch":"market.ethusdt.mbp.150"')
        assert len(client.pushes(topic)) == 1
        await client.close()


async def test_crossed_push(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        ref = await synced(client, venue, PLAIN, 150)
        venue.inject(Fault.CROSSED, PLAIN, conn_id=client.conn_id)
        ref.catch_up([{"tick": t} for t in await _pushed(venue, client, topic, 1)])
        assert ref.crossed()  # chain intact, book crossed: the client must resync
        truth = venue.truth(PLAIN)
        assert truth.bids[0][0] < truth.asks[0][0]
        await client.close()


@pytest.mark.parametrize("fault", [Fault.DISCONNECT, Fault.SERVER_CLOSE, Fault.SILENT])
async def test_connection_faults(venue_cls: type[GzipMbpVenue], fault: Fault) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        witness = await Client(session, venue).open()
        await client.sub(topic)
        await witness.sub(topic)
        venue.inject(fault, PLAIN, conn_id=client.conn_id)
        before = len(client.frames)
        await venue.interval_tick()
        if fault is Fault.SILENT:
            await venue.interval_tick()
            for _ in range(3):  # a silent connection is neither pinged nor closed
                venue.ping_round()
                await wait_until(lambda: venue.connections[witness.conn_id].state["unanswered"] == 0,
                                 what="witness pong")
            await witness.wait_pushes(topic, 2)
            await witness.req(topic)
            assert len(client.frames) == before and not client.closed.is_set()
            assert (await witness.reply({"req": topic}))["status"] == "ok"
        else:
            await wait_until(client.closed.is_set, what="connection closed")
            assert client.pushes(topic) == []
            assert client.ws is not None
            if fault is Fault.SERVER_CLOSE:
                assert client.ws.close_code == 1000
        await witness.close()
        await client.close()


# ---------------------------------------------------------------------- snapshot (req) faults
async def test_stale_snapshot_is_older_than_buffer(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        await venue.step_all(1)
        await venue.interval_tick()
        await venue.interval_tick()
        client = await Client(session, venue).open()
        await client.sub(topic)
        ticks = await _pushed(venue, client, topic, 3)
        venue.inject(Fault.STALE_SNAPSHOT, PLAIN)
        stale = await client.req(topic)
        assert stale["status"] == "ok" and stale["data"]["seqNum"] < ticks[0]["prevSeqNum"]
        fresh = await client.req(topic)
        assert fresh["data"]["seqNum"] == client.pushes(topic)[-1]["tick"]["seqNum"]
        await client.close()


async def test_slow_snapshot_and_timeout(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        venue.inject(Fault.SLOW_SNAPSHOT, PLAIN, delay=0.3)
        await client.send({"req": topic, "id": "slow"})
        fast = await client.req(topic)
        assert not any(f.get("id") == "slow" for f in client.frames)  # overtaken by the later req
        slow = await client.wait_id("slow")
        assert slow["status"] == "ok" and slow["data"]["seqNum"] == fast["data"]["seqNum"]
        ids = [f.get("id") for f in client.frames if "id" in f]
        assert ids.index(fast["id"]) < ids.index("slow")
        venue.inject(Fault.SLOW_SNAPSHOT, PLAIN, delay=0.01, timeout=True)
        timed_out = await client.req(topic)
        assert timed_out["status"] == "error" and timed_out["err-msg"] == "request timeout"
        await client.close()


async def test_unknown_symbol_and_429_on_req(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        venue.inject(Fault.UNKNOWN_SYMBOL, PLAIN)
        assert (await client.req(topic))["err-msg"] == "invalid symbol"
        venue.inject(Fault.SNAPSHOT_429, PLAIN)
        assert (await client.req(topic))["err-msg"] == "429 too many request"
        assert (await client.req(topic))["status"] == "ok"
        await client.close()


# ---------------------------------------------------------------------- variants
async def test_straddling_snapshot_variant(venue_cls: type[GzipMbpVenue]) -> None:
    topic = topic_of(PLAIN, 5)
    async with running(venue_cls, straddle_snapshots=True) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        await client.sub(topic)
        reply = await client.req(topic)
        ref = RefBook(5)
        ref.load(reply["data"])
        s = reply["data"]["seqNum"]
        while not client.pushes(topic):
            await venue.step_all(1)
            await client.req(topic_of(PLAIN, 150))
        tick = client.pushes(topic)[0]["tick"]
        assert tick["prevSeqNum"] < s < tick["seqNum"]
        ref.seq = tick["prevSeqNum"]  # 5/20: applying the straddling push is exact
        ref.apply(tick)
        assert ref.book() == venue.topic_truth(PLAIN, 5)
        await client.close()


async def test_mbp150_future_shape_variant(venue_cls: type[GzipMbpVenue]) -> None:
    """The doc's announced 150 behaviour: the 5/20 shape, still a 100 ms snapshot diff on the timer."""
    topic = topic_of(PLAIN, 150)
    async with running(venue_cls, mbp150_future_shape=True) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue).open()
        ref = await synced(client, venue, PLAIN, 150)
        await venue.interval_tick()  # nothing changed since the snapshot: no empty push
        for _ in range(10):
            await venue.step_all(1)
        await client.req(topic)  # barrier
        assert client.pushes(topic) == []  # market steps alone push nothing on 150: it is timer-driven
        await venue.interval_tick()
        await venue.interval_tick()  # unchanged again: nothing more
        await client.req(topic)
        ticks = [p["tick"] for p in client.pushes(topic)]
        assert len(ticks) == 1
        assert all(t.get("bids", [1]) and t.get("asks", [1]) for t in ticks)  # no "[]" side
        ref.catch_up(client.pushes(topic))
        assert ref.book() == venue.truth(PLAIN)
        await client.close()


# ---------------------------------------------------------------------- /ws refresh
async def test_ws_path_refresh_only(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        client = await Client(session, venue, path="/ws").open()
        assert (await client.reply({"sub": topic_of(PLAIN, 150)}))["err-msg"] == "invalid topic"
        assert (await client.reply({"req": topic_of(PLAIN, 150)}))["err-msg"] == "invalid topic"
        assert (await client.reply({"sub": "market.ethusdt.mbp.refresh.7"}))["err-msg"] == "invalid topic"
        await client.sub("market.ethusdt.mbp.refresh.10")
        await venue.step_all(3)
        await venue.interval_tick()
        push = (await client.wait_pushes("market.ethusdt.mbp.refresh.10", 1))[0]
        assert "prevSeqNum" not in push["tick"]
        truth = venue.truth(PLAIN, depth=10)
        assert push["tick"]["seqNum"] == truth.seq == venue.current_seq(PLAIN)
        assert tuple(map(tuple, push["tick"]["bids"])) == truth.bids
        assert tuple(map(tuple, push["tick"]["asks"])) == truth.asks
        venue.ping_round()
        await wait_until(lambda: any("ping" in f for f in client.frames), what="ping on /ws")
        await client.close()


# ---------------------------------------------------------------------- REST
async def test_rest_depth_symbols_and_venue_extras(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls) as venue, aiohttp.ClientSession() as session:
        async def get(path: str) -> tuple[aiohttp.ClientResponse, dict]:
            async with session.get(venue.base_url + path) as resp:
                return resp, json.loads(await resp.text(), parse_float=Decimal)

        resp, body = await get(f"/market/depth?symbol={FINE}&type=step0")
        assert body["status"] == "ok" and body["ch"] == f"market.{FINE}.depth.step0"
        tick = body["tick"]
        assert isinstance(tick["version"], int) and isinstance(tick["ts"], int)
        bids, asks = venue.markets[FINE].snapshot()
        default = 150 if venue_cls is NhexVenue else 20
        assert [tuple(lv) for lv in tick["bids"]] == bids[:default]
        assert [tuple(lv) for lv in tick["asks"]] == asks[:default]
        _, body = await get(f"/market/depth?symbol={PLAIN}&type=step1&depth=5")
        assert len(body["tick"]["bids"]) == 5
        assert all(p % Decimal("0.1") == 0 for p, _ in body["tick"]["bids"] + body["tick"]["asks"])
        market = venue.markets[PLAIN]
        best_bucket = body["tick"]["bids"][0][0]
        assert body["tick"]["bids"][0][1] == sum(s for p, s in market.bids.items() if p >= best_bucket)
        _, body = await get(f"/market/depth?symbol={PLAIN}&type=step5")
        assert (body["status"] == "ok") == (venue_cls is NhexVenue)
        for query, err in (("symbol=foousdt&type=step0", "invalid symbol"),
                           (f"symbol={PLAIN}&type=step9", "invalid type"),
                           (f"symbol={PLAIN}&type=step0&depth=7", "invalid depth")):
            _, body = await get(f"/market/depth?{query}")
            assert body["status"] == "error" and body["err-code"] == "invalid-parameter"
            assert body["err-msg"] == err
        resp, body = await get("/v1/common/symbols")
        row = next(r for r in body["data"] if r["symbol"] == FINE)
        assert row["base-currency"] == "btc" and row["quote-currency"] == "usdt" and row["state"] == "online"
        assert row["price-precision"] == 2 and row["amount-precision"] == 5 and "value-precision" in row
        required = {
            "base-currency", "quote-currency", "price-precision", "amount-precision", "symbol-partition",
            "symbol", "state", "value-precision", "min-order-amt", "max-order-amt", "min-order-value",
            "limit-order-min-order-amt", "limit-order-max-order-amt", "sell-market-min-order-amt",
            "sell-market-max-order-amt", "buy-market-max-order-value",
        }
        assert required <= set(row)  # every field the doc marks required
        # the rest of the documents' reference data, in the shapes their tables give (ccxt's htx, a
        # Huobi client, loads these too: tests/simulator/test_third_party_client.py)
        _, body = await get("/v1/common/currencys")
        assert body["status"] == "ok" and {"btc", "usdt"} <= set(body["data"])
        assert all(isinstance(c, str) and c == c.lower() for c in body["data"])
        _, body = await get("/v2/reference/currencies?currency=usdt")
        assert body["code"] == 200 and [c["currency"] for c in body["data"]] == ["usdt"]
        entry = body["data"][0]
        assert entry["instStatus"] in ("normal", "delisted") and entry["chains"]
        chain_required = {
            "chain", "displayName", "numOfConfirmations", "numOfFastConfirmations", "minDepositAmt",
            "depositStatus", "minWithdrawAmt", "maxWithdrawAmt", "withdrawQuotaPerDay",
            "withdrawQuotaPerYear", "withdrawQuotaTotal", "withdrawPrecision", "withdrawFeeType",
            "withdrawStatus",
        }
        for chain in entry["chains"]:
            assert chain_required <= set(chain)
            assert chain["depositStatus"] in ("allowed", "prohibited")
            assert chain["withdrawFeeType"] in ("fixed", "circulated", "ratio")
            assert all(isinstance(chain[k], str)
                       for k in ("minDepositAmt", "minWithdrawAmt", "maxWithdrawAmt"))
        _, body = await get("/v2/reference/currencies")
        assert {c["currency"] for c in body["data"]} == set((await get("/v1/common/currencys"))[1]["data"])
        _, body = await get("/v2/reference/currencies?currency=nosuchcoin")
        assert body["code"] == 2002
        _, body = await get("/v1/common/timestamp")
        assert body["status"] == "ok" and isinstance(body["data"], int) and body["data"] > 1_500_000_000_000
        has_limits = "X-HB-RateLimit-Requests-Remain" in resp.headers
        assert has_limits == (venue_cls is BitvVenue)
        async with session.get(venue.base_url + "/v2/market-status") as resp:
            if venue_cls is NhexVenue:
                assert resp.status == 404
            else:
                assert await resp.json() == {"code": 200, "message": "success", "data": {"marketStatus": 1}}
                assert int(resp.headers["X-HB-RateLimit-Requests-Expire"]) > 0
        if isinstance(venue, BitvVenue):
            venue.set_market_status(2, affected=["btcusdt", "ethusdt"], start_ms=1, end_ms=2)
            _, body = await get("/v2/market-status")
            assert body["data"] == {"marketStatus": 2, "haltStartTime": 1, "haltEndTime": 2, "haltReason": 2,
                                    "affectedSymbols": "btcusdt,ethusdt"}


async def test_rest_depth_bare_variant(venue_cls: type[GzipMbpVenue]) -> None:
    async with running(venue_cls, bare_rest_depth=True) as venue, aiohttp.ClientSession() as session:
        async with session.get(f"{venue.base_url}/market/depth?symbol={PLAIN}&type=step0&depth=5") as resp:
            body = json.loads(await resp.text(), parse_float=Decimal)
        assert set(body) == {"version", "ts", "bids", "asks"} and len(body["bids"]) == 5
