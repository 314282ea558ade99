"""Snapshot pacing derived from a venue's request budget, and the cold-start bound it implies."""

from __future__ import annotations

import pytest

from aggbook.feeds.binance import BinanceFuturesFeed, BinanceSpotFeed
from aggbook.feeds.btse import BtseFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.nhex import NhexFeed
from aggbook.feeds.pacing import WeightBudget, cold_start_bound_s


@pytest.mark.parametrize("budget", [
    WeightBudget(6000, 60, reserve=40),
    WeightBudget(2400, 60, reserve=2),
    WeightBudget(300, 2, reserve=40, burst_share=0.25),
    WeightBudget(1000, 1, headroom=0.5, burst_share=0.0),
])
@pytest.mark.parametrize("weight", [5, 50, 250])
def test_burst_plus_one_window_of_rate_is_the_usable_weight(budget: WeightBudget, weight: float) -> None:
    """No window, fixed or sliding, can see more than the usable share from a bucket paced this way."""
    rate, burst = budget.pacing(weight)
    assert burst >= weight  # a snapshot always fits the bucket
    if budget.usable >= 2 * weight:
        assert burst + rate * budget.window == pytest.approx(budget.usable)
        assert budget.usable <= budget.limit * budget.headroom
    else:  # too small for two a window: one snapshot per window, the venue's Retry-After does the rest
        assert (rate * budget.window, burst) == (weight, weight)


def test_cold_start_bound_counts_the_burst_then_the_rate() -> None:
    budget = WeightBudget(6000, 60, reserve=40)  # Binance spot: usable 4760, burst 476, rate 71.4/s
    assert budget.usable == 4760
    assert cold_start_bound_s(budget, 50, 200) == pytest.approx((200 * 50 - 476) / 71.4)
    assert cold_start_bound_s(budget, 5, 200) == pytest.approx((200 * 5 - 476) / 71.4)
    assert cold_start_bound_s(budget, 5, 90) == 0.0  # the burst covers it
    assert cold_start_bound_s(budget, 50, 0) == 0.0


@pytest.mark.parametrize(("feed_cls", "depth", "limit", "reserve", "weight"), [
    (BinanceSpotFeed, None, 6000, 40, 50),
    (BinanceSpotFeed, 100, 6000, 40, 5),
    (BinanceFuturesFeed, None, 2400, 2, 20),
    (BinanceFuturesFeed, 100, 2400, 2, 5),
])
def test_binance_paces_from_the_documented_budget_before_exchange_info(
    feed_cls: type[BinanceSpotFeed], depth: int | None, limit: int, reserve: int, weight: float,
) -> None:
    """Before (or without) exchangeInfo the documented budget stands; the depth sets the weight."""
    feed = feed_cls(VenueConfig(name="b", kind="b", symbols={"BTC-USDT": "BTCUSDT"}, depth=depth))
    budget = feed.budget
    assert (budget.limit, budget.window, budget.headroom, budget.reserve) == (limit, 60.0, 0.8, reserve)
    assert feed.snapshot_weight("BTC-USDT") == weight
    assert (feed.pacer.rate, feed.pacer.burst) == budget.pacing(weight)
    assert feed.cold_start_bound_s(200) == pytest.approx(cold_start_bound_s(budget, weight, 200))


def test_exchange_info_budget_replaces_the_default_and_options_override_both() -> None:
    feed = BinanceSpotFeed(VenueConfig(name="b", kind="b", symbols={"BTC-USDT": "BTCUSDT"}))
    feed._learn_rate_limits([
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 10, "limit": 500},
    ])
    assert (feed.weight_budget, feed.weight_window) == (1200, 60.0)  # 20/s is tighter than 50/s
    feed.snapshots.repace()
    assert (feed.pacer.rate, feed.pacer.burst) == feed.budget.pacing(50)
    pinned = BinanceSpotFeed(VenueConfig(name="b", kind="b", symbols={"BTC-USDT": "BTCUSDT"},
                                         options={"weight_budget": 3000, "snapshot_burst": 100.0}))
    pinned._learn_rate_limits([{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 1200}])
    assert pinned.weight_budget == 3000  # the operator's budget is kept
    assert pinned.snapshot_pacing() == (pinned.budget.pacing(50)[0], 100.0)


def test_mbp_cold_start_is_bound_by_the_req_spacing_per_connection() -> None:
    """NHEX/BitV reqs leave one connection 110 ms apart: 30 books on one socket take 29 spacings."""
    feed = NhexFeed(VenueConfig(name="n", kind="nhex", symbols={"BTC-USDT": "btcusdt"}))
    assert feed.max_symbols_per_connection == 30
    assert feed.cold_start_bound_s(200) == pytest.approx(29 * 0.11)  # the venue-wide pacer: 3.0 s
    assert feed.cold_start_bound_s(1) == 0.0


def test_btse_cold_start_is_one_subscribe_per_connection_not_paced() -> None:
    """The subscribe on connect carries every topic; only resync resubscribes go through the pacer."""
    feed = BtseFeed(VenueConfig(name="t", kind="btse", symbols={"BTC-USDT": "BTC-USDT"}))
    assert feed.cold_start_bound_s(200) == 0.0
    assert feed.snapshot_pacing() == (5.0, 10.0)  # resyncs stay paced
