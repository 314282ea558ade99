"""NHEX (新火香港) market-by-price feed: the shared Huobi-style handler with NHEX's level counts.

What differs from BitV (NHEX's API doc, market-by-price topic ``market.$symbol.mbp.$levels``):
mbp.5 and mbp.20 exist for every symbol.  The doc's parameter table also lists 400 levels, but its
prose says ``req`` serves 5/20/150 only ("REQ頻道支持5檔/20檔/150檔全量數據的獲取"), so a 400-level
book would have no snapshot to start from (a 150-level one cannot seed levels 151..400): the
``enable_mbp400`` option is refused with a configuration error that says so.
"""

from __future__ import annotations

from decimal import Decimal

from aggbook.feeds.gzip_mbp import MBP_100MS, MBP_TICK, GzipMbpFeed
from aggbook.feeds.spec import SymbolSpelling, VenueSpec


class NhexFeed(GzipMbpFeed):
    """NHEX: every protocol rule lives in :class:`~feeds.gzip_mbp.GzipMbpFeed`."""

    enable_mbp400: bool = False  # refused: see the module docstring

    def allowed_levels(self) -> tuple[int, ...]:
        if self.enable_mbp400:
            raise ValueError(f"venues.{self.venue}.options.enable_mbp400: NHEX's req serves mbp snapshots "
                             "of 5, 20 and 150 levels only (its document's MBP section), so a 400-level "
                             "book has no snapshot; use depth 150")
        return self.base_levels


VENUES = (
    VenueSpec(
        kind="nhex",
        title="NHEX",
        feed=NhexFeed,
        rest_url="https://api.nhex.com.hk",
        ws_url="wss://api.nhex.com.hk/feed",
        rules=(MBP_TICK, MBP_100MS),  # mbp.5/20 tick-by-tick, mbp.150 on the 100 ms timer
        simulator="aggbook.simulator.nhex:NhexVenue",
        spelling=SymbolSpelling(lower=True),
        demo_fee_bps=Decimal("20"),
    ),
)
