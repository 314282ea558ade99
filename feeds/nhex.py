"""NHEX (新火香港) market-by-price feed: the shared Huobi-style handler with NHEX's level counts.

What differs from BitV (NHEX's API doc, market-by-price topic ``market.$symbol.mbp.$levels``):
mbp.5 and mbp.20 exist for every symbol, and the doc's
parameter table also lists mbp.400, which the prose never describes; it is offered only when the
``enable_mbp400`` option is set (it then behaves like 150: a 100 ms snapshot diff).
"""

from __future__ import annotations

from decimal import Decimal

from aggbook.feeds.gzip_mbp import MBP_100MS, MBP_TICK, GzipMbpFeed
from aggbook.feeds.spec import SymbolSpelling, VenueSpec


class NhexFeed(GzipMbpFeed):
    """NHEX: every protocol rule lives in :class:`~feeds.gzip_mbp.GzipMbpFeed`."""

    enable_mbp400: bool = False

    def allowed_levels(self) -> tuple[int, ...]:
        return self.base_levels + ((400,) if self.enable_mbp400 else ())


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
