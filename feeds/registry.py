"""Feed kind -> feed class.  Each venue module is imported only when configured."""

from __future__ import annotations

import importlib

from feeds.base import VenueFeed
from feeds.config import VenueConfig
from feeds.metrics import FeedMetrics

FEED_CLASSES: dict[str, str] = {
    "binance": "feeds.binance:BinanceSpotFeed",
    "binance-futures": "feeds.binance:BinanceFuturesFeed",
    "mexc": "feeds.mexc:MexcFeed",
    "btse": "feeds.btse:BtseFeed",
    "nhex": "feeds.nhex:NhexFeed",
    "bitv": "feeds.bitv:BitvFeed",
}


def feed_class(kind: str) -> type[VenueFeed]:
    try:
        module_name, class_name = FEED_CLASSES[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown venue kind {kind!r}; known: {', '.join(sorted(FEED_CLASSES))}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_feed(config: VenueConfig, *, metrics: FeedMetrics | None = None) -> VenueFeed:
    return feed_class(config.kind)(config, metrics=metrics)
