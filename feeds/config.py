"""What a feed needs to know about its venue: URLs, symbols, depth, fee and venue knobs.

The real production endpoints are the defaults (each venue's ``VenueSpec`` in its
feed module); tests and the demo point the same feed code at the simulator by
overriding ``rest_url`` and ``ws_url``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class VenueConfig:
    """One venue as configured.  ``name`` labels metrics and the API; ``kind`` picks the feed module."""

    name: str
    kind: str
    symbols: dict[str, str]  # canonical ("BTC-USDT") -> the venue's own spelling ("BTCUSDT")
    rest_url: str = ""
    ws_url: str = ""
    enabled: bool = True
    depth: int | None = None  # snapshot limit (Binance/MEXC) or mbp levels (NHEX/BitV); None = venue default
    fee_bps: Decimal = Decimal(0)  # taker fee in basis points
    options: dict = field(default_factory=dict)  # venue knobs: timers, per-connection limits, pacing

    def __post_init__(self) -> None:
        rest, ws = _default_urls(self.kind) if not (self.rest_url and self.ws_url) else ("", "")
        self.rest_url = (self.rest_url or rest).rstrip("/")
        self.ws_url = (self.ws_url or ws).rstrip("/")
        self.fee_bps = Decimal(self.fee_bps)


def _default_urls(kind: str) -> tuple[str, str]:
    """The venue's production URLs, or empty for a kind no venue module declares."""
    # imported here: the registry imports the feed modules, and they import this module
    from aggbook.feeds.registry import UnknownVenue, venue_spec

    try:
        spec = venue_spec(kind)
    except UnknownVenue:
        return "", ""
    return spec.rest_url, spec.ws_url
