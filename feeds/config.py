"""What a feed needs to know about its venue: URLs, symbols, depth, fee and venue knobs.

The real production endpoints are the defaults (``DEFAULT_URLS``); tests and the
demo point the same feed code at the simulator by overriding ``rest_url`` and
``ws_url``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

# kind -> (rest_url, ws_url); the feed appends the venue's stream-specific path parts.
DEFAULT_URLS: dict[str, tuple[str, str]] = {
    "binance": ("https://api.binance.com", "wss://stream.binance.com:9443"),
    "binance-futures": ("https://fapi.binance.com", "wss://fstream.binance.com/public"),
    "mexc": ("https://api.mexc.com", "wss://wbs-api.mexc.com/ws"),
    "btse": ("https://api.btse.com/spot", "wss://ws.btse.com/ws/oss/spot"),
    "nhex": ("https://api.nhex.com.hk", "wss://api.nhex.com.hk/feed"),
    "bitv": ("https://api.bitv.com", "wss://api.bitv.com/feed"),
}


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
        rest, ws = DEFAULT_URLS.get(self.kind, ("", ""))
        self.rest_url = (self.rest_url or rest).rstrip("/")
        self.ws_url = (self.ws_url or ws).rstrip("/")
        self.fee_bps = Decimal(self.fee_bps)
