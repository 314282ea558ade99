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


class NhexVenue(GzipMbpVenue):
    """NHEX: every protocol rule lives in :class:`GzipMbpVenue`; only NHEX's settings are here."""

    name = "nhex"
    optional_levels = (400,)
    depth_steps: Mapping[str, int] = {
        "step0": 1, "step1": 10, "step2": 100, "step3": 1_000, "step4": 10_000, "step5": 100_000,
    }
    step0_default_depth = 150
    default_max_missed_pongs = 2  # stated: two pings in a row without a pong -> closed
