"""Each simulated venue runs its own market around one shared reference price per symbol.

The venues must not be copies of each other (the consolidated view would be pointless), each must
stay a sane book on its own grid, and everything must still be reproducible from the seed.  The
tick and lot a venue's market uses are the ones its symbol-list endpoint serves, read here with a
raw client the way a trading client would.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import pytest

from aggbook.simulator.exchange import SimulatedExchange, venue_classes
from aggbook.simulator.market import DEFAULT_SYMBOLS, MarketModel, MarketProfile
from aggbook.simulator.reference import LOOKBACK, ReferencePrice
from aggbook.simulator.venue import VenueServer

DEMO_FEES_BPS = {"binance": 10, "mexc": 5, "btse": 10, "nhex": 20, "bitv": 20}


def venues(seed: int = 1) -> dict[str, VenueServer]:
    """Every registered venue over every default symbol, not started (markets stepped by hand)."""
    return {name: cls(DEFAULT_SYMBOLS, seed=seed, autostart_pump=False)
            for name, cls in venue_classes().items()}


def by_canonical(venue: VenueServer) -> dict[str, MarketModel]:
    return {venue.specs[vs].canonical: market for vs, market in venue.markets.items()}


# ---------------------------------------------------------------------- the reference price
def test_reference_walk_is_reproducible_and_stays_near_the_quoted_mid() -> None:
    for spec in DEFAULT_SYMBOLS:
        one, two, other = ReferencePrice(spec, 5), ReferencePrice(spec, 5), ReferencePrice(spec, 6)
        path = [one.ticks_at(i) for i in range(20_000)]
        assert path == [two.ticks_at(i) for i in range(20_000)]
        assert path != [other.ticks_at(i) for i in range(20_000)]
        start = int(spec.mid / spec.tick)
        assert path[0] == start and len(set(path)) > 100, "the price moves"
        assert all(abs(p - start) <= start * 0.1 for p in path), "a long run stays near the mid"
        jumps = sum(abs(b - a) >= start * 2.5 / 10_000 for a, b in itertools.pairwise(path))
        assert 5 <= jumps <= 100, "now and then a jump of a few basis points"
    ref = ReferencePrice(DEFAULT_SYMBOLS[0], 1)
    ref.ticks_at(LOOKBACK * 2)
    assert ref.ticks_at(LOOKBACK * 2 - LOOKBACK + 1) > 0  # a lagging reader within the kept window
    with pytest.raises(ValueError):
        ref.ticks_at(0)


# ---------------------------------------------------------------------- per-venue markets
def test_venue_markets_differ_from_each_other() -> None:
    sims = venues()
    for spec in DEFAULT_SYMBOLS:
        markets = {name: by_canonical(venue)[spec.canonical] for name, venue in sims.items()}
        for _ in range(200):
            for market in markets.values():
                market.step()
        books = {name: market.snapshot() for name, market in markets.items()}
        for (a, book_a), (b, book_b) in itertools.combinations(books.items(), 2):
            assert book_a != book_b, f"{spec.canonical}: {a} and {b} hold the same book"
        tops = {(m.best_bid(), m.best_ask()) for m in markets.values()}
        assert len(tops) >= 3, f"{spec.canonical}: the venues quote alike {tops}"


def test_venue_markets_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> dict[str, list]:
        out = {}
        for name, venue in venues(seed).items():
            out[name] = [[m.step() for m in venue.markets.values()] for _ in range(300)]
        return out

    first, again, other = run(4), run(4), run(5)
    assert first == again
    assert all(first[name] != other[name] for name in first)


@pytest.mark.parametrize("name", sorted(venue_classes()))
def test_venue_books_stay_sane_on_their_own_grid(name: str) -> None:
    """Never crossed within the venue, prices on its tick, sizes on its lot, near the reference."""
    venue = venue_classes()[name](DEFAULT_SYMBOLS, seed=2, autostart_pump=False, depth=25,
                                   **({"fine_size_symbols": ()} if name in ("nhex", "bitv") else {}))
    for vs, market in venue.markets.items():
        spec = venue.specs[vs]
        assert market.spec == spec
        reference = market.reference
        for _ in range(1500):
            for change in market.step():
                assert change.price > 0 and change.price % spec.tick == 0, (vs, change)
                assert change.size >= 0 and change.size % spec.lot == 0, (vs, change)
            best_bid, best_ask = market.best_bid(), market.best_ask()
            assert best_bid is not None and best_ask is not None and best_bid < best_ask, vs
            assert 3 <= len(market.bids) <= 25 and 3 <= len(market.asks) <= 25
            sizes = (*market.bids.values(), *market.asks.values())
            assert all(size > 0 and size % spec.lot == 0 for size in sizes)
            ref = reference.price_at(market.clock)
            assert abs(best_bid - ref) < ref / 100 and abs(best_ask - ref) < ref / 100, (vs, best_bid, ref)


def test_venue_grids_differ_where_their_symbol_rules_say() -> None:
    sims = venues()
    ticks = {spec.canonical: {by_canonical(v)[spec.canonical].spec.tick for v in sims.values()}
             for spec in DEFAULT_SYMBOLS}
    lots = {spec.canonical: {by_canonical(v)[spec.canonical].spec.lot for v in sims.values()}
            for spec in DEFAULT_SYMBOLS}
    assert all(len(t) >= 2 for t in ticks.values()), ticks
    assert all(len(lot) >= 2 for lot in lots.values()), lots
    neutral = MarketProfile().symbol_rules(DEFAULT_SYMBOLS[0])
    assert neutral == DEFAULT_SYMBOLS[0]


def _binance(info: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for item in info["symbols"]:
        filters = {f["filterType"]: f for f in item["filters"]}
        out[item["symbol"]] = (filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"])
    return out


def _mexc(info: dict) -> dict[str, tuple[str, str]]:
    return {s["symbol"]: (str(Decimal(1).scaleb(-s["quotePrecision"])), s["baseSizePrecision"])
            for s in info["symbols"]}


def _btse(items: list) -> dict[str, tuple[str, str]]:
    return {s["symbol"]: (str(s["minPriceIncrement"]), str(s["minSizeIncrement"])) for s in items}


def _huobi(body: dict) -> dict[str, tuple[str, str]]:
    return {s["symbol"]: (str(Decimal(1).scaleb(-s["price-precision"])),
                          str(Decimal(1).scaleb(-s["amount-precision"]))) for s in body["data"]}


RULES: dict[str, tuple[str, Callable[[object], dict[str, tuple[str, str]]]]] = {
    "binance": ("/api/v3/exchangeInfo", _binance),  # type: ignore[dict-item]
    "binance-futures": ("/fapi/v1/exchangeInfo", _binance),  # type: ignore[dict-item]
    "binance-coinm": ("/dapi/v1/exchangeInfo", _binance),  # type: ignore[dict-item]
    "mexc": ("/api/v3/exchangeInfo", _mexc),  # type: ignore[dict-item]
    "btse": ("/api/v3.3/market_summary", _btse),  # type: ignore[dict-item]
    "nhex": ("/v1/common/symbols", _huobi),  # type: ignore[dict-item]
    "bitv": ("/v1/common/symbols", _huobi),  # type: ignore[dict-item]
}


async def test_served_symbol_rules_are_the_grid_the_market_uses(session: aiohttp.ClientSession) -> None:
    assert set(RULES) == set(venue_classes()), "a venue without a symbol-rules reader here"
    gzip = {"fine_size_symbols": ()}
    async with SimulatedExchange(symbols=DEFAULT_SYMBOLS, autostart_pump=False,
                                 venue_options={"nhex": gzip, "bitv": gzip}) as sim:
        for name, venue in sim.venues.items():
            path, read = RULES[name]
            async with session.get(venue.urls()["rest_url"] + path) as resp:
                assert resp.status == 200
                served = read(await resp.json(content_type=None))
            assert set(served) == set(venue.markets), name
            for vs, (tick, lot) in served.items():
                market = venue.markets[vs]
                assert (Decimal(tick), Decimal(lot)) == (market.spec.tick, market.spec.lot), (name, vs)
                for _ in range(20):
                    market.step()
                for price, size in (*market.bids.items(), *market.asks.items()):
                    assert price % Decimal(tick) == 0 and size % Decimal(lot) == 0, (name, vs, price, size)


# ---------------------------------------------------------------------- across venues
def test_demo_venues_take_turns_at_the_top_and_now_and_then_cross() -> None:
    """Stepped in lock-step, the demo venues' best bid and ask come from several venues, crossed and
    locked moments occur but are the exception, and fees change which venue is best."""
    sims = {name: venue for name, venue in venues(seed=1).items() if name in DEMO_FEES_BPS}
    for spec in DEFAULT_SYMBOLS[:3]:
        markets = {name: by_canonical(venue)[spec.canonical] for name, venue in sims.items()}
        best_bid: Counter[str] = Counter()
        best_ask: Counter[str] = Counter()
        crossed = locked = fee_changed = 0
        steps = 3000
        for _ in range(steps):
            for market in markets.values():
                market.step()
            bids = {n: m.best_bid() for n, m in markets.items()}
            asks = {n: m.best_ask() for n, m in markets.items()}
            top_bid, top_ask = max(bids.values()), min(asks.values())  # type: ignore[type-var]
            best_bid.update(n for n, p in bids.items() if p == top_bid)
            best_ask.update(n for n, p in asks.items() if p == top_ask)
            crossed += top_bid > top_ask  # type: ignore[operator]
            locked += top_bid == top_ask
            net = {n: p * (10_000 - DEMO_FEES_BPS[n]) for n, p in bids.items()}  # type: ignore[operator]
            fee_changed += bids[max(net, key=net.__getitem__)] != top_bid
        assert sum(1 for c in best_bid.values() if c >= steps // 20) >= 3, (spec.canonical, best_bid)
        assert sum(1 for c in best_ask.values() if c >= steps // 20) >= 3, (spec.canonical, best_ask)
        assert crossed > 0 and locked > 0, (spec.canonical, crossed, locked)
        assert crossed + locked < steps // 5, (spec.canonical, crossed, locked)
        assert fee_changed > steps // 4, (spec.canonical, fee_changed)
