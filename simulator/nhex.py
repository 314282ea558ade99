"""Simulated NHEX (新火香港): the shared Huobi-style mbp venue with NHEX's own settings.

What differs from BitV (comparing NHEX's API documentation with BitV's): mbp levels 5, 20 and 150 on
every symbol, plus 400 (listed only in the doc's parameter table) when ``enable_mbp400=True``, where
it behaves like 150 (100 ms snapshot diff of the top 400); REST depth types step0..step5 at price
precision ×10 … ×100000, step0 defaulting to 150 levels; the server's close after two unanswered
pings is stated by the doc.  No ``/v2/market-status`` and no rate-limit headers.
"""

from __future__ import annotations

from collections.abc import Mapping

from aggbook.simulator.gzip_mbp import GzipMbpVenue
from aggbook.simulator.market import MarketProfile


class NhexVenue(GzipMbpVenue):
    """NHEX: every protocol rule lives in :class:`GzipMbpVenue`; only NHEX's settings are here."""

    name = "nhex"
    # Huobi-style precisions: a finer SOL and XRP tick than the other venues
    market_profile = MarketProfile(
        spread=3, size_scale=0.8, lag=4, drift=0.8, quote_interval=2, activity=10,
        rules={"ETH-USDT": ("0.01", "0.0001"), "SOL-USDT": ("0.0001", "0.0001"),
               "DOGE-USDT": ("0.000001", "0.01"), "XRP-USDT": ("0.00001", "0.01")},
    )
    optional_levels = (400,)
    depth_steps: Mapping[str, int] = {
        "step0": 1, "step1": 10, "step2": 100, "step3": 1_000, "step4": 10_000, "step5": 100_000,
    }
    step0_default_depth = 150
    default_max_missed_pongs = 2  # stated: two pings in a row without a pong -> closed
