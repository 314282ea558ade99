"""Feed kind -> feed class.  Each venue module is imported only when configured."""

from __future__ import annotations

import importlib

from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics

FEED_CLASSES: dict[str, str] = {
    "binance": "aggbook.feeds.binance:BinanceSpotFeed",
    "binance-futures": "aggbook.feeds.binance:BinanceFuturesFeed",
    "mexc": "aggbook.feeds.mexc:MexcFeed",
    "btse": "aggbook.feeds.btse:BtseFeed",
    "nhex": "aggbook.feeds.nhex:NhexFeed",
    "bitv": "aggbook.feeds.bitv:BitvFeed",
}


def feed_class(kind: str) -> type[VenueFeed]:
    try:
        module_name, class_name = FEED_CLASSES[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown venue kind {kind!r}; known: {', '.join(sorted(FEED_CLASSES))}") from None
    return getattr(importlib.import_module(module_name), class_name)


def create_feed(config: VenueConfig, *, metrics: FeedMetrics | None = None) -> VenueFeed:
    return feed_class(config.kind)(config, metrics=metrics)
