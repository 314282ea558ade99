"""The simulator's shared parts: the market model, the fault injector, the ``/_sim/`` control API.

The venue-specific conformance tests check what each venue puts on the wire; these check what
every venue relies on: a seeded market that really adds, partially cancels, fully cancels and
sweeps levels on its tick and lot grid, faults that fire exactly where and as often as armed (or
at random, reproducibly from a seed), and the HTTP control API the demo and manual users drive.
The control API is exercised with a raw aiohttp client over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import pytest

from aggbook.simulator.binance import BinanceFuturesVenue, BinanceSpotVenue
from aggbook.simulator.exchange import SimulatedExchange, venue_classes
from aggbook.simulator.faults import Fault, FaultInjector
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import ASK, BID, DEFAULT_SYMBOLS, LevelChange, MarketModel, SymbolSpec
from aggbook.simulator.venue import MAX_CATCH_UP, VenueServer

SPECS = DEFAULT_SYMBOLS[:2]
COARSE = SymbolSpec("ZERO", "USDT", Decimal("5000"), Decimal("1"), Decimal("1"))  # 0 decimals
FINE = SymbolSpec("TINY", "USDT", Decimal("0.00001234"), Decimal("0.00000001"), Decimal("0.00000001"))


async def wait_until(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------- market model
def run_model(spec: SymbolSpec, seed: int, steps: int) -> list[list[LevelChange]]:
    model = MarketModel(spec, seed=seed)
    return [model.step() for _ in range(steps)]


def test_market_is_deterministic_per_seed() -> None:
    for spec in (*DEFAULT_SYMBOLS, COARSE, FINE):
        assert run_model(spec, 3, 300) == run_model(spec, 3, 300)
        assert run_model(spec, 3, 300) != run_model(spec, 4, 300)
    assert MarketModel(SPECS[0], seed=9).snapshot() == MarketModel(SPECS[0], seed=9).snapshot()


@pytest.mark.parametrize("spec", [*DEFAULT_SYMBOLS, COARSE, FINE], ids=lambda s: s.canonical)
def test_market_changes_are_replayable_and_on_the_grid(spec: SymbolSpec) -> None:
    """Replaying the emitted changes on the first snapshot gives the model's book at every step."""
    model = MarketModel(spec, seed=11)
    bids, asks = (dict(side) for side in model.snapshot())
    kinds: dict[str, int] = {"add": 0, "partial": 0, "full": 0, "sweep": 0, "increase": 0}
    for _ in range(1500):
        before_bids, before_asks = dict(model.bids), dict(model.asks)
        changes = model.step()
        for side, before in ((BID, before_bids), (ASK, before_asks)):
            ordered = sorted(before, reverse=side == BID)
            removed = {c.price for c in changes if c.side == side and c.size == 0 and c.price in before}
            if len(ordered) >= 2 and {ordered[0], ordered[1]} <= removed:
                kinds["sweep"] += 1  # the two best levels of one side gone in one event
        for change in changes:
            book = bids if change.side == BID else asks
            before = before_bids if change.side == BID else before_asks
            assert change.price % spec.tick == 0 and change.price > 0
            assert change.size % spec.lot == 0 and change.size >= 0
            assert -change.price.as_tuple().exponent <= spec.price_decimals  # type: ignore[operator]
            if change.size == 0:
                kinds["full"] += change.price in before
                book.pop(change.price, None)
            else:
                if change.price not in before:
                    kinds["add"] += 1
                elif change.size < before[change.price]:
                    kinds["partial"] += 1
                elif change.size > before[change.price]:
                    kinds["increase"] += 1
                book[change.price] = change.size
        assert (bids, asks) == (model.bids, model.asks)
        assert max(model.bids) < min(model.asks), "the model never crosses itself"
        assert len(model.bids) <= model.depth and len(model.asks) <= model.depth
    assert all(kinds.values()), kinds


def test_market_text_has_the_symbol_decimals_zero_to_eight() -> None:
    assert {s.price_decimals for s in (*DEFAULT_SYMBOLS, COARSE, FINE)} >= {0, 2, 3, 4, 6, 8}
    for spec in (COARSE, FINE):
        model = MarketModel(spec, seed=2)
        for _ in range(50):
            model.step()
        bids, asks = model.snapshot()
        for price, size in bids + asks:
            text_price, text_size = model.fmt_price(price), model.fmt_size(size)
            assert ("." in text_price) == (spec.price_decimals > 0)
            if spec.price_decimals:
                assert len(text_price.split(".")[1]) == spec.price_decimals
                assert len(text_size.split(".")[1]) == spec.size_decimals
            assert Decimal(text_price) == price and Decimal(text_size) == size
            assert "E" not in text_price + text_size, "fixed-point text, as every venue sends"
        zero = "0." + "0" * spec.size_decimals if spec.size_decimals else "0"
        assert model.fmt_size(Decimal(0)) == zero  # a deletion, as the venues write it


async def test_eight_decimal_symbol_is_fixed_point_on_the_wire(session: aiohttp.ClientSession) -> None:
    """REST books of a 1e-8 tick/lot symbol carry plain decimals, never exponent notation."""
    classes = venue_classes()
    mexc = classes["mexc"]([FINE], autostart_pump=False)
    btse = classes["btse"]([FINE], autostart_pump=False)
    async with mexc, btse:
        for _ in range(30):
            await mexc.step_all(1)
            await btse.step_all(1)
        async with session.get(f"{mexc.base_url}/api/v3/depth?symbol=TINYUSDT") as resp:
            body = await resp.json()
        levels = body["bids"] + body["asks"]
        async with session.get(f"{btse.urls()['rest_url']}/api/v3.3/orderbook/L2?symbol=TINY-USDT") as resp:
            body = await resp.json()
        levels += [[q["price"], q["size"]] for q in body["buyQuote"] + body["sellQuote"]]
        assert len(levels) > 40
        for price, size in levels:
            assert "E" not in price + size and len(price.split(".")[1]) == len(size.split(".")[1]) == 8


# ---------------------------------------------------------------------- fault injector
def test_armed_faults_respect_scope_and_count() -> None:
    inj = FaultInjector()
    inj.inject(Fault.GAP, symbol="BTCUSDT", conn_id=3, count=2)
    assert inj.take(Fault.GAP, "ETHUSDT", 3) is None  # other symbol
    assert inj.take(Fault.GAP, "BTCUSDT", 4) is None  # other connection
    assert inj.take(Fault.DUPLICATE, "BTCUSDT", 3) is None  # other fault
    assert inj.take(Fault.GAP, "btcusdt", 3) == {}
    assert inj.pending(Fault.GAP) == 1
    assert inj.take(Fault.GAP, "BTCUSDT", 3) == {}
    assert inj.take(Fault.GAP, "BTCUSDT", 3) is None and inj.pending() == 0
    inj.inject("slow_snapshot", delay=0.5)
    assert inj.take(Fault.SLOW_SNAPSHOT, "ANY") == {"delay": 0.5}
    assert inj.fired == {"gap": 2, "slow_snapshot": 1}
    inj.inject(Fault.SILENT, count=3)
    inj.clear()
    assert inj.pending() == 0
    with pytest.raises(ValueError):
        inj.inject("no_such_fault")
    with pytest.raises(ValueError):
        inj.inject(Fault.GAP, count=0)


def decisions(inj: FaultInjector, n: int = 400) -> list[Fault]:
    """Walk a fixed sequence of decision points; return the faults that fired, in order."""
    fired = []
    for i in range(n):
        fault = list(Fault)[i % len(Fault)]
        if inj.take(fault, "BTCUSDT", i % 3) is not None:
            fired.append(fault)
    return fired


def test_random_mode_is_reproducible_from_its_seed() -> None:
    every = set(Fault)
    first = decisions(FaultInjector(seed=5, rate=0.2, allowed=every))
    assert first == decisions(FaultInjector(seed=5, rate=0.2, allowed=every))
    assert first != decisions(FaultInjector(seed=6, rate=0.2, allowed=every))
    assert set(first) == every, "random mode can fire every named fault"
    default = decisions(FaultInjector(seed=5, rate=0.5))
    assert default and set(default) <= {Fault.GAP, Fault.DUPLICATE, Fault.REORDER}
    assert decisions(FaultInjector(seed=5, rate=0.0, allowed=every)) == []

    inj = FaultInjector(seed=1)
    inj.configure_random(0.2, allowed=every, seed=5)
    assert decisions(inj) == first
    inj.configure_random(0.0)
    assert decisions(inj) == []
    with pytest.raises(ValueError):
        inj.configure_random(1.5)


# ---------------------------------------------------------------------- control API, every venue
@pytest.fixture(params=sorted(venue_classes()))
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[VenueServer]:
    cls = venue_classes()[request.param]
    kwargs: dict = {"seed": 4, "autostart_pump": False}
    if issubclass(cls, GzipMbpVenue):
        kwargs["mbp_interval"] = None  # the test runs the 100 ms timer itself
    server = cls(SPECS, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()



async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> tuple[int, object]:
    async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def advance(venue: VenueServer, steps: int) -> None:
    """Market steps, plus the interval push that moves an mbp.150 chain on NHEX/BitV."""
    await venue.step_all(steps)
    if isinstance(venue, GzipMbpVenue):
        await venue.interval_tick()


def wire_book(venue: VenueServer, symbol: str, book) -> dict:  # noqa: ANN001
    market = venue.markets[venue.resolve_symbol(symbol)]
    return {"venue": venue.name, "seq": book.seq,
            "bids": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.bids],
            "asks": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.asks]}


async def test_control_index_truth_and_past_truth(venue: VenueServer, session: aiohttp.ClientSession) -> None:
    base = venue.base_url
    status, index = await call(session, "GET", f"{base}/_sim/")
    assert status == 200 and index["venue"] == venue.name and index["urls"] == venue.urls()  # type: ignore[index]
    vs = venue.venue_symbol(SPECS[0])
    await advance(venue, 3)
    old_seq, old = venue.current_seq(vs), venue.truth(vs)
    for spelling in (vs, SPECS[0].canonical):
        status, body = await call(session, "GET", f"{base}/_sim/truth/{spelling}")
        assert (status, body) == (200, wire_book(venue, vs, old))
    status, body = await call(session, "GET", f"{base}/_sim/truth/{vs}?depth=3")
    assert status == 200 and len(body["bids"]) == len(body["asks"]) == 3  # type: ignore[index]
    for _ in range(20):
        await advance(venue, 1)
        if venue.current_seq(vs) != old_seq and venue.truth(vs) != old:
            break
    assert venue.current_seq(vs) != old_seq
    assert venue.truth_at(vs, old_seq) == old
    status, body = await call(session, "GET", f"{base}/_sim/truth/{vs}?seq={old_seq}")
    assert (status, body) == (200, wire_book(venue, vs, old))
    status, _ = await call(session, "GET", f"{base}/_sim/truth/{vs}?seq=1")
    assert status == 404
    assert (await call(session, "GET", f"{base}/_sim/truth/NOPE-USDT"))[0] == 404
    for bad in ("depth=x", "depth=0", "seq=abc"):
        assert (await call(session, "GET", f"{base}/_sim/truth/{vs}?{bad}"))[0] == 400


async def test_control_faults_pause_and_connections(
        venue: VenueServer, session: aiohttp.ClientSession) -> None:
    base = venue.base_url
    sym = SPECS[1].canonical
    status, body = await call(session, "POST", f"{base}/_sim/faults",
                              json={"fault": "gap", "symbol": sym, "count": 2, "conn_id": 7})
    assert (status, body) == (200, {"armed": "gap", "count": 2})
    status, body = await call(session, "POST", f"{base}/_sim/faults",
                              json={"fault": "slow_snapshot", "params": {"delay": 0.1}})
    assert status == 200 and venue.faults.pending() == 3
    assert venue.faults.take(Fault.GAP, venue.resolve_symbol(sym), 7) == {}
    status, listing = await call(session, "GET", f"{base}/_sim/faults")
    assert status == 200 and listing["fired"] == {"gap": 1} and listing["pending"] == 2  # type: ignore[index]
    assert set(listing["known"]) == {f.value for f in Fault}  # type: ignore[index]
    for bad in ({"fault": "nonsense"}, {"symbol": sym}, {"fault": "gap", "symbol": "NOPE"},
                {"fault": "gap", "count": 0}, {"fault": "gap", "params": [1]}, ["gap"]):
        assert (await call(session, "POST", f"{base}/_sim/faults", json=bad))[0] == 400, bad
    assert (await call(session, "POST", f"{base}/_sim/faults", data=b"{not json"))[0] == 400
    assert (await call(session, "DELETE", f"{base}/_sim/faults")) == (200, {"cleared": 2})
    assert venue.faults.pending() == 0

    assert (await call(session, "POST", f"{base}/_sim/pause")) == (200, {"paused": True})
    assert venue.paused
    assert (await call(session, "POST", f"{base}/_sim/resume")) == (200, {"paused": False})
    assert not venue.paused

    ws_url = venue.urls()["ws_url"]
    if isinstance(venue, BinanceSpotVenue | BinanceFuturesVenue):
        ws_url += "/ws"  # Binance's ws_url is the host (plus /public); streams live under /ws
    async with session.ws_connect(ws_url):
        await wait_until(lambda: venue.connections, what="registration")
        status, conns = await call(session, "GET", f"{base}/_sim/connections")
        assert status == 200 and [c["id"] for c in conns] == list(venue.connections)  # type: ignore[union-attr]


async def test_control_delist_and_relist(venue: VenueServer, session: aiohttp.ClientSession) -> None:
    base = venue.base_url
    vs = venue.venue_symbol(SPECS[0])
    status, body = await call(session, "POST", f"{base}/_sim/delist", json={"symbol": SPECS[0].canonical})
    assert (status, body) == (200, {"delisted": [vs]})
    assert not venue.listed(vs) and venue.listed(venue.venue_symbol(SPECS[1]))
    for bad in ({"symbol": "NOPE-USDT"}, {}, ["BTC-USDT"]):
        assert (await call(session, "POST", f"{base}/_sim/delist", json=bad))[0] == 400, bad
    status, body = await call(session, "POST", f"{base}/_sim/relist", json={"symbol": vs})
    assert (status, body) == (200, {"delisted": []})
    assert venue.listed(vs)


# ---------------------------------------------------------------------- control API, faults firing
async def next_pong(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    """The payload of the next pong; the venue's own frames (pings, heartbeats) are passed over."""
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        if msg.type is aiohttp.WSMsgType.PONG:
            return bytes(msg.data)


async def test_a_silent_connection_answers_no_ping(
        venue: VenueServer, session: aiohttp.ClientSession) -> None:
    """SILENT is a dead TCP path: a client's WebSocket ping gets no pong on it, on every venue.

    Pongs go out in the order the pings came in, so when the pong of a ping sent after the
    connection speaks again comes first, the ping sent while it was silent went unanswered.
    """
    url = venue.urls()["ws_url"]
    if isinstance(venue, (BinanceSpotVenue, BinanceFuturesVenue)):
        url += "/ws"  # raw streams with none named: a connection without subscriptions
    before = set(venue.connections)
    async with session.ws_connect(url, autoping=False) as ws:
        await wait_until(lambda: set(venue.connections) - before, what="the venue to see the connection")
        (conn,) = (venue.connections[i] for i in set(venue.connections) - before)
        read: list[bytes] = []  # pings the venue has read, answered or not
        answer = conn.pong

        async def pong(payload: bytes) -> bool:
            read.append(bytes(payload))
            return await answer(payload)

        conn.pong = pong  # type: ignore[method-assign]
        await ws.ping(b"before")
        assert await next_pong(ws) == b"before"
        conn.silent = True  # what the SILENT fault sets when it fires
        await ws.ping(b"silent")
        await wait_until(lambda: b"silent" in read, what="the venue to read the ping")
        conn.silent = False
        await ws.ping(b"after")
        assert await next_pong(ws) == b"after"


async def spot_depth(session: aiohttp.ClientSession, venue: VenueServer) -> tuple[int, str | None]:
    async with session.get(f"{venue.base_url}/api/v3/depth?symbol=BTCUSDT&limit=5") as resp:
        return resp.status, resp.headers.get("Retry-After")


async def test_fault_armed_over_http_fires_on_the_wire(session: aiohttp.ClientSession) -> None:
    async with BinanceSpotVenue(SPECS, autostart_pump=False) as venue:
        base = venue.base_url
        await call(session, "POST", f"{base}/_sim/faults",
                   json={"fault": "snapshot_429", "symbol": "BTC-USDT", "params": {"retry_after": 7}})
        assert await spot_depth(session, venue) == (429, "7")
        assert (await spot_depth(session, venue))[0] == 200
        await call(session, "POST", f"{base}/_sim/faults",
                   json={"fault": "unknown_symbol", "symbol": "BTCUSDT"})
        async with session.get(f"{base}/api/v3/depth?symbol=BTCUSDT") as resp:
            assert resp.status == 400 and (await resp.json())["code"] == -1121
        status, listing = await call(session, "GET", f"{base}/_sim/faults")
        assert listing["fired"] == {"snapshot_429": 1, "unknown_symbol": 1}  # type: ignore[index]


async def test_delisted_symbol_is_unknown_on_the_wire_until_relisted(session: aiohttp.ClientSession) -> None:
    """While delisted, the symbol list leaves it out and its snapshot is refused as unknown."""
    async with BinanceSpotVenue(SPECS, autostart_pump=False) as venue:
        base = venue.base_url

        async def listed() -> list[str]:
            status, body = await call(session, "GET", f"{base}/api/v3/exchangeInfo")
            assert status == 200
            return [s["symbol"] for s in body["symbols"]]  # type: ignore[index]

        assert await listed() == ["BTCUSDT", "ETHUSDT"]
        await call(session, "POST", f"{base}/_sim/delist", json={"symbol": "BTCUSDT"})
        assert await listed() == ["ETHUSDT"]
        async with session.get(f"{base}/api/v3/depth?symbol=BTCUSDT") as resp:
            assert resp.status == 400 and (await resp.json())["code"] == -1121
        await call(session, "POST", f"{base}/_sim/relist", json={"symbol": "BTCUSDT"})
        assert await listed() == ["BTCUSDT", "ETHUSDT"]
        assert (await spot_depth(session, venue))[0] == 200


async def test_random_faults_over_http_and_from_the_exchange_seed(session: aiohttp.ClientSession) -> None:
    async with BinanceSpotVenue(SPECS, autostart_pump=False, weight_limit=10**6) as venue:
        url = f"{venue.base_url}/_sim/faults/random"
        body = {"rate": 1.0, "faults": ["snapshot_418"], "seed": 1}
        status, body = await call(session, "POST", url, json=body)
        assert (status, body) == (200, {"rate": 1.0, "faults": ["snapshot_418"]})
        assert (await spot_depth(session, venue))[0] == 418
        await call(session, "POST", url, json={"rate": 0})
        assert (await spot_depth(session, venue))[0] == 200
        for bad in ({"faults": ["gap"]}, {"rate": 2}, {"rate": 0.1, "faults": ["nonsense"]},
                    {"rate": 0.1, "faults": "gap"}):
            assert (await call(session, "POST", url, json=bad))[0] == 400, bad
        status, listing = await call(session, "GET", f"{venue.base_url}/_sim/faults")
        assert listing["random"] == {"rate": 0.0, "faults": ["snapshot_418"]}  # type: ignore[index]

    async def statuses(seed: int) -> list[int]:
        sim = SimulatedExchange(["binance"], SPECS, seed=seed, fault_rate=0.5, fault_kinds=["snapshot_429"],
                                autostart_pump=False, venue_options={"binance": {"weight_limit": 10**6}})
        async with sim:
            return [(await spot_depth(session, sim["binance"]))[0] for _ in range(24)]

    first = await statuses(3)
    assert first == await statuses(3), "the same seed gives the same random faults"
    assert set(first) == {200, 429} and first != await statuses(4)


# ---------------------------------------------------------------------- market rate
async def test_unbounded_rate_pumps_flat_out_and_stays_responsive(session: aiohttp.ClientSession) -> None:
    """``rate=math.inf`` is the benchmark setting: steps as fast as possible, control API still served."""
    async with BinanceSpotVenue(SPECS[:1], rate=math.inf) as venue:
        await wait_until(lambda: venue.steps_published >= 2000, what="2000 steps")
        status, body = await call(session, "GET", f"{venue.base_url}/_sim/truth/BTCUSDT")
        assert status == 200 and body["bids"] and body["asks"]  # type: ignore[index]
        await call(session, "POST", f"{venue.base_url}/_sim/pause")
        paused_at = venue.steps_published
        await call(session, "GET", f"{venue.base_url}/_sim/faults")  # a full round trip later
        assert venue.steps_published == paused_at


class RecordedBatches:
    """Every batch the pump asks for (``step_all`` with ``until_paused``), and the steps it really made."""

    def __init__(self, venue: VenueServer) -> None:
        self.venue = venue
        self.batches: list[tuple[int, int]] = []  # (steps owed, steps made)
        self.on_publish: Callable[[], None] | None = None
        plain_step_all, plain_publish = venue.step_all, venue.publish

        async def step_all(steps: int = 1, **options: bool) -> None:
            before = venue.steps_published
            await plain_step_all(steps, **options)
            made = (venue.steps_published - before) // len(venue.markets)
            self.batches.append((steps, made))

        async def publish(symbol: str, changes: list[LevelChange]) -> None:
            if self.on_publish is not None:
                self.on_publish()
            await plain_publish(symbol, changes)

        venue.step_all = step_all  # type: ignore[method-assign]
        venue.publish = publish  # type: ignore[method-assign]

    async def next_batch(self) -> tuple[int, int]:
        """The next batch the pump makes from now on."""
        seen = len(self.batches)
        await wait_until(lambda: len(self.batches) > seen, what="the pump's next batch")
        return self.batches[seen]


def stall(seconds: float) -> None:
    """Block the event loop, as a busy machine or a long callback does."""
    time.sleep(seconds)


async def test_a_pump_that_fell_behind_does_not_pay_its_debt_in_one_burst() -> None:
    """Steps owed beyond MAX_CATCH_UP seconds are dropped: a 2 s stall at 100 steps/s is answered by at
    most 26 steps, not 200 (the old burst held the loop for seconds on a busy machine, long enough
    for the feeds sharing it to miss their heartbeats)."""
    async with BinanceSpotVenue(SPECS, rate=100.0) as venue:
        batches = RecordedBatches(venue)
        await batches.next_batch()
        stall(2.0)
        owed, made = await batches.next_batch()
        assert owed == made and 1 < owed <= 100 * MAX_CATCH_UP + 1, (owed, made)


async def test_a_pause_stops_the_pump_between_two_steps_and_is_no_debt() -> None:
    """A venue paused while its pump makes a batch sends nothing more; resumed, it goes on at its rate
    instead of making up the time it was paused."""
    async with BinanceSpotVenue(SPECS, rate=100.0) as venue:
        batches = RecordedBatches(venue)
        await batches.next_batch()
        stall(0.1)  # about 10 steps owed: the next batch is several steps long
        batches.on_publish = venue.pause  # paused during the batch's first step
        owed, made = await batches.next_batch()
        assert owed > 1 and made == 1, (owed, made)  # the step under way ends (every symbol), no more
        batches.on_publish = None
        paused_at = venue.steps_published
        stall(1.0)  # 100 steps' time while paused
        await asyncio.sleep(0.05)
        assert venue.steps_published == paused_at
        venue.resume()
        owed, made = await batches.next_batch()
        assert owed == made == 1, (owed, made)
