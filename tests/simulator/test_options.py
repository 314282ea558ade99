"""Simulated venues take one options dataclass each; an option a venue does not have is an error."""

from __future__ import annotations

import pytest

from aggbook.simulator.binance import FUTURES, SPOT, BinanceFuturesVenue, BinanceOptions, BinanceSpotVenue
from aggbook.simulator.btse import BtseOptions, BtseVenue
from aggbook.simulator.exchange import SimulatedExchange, venue_classes
from aggbook.simulator.gzip_mbp import GzipMbpOptions
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.mexc import MexcOptions, MexcVenue
from aggbook.simulator.nhex import NhexVenue
from aggbook.simulator.venue import VenueOptions

SPECS = DEFAULT_SYMBOLS[:1]


@pytest.mark.parametrize("name", sorted(venue_classes()))
def test_an_unknown_option_names_the_option_and_the_venue(name: str) -> None:
    cls = venue_classes()[name]
    expected = rf"simulated venue '{name}' has no option 'no_such_knob'; its options: "
    with pytest.raises(TypeError, match=expected):
        cls(SPECS, no_such_knob=1)


@pytest.mark.parametrize("name", sorted(venue_classes()))
def test_every_venue_takes_the_common_options(name: str) -> None:
    venue = venue_classes()[name](SPECS, seed=9, rate=3.0, autostart_pump=False, history_len=5)
    assert isinstance(venue.options, VenueOptions)
    assert (venue.options.seed, venue.rate, venue.autostart_pump, venue.history_len) == (9, 3.0, False, 5)


def test_one_venues_option_is_refused_by_another() -> None:
    MexcVenue(SPECS, idle_timeout=5.0)  # MEXC has it
    with pytest.raises(TypeError, match="'binance' has no option 'snapshot_depth'"):
        BinanceSpotVenue(SPECS, snapshot_depth=5)  # BTSE's
    with pytest.raises(TypeError, match="'btse' has no option 'ping_interval'"):
        BtseVenue(SPECS, ping_interval=1.0)  # Binance's and NHEX's


def test_an_options_object_configures_the_venue() -> None:
    venue = MexcVenue(SPECS, MexcOptions(seed=4, idle_timeout=5.0, no_subscription_timeout=2.0))
    assert (venue.idle_timeout, venue.no_subscription_timeout, venue.timer_tick) == (5.0, 2.0, 0.2)
    nhex = NhexVenue(SPECS, GzipMbpOptions(ping_interval=2.5, max_missed_pongs=0))
    assert (nhex.ping_interval, nhex.max_missed_pongs) == (2.5, 0)
    with pytest.raises(TypeError, match="'btse' takes BtseOptions, got MexcOptions"):
        BtseVenue(SPECS, MexcOptions())
    with pytest.raises(TypeError, match="not both"):
        BtseVenue(SPECS, BtseOptions(), seed=2)


def test_binance_markets_differ_by_their_endpoint_record_and_options_override_it() -> None:
    spot, futures = BinanceSpotVenue(SPECS), BinanceFuturesVenue(SPECS)
    assert (spot.ping_interval, spot.max_incoming_per_sec, spot.limiter.limit) == (
        SPOT.ping_interval, SPOT.max_incoming, SPOT.weight_limit)
    assert (futures.ping_interval, futures.max_incoming_per_sec, futures.limiter.limit) == (
        FUTURES.ping_interval, FUTURES.max_incoming, FUTURES.weight_limit)
    assert spot.pong_must_echo and not futures.pong_must_echo
    tuned = BinanceFuturesVenue(SPECS, BinanceOptions(ping_interval=0.5, pong_must_echo=True, weight_limit=7))
    assert (tuned.ping_interval, tuned.pong_must_echo, tuned.limiter.limit) == (0.5, True, 7)


@pytest.mark.parametrize("limit,weight", [(1, 5), (100, 5), (101, 25), (1000, 50), (5000, 250)])
def test_spot_depth_weight_comes_from_the_table(limit: int, weight: int) -> None:
    assert BinanceSpotVenue(SPECS)._depth_weight(limit) == weight


@pytest.mark.parametrize("limit,weight", [(5, 2), (50, 2), (100, 5), (500, 10), (1000, 20)])
def test_futures_depth_weight_comes_from_the_table(limit: int, weight: int) -> None:
    assert BinanceFuturesVenue(SPECS)._depth_weight(limit) == weight


def test_the_exchange_passes_each_venue_its_own_options() -> None:
    sim = SimulatedExchange(["mexc", "btse"], SPECS, autostart_pump=False,
                            venue_options={"mexc": {"idle_timeout": 5.0}, "btse": {"snapshot_depth": 7}})
    assert sim["mexc"].idle_timeout == 5.0  # type: ignore[attr-defined]
    assert sim["btse"].snapshot_depth == 7  # type: ignore[attr-defined]
    assert not sim["mexc"].autostart_pump and not sim["btse"].autostart_pump


def test_the_exchange_refuses_options_it_cannot_place() -> None:
    with pytest.raises(TypeError, match="idle_timeout: not an option every simulated venue has"):
        SimulatedExchange(["mexc"], SPECS, idle_timeout=5.0)
    with pytest.raises(ValueError, match="unknown simulated venue"):
        SimulatedExchange(["nope"], SPECS)
    with pytest.raises(ValueError, match="venue_options for venues not started: btse"):
        SimulatedExchange(["mexc"], SPECS, venue_options={"btse": {"snapshot_depth": 7}})
    with pytest.raises(TypeError, match="'mexc' has no option 'snapshot_depth'"):
        SimulatedExchange(["mexc"], SPECS, venue_options={"mexc": {"snapshot_depth": 7}})
