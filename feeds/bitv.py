"""BitV market-by-price feed: the shared Huobi-style handler with BitV's 5/20 symbol whitelist.

What differs from NHEX (BitV's API doc, market-by-price topic ``market.$symbol.mbp.$levels``):
levels 5, 20 and 150 only, and 5/20 are offered for
nine symbols only.  A symbol outside the list is subscribed at ``fallback_levels`` (150) from the
start instead of collecting an ``invalid topic`` first; the list can be replaced with the
``fast_symbols`` option (comma-separated) if the venue's real listing turns out to differ, and an
``invalid topic`` for a listed one still falls back at run time.
"""

from __future__ import annotations

from decimal import Decimal

from aggbook.feeds.gzip_mbp import MBP_100MS, MBP_TICK, GzipMbpFeed
from aggbook.feeds.spec import SymbolSpelling, VenueSpec

FAST_SYMBOLS = frozenset({
    "btcusdt", "ethusdt", "xrpusdt", "eosusdt", "ltcusdt", "etcusdt", "adausdt", "dashusdt", "bsvusdt",
})


class BitvFeed(GzipMbpFeed):
    """BitV: every protocol rule lives in :class:`~feeds.gzip_mbp.GzipMbpFeed`."""

    _fast_symbols_default = FAST_SYMBOLS


VENUES = (
    VenueSpec(
        kind="bitv",
        title="BitV",
        feed=BitvFeed,
        rest_url="https://api.bitv.com",
        ws_url="wss://api.bitv.com/feed",
        rules=(MBP_TICK, MBP_100MS),  # mbp.5/20 tick-by-tick, mbp.150 on the 100 ms timer
        simulator="aggbook.simulator.bitv:BitvVenue",
        spelling=SymbolSpelling(lower=True),
        demo_fee_bps=Decimal("20"),
    ),
)
