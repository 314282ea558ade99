"""Unmodified third-party clients (ccxt.pro Binance spot and USD-M, MEXC, htx for NHEX and BitV) keep a
correct book here.

ccxt is pointed at the in-process ``BinanceSpotVenue`` / ``BinanceFuturesVenue`` / ``MexcVenue``
by overriding URLs and options only; its own snapshot + diff-depth procedure must then end at
exactly ``venue.truth()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import ccxt.pro
import pytest

from aggbook.simulator.binance import BinanceFuturesVenue, BinanceSpotVenue
from aggbook.simulator.bitv import BitvVenue
from aggbook.simulator.faults import Fault
from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import DEFAULT_SYMBOLS, TruthBook
from aggbook.simulator.mexc import MexcVenue
from aggbook.simulator.nhex import NhexVenue
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

SYM = "BTCUSDT"
UNIFIED = "BTC/USDT"


def make_exchange(venue: BinanceSpotVenue) -> ccxt.pro.binance:
    urls = venue.urls()
    exchange = ccxt.pro.binance({
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},  # only /api/v3/exchangeInfo; no fapi/dapi
            "fetchCurrencies": False,  # sapi capital/config/getall is private and not simulated
        },
    })
    exchange.urls["api"]["public"] = urls["rest_url"] + "/api/v3"
    # ccxt appends "/<stream index>" to this base ("wss://stream.binance.com:9443/ws/0" on the real
    # venue) and then subscribes with SUBSCRIBE frames
    exchange.urls["api"]["ws"]["spot"] = urls["ws_url"] + "/ws"
    return exchange


def as_decimal(levels: list) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(str(price)), Decimal(str(size))) for price, size, *_ in levels]


def equals_truth(exchange: ccxt.pro.binance, truth: TruthBook) -> bool:
    book = exchange.orderbooks.get(UNIFIED)
    return (book is not None and book["nonce"] == truth.seq
            and as_decimal(book["bids"]) == list(truth.bids)
            and as_decimal(book["asks"]) == list(truth.asks))


@pytest.fixture
async def venue() -> AsyncIterator[BinanceSpotVenue]:
    async with BinanceSpotVenue(DEFAULT_SYMBOLS[:2], seed=11, rate=50.0) as v:
        yield v


@pytest.fixture
async def exchange(venue: BinanceSpotVenue) -> AsyncIterator[ccxt.pro.binance]:
    ex = make_exchange(venue)
    try:
        yield ex
    finally:
        await ex.close()


async def watch_updates(exchange: ccxt.pro.Exchange, count: int) -> list[int]:
    nonces = []
    for _ in range(count):
        book = await asyncio.wait_for(exchange.watch_order_book(UNIFIED), 10)
        nonces.append(book["nonce"])
    return nonces


async def settle(venue: BinanceSpotVenue, exchange: ccxt.pro.binance) -> TruthBook:
    """Pause the market and wait until ccxt has applied every event that was published."""
    venue.pause()
    truth = venue.truth(SYM)
    await wait_for(lambda: equals_truth(exchange, truth), timeout=10,
                   what=f"ccxt book == truth at {truth.seq} (ccxt nonce "
                        f"{exchange.orderbooks.get(UNIFIED, {}).get('nonce')})")
    return truth


async def test_ccxt_watch_order_book_equals_truth(venue, exchange) -> None:
    await exchange.load_markets()
    assert exchange.market(UNIFIED)["id"] == SYM
    nonces = await watch_updates(exchange, 20)
    assert nonces == sorted(nonces) and nonces[-1] > nonces[0]
    truth = await settle(venue, exchange)
    book = exchange.orderbooks[UNIFIED]
    assert book["nonce"] == truth.seq
    assert as_decimal(book["bids"]) == list(truth.bids)
    assert as_decimal(book["asks"]) == list(truth.asks)
    assert book["bids"][0][0] < book["asks"][0][0]


async def test_ccxt_resyncs_after_gap(venue, exchange) -> None:
    await exchange.load_markets()
    await watch_updates(exchange, 5)
    venue.inject(Fault.GAP, SYM)
    errors: list[Exception] = []
    for _ in range(200):
        try:
            await asyncio.wait_for(exchange.watch_order_book(UNIFIED), 10)
        except ccxt.ChecksumError as e:  # ccxt's reaction to a U != previous u + 1
            errors.append(e)
            break
    assert errors, "ccxt never noticed the gap"
    assert UNIFIED not in exchange.orderbooks  # ccxt dropped the broken book and its subscription
    assert venue.faults.fired[Fault.GAP] == 1
    # the next watch re-subscribes (SUBSCRIBE frame) and fetches a new /api/v3/depth snapshot
    await watch_updates(exchange, 10)
    truth = await settle(venue, exchange)
    assert equals_truth(exchange, truth)


# ---------------------------------------------------------------------- Binance USD-M futures
FUTURES_UNIFIED = "BTC/USDT:USDT"


@pytest.fixture
async def futures_venue() -> AsyncIterator[BinanceFuturesVenue]:
    async with BinanceFuturesVenue(DEFAULT_SYMBOLS[:2], seed=11, rate=50.0) as v:
        yield v


async def test_ccxt_futures_follows_pu_and_resyncs_after_gap(futures_venue: BinanceFuturesVenue) -> None:
    """ccxt.pro.binanceusdm: /fapi/v1/depth + diff events chained by ``pu``, on the unrouted /ws path."""
    root = futures_venue.base_url
    exchange = ccxt.pro.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}}})
    exchange.urls["api"]["fapiPublic"] = root + "/fapi/v1"
    exchange.urls["api"]["ws"]["linear"] = root.replace("http://", "ws://") + "/ws"
    try:
        await exchange.load_markets()
        assert exchange.market(FUTURES_UNIFIED)["id"] == SYM
        nonces = [(await asyncio.wait_for(exchange.watch_order_book(FUTURES_UNIFIED), 10))["nonce"]
                  for _ in range(20)]
        assert nonces == sorted(nonces) and nonces[-1] > nonces[0]

        futures_venue.inject(Fault.GAP, SYM)
        noticed = False
        for _ in range(200):
            try:
                await asyncio.wait_for(exchange.watch_order_book(FUTURES_UNIFIED), 10)
            except ccxt.ChecksumError:  # ccxt's reaction to pu != previous u
                noticed = True
                break
        assert noticed, "ccxt never noticed the gap"
        for _ in range(10):
            await asyncio.wait_for(exchange.watch_order_book(FUTURES_UNIFIED), 10)

        futures_venue.pause()
        truth = futures_venue.truth(SYM)

        def ccxt_equals() -> bool:
            book = exchange.orderbooks.get(FUTURES_UNIFIED)
            return (book is not None and book["nonce"] == truth.seq
                    and as_decimal(book["bids"]) == list(truth.bids)
                    and as_decimal(book["asks"]) == list(truth.asks))

        await wait_for(ccxt_equals, timeout=10, what=f"ccxt futures book == truth at {truth.seq}")
    finally:
        await exchange.close()


# ---------------------------------------------------------------------- MEXC
def make_mexc_exchange(venue: MexcVenue) -> ccxt.pro.mexc:
    urls = venue.urls()
    exchange = ccxt.pro.mexc()
    exchange.urls["api"]["spot"]["public"] = urls["rest_url"]
    # load_markets() also asks MEXC's contract API for swap markets, which the simulated spot venue
    # does not serve: point it at /api/v3/ping, with "#" so that the "/detail" ccxt appends is a
    # fragment (the reply {} has no "data": no swap markets)
    exchange.urls["api"]["contract"]["public"] = urls["rest_url"] + "/api/v3/ping#"
    exchange.urls["api"]["ws"]["spot"] = urls["ws_url"]
    return exchange


@pytest.fixture
async def mexc_venue() -> AsyncIterator[MexcVenue]:
    async with MexcVenue(DEFAULT_SYMBOLS[:2], seed=11, rate=50.0) as v:
        yield v


async def test_ccxt_mexc_watch_order_book_equals_truth(mexc_venue: MexcVenue) -> None:
    """ccxt.pro.mexc: SUBSCRIPTION, protobuf diffs (313), /api/v3/depth; its book ends at the truth.

    ccxt decodes with its own copy of MEXC's schema in the same process as ours
    (proto/mexc_push.proto has a package of its own, so the two never collide).  ccxt answers
    nothing but this happy path: it never checks that a diff's fromVersion follows the previous
    toVersion (a GAP goes unnoticed), and it PINGs with ``{"method": "ping"}``, which the simulated
    venue leaves unanswered (MEXC's stream documentation does not define PING), so about 30 s
    after connecting ccxt drops the connection; this test is done long before.
    """
    exchange = make_mexc_exchange(mexc_venue)
    try:
        nonces = await watch_updates(exchange, 40)
        # ccxt's nonce is the fromVersion of the last diff it applied, not its toVersion
        assert nonces == sorted(nonces) and nonces[0] < nonces[-1]
        mexc_venue.pause()
        truth = mexc_venue.truth(SYM)

        def ccxt_equals() -> bool:
            book = exchange.orderbooks.get(UNIFIED)
            return (book is not None and as_decimal(book["bids"]) == list(truth.bids)
                    and as_decimal(book["asks"]) == list(truth.asks))

        await wait_for(ccxt_equals, timeout=10, what=f"ccxt book == truth at {truth.seq}")
        assert exchange.orderbooks[UNIFIED]["nonce"] <= truth.seq
        assert Decimal(str(exchange.orderbooks[UNIFIED]["bids"][0][0])) < truth.asks[0][0]
    finally:
        await exchange.close()


# ---------------------------------------------------------------------- NHEX and BitV (Huobi-style)
@pytest.mark.parametrize("venue_cls", [NhexVenue, BitvVenue], ids=["nhex", "bitv"])
async def test_ccxt_htx_loads_markets_and_keeps_the_mbp150_book(venue_cls: type[GzipMbpVenue]) -> None:
    """ccxt.pro.htx (Huobi, whose API NHEX's and BitV's documents copy): markets and currencies from
    ``/v1/common/symbols`` and ``/v2/reference/currencies``, then ``sub`` + ``req`` of ``mbp.150`` on
    ``/feed``; its book ends at the truth of the topic.

    Only URLs and the market types to load are set (htx would also load Huobi's derivatives from
    other hosts, which these venues do not have).  ccxt keeps sizes as floats, so sizes with 18
    significant decimals are compared as the floats they become.
    """
    async with venue_cls(DEFAULT_SYMBOLS[:2], seed=11, rate=50.0) as venue:
        base = venue.base_url
        spot_only = {"spot": True, "linear": False, "inverse": False}
        exchange = ccxt.pro.htx({"options": {"fetchMarkets": {"types": spot_only}}})
        for api in ("status", "spot", "public", "v2Public"):
            exchange.urls["api"][api] = base
        ws = base.replace("http://", "ws://")
        exchange.urls["api"]["ws"]["api"]["spot"].update({"feed": ws + "/feed", "public": ws + "/ws"})
        try:
            markets = await exchange.load_markets()
            assert markets[UNIFIED]["id"] == "btcusdt" and markets[UNIFIED]["precision"]["price"] == 0.01
            assert {"BTC", "USDT"} <= set(exchange.currencies)  # from /v2/reference/currencies
            nonces = await watch_updates(exchange, 10)
            assert nonces == sorted(nonces) and nonces[0] < nonces[-1]
            venue.pause()
            truth = venue.topic_truth("btcusdt", 150)

            def floats(levels) -> list[tuple[float, float]]:  # noqa: ANN001
                return [(float(p), float(s)) for p, s, *_ in levels]

            def ccxt_equals() -> bool:
                book = exchange.orderbooks.get(UNIFIED)
                return (book is not None and book["nonce"] == truth.seq
                        and floats(book["bids"]) == floats(truth.bids)
                        and floats(book["asks"]) == floats(truth.asks))

            await wait_for(ccxt_equals, timeout=10, what=f"ccxt book == truth at {truth.seq}")
        finally:
            await exchange.close()
