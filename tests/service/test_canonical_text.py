"""Everything that merges venues speaks canonical decimal text; a venue's own book keeps its wire text."""

from __future__ import annotations

import aiohttp
import orjson

from tests.service.fakes import FakeFeeds, serving

# NHEX writes 18 decimals, others exponents or a bare trailing zero: one number, several spellings
ALPHA_BIDS = [("93179.700000000000000000", "0.000045596321060336"), ("93179.600000000000000000", "1E-8")]
ALPHA_ASKS = [("93180.100000000000000000", "2.500000000000000000")]
BETA_BIDS = [("93179.7", "1.0")]
BETA_ASKS = [("93180.10", "1E+1")]


def load(feeds: FakeFeeds) -> None:
    feeds["alpha"].load("BTC-USDT", ALPHA_BIDS, ALPHA_ASKS)
    feeds["beta"].load("BTC-USDT", BETA_BIDS, BETA_ASKS)


async def get(http: aiohttp.ClientSession, path: str) -> dict:
    async with http.get(path) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_quotes_ladders_and_sweeps_are_canonical_and_venue_books_are_raw() -> None:
    async with serving() as (_, feeds, http):
        load(feeds)
        q = await get(http, "/v1/quotes/BTC-USDT")
        assert q["bid"] == {
            "price": "93179.7", "size": "1.000045596321060336", "fee_adjusted": False,
            "venues": [{"venue": "alpha", "price": "93179.7", "size": "0.000045596321060336"},
                       {"venue": "beta", "price": "93179.7", "size": "1"}],
        }
        assert (q["ask"]["price"], q["ask"]["size"], q["spread"]) == ("93180.1", "12.5", "0.4")
        assert [(v["bid"], v["ask"]) for v in q["venues"]] == [
            ({"price": "93179.7", "size": "0.000045596321060336"}, {"price": "93180.1", "size": "2.5"}),
            ({"price": "93179.7", "size": "1"}, {"price": "93180.1", "size": "10"}),
        ]
        f = await get(http, "/v1/quotes/BTC-USDT?fees=true")
        # alpha 93179.7 x 0.999 = 93086.5203, beta 93179.7 x 0.998 = 92993.34066
        assert f["bid"]["price"] == "93086.5203" and f["bid"]["venues"][0]["price"] == "93179.7"

        b = await get(http, "/v1/books/BTC-USDT?depth=2")
        assert b["bids"] == [
            {"price": "93179.7", "size": "1.000045596321060336",
             "venues": {"beta": "1", "alpha": "0.000045596321060336"}},
            {"price": "93179.6", "size": "0.00000001", "venues": {"alpha": "0.00000001"}},
        ]
        assert b["asks"] == [{"price": "93180.1", "size": "12.5", "venues": {"beta": "10", "alpha": "2.5"}}]

        s = await get(http, "/v1/sweep/BTC-USDT?side=sell&qty=2")
        assert (s["best_price"], s["worst_price"]) == ("93179.7", "93179.6")
        assert s["filled"] == "1.000045606321060336"
        assert {a["venue"]: (a["best_price"], a["worst_price"]) for a in s["allocation"]} == {
            "beta": ("93179.7", "93179.7"), "alpha": ("93179.7", "93179.6")}

        one = await get(http, "/v1/books/BTC-USDT/alpha")
        assert one["bids"] == [list(level) for level in ALPHA_BIDS]
        assert one["asks"] == [list(level) for level in ALPHA_ASKS]
        other = await get(http, "/v1/books/BTC-USDT/beta")
        assert (other["bids"], other["asks"]) == ([list(BETA_BIDS[0])], [list(BETA_ASKS[0])])


async def _next_data(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    while True:
        msg = orjson.loads(await ws.receive_str(timeout=5.0))
        if msg["type"] == kind:
            return msg["data"]


async def test_websocket_payloads_are_canonical() -> None:
    async with serving() as (service, feeds, http):
        load(feeds)
        async with http.ws_connect(f"{service.url}/v1/ws") as ws:
            await ws.send_json({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
            quote = await _next_data(ws, "snapshot")
            assert quote["bid"]["price"] == "93179.7" and quote["bid"]["size"] == "1.000045596321060336"
            assert quote["venues"][1]["ask"] == {"price": "93180.1", "size": "10"}
            await ws.send_json({"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 2})
            ladder = await _next_data(ws, "snapshot")
            assert [lvl["price"] for lvl in ladder["bids"]] == ["93179.7", "93179.6"]
            assert ladder["bids"][1]["venues"] == {"alpha": "0.00000001"}
            # a new spelling of a known number changes nothing a client sees but the size
            feeds["alpha"].delta("BTC-USDT", asks=[("93180.1000", "3.000")])
            update = await _next_data(ws, "update")
            while "asks" not in update:  # the quote's update may come first
                update = await _next_data(ws, "update")
            assert update["asks"] == [
                {"price": "93180.1", "size": "13", "venues": {"beta": "10", "alpha": "3"}}]
