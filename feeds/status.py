"""A feed's state as JSON for the service's status endpoint.

Kept apart from the lifecycle so what operators see can change without touching how the feed
runs; venue modules add their own keys on top (``status()`` overrides call ``super()``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed


def render_status(feed: VenueFeed) -> dict[str, Any]:
    pacer = feed.pacer
    return {
        "venue": feed.venue,
        "kind": feed.config.kind,
        "reconnects": feed.reconnects,
        "invalid_symbols": dict(feed.invalid),
        # refused symbols: reason (invalid_symbol / delisted), re-checks so far, next one (epoch s)
        "listing_checks": feed.listing.status(),
        "listing_check_outcomes": dict(feed.listing.counts),
        "tick_sizes": {c: str(t) for c, t in feed.tick_sizes.items()},
        "lot_sizes": {c: str(t) for c, t in feed.lot_sizes.items()},
        "snapshot_queue_wait_seconds": round(pacer.waited, 3),
        "rate_limit_penalties": pacer.penalties,
        # the top-of-book cross-check against the venue's best bid/offer stream (feeds/crosscheck.py)
        "bbo_check": {"enabled": bool(feed.bbo_check), **feed.crosscheck.counters.as_json()},
        # every level compared with a fresh snapshot at the book's own id (feeds/audit.py)
        "audits": feed.audit.status(),
        "connections": [
            {
                "id": c.id,
                "state": c.state,
                "since": c.since,
                "age_seconds": round(time.monotonic() - c.opened_at, 3),
                # since the socket last proved alive (any frame, heartbeats too); past
                # ``liveness_timeout`` its books are stale
                "silence_seconds": round(c.liveness.silent_for(time.monotonic()), 3),
                "liveness_timeout": c.liveness.timeout,
                "symbols": list(c.symbols),
                "url": feed.ws_url_for(c),
            }
            for c in feed.connections.values()
        ],
    }
