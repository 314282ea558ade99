"""The HTTP API over a real socket, with fake feeds so every number is known."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest

from aggbook.book.sync import Reason
from aggbook.service.runtime import Service
from tests.service.fakes import FakeFeeds, load_all, serving

METRICS = [
    "aggbook_feed_messages_total",
    "aggbook_feed_bytes_total",
    "aggbook_feed_decode_errors_total",
    "aggbook_book_gaps_total",
    "aggbook_book_resyncs_total",
    "aggbook_book_live",
    "aggbook_book_state",
    "aggbook_book_delisted",
    "aggbook_book_last_update_age_seconds",
    "aggbook_book_freshness",
    "aggbook_feed_lag_seconds",
    "aggbook_snapshot_requests_total",
    "aggbook_feed_reconnects_total",
    "aggbook_book_time_to_live_seconds",
    "aggbook_consolidated_bbo_age_seconds",
    "aggbook_consolidated_crossed",
    "aggbook_consolidated_spread",
    "aggbook_consolidated_crossed_events_total",
    "aggbook_consolidated_live_venues",
    "aggbook_http_requests_total",
    "aggbook_http_request_duration_seconds",
    "aggbook_ws_clients",
    "aggbook_ws_queued_messages",
    "aggbook_ws_dropped_messages_total",
    "aggbook_ws_messages_sent_total",
    "aggbook_event_loop_lag_seconds",
    "aggbook_gc_pause_seconds",
    "aggbook_gc_frozen_objects",
]
HISTOGRAMS = {
    "aggbook_feed_lag_seconds",
    "aggbook_book_time_to_live_seconds",
    "aggbook_http_request_duration_seconds",
    "aggbook_event_loop_lag_seconds",
    "aggbook_gc_pause_seconds",
}


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """(series name, label set) -> value for every sample line."""
    out = {}
    for m in re.finditer(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", text, re.M):
        labels = frozenset(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(text: str, name: str, **labels: str) -> float:
    """One sample; histograms are read through their ``_count`` series."""
    series = f"{name}_count" if name in HISTOGRAMS else name
    return parse_metrics(text)[(series, frozenset(labels.items()))]


def has_series(text: str, name: str) -> bool:
    series = f"{name}_count" if name in HISTOGRAMS else name
    return any(key[0] == series for key in parse_metrics(text))


@pytest.fixture
async def svc() -> AsyncIterator[tuple[Service, FakeFeeds, aiohttp.ClientSession]]:
    async with serving() as running:
        yield running


async def get(http: aiohttp.ClientSession, path: str, status: int = 200) -> dict:
    async with http.get(path) as resp:
        body = await resp.json()
        assert resp.status == status, body
        assert resp.content_type == "application/json"
        return body


async def error(http: aiohttp.ClientSession, path: str, status: int, code: str) -> str:
    body = await get(http, path, status)
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


async def test_health_and_readiness_follow_the_books(svc) -> None:
    service, feeds, http = svc
    assert await get(http, "/healthz") == {"status": "ok"}
    body = await get(http, "/readyz", 503)
    assert body["ready"] is False and body["not_ready"] == ["BTC-USDT", "ETH-USDT"]
    load_all(feeds)
    assert (await get(http, "/readyz"))["symbols"]["BTC-USDT"]["live_venues"] == ["alpha", "beta"]
    feeds["alpha"].gap("ETH-USDT")
    assert (await get(http, "/readyz"))["symbols"]["ETH-USDT"]["live_venues"] == ["beta"]
    feeds["beta"].current["ETH-USDT"].fail(Reason.DISCONNECT, "test")
    body = await get(http, "/readyz", 503)
    assert body["not_ready"] == ["ETH-USDT"]


async def test_symbols(svc) -> None:
    _, _, http = svc
    assert await get(http, "/v1/symbols") == {
        "symbols": [
            {"symbol": "BTC-USDT", "venues": {"alpha": "BTCUSDT", "beta": "BTCUSDT"}},
            {"symbol": "ETH-USDT", "venues": {"alpha": "ETHUSDT", "beta": "ETHUSDT"}},
        ]
    }


async def test_quotes(svc) -> None:
    _, feeds, http = svc
    load_all(feeds)
    q = await get(http, "/v1/quotes/btc-usdt")
    # the venues write "100.0" and "100.00": one number, one spelling in everything merged
    assert q["bid"] == {
        "price": "100",
        "size": "1.5",
        "fee_adjusted": False,
        "venues": [
            {"venue": "alpha", "price": "100", "size": "1"},
            {"venue": "beta", "price": "100", "size": "0.5"},
        ],
    }
    assert q["ask"]["price"] == "100.5" and [v["venue"] for v in q["ask"]["venues"]] == ["beta"]
    assert (q["spread"], q["crossed"], q["locked"], q["fees"]) == ("0.5", False, False, False)
    alpha = q["venues"][0]
    assert alpha["venue"] == "alpha" and alpha["state"] == "live" and alpha["included"] is True
    assert alpha["bid"] == {"price": "100", "size": "1"} and alpha["fee_bps"] == "10"
    assert alpha["age_seconds"] >= 0 and alpha["last_id"] == 100

    f = await get(http, "/v1/quotes/BTC-USDT?fees=true")
    # bid: alpha 100 * 0.999 = 99.9 beats beta 100 * 0.998
    # ask: beta 100.5 * 1.002 = 100.701 beats alpha 101 * 1.001
    assert f["fees"] is True and f["bid"]["price"] == "99.9" and f["bid"]["fee_adjusted"] is True
    assert f["bid"]["venues"] == [
        {"venue": "alpha", "price": "100", "size": "1", "fee_adjusted_price": "99.9"}
    ]
    assert f["ask"]["price"] == "100.701"

    all_quotes = await get(http, "/v1/quotes")
    assert [x["symbol"] for x in all_quotes["quotes"]] == ["BTC-USDT", "ETH-USDT"]
    assert all_quotes["quotes"][1]["bid"]["venues"][0]["venue"] in ("alpha", "beta")

    feeds["beta"].gap("BTC-USDT")
    q = await get(http, "/v1/quotes/BTC-USDT")
    assert q["ask"]["price"] == "101" and q["venues"][1]["state"] == "resyncing"
    assert q["venues"][1]["excluded_reason"] == "resyncing: gap" and q["venues"][1]["bid"] is None


async def test_quote_errors(svc) -> None:
    _, _, http = svc
    assert "XRP-USDT" in await error(http, "/v1/quotes/XRP-USDT", 404, "unknown_symbol")
    await error(http, "/v1/quotes/BTC-USDT?fees=maybe", 400, "bad_request")
    await error(http, "/v1/quotes/BTC-USDT?fees=true&fees=false", 400, "bad_request")
    await error(http, "/v1/quotes?fees=2", 400, "bad_request")
    assert "fee" in await error(http, "/v1/quotes?fee=true", 400, "bad_request")


async def test_books(svc) -> None:
    _, feeds, http = svc
    load_all(feeds)
    b = await get(http, "/v1/books/BTC-USDT?depth=2")
    assert b["depth"] == 2 and b["venues"] == ["alpha", "beta"] and b["excluded"] == {}
    assert b["bids"] == [
        {"price": "100", "size": "1.5", "venues": {"alpha": "1", "beta": "0.5"}},
        {"price": "99.5", "size": "2", "venues": {"alpha": "2"}},
    ]
    assert b["asks"] == [
        {"price": "100.5", "size": "0.25", "venues": {"beta": "0.25"}},
        {"price": "101", "size": "3", "venues": {"beta": "2", "alpha": "1"}},
    ]
    only = await get(http, "/v1/books/BTC-USDT?venues=beta")
    assert only["venues"] == ["beta"] and len(only["bids"]) == 2 and only["depth"] == 10

    one = await get(http, "/v1/books/BTC-USDT/alpha?depth=1")
    assert (one["venue"], one["state"], one["included"], one["last_id"]) == ("alpha", "live", True, 100)
    # a venue's own book keeps its exact wire text
    assert one["bids"] == [["100.0", "1"]] and one["asks"] == [["101.0", "1"]]
    feeds["alpha"].gap("BTC-USDT")
    one = await get(http, "/v1/books/BTC-USDT/alpha")
    assert (one["state"], one["reason"], one["bids"], one["included"]) == ("resyncing", "gap", [], False)
    assert (await get(http, "/v1/books/BTC-USDT"))["excluded"] == {"alpha": "resyncing: gap"}


async def test_book_errors(svc) -> None:
    _, _, http = svc
    await error(http, "/v1/books/DOGE-USDT", 404, "unknown_symbol")
    await error(http, "/v1/books/DOGE-USDT/alpha", 404, "unknown_symbol")
    await error(http, "/v1/books/BTC-USDT/zeta", 404, "unknown_venue")
    await error(http, "/v1/books/BTC-USDT?venues=alpha,zeta", 404, "unknown_venue")
    await error(http, "/v1/books/BTC-USDT?venues=,", 400, "bad_request")
    # "%C2%B2" is "²" (isdigit() but not int()), "%EF%BC%95" a full-width 5, then 5000 digits
    # (past int()'s 4300-digit limit) and a trailing newline
    odd = ("%C2%B2", "%EF%BC%95", "9" * 5000, "5%0A", "+5", " 5")
    for depth in ("0", "-1", "abc", "1.5", "1001", "", *odd):
        await error(http, f"/v1/books/BTC-USDT?depth={depth}", 400, "bad_request")
        await error(http, f"/v1/books/BTC-USDT/alpha?depth={depth}", 400, "bad_request")
    await error(http, "/v1/books/BTC-USDT?side=buy", 400, "bad_request")
    assert "more than once" in await error(http, "/v1/books/BTC-USDT?depth=1&depth=2", 400, "bad_request")
    await error(http, "/v1/books/BTC-USDT?venues=alpha&venues=zeta", 400, "bad_request")


async def test_sweep(svc) -> None:
    _, feeds, http = svc
    load_all(feeds)
    s = await get(http, "/v1/sweep/BTC-USDT?side=buy&qty=1.25")
    # 0.25 @ 100.5 (beta), then 101.0: beta 2 and alpha 1 at the same price, venue name breaks the tie
    assert (s["filled"], s["complete"], s["best_price"], s["worst_price"]) == ("1.25", True, "100.5", "101")
    assert s["notional"] == "126.125" and s["average_price"] == "100.9"
    assert {a["venue"]: a["qty"] for a in s["allocation"]} == {"beta": "0.25", "alpha": "1"}
    f = await get(http, "/v1/sweep/BTC-USDT?side=sell&qty=100&fees=true&venues=alpha")
    assert f["complete"] is False and f["filled"] == "3" and f["venues"] == ["alpha"]
    assert f["notional"] == "299" and f["fee"] == "0.299" and f["net_proceeds"] == "298.701"


async def test_known_depth_in_books_ladder_and_sweep(svc) -> None:
    _, feeds, http = svc
    load_all(feeds)
    # alpha's snapshot was asked for 2 levels and came back full: its asks are known only up to 102
    feeds["alpha"].load("BTC-USDT", [("100.0", "1"), ("99.5", "2")], [("101.0", "1"), ("102", "3")], depth=2)
    feeds["beta"].load("BTC-USDT", [("100.00", "0.5")], [("100.5", "0.25"), ("103", "9")])
    own = await get(http, "/v1/books/BTC-USDT/alpha?depth=10")
    assert own["complete_depth"] == {"bids": 2, "asks": 2}
    assert own["complete_to"] == {"bids": "99.5", "asks": "102"}
    ladder = await get(http, "/v1/books/BTC-USDT?depth=10")
    assert [lvl["price"] for lvl in ladder["asks"]] == ["100.5", "101", "102"]  # beta's 103: beyond alpha's
    assert ladder["complete_to"] == {"bids": "99.5", "asks": "102"}
    assert ladder["complete_depth"] == {"alpha": {"bids": 2, "asks": 2}, "beta": {"bids": 1, "asks": 2}}
    s = await get(http, "/v1/sweep/BTC-USDT?side=buy&qty=10")
    assert (s["filled"], s["complete"], s["incomplete"], s["complete_to"]) == ("4.25", False, True, "102")
    assert s["complete_depth"] == {"alpha": 2, "beta": 2}
    within = await get(http, "/v1/sweep/BTC-USDT?side=buy&qty=1")
    assert (within["complete"], within["incomplete"]) == (True, False)


async def test_sweep_errors(svc) -> None:
    _, _, http = svc
    await error(http, "/v1/sweep/NOPE-USDT?side=buy&qty=1", 404, "unknown_symbol")
    await error(http, "/v1/sweep/BTC-USDT?side=buy&qty=1&venues=zeta", 404, "unknown_venue")
    await error(http, "/v1/sweep/BTC-USDT?qty=1", 400, "bad_request")
    await error(http, "/v1/sweep/BTC-USDT?side=hold&qty=1", 400, "bad_request")
    await error(http, "/v1/sweep/BTC-USDT?side=buy", 400, "bad_request")
    odd = ("%EF%BC%91", "1%0A", "1.5.2", "1" * 16, "0." + "0" * 18 + "1", "9" * 5000, "+1", "1_000")
    for qty in ("0", "-1", "abc", "1e5", "NaN", "Infinity", "0.0", "", *odd):
        await error(http, f"/v1/sweep/BTC-USDT?side=buy&qty={qty}", 400, "bad_request")
    await error(http, "/v1/sweep/BTC-USDT?side=buy&qty=1&fees=perhaps", 400, "bad_request")
    await error(http, "/v1/sweep/BTC-USDT?side=buy&qty=1&qty=2", 400, "bad_request")
    await error(http, "/v1/sweep/BTC-USDT?side=buy&side=sell&qty=1", 400, "bad_request")


async def test_sweep_quantities_at_the_limits_stay_exact(svc) -> None:
    _, feeds, http = svc
    load_all(feeds)
    big = "9" * 15 + "." + "9" * 18  # the largest accepted: far more than the books hold
    s = await get(http, f"/v1/sweep/BTC-USDT?side=sell&qty={big}&fees=true")
    assert (s["requested"], s["filled"], s["complete"]) == (big, "7.5", False)
    assert s["unfilled"] == "9" * 14 + "2." + "4" + "9" * 17
    tiny = "0." + "0" * 17 + "1"
    s = await get(http, f"/v1/sweep/BTC-USDT?side=buy&qty={tiny}&fees=true")
    assert (s["requested"], s["filled"], s["complete"], s["unfilled"]) == (tiny, tiny, True, "0")
    for qty, text in ((".5", "0.5"), ("5.", "5"), ("005", "5")):
        s = await get(http, f"/v1/sweep/BTC-USDT?side=buy&qty={qty}")
        assert (s["requested"], s["complete"]) == (text, True)


async def test_status_counts_resyncs_across_sync_replacement(svc) -> None:
    service, feeds, http = svc
    load_all(feeds)
    feeds["alpha"].gap("BTC-USDT")
    feeds["alpha"].publish_new("BTC-USDT")  # reconnect: a new BookSync replaces the old
    feeds["alpha"].current["BTC-USDT"].fail(Reason.DISCONNECT, "again")
    st = await get(http, "/v1/status")
    assert st["ready"] is True and st["symbols"]["BTC-USDT"] == {"ready": True, "live_venues": ["beta"]}
    alpha = next(v for v in st["venues"] if v["venue"] == "alpha")
    assert (
        alpha["kind"] == "binance" and alpha["enabled"] is True and alpha["connections"][0]["state"] == "open"
    )
    btc = alpha["symbols"]["BTC-USDT"]
    assert btc["resyncs"] == {"gap": 1, "disconnect": 1}
    assert (btc["state"], btc["reason"], btc["included"], btc["venue_symbol"]) == (
        "resyncing",
        "disconnect",
        False,
        "BTCUSDT",
    )
    assert btc["since_seconds"] >= 0 and btc["since"] > 1.7e9
    eth = alpha["symbols"]["ETH-USDT"]
    assert (eth["state"], eth["last_id"], eth["levels"], eth["resyncs"]) == (
        "live",
        100,
        {"bids": 1, "asks": 1},
        {},
    )
    assert eth["last_update_age_seconds"] >= 0 and eth["freshness"] == "fresh"
    assert btc["freshness"] is None  # not live
    assert st["websocket"]["clients"] == 0


async def test_unknown_routes_and_methods_are_json(svc) -> None:
    _, _, http = svc
    await error(http, "/v2/quotes", 404, "not_found")
    async with http.post("/v1/quotes") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"
    await error(http, "/v1/ws", 400, "bad_request")  # a plain GET, no WebSocket upgrade


async def test_openapi_documents_every_route(svc) -> None:
    service, _, http = svc
    doc = await get(http, "/openapi.json")
    assert doc["openapi"].startswith("3.1")
    routes = {r.resource.canonical for r in service.app.router.routes() if r.method == "GET"}
    assert routes == set(doc["paths"])
    assert doc["paths"]["/v1/quotes/{symbol}"]["get"]["parameters"][0]["schema"]["enum"] == [
        "BTC-USDT",
        "ETH-USDT",
    ]


def _example_path(template: str, required: list[dict]) -> str:
    """A concrete request for a documented route: path parameters filled in, required query given."""
    path = template.replace("{symbol}", "BTC-USDT").replace("{venue}", "alpha")
    examples = {"side": "buy", "qty": "1"}
    query = [f"{p['name']}={examples[p['name']]}" for p in required if p["in"] == "query"]
    return path + ("?" + "&".join(query) if query else "")


async def test_openapi_parameters_and_errors_match_the_handlers(svc) -> None:
    """Each documented parameter is accepted, and each route that refuses an unknown one documents 400."""
    _, feeds, http = svc
    load_all(feeds)
    doc = await get(http, "/openapi.json")
    for template, item in doc["paths"].items():
        if template == "/v1/ws":
            continue
        op = item["get"]
        params = op["parameters"]
        base = _example_path(template, [p for p in params if p["required"]])
        sep = "&" if "?" in base else "?"
        async with http.get(base) as resp:
            assert str(resp.status) in op["responses"], (template, resp.status)
        async with http.get(f"{base}{sep}no_such_parameter=1") as resp:
            if resp.status == 400:
                assert "400" in op["responses"], template
                body = await resp.json()
                for p in params:  # the refusal lists exactly the documented query parameters
                    assert p["in"] == "path" or p["name"] in body["error"]["message"], (template, p)
    qty = next(p for p in doc["paths"]["/v1/sweep/{symbol}"]["get"]["parameters"] if p["name"] == "qty")
    pattern = re.compile(qty["schema"]["pattern"])
    for text in ("1", ".5", "5.", "9" * 15, "0." + "0" * 17 + "1", "1" * 16, "1e5", "-1", "١", "1\n"):
        accepted = await http.get(f"/v1/sweep/BTC-USDT?side=buy&qty={quote(text)}")
        assert (accepted.status == 200) == bool(pattern.fullmatch(text)), text
        accepted.release()


async def test_metric_labels_do_not_grow_with_what_clients_send(svc) -> None:
    """Unknown paths, symbols, venues and parameters all land on a fixed set of series."""
    service, feeds, http = svc
    load_all(feeds)

    async def hit(i: int) -> None:
        for path in (
            f"/nowhere/{i}",
            f"/v1/quotes/X{i}-USDT",
            f"/v1/books/BTC-USDT/v{i}",
            f"/v1/books/BTC-USDT?venues=v{i}",
            f"/v1/sweep/BTC-USDT?side=buy&qty={i + 1}&p{i}=1",
        ):
            async with http.get(path) as resp:
                await resp.read()

    await hit(0)
    before = set(parse_metrics(service.metrics.render().decode()))
    for i in range(1, 40):
        await hit(i)
    after = set(parse_metrics(service.metrics.render().decode()))
    assert after == before


async def test_metrics_answer_only_the_series_named(svc) -> None:
    service, feeds, http = svc
    load_all(feeds)
    names = ("aggbook_event_loop_lag_seconds_count", "aggbook_book_gaps_total")
    async with http.get("/metrics", params=[("name[]", n) for n in names]) as resp:
        assert resp.status == 200
        narrow = parse_metrics(await resp.text())
    async with http.get("/metrics") as resp:
        whole = parse_metrics(await resp.text())
    assert {series for series, _ in narrow} == set(names)
    assert set(narrow) == {key for key in whole if key[0] in names}  # the same series, every label set
    async with http.get("/metrics", params={"name[]": "aggbook_no_such_series"}) as resp:
        assert resp.status == 200 and parse_metrics(await resp.text()) == {}


async def test_index_lists_endpoints(svc) -> None:
    _, _, http = svc
    assert "/v1/sweep/{symbol}" in (await get(http, "/"))["endpoints"]


async def test_every_metric_is_exported(svc) -> None:
    service, feeds, http = svc
    load_all(feeds)
    feeds["alpha"].gap("BTC-USDT")
    feeds["alpha"].delta("ETH-USDT", bids=[("10.5", "1")])  # beta ETH ask 12, alpha bid 10.5
    feeds["beta"].delta("ETH-USDT", bids=[("11", "1")])  # beta alone: bid 11 < ask 12
    feeds["alpha"].delta(
        "ETH-USDT", bids=[("12", "1")], asks=[("11", "0"), ("13", "1")]
    )  # alpha bid 12 >= beta ask 12
    await get(http, "/v1/quotes")
    await get(http, "/v1/quotes/NOPE", 404)
    async with http.get("/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    for name in METRICS:
        assert has_series(text, name), name
    assert "_created" not in text
    assert value(text, "aggbook_book_gaps_total", venue="alpha", symbol="BTC-USDT") == 1
    assert value(text, "aggbook_book_resyncs_total", venue="alpha", symbol="BTC-USDT", reason="gap") == 1
    assert value(text, "aggbook_book_live", venue="alpha", symbol="BTC-USDT") == 0
    assert value(text, "aggbook_book_state", venue="alpha", symbol="BTC-USDT", state="resyncing") == 1
    assert value(text, "aggbook_book_state", venue="alpha", symbol="BTC-USDT", state="live") == 0
    assert value(text, "aggbook_book_state", venue="beta", symbol="BTC-USDT", state="live") == 1
    for fresh in ("fresh", "quiet", "stale"):  # live and just changed: fresh; not live: none of them
        expected = 1 if fresh == "fresh" else 0
        labels = {"symbol": "BTC-USDT", "freshness": fresh}
        assert value(text, "aggbook_book_freshness", venue="beta", **labels) == expected
        assert value(text, "aggbook_book_freshness", venue="alpha", **labels) == 0
    assert value(text, "aggbook_book_last_update_age_seconds", venue="beta", symbol="BTC-USDT") >= 0
    assert value(text, "aggbook_consolidated_live_venues", symbol="BTC-USDT") == 1
    assert value(text, "aggbook_consolidated_spread", symbol="BTC-USDT") == 0.5  # beta alone: 100.5 - 100.00
    assert value(text, "aggbook_consolidated_crossed", symbol="ETH-USDT") == 1
    assert value(text, "aggbook_consolidated_crossed", symbol="BTC-USDT") == 0
    assert value(text, "aggbook_consolidated_crossed_events_total", symbol="ETH-USDT") == 1
    assert value(text, "aggbook_consolidated_bbo_age_seconds", symbol="BTC-USDT") >= 0
    assert value(text, "aggbook_snapshot_requests_total", venue="alpha", result="ok") == 2
    assert value(text, "aggbook_feed_messages_total", venue="alpha", symbol="ETH-USDT") == 2
    assert value(text, "aggbook_feed_bytes_total", venue="alpha", symbol="ETH-USDT") == 200
    assert (
        value(text, "aggbook_http_requests_total", route="/v1/quotes/{symbol}", method="GET", status="404")
        == 1
    )
    assert value(text, "aggbook_http_requests_total", route="/v1/quotes", method="GET", status="200") == 1
    assert value(text, "aggbook_http_request_duration_seconds", route="/v1/quotes") == 1
    assert value(text, "aggbook_ws_clients") == 0
