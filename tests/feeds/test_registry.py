"""The venue registry: every venue is found from its own module, and a new one needs no shared edit.

The proof at the end writes a venue "acme" the way CONTRIBUTING.md describes (a feed module that
ends with ``VENUES`` and a simulator module) into a temporary folder that is added to the
``aggbook.feeds`` and ``aggbook.simulator`` package paths, so no file of the repository changes;
then the registry, config parsing, the simulator and a running feed all pick it up.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import aggbook.feeds
import aggbook.simulator
from aggbook.feeds import registry
from aggbook.feeds.binance import BINANCE_SPOT, BinanceSpotFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import UnknownVenue, feed_class, known_kinds, venue_spec, venue_specs
from aggbook.feeds.spec import SymbolSpelling, VenueSpec
from aggbook.service.config import ConfigError, parse_config
from aggbook.simulator.exchange import SimulatedExchange, venue_classes
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import wait_for
from tests.feeds.fleet import running_fleet

BUILT_IN = {"binance", "binance-coinm", "binance-futures", "mexc", "btse", "nhex", "bitv"}


def test_every_built_in_venue_is_discovered_with_a_simulator() -> None:
    assert set(known_kinds()) >= BUILT_IN  # a superset: a new venue needs no edit here
    for kind, spec in venue_specs().items():
        assert spec.kind == kind
        assert spec.feed.__module__.startswith("aggbook.feeds.")
        assert spec.simulator_class().__module__.startswith("aggbook.simulator.")
    assert venue_classes().keys() == venue_specs().keys()


@pytest.mark.parametrize("kind,spelled", [
    ("binance", "BTCUSDT"), ("binance-futures", "BTCUSDT"), ("mexc", "BTCUSDT"),
    ("btse", "BTC-USDT"), ("nhex", "btcusdt"), ("bitv", "btcusdt"),
])
def test_each_venue_spells_symbols_its_own_way(kind: str, spelled: str) -> None:
    assert venue_spec(kind).symbol("BTC-USDT") == spelled


def test_coinm_spells_the_canonical_pair_as_its_perpetual() -> None:
    """COIN-M's inverse perpetual: BTC-USD is BTCUSD_PERP (a delivery contract needs a mapping)."""
    assert venue_spec("binance-coinm").symbol("BTC-USD") == "BTCUSD_PERP"


def test_a_venue_config_without_urls_gets_the_production_ones_from_the_spec() -> None:
    config = VenueConfig(name="x", kind="btse", symbols={"BTC-USDT": "BTC-USDT"})
    assert (config.rest_url, config.ws_url) == ("https://api.btse.com/spot", "wss://ws.btse.com/ws/oss/spot")
    unknown = VenueConfig(name="x", kind="no-such-venue", symbols={})
    assert (unknown.rest_url, unknown.ws_url) == ("", "")


def test_unknown_kind_names_the_known_ones() -> None:
    expected = r"unknown venue kind 'nope'; known: .*\bbinance, binance-coinm, binance-futures\b"
    with pytest.raises(UnknownVenue, match=expected) as raised:
        feed_class("nope")
    assert all(kind in str(raised.value) for kind in BUILT_IN)


@pytest.mark.parametrize("field,value,message", [
    ("kind", "Binance", "lower-case"),
    ("simulator", "aggbook.simulator.binance.BinanceSpotVenue", "package.module:Class"),
    ("rules", (), "non-empty"),
    ("rest_url", "api.example.com", "http"),
    ("ws_url", "https://example.com", "ws"),
])
def test_a_malformed_spec_is_refused_where_it_is_declared(field: str, value: object, message: str) -> None:
    fields: dict[str, object] = {
        "kind": "example", "title": "Example", "feed": BinanceSpotFeed, "rest_url": "https://example.com",
        "ws_url": "wss://example.com", "rules": (BINANCE_SPOT,), "simulator": "aggbook.simulator.x:Venue",
    }
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        VenueSpec(**fields)  # type: ignore[arg-type]


def test_symbol_spelling_rules() -> None:
    assert SymbolSpelling().spell("ETH-USDT") == "ETHUSDT"
    assert SymbolSpelling(separator="-").spell("ETH-USDT") == "ETH-USDT"
    assert SymbolSpelling(separator="_", lower=True).spell("ETH-USDT") == "eth_usdt"


# ---------------------------------------------------------------------- a venue added at run time
ACME_FEED = '''
"""Acme: Binance's spot protocol under its own name, symbols spelt BTC_USDT."""

from decimal import Decimal

from aggbook.book.sync import Chain, FirstAfterSnapshot, SequenceRule
from aggbook.feeds.binance import BinanceSpotFeed
from aggbook.feeds.spec import SymbolSpelling, VenueSpec

ACME = SequenceRule("acme", Chain.NEXT_ID, FirstAfterSnapshot.COVERS_NEXT,
                    drop_through_snapshot=True, overlap_ok=True)


class AcmeFeed(BinanceSpotFeed):
    def rule_for(self, canonical):
        return ACME


VENUES = (
    VenueSpec(
        kind="acme",
        title="Acme spot",
        feed=AcmeFeed,
        rest_url="https://api.acme.example",
        ws_url="wss://stream.acme.example",
        rules=(ACME,),
        simulator="aggbook.simulator.acme:AcmeVenue",
        spelling=SymbolSpelling(separator="_"),
        demo_fee_bps=Decimal("7"),
    ),
)
'''

ACME_SIMULATOR = '''
"""Simulated Acme: the simulated Binance spot venue with Acme's symbol spelling."""

from aggbook.simulator.binance import BinanceSpotVenue


class AcmeVenue(BinanceSpotVenue):
    name = "acme"

    def venue_symbol(self, spec):
        return f"{spec.base}_{spec.quote}"
'''


def _forget_acme() -> None:
    for name in ("aggbook.feeds.acme", "aggbook.simulator.acme"):
        sys.modules.pop(name, None)
    registry.refresh()


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The venue modules an author would add, in a folder the two packages also search."""
    for package, source in ((aggbook.feeds, ACME_FEED), (aggbook.simulator, ACME_SIMULATOR)):
        folder = tmp_path / package.__name__.rpartition(".")[2]
        folder.mkdir()
        (folder / "acme.py").write_text(textwrap.dedent(source))
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    _forget_acme()
    yield
    monkeypatch.undo()
    _forget_acme()


@pytest.mark.usefixtures("acme")
def test_a_new_venue_module_is_picked_up_by_registry_and_config() -> None:
    spec = venue_spec("acme")
    assert spec.title == "Acme spot" and spec.demo_fee_bps == Decimal("7")
    assert feed_class("acme").__name__ == "AcmeFeed"
    assert "acme" in known_kinds() and set(known_kinds()) >= BUILT_IN
    assert [rule.name for rule in spec.rules] == ["acme"]

    cfg = parse_config({"service": {"symbols": ["BTC-USDT", "ETH-USDT"]},
                        "venues": {"acme": {"fee_bps": 7, "options": {"stream_speed": "100ms"}}}}, env={})
    (venue,) = cfg.venues
    assert venue.kind == "acme"
    assert venue.symbols == {"BTC-USDT": "BTC_USDT", "ETH-USDT": "ETH_USDT"}
    assert (venue.rest_url, venue.ws_url) == ("https://api.acme.example", "wss://stream.acme.example")
    with pytest.raises(ConfigError, match=r"^venues.acme.options.no_such_knob: unknown option"):
        parse_config({"service": {"symbols": ["BTC-USDT"]},
                      "venues": {"acme": {"options": {"no_such_knob": 1}}}}, env={})
    assert "acme" in cfg.describe() and "Acme spot" in cfg.describe()


@pytest.mark.integration
@pytest.mark.usefixtures("acme")
async def test_a_new_venue_runs_in_the_simulator_and_its_feed_keeps_the_truth() -> None:
    assert venue_classes()["acme"].__name__ == "AcmeVenue"
    specs = DEFAULT_SYMBOLS[:2]
    sim = SimulatedExchange(["acme"], specs, seed=5)
    assert {spec.canonical: sim["acme"].venue_symbol(spec) for spec in specs} == {
        spec.canonical: venue_spec("acme").symbol(spec.canonical) for spec in specs}
    async with sim, running_fleet(sim, specs) as fleet:
        assert [type(feed).__name__ for feed in fleet.feeds] == ["AcmeFeed"]
        await wait_for(lambda: len(fleet.pairs()) == 2 and fleet.all_live(), timeout=20,
                       what="both acme books live")
        sim.pause()
        await wait_for(fleet.all_equal_to_truth, timeout=10, what="acme books equal to the truth")
        assert {sync.rule.name for _, sync, _ in fleet.pairs()} == {"acme"}


def test_a_venue_module_that_cannot_be_imported_is_named(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_venue.py").write_text("import aggbook_no_such_dependency\n")
    monkeypatch.setattr(aggbook.feeds, "__path__", [*aggbook.feeds.__path__, str(tmp_path)])
    registry.refresh()
    try:
        assert set(known_kinds()) >= BUILT_IN  # the others still load
        with pytest.raises(UnknownVenue, match=r"not importable: aggbook\.feeds\.broken_venue "
                                               r"\(No module named 'aggbook_no_such_dependency'\)"):
            venue_spec("broken")
    finally:
        monkeypatch.undo()
        sys.modules.pop("aggbook.feeds.broken_venue", None)
        registry.refresh()


def test_a_kind_declared_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zz_copy.py").write_text("from aggbook.feeds.mexc import VENUES  # noqa: F401\n")
    monkeypatch.setattr(aggbook.feeds, "__path__", [*aggbook.feeds.__path__, str(tmp_path)])
    registry.refresh()
    try:
        with pytest.raises(ValueError, match="venue kind 'mexc' declared twice"):
            venue_specs()
    finally:
        monkeypatch.undo()
        sys.modules.pop("aggbook.feeds.zz_copy", None)
        registry.refresh()

