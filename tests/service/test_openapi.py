"""The OpenAPI document against the service it describes.

The served document must be valid OpenAPI 3.1 (checked by openapi-spec-validator),
name exactly the routes the app serves, and describe what the service really answers:
real responses over a real socket are validated against the documented schema of
their route and status with jsonschema.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from aggbook.book.sweep import QTY_PATTERN
from aggbook.book.sync import Reason
from aggbook.feeds.config import VenueConfig
from aggbook.service.aggregator import Aggregator
from aggbook.service.demo import DEMO_SYMBOLS, DEMO_VENUES, banner
from aggbook.service.openapi import openapi_document
from aggbook.service.routes import ROUTES, example_url
from aggbook.service.runtime import Service
from aggbook.service.views import status_json
from tests.service.fakes import FakeFeeds, fake_config, load_all, serving


def documented_schema(doc: dict, template: str, status: int, method: str = "get") -> dict:
    """The JSON schema the document gives for one route's response, refs resolvable."""
    responses = doc["paths"][template][method]["responses"]
    assert str(status) in responses, f"{template} answered {status}, documented: {sorted(responses)}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}  # "#/components/..." resolves against this root


def check_documented(doc: dict, template: str, status: int, body: Any) -> None:
    """Fail unless ``body`` matches the documented response of ``template`` at ``status``."""
    schema = documented_schema(doc, template, status)
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{template} {status}: " + "; ".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]
    )


def is_documented(doc: dict, template: str, status: int, body: Any) -> bool:
    return jsonschema.Draft202012Validator(documented_schema(doc, template, status)).is_valid(body)


@pytest.fixture
async def svc() -> AsyncIterator[tuple[Service, FakeFeeds, aiohttp.ClientSession]]:
    async with serving() as running:
        yield running


async def fetch(http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(path) as resp:
        assert resp.content_type == "application/json", path
        return resp.status, await resp.json()


async def test_the_served_document_is_valid_openapi(svc) -> None:
    _, _, http = svc
    status, doc = await fetch(http, "/openapi.json")
    assert status == 200
    validate_spec(doc)
    broken = copy.deepcopy(doc)
    del broken["paths"]["/v1/books/{symbol}/{venue}"]["get"]["parameters"][1]  # the {venue} parameter
    with pytest.raises(Exception, match="venue"):
        validate_spec(broken)


async def test_every_served_route_is_documented_and_listed_and_nothing_else(svc) -> None:
    service, _, http = svc
    _, doc = await fetch(http, "/openapi.json")
    served = {
        (r.method.lower(), r.resource.canonical) for r in service.app.router.routes() if r.method != "HEAD"
    }
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    assert {op["operationId"] for item in doc["paths"].values() for op in item.values()} == {
        r.name for r in ROUTES
    }
    _, index = await fetch(http, "/")
    assert index["endpoints"] == [r.path for r in ROUTES if r.path != "/"]
    assert {*index["endpoints"], "/"} == {path for _, path in served}


def _param(doc: dict, template: str, name: str) -> dict:
    return next(p for p in doc["paths"][template]["get"]["parameters"] if p["name"] == name)


async def test_documented_bounds_are_the_enforced_ones() -> None:
    """The depth bounds follow the config and the quantity pattern is the sweep's own."""
    feeds = FakeFeeds()
    config = dataclasses.replace(fake_config(), max_depth=7, default_depth=3)
    async with (
        Service(config, feed_factory=feeds) as service,
        aiohttp.ClientSession(base_url=service.url) as http,
    ):
        load_all(feeds)
        _, doc = await fetch(http, "/openapi.json")
        for template in ("/v1/books/{symbol}", "/v1/books/{symbol}/{venue}"):
            depth = _param(doc, template, "depth")["schema"]
            assert (depth["minimum"], depth["maximum"], depth["default"]) == (1, 7, 3)
            path = template.replace("{symbol}", "BTC-USDT").replace("{venue}", "alpha")
            assert (await fetch(http, f"{path}?depth=7"))[0] == 200
            assert (await fetch(http, f"{path}?depth=8"))[0] == 400
            assert (await fetch(http, path))[1]["depth"] == 3
        assert _param(doc, "/v1/sweep/{symbol}", "qty")["schema"]["pattern"] == QTY_PATTERN
        assert _param(doc, "/v1/sweep/{symbol}", "side")["schema"]["enum"] == ["buy", "sell"]


async def test_the_demo_examples_are_served(svc) -> None:
    """Every example URL the banner prints answers 200 (the WebSocket one upgrades)."""
    service, feeds, http = svc
    load_all(feeds)
    examples = [r for r in ROUTES if r.example is not None]
    assert {r.path for r in examples} >= {"/v1/quotes", "/v1/sweep/{symbol}", "/v1/ws", "/openapi.json"}
    for route in examples:
        url = example_url(route, service.url, "BTC-USDT", "alpha")
        if route.websocket:
            assert url.startswith("ws://")
            async with aiohttp.ClientSession() as ws_http, ws_http.ws_connect(url) as ws:
                assert not ws.closed
            continue
        async with aiohttp.ClientSession() as plain, plain.get(url) as resp:
            assert resp.status == 200, url


# Requests whose answers are checked, by route template; each is run in every state of the books below.
REQUESTS = [
    ("/", "/"),
    ("/", "/?x=1"),
    ("/v1/symbols", "/v1/symbols"),
    ("/v1/symbols", "/v1/symbols?symbol=BTC-USDT"),
    ("/v1/quotes", "/v1/quotes"),
    ("/v1/quotes", "/v1/quotes?fees=true"),
    ("/v1/quotes", "/v1/quotes?fees=2"),
    ("/v1/quotes/{symbol}", "/v1/quotes/BTC-USDT"),
    ("/v1/quotes/{symbol}", "/v1/quotes/eth-usdt?fees=true"),
    ("/v1/quotes/{symbol}", "/v1/quotes/XRP-USDT"),
    ("/v1/quotes/{symbol}", "/v1/quotes/BTC-USDT?fees=maybe"),
    ("/v1/books/{symbol}", "/v1/books/BTC-USDT?depth=2"),
    ("/v1/books/{symbol}", "/v1/books/ETH-USDT?venues=beta"),
    ("/v1/books/{symbol}", "/v1/books/BTC-USDT?venues=zeta"),
    ("/v1/books/{symbol}", "/v1/books/BTC-USDT?depth=0"),
    ("/v1/books/{symbol}/{venue}", "/v1/books/BTC-USDT/alpha"),
    ("/v1/books/{symbol}/{venue}", "/v1/books/ETH-USDT/beta?depth=1"),
    ("/v1/books/{symbol}/{venue}", "/v1/books/BTC-USDT/zeta"),
    ("/v1/books/{symbol}/{venue}", "/v1/books/BTC-USDT/alpha?depth=x"),
    ("/v1/sweep/{symbol}", "/v1/sweep/BTC-USDT?side=buy&qty=1.25"),
    ("/v1/sweep/{symbol}", "/v1/sweep/BTC-USDT?side=buy&qty=1.25&fees=true"),
    ("/v1/sweep/{symbol}", "/v1/sweep/BTC-USDT?side=sell&qty=100&fees=true&venues=alpha"),
    ("/v1/sweep/{symbol}", "/v1/sweep/ETH-USDT?side=sell&qty=0.5"),
    ("/v1/sweep/{symbol}", "/v1/sweep/BTC-USDT?side=hold&qty=1"),
    ("/v1/sweep/{symbol}", "/v1/sweep/NOPE-USDT?side=buy&qty=1"),
    ("/v1/status", "/v1/status"),
    ("/v1/status", "/v1/status?verbose=1"),
    ("/v1/ws", "/v1/ws"),
    ("/healthz", "/healthz"),
    ("/readyz", "/readyz"),
    ("/openapi.json", "/openapi.json"),
    ("/web/{file}", "/web/nope.js"),
    ("/web/{file}", "/web/app.js?x=1"),
]


async def check_all(http: aiohttp.ClientSession, doc: dict) -> set[tuple[str, int]]:
    seen = set()
    for template, path in REQUESTS:
        status, body = await fetch(http, path)
        check_documented(doc, template, status, body)
        seen.add((template, status))
    return seen


async def test_real_answers_match_the_documented_schemas(svc) -> None:
    _, feeds, http = svc
    _, doc = await fetch(http, "/openapi.json")
    seen = await check_all(http, doc)  # nothing loaded: waiting books, null sides, nothing to sweep
    assert ("/readyz", 503) in seen
    load_all(feeds)
    seen |= await check_all(http, doc)  # every book live
    feeds["beta"].gap("BTC-USDT")  # one venue resyncing
    feeds["alpha"].delta("ETH-USDT", bids=[("12", "1")], asks=[("11", "0"), ("13", "1")])  # crossed
    feeds["alpha"].publish_new("BTC-USDT")  # a replaced book, waiting again
    feeds["beta"].current["ETH-USDT"].fail(Reason.DISCONNECT, "test")
    seen |= await check_all(http, doc)
    # each route's success and each documented error was really exercised: every status documented
    # with a JSON body (/metrics and the web page's files are text, checked in tests/deploy, tests/web)
    for template, item in doc["paths"].items():
        responses = item["get"]["responses"]
        documented = {int(s) for s, r in responses.items() if "application/json" in r.get("content", {})}
        assert {s for t, s in seen if t == template} == documented, template


async def test_the_schemas_refuse_what_the_service_does_not_send(svc) -> None:
    """The checks above could not pass by accident: changed shapes fail them."""
    _, feeds, http = svc
    load_all(feeds)
    _, doc = await fetch(http, "/openapi.json")
    _, quote = await fetch(http, "/v1/quotes/BTC-USDT")
    assert is_documented(doc, "/v1/quotes/{symbol}", 200, quote)
    assert not is_documented(doc, "/v1/quotes/{symbol}", 200, {**quote, "extra": 1})
    no_spread = {k: v for k, v in quote.items() if k != "spread"}
    assert not is_documented(doc, "/v1/quotes/{symbol}", 200, no_spread)
    assert not is_documented(doc, "/v1/quotes/{symbol}", 200, {**quote, "spread": 0.5})  # a float
    _, sweep = await fetch(http, "/v1/sweep/BTC-USDT?side=buy&qty=1&fees=true")
    assert is_documented(doc, "/v1/sweep/{symbol}", 200, sweep)
    assert not is_documented(doc, "/v1/sweep/{symbol}", 200, {**sweep, "net_proceeds": "1"})
    assert not is_documented(doc, "/v1/sweep/{symbol}", 200, {**sweep, "fees_included": False})
    _, error = await fetch(http, "/v1/quotes/NOPE")
    assert is_documented(doc, "/v1/quotes/{symbol}", 404, error)
    assert not is_documented(doc, "/v1/quotes/{symbol}", 404, {"error": "unknown symbol"})


async def test_status_of_books_never_handed_over_and_of_a_disabled_venue() -> None:
    """``status_json`` straight from an aggregator whose feeds never started: every book waiting."""
    config = fake_config()
    config.venues.append(VenueConfig("gamma", "btse", {"BTC-USDT": "BTC-USDT"}, enabled=False))
    body = status_json(Aggregator(config, feed_factory=FakeFeeds()), websocket={"clients": 0})
    gamma = body["venues"][2]
    assert gamma == {"venue": "gamma", "kind": "btse", "enabled": False}
    btc = body["venues"][0]["symbols"]["BTC-USDT"]
    assert btc == {
        "venue_symbol": "BTCUSDT",
        "resyncs": {},
        "state": "waiting",
        "reason": "start",
        "included": False,
        "excluded_reason": "no book yet",
    }
    assert body["ready"] is False and body["websocket"] == {"clients": 0}
    check_documented(openapi_document(config, ROUTES), "/v1/status", 200, body)


def test_the_demo_banner_prints_every_example_of_the_table() -> None:
    base = "http://127.0.0.1:8080"
    text = banner(base)
    urls = [line.split()[-1] for line in text.splitlines() if "://" in line]
    examples = [example_url(r, base, DEMO_SYMBOLS[0].canonical, DEMO_VENUES[0]) for r in ROUTES if r.example]
    assert urls == [base, *examples] and len(examples) >= 10
