"""The live web page at ``/``, in a real browser against the demo set-up.

The page must show what the API answers: with the markets paused and the page caught up with the
last message of each of its subscriptions (the ``seq`` it exposes equals the service's), its best bid
and ask, fee-adjusted prices, ladder and venue rows are compared with ``/v1/quotes/{symbol}`` and
``/v1/books/{symbol}``. Faults are injected through the simulator's ``/_sim/`` HTTP API, and every
test fails on any browser console error or uncaught exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aggbook.service.demo import DEMO_SYMBOLS, DEMO_VENUES
from aggbook.service.openapi import openapi_document
from aggbook.service.routes import ROUTES
from aggbook.service.runtime import Service
from aggbook.service.web import ASSET_TYPES, CONTENT_SECURITY_POLICY, assets, prefers_html
from tests.service.fakes import serving
from tests.service.test_demo import book_top, truth_top
from tests.web.browser import Demo, chromium_path, opened_page, running_demo, until

SYMBOLS = [s.canonical for s in DEMO_SYMBOLS]
BOOK_DEPTH = 10  # the page's ladder depth
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


# ---------------------------------------------------------------------- the page over plain HTTP
def test_only_a_request_that_ranks_html_first_gets_the_page() -> None:
    assert prefers_html(BROWSER_ACCEPT)
    assert prefers_html("text/html")
    assert prefers_html("application/json;q=0.5, text/html")
    assert not prefers_html("")
    assert not prefers_html("*/*")
    assert not prefers_html("application/json")
    assert not prefers_html("application/json, text/html")  # a tie keeps the JSON index
    assert not prefers_html("text/html;q=0")
    assert not prefers_html("text/html;q=x")


async def test_the_page_and_its_files_are_served_with_their_headers() -> None:
    async with serving(loaded=True) as (_, _, http):
        async with http.get("/", headers={"Accept": BROWSER_ACCEPT}) as resp:
            html = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
            assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["Vary"] == "Accept"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for accept in (None, "*/*", "application/json", "application/json, text/html"):
            async with http.get("/", headers={"Accept": accept} if accept else {}) as resp:
                body = await resp.json()
                assert resp.content_type == "application/json" and resp.headers["Vary"] == "Accept"
                assert body["symbols"] == ["BTC-USDT", "ETH-USDT"] and "/web/{file}" in body["endpoints"]
        assert "<script" in html and "style=" not in html and "onclick" not in html  # nothing inline
        for name, asset in assets().items():
            versioned = f"/web/{name}?v={asset.version}"
            assert f'"{versioned}"' in html  # the page links the current version of every file
            async with http.get(versioned) as resp:
                assert resp.status == 200 and resp.content_type == ASSET_TYPES[name]
                assert await resp.read() == asset.body
                assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            for stale in (f"/web/{name}", f"/web/{name}?v=0"):
                async with http.get(stale) as resp:
                    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"
        async with http.get("/web/index.html") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        async with http.get("/web/app.js?x=1") as resp:
            assert resp.status == 400


def test_the_openapi_document_lists_the_page_and_its_files() -> None:
    from tests.service.fakes import fake_config

    doc = openapi_document(fake_config(), ROUTES)
    index = doc["paths"]["/"]["get"]["responses"]["200"]["content"]
    assert set(index) == {"application/json", "text/html"}
    files = doc["paths"]["/web/{file}"]["get"]
    assert set(files["responses"]["200"]["content"]) == set(ASSET_TYPES.values())
    (param,) = [p for p in files["parameters"] if p["name"] == "file"]
    assert param["schema"]["enum"] == list(ASSET_TYPES)


# ---------------------------------------------------------------------- in the browser
@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    chromium_path()  # skip (or fail in CI) before starting anything
    async with running_demo() as running:
        yield running


def _sub_seqs(svc: Service) -> dict[str, int] | None:
    clients = list(svc.hub.clients)
    if len(clients) != 1 or clients[0].queue:
        return None
    return {key: sub.seq for key, sub in clients[0].subs.items()}


async def sub_seqs(demo: Demo) -> dict[str, int] | None:
    """The seq of the last message of each subscription of the page (the service's one client), once
    everything queued for it was sent; None before that."""
    return await demo.run(_sub_seqs, demo.svc)


def _books_equal_truth(demo: Demo, symbol: str) -> bool:
    return all(
        book_top(demo.svc, v, symbol, BOOK_DEPTH) == truth_top(demo.sim, v, symbol, BOOK_DEPTH)
        for v in DEMO_VENUES
    )


PAGE_SEQS = """() => {
  const q = document.getElementById('quote'), l = document.getElementById('ladder');
  return {symbol: q.dataset.symbol, ladder: l.dataset.symbol,
          quotes: q.dataset.seq, fees: q.dataset.feeSeq, book: l.dataset.seq};
}"""

PAGE_VIEW = """() => {
  const text = (id) => document.getElementById(id).textContent;
  const rows = (id) => [...document.getElementById(id).children].map(
      (tr) => [...tr.children].map((td) => td.textContent));
  const venues = [...document.querySelectorAll('#venue-rows tr')].map((tr) => ({
      venue: tr.dataset.venue, state: tr.dataset.state, included: tr.dataset.included,
      cells: [...tr.children].map((td) => td.textContent)}));
  const out = {venues, bids: rows('ladder-bids'), asks: rows('ladder-asks'),
               spread: text('spread'), feeSpread: text('fee-spread'),
               cross: document.getElementById('cross').dataset.cross};
  for (const side of ['bid', 'ask'])
    for (const part of ['price', 'size', 'venues', 'fee-price', 'fee-venues'])
      out[`${side}-${part}`] = text(`${side}-${part}`);
  return out;
}"""


async def settle(demo: Demo, page: Any, symbol: str) -> dict[str, int]:
    """Pause the markets, wait until every book equals the simulator's truth and the page has shown the
    last message of each of its subscriptions; the service's seqs then.

    Every symbol's books, not only the shown one's: the page subscribes to the quotes of every symbol,
    and a frame of another symbol still on its way (a busy machine) would move their seqs later."""
    await demo.pause()
    for each in SYMBOLS:
        await until(lambda s=each: demo.run(_books_equal_truth, demo, s),
                    what=f"{each} books equal to the truth")
    keys = (f"quotes:{symbol}", f"quotes:{symbol}:fees", f"book:{symbol}:{BOOK_DEPTH}")

    async def caught_up() -> bool:
        before = await sub_seqs(demo)
        shown = await page.evaluate(PAGE_SEQS)
        after = await sub_seqs(demo)
        if before is None or before != after or not all(k in before for k in keys):
            return False
        if shown["symbol"] != symbol or shown["ladder"] != symbol:
            return False
        return [shown["quotes"], shown["fees"], shown["book"]] == [str(before[k]) for k in keys]

    await until(caught_up, what=f"the page showing the last message of every {symbol} subscription")
    seqs = await sub_seqs(demo)
    assert seqs is not None
    return seqs


def side_venues(side: dict | None, fees: bool) -> str:
    if side is None:
        return ""
    if fees:
        return ", ".join(f"{v['venue']} ({v['price']} before fees)" for v in side["venues"])
    return ", ".join(f"{v['venue']} {v['size']}" for v in side["venues"])


async def check_page_equals_api(demo: Demo, page: Any, symbol: str) -> None:
    read: dict[str, Any] = {}

    async def one_state() -> bool:
        """The page and the API read between two equal readings of the service's seqs: one state.

        A message published meanwhile (the markets are paused, yet a venue's state may still move)
        makes the reading void; it is taken again once the page has caught up with it."""
        seqs = await settle(demo, page, symbol)
        read["quote"] = await demo.get(f"/v1/quotes/{symbol}")
        read["fee_quote"] = await demo.get(f"/v1/quotes/{symbol}?fees=true")
        read["ladder"] = await demo.get(f"/v1/books/{symbol}?depth={BOOK_DEPTH}")
        read["view"] = await page.evaluate(PAGE_VIEW)
        return await sub_seqs(demo) == seqs

    await until(one_state, timeout=60, what=f"{symbol}: the page and the API read at one state")
    quote, fee_quote, ladder, view = read["quote"], read["fee_quote"], read["ladder"], read["view"]
    for side in ("bid", "ask"):
        plain, fee = quote[side], fee_quote[side]
        assert plain is not None and fee is not None, (symbol, side)
        assert view[f"{side}-price"] == plain["price"] and view[f"{side}-size"] == plain["size"], side
        assert view[f"{side}-venues"] == side_venues(plain, fees=False)
        assert view[f"{side}-fee-price"] == fee["price"] and fee["fee_adjusted"] is True
        assert view[f"{side}-fee-venues"] == side_venues(fee, fees=True)
    assert view["spread"] == quote["spread"] and view["feeSpread"] == fee_quote["spread"]
    assert view["cross"] == ("crossed" if quote["crossed"] else "locked" if quote["locked"] else "none")
    # the ladder: bids are venues | size | price, asks price | size | venues
    assert len(ladder["bids"]) == len(view["bids"]) == BOOK_DEPTH
    for shown, level in zip(view["bids"], ladder["bids"], strict=True):
        assert shown == [" \u00b7 ".join(level["venues"]), level["size"], level["price"]]
    for shown, level in zip(view["asks"], ladder["asks"], strict=True):
        assert shown == [level["price"], level["size"], " \u00b7 ".join(level["venues"])]
    # every venue's row
    assert [v["venue"] for v in view["venues"]] == [v["venue"] for v in quote["venues"]]
    for shown, venue in zip(view["venues"], quote["venues"], strict=True):
        assert shown["state"] == venue["state"] and shown["included"] == str(venue["included"]).lower()
        bid, ask = venue["bid"], venue["ask"]
        assert shown["cells"][6] == f"{bid['price']} \u00d7 {bid['size']}"
        assert shown["cells"][7] == f"{ask['price']} \u00d7 {ask['size']}"
        assert shown["cells"][8] == f"{venue['fee_bps']} bps"


async def sweep_on_page(page: Any, side: str, qty: str, fees: bool) -> dict:
    await page.select_option("#sweep-side", side)
    await page.fill("#sweep-qty", qty)
    await page.set_checked("#sweep-fees", fees)
    await page.eval_on_selector("#sweep-result", "e => { e.dataset.state = 'idle'; }")
    await page.click("#sweep-go")
    await page.wait_for_selector("#sweep-result:is([data-state='done'], [data-state='error'])")
    return await page.eval_on_selector(
        "#sweep-result",
        """e => ({state: e.dataset.state, text: e.textContent,
                 fits: ((card) => card.scrollWidth <= card.clientWidth
                        || getComputedStyle(card).overflowX === 'auto')(e.closest('.card')),
                 rows: Object.fromEntries([...e.querySelectorAll('.sweep-summary tr')].map(
                     (tr) => [tr.dataset.field, tr.lastElementChild.textContent])),
                 venues: [...e.querySelectorAll('.sweep-alloc tr[data-venue]')].map(
                     (tr) => [...tr.children].map((td) => td.textContent))})""",
    )


async def test_the_page_shows_what_the_api_answers_for_every_symbol(demo: Demo) -> None:
    async with opened_page(f"{demo.url}/") as (page, problems):
        await page.wait_for_function("() => document.title === 'BTC-USDT \u00b7 aggbook'")
        await check_page_equals_api(demo, page, "BTC-USDT")

        # the sweep calculator asks /v1/sweep and shows its exact answer (the markets are still paused)
        for side, qty, fees in (("buy", "2.5", True), ("sell", "1", False)):
            shown = await sweep_on_page(page, side, qty, fees)
            api = await demo.get(f"/v1/sweep/BTC-USDT?side={side}&qty={qty}&fees={str(fees).lower()}")
            assert shown["state"] == "done" and shown["rows"]["notional"] == api["notional"]
            assert shown["fits"], "the sweep's answer runs out of its card"  # long exact decimals scroll
            assert shown["rows"]["average price"] == api["average_price"]
            assert shown["rows"]["worst price"] == api["worst_price"]
            if fees:
                assert shown["rows"]["total cost"] == api["total_cost"] and shown["rows"]["fee"] == api["fee"]
            else:
                assert "fee" not in shown["rows"] and "total cost" not in shown["rows"]
            assert [row[:3] for row in shown["venues"]] == [
                [a["venue"], a["qty"], a["notional"]] for a in api["allocation"]
            ]
        refused = await sweep_on_page(page, "buy", "-1", True)  # the API's own refusal, shown
        assert refused["state"] == "error" and "qty must be a positive decimal" in refused["text"]
        problems.expect("the server responded with a status of 400")

        # switch symbols by clicking, then by the address's fragment; the page follows with live data
        await demo.resume()
        await page.click("button[data-symbol='ETH-USDT']")
        await check_page_equals_api(demo, page, "ETH-USDT")
        await demo.resume()
        await page.evaluate("() => { location.hash = '#SOL-USDT'; }")
        await check_page_equals_api(demo, page, "SOL-USDT")
        seqs = await sub_seqs(demo)
        assert seqs is not None
        assert [k for k in seqs if k.startswith("book:")] == [f"book:SOL-USDT:{BOOK_DEPTH}"]
        assert sorted(k for k in seqs if k.startswith("quotes:")) == sorted(
            [f"quotes:{s}" for s in SYMBOLS] + [f"quotes:{s}:fees" for s in SYMBOLS]
        )
        assert await page.title() == "SOL-USDT \u00b7 aggbook"
        assert await page.get_attribute("button[data-symbol='SOL-USDT']", "aria-pressed") == "true"
        await demo.resume()
        problems.check()


ROW_STATES = """(venue) => {
  window.rowStates = [];
  const row = document.querySelector(`#venue-rows tr[data-venue="${venue}"]`);
  new MutationObserver(() => window.rowStates.push([row.dataset.state, row.children[2].textContent]))
    .observe(row, {attributes: true, attributeFilter: ['data-state']});
}"""


async def test_a_gap_turns_the_venues_row_to_resyncing_and_back_to_live(demo: Demo) -> None:
    venue, symbol = "binance", "BTC-USDT"
    venue_symbol = demo.sim.venues[venue].resolve_symbol(symbol)
    async with opened_page(f"{demo.url}/#{symbol}") as (page, _):
        row = f"#venue-rows tr[data-venue='{venue}']"
        await page.wait_for_selector(f"{row}[data-state='live'][data-resyncs='0']")
        await page.evaluate(ROW_STATES, venue)
        # the snapshot of the resync comes late, so the book stays out long enough to be seen
        await demo.sim_control(venue, "faults", {"fault": "slow_snapshot", "symbol": venue_symbol,
                                                 "params": {"delay": 2.0}})
        await demo.sim_control(venue, "faults", {"fault": "gap", "symbol": venue_symbol})

        async def back_live() -> bool:
            states = await page.evaluate("() => window.rowStates")
            seen = [s for s, _ in states]
            return "resyncing" in seen and seen[-1] == "live" and seen.index("resyncing") < len(seen) - 1

        await until(back_live, what=f"{venue}'s row resyncing, then live")
        states = await page.evaluate("() => window.rowStates")
        assert ["resyncing", "gap"] in states, states
        assert await page.get_attribute(row, "data-included") == "true"
        # the resync is counted (from /v1/status) and the transition is in the event list
        await page.wait_for_selector(f"{row}[data-resyncs='1']")
        events = await page.eval_on_selector_all(
            "#events li", "items => items.map((li) => li.textContent)")
        assert any(venue in e and "live \u2192 resyncing (gap" in e for e in events), events
        status = await demo.get("/v1/status")
        (binance,) = [v for v in status["venues"] if v["venue"] == venue]
        assert binance["symbols"][symbol]["resyncs"] == {"gap": 1}
        # the other venues never left
        for other in DEMO_VENUES:
            if other != venue:
                other_row = f"#venue-rows tr[data-venue='{other}']"
                assert await page.get_attribute(other_row, "data-resyncs") == "0"


CONNECTION_STATES = """() => {
  window.connectionStates = [];
  const banner = document.getElementById('banner');
  new MutationObserver(() => window.connectionStates.push([
      document.body.dataset.connection, getComputedStyle(banner).display, banner.textContent]))
    .observe(document.body, {attributes: true, attributeFilter: ['data-connection']});
}"""


async def test_a_lost_connection_is_shown_and_the_page_subscribes_again(demo: Demo) -> None:
    async with opened_page(f"{demo.url}/") as (page, _):
        await page.wait_for_selector("body[data-connection='open']")
        assert not await page.is_visible("#banner")

        async def subscribed() -> bool:
            return len(await sub_seqs(demo) or {}) == 7  # quotes with and without fees per symbol, one ladder

        await until(subscribed, what="the page's seven subscriptions")
        (first,) = await demo.run(list, demo.svc.hub.clients)
        await page.evaluate(CONNECTION_STATES)
        await demo.call(first.close(4008, "slow consumer"))  # what a client too slow to keep up gets

        async def reconnected() -> bool:
            seqs = await sub_seqs(demo)
            clients = await demo.run(list, demo.svc.hub.clients)
            return seqs is not None and len(seqs) == 7 and clients[:1] != [first]

        await until(reconnected, what="the page connected and subscribed again")
        await page.wait_for_selector("body[data-connection='open']")
        states = await page.evaluate("() => window.connectionStates")
        lost = [s for s in states if s[0] == "reconnecting"]
        assert lost and all(display == "block" for _, display, _ in lost), states
        why = "Connection lost (connection closed (code 4008, slow consumer))"
        assert any(why in text for *_, text in lost), lost
        assert states[-1][0] == "open" and not await page.is_visible("#banner")
        events = await page.eval_on_selector_all("#events li", "items => items.map((li) => li.textContent)")
        assert any("reconnected; subscribing again" in e for e in events), events
        # fresh subscriptions, and the page shows their data again
        await check_page_equals_api(demo, page, "BTC-USDT")
        await demo.resume()


async def test_a_browser_gets_the_page_and_a_script_the_json_index(demo: Demo) -> None:
    """The browser's own navigation gets the page; a fetch of / from the page (a script) gets JSON."""
    async with opened_page(f"{demo.url}/") as (page, _):
        assert await page.locator("h1").inner_text() == "aggbook"
        index = await page.evaluate("() => fetch('/').then((r) => r.json())")
        assert index["symbols"] == SYMBOLS


# at 40 market steps a second per symbol and venue (twice the demo's default), several hundred
# WebSocket messages a second: several per animation frame
async def test_at_a_high_rate_the_page_conflates_and_keeps_up(demo: Demo) -> None:
    async with opened_page(f"{demo.url}/") as (page, problems):
        async def busy() -> bool:
            stats = await page.evaluate("() => aggbook.stats()")
            return stats["messages"] >= 1000

        await until(busy, timeout=60, what="1000 messages on the page")
        stats = await page.evaluate("() => aggbook.stats()")
        # renders follow animation frames, not messages: frames took in several messages each
        assert stats["mostPerRender"] > 1 and stats["renders"] < stats["messages"], stats
        assert stats["conflated"] == 0  # the page read every message; the service never had to conflate
        await check_page_equals_api(demo, page, "BTC-USDT")  # and it is current
        await demo.resume()
        problems.check()
