"""JSON shapes the service answers with: quotes, ladders and single-venue books, shared by the HTTP
API and the WebSocket, and the ``/v1/status`` report.

One function per shape keeps the two transports identical.  Prices and sizes are
always strings carrying the exact decimal text (the venue's own text where it came
from a venue), never floats.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aggbook.book.consolidated import ConsolidatedQuote, Ladder, SideQuote
from aggbook.book.sync import BookSync, SyncState

if TYPE_CHECKING:
    from aggbook.service.aggregator import Aggregator


def _side(side: SideQuote | None) -> dict | None:
    if side is None:
        return None
    venues = []
    for lvl in side.venues:
        item = {"venue": lvl.venue, "price": lvl.price, "size": lvl.size}
        if lvl.fee_adjusted_price is not None:
            item["fee_adjusted_price"] = lvl.fee_adjusted_price
        venues.append(item)
    return {"price": side.price, "size": side.size, "fee_adjusted": side.fee_adjusted, "venues": venues}


def _level(level: tuple[str, str] | None) -> dict | None:
    return None if level is None else {"price": level[0], "size": level[1]}


def age_seconds(age: float | None) -> float | None:
    """A venue's age as the JSON shows it (to the microsecond); the render cache fills quotes with it."""
    return None if age is None else round(age, 6)


def quote_json(q: ConsolidatedQuote, *, fees: bool, ages: bool = True) -> dict:
    """A consolidated quote.  ``ages=False`` (WebSocket) leaves out what changes with the clock alone
    (ages, and a live book turning quiet), so an update is only sent when the market or a venue's
    state changed."""
    venues = []
    for v in q.venues:
        item: dict = {
            "venue": v.venue,
            "state": v.state,
            "included": v.included,
            "excluded_reason": v.excluded_reason,
            "bid": _level(v.bid),
            "ask": _level(v.ask),
            "fee_bps": v.fee_bps,
        }
        if ages:
            item["age_seconds"] = age_seconds(v.age)
            item["freshness"] = v.freshness
            item["last_id"] = v.last_id
        venues.append(item)
    return {
        "symbol": q.symbol,
        "bid": _side(q.bid),
        "ask": _side(q.ask),
        "crossed": q.crossed,
        "locked": q.locked,
        "spread": q.spread,
        "fees": fees,
        "venues": venues,
    }


def ladder_json(ladder: Ladder, depth: int) -> dict:
    """The merged book: per price the total size and each venue's size (largest first)."""

    def side(levels) -> list[dict]:
        return [{"price": lvl.price, "size": lvl.size, "venues": dict(lvl.venues)} for lvl in levels]

    return {
        "symbol": ladder.symbol,
        "depth": depth,
        "bids": side(ladder.bids),
        "asks": side(ladder.asks),
        "venues": list(ladder.venues),
        "excluded": dict(ladder.excluded),
        "complete_to": {"bids": ladder.complete_to[0], "asks": ladder.complete_to[1]},
        "complete_depth": {v: {"bids": b, "asks": a} for v, (b, a) in ladder.complete_depth.items()},
    }


def venue_book_json(
    sync: BookSync, symbol: str, depth: int, now: float, *, included: bool, excluded_reason: str | None,
    freshness: str | None = None,
) -> dict:
    """One venue's own book; empty while the book is not live (its levels cannot be trusted)."""
    live = sync.live
    bids_known, asks_known = sync.book.depth if live else (0, 0)
    bid_to, ask_to = sync.book.window() if live else (None, None)
    return {
        "symbol": symbol,
        "venue": sync.venue,
        "state": sync.state.value,
        "reason": sync.reason.value,
        "included": included,
        "excluded_reason": excluded_reason,
        "age_seconds": None if sync.updated_at is None else round(max(0.0, now - sync.updated_at), 6),
        "freshness": freshness,
        "last_id": sync.last_id,
        "depth": depth,
        "bids": [list(lvl) for lvl in sync.book.bids(depth)] if live else [],
        "asks": [list(lvl) for lvl in sync.book.asks(depth)] if live else [],
        "complete_depth": {"bids": bids_known, "asks": asks_known},
        "complete_to": {"bids": bid_to, "asks": ask_to},
    }


def status_json(aggregator: Aggregator, *, websocket: dict | None = None) -> dict:
    """``/v1/status``: every configured venue (disabled ones too) with its feed's own report and,
    per symbol, its book's state and cumulative resyncs.

    Rendered here from the aggregator's data rather than by the aggregator, so the core holds state
    and this module alone decides what the API shows of it.
    """
    now = aggregator.clock()
    wall = time.time()
    venues = []
    for vc in aggregator.config.venues:
        feed = aggregator.feeds.get(vc.name)
        item: dict = {"venue": vc.name, "kind": vc.kind, "enabled": vc.enabled}
        if feed is None:
            venues.append(item)
            continue
        try:
            item.update(feed.status())
        except Exception as exc:  # status must answer even if a feed's own report breaks
            item["status_error"] = str(exc)
        item["venue"] = vc.name
        item["symbols"] = {
            symbol: book_status_json(aggregator, vc.name, symbol, spelled, now, wall)
            for symbol, spelled in vc.symbols.items()
        }
        venues.append(item)
    ready, live = aggregator.readiness()
    body = {
        "ready": ready,
        "uptime_seconds": round(wall - aggregator.started_at, 3),
        "symbols": {s: {"ready": bool(v), "live_venues": v} for s, v in live.items()},
        "venues": venues,
    }
    if websocket is not None:
        body["websocket"] = websocket
    return body


def book_status_json(
    aggregator: Aggregator, venue: str, symbol: str, spelled: str, now: float, wall: float
) -> dict:
    """One (venue, symbol) book in ``/v1/status``: a book that never arrived reads as waiting."""
    book = aggregator.consolidated[symbol]
    sync = book.syncs.get(venue)
    hist = aggregator.history.get((venue, symbol))
    out: dict = {"venue_symbol": spelled, "resyncs": dict(hist.resyncs) if hist else {}}
    if sync is None:
        out.update(
            state=SyncState.WAITING.value, reason="start", included=False, excluded_reason="no book yet"
        )
        return out
    why = book.eligible(now, [venue]).get(venue)
    fresh = book.freshness(venue, now)
    silence = sync.silence(now)
    bids, asks = sync.book.depth
    out.update(
        state=sync.state.value,
        reason=sync.reason.value,
        detail=hist.last.detail if hist and hist.last else "",
        since=round(wall - (now - sync.since), 3),
        since_seconds=round(now - sync.since, 3),
        last_update_age_seconds=None if sync.updated_at is None else round(now - sync.updated_at, 6),
        freshness=None if fresh is None else fresh.value,
        connection_silence_seconds=None if silence is None else round(silence, 6),
        last_id=sync.last_id,
        levels={"bids": bids, "asks": asks},
        included=why is None,
        excluded_reason=why,
    )
    return out
