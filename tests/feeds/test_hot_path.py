"""A bad frame on the hot path (a live book's next delta) is a counted resync, never a corrupt book.

The feed is driven as the read loop drives it, ``await feed.handle(conn, msg)``, with no socket:
a snapshot is loaded, one good delta confirms it, then the next delta carries a level that is not
a number.  The book must be cleared and resyncing for ``decode_error``, counted, and the feed must
ask for a new snapshot; a frame that cannot be decoded at all must raise ``FrameError``, which the
read loop counts and turns into a resync of the connection's books.
"""

from __future__ import annotations

import gzip

import aiohttp
import orjson
import pytest

from aggbook.book.sync import Reason, Snapshot, SyncState
from aggbook.feeds.base import Connection, FrameError, VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed

SYM = "BTC-USDT"


def _feed(kind: str, venue_symbol: str) -> tuple[VenueFeed, Connection, list[str]]:
    feed = create_feed(VenueConfig(name=kind, kind=kind, symbols={SYM: venue_symbol},
                                   rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9"))
    conn = feed.new_connection([SYM], publish_when_live=False)
    asked: list[str] = []
    feed.request_snapshot = lambda c, canonical: asked.append(canonical)  # type: ignore[method-assign]
    return feed, conn, asked


async def _handle(feed: VenueFeed, conn: Connection, msg: aiohttp.WSMessage) -> None:
    conn.frame_bytes, conn.frame_counted = len(msg.data), False
    await feed.handle(conn, msg)


def _binance(first: int, last: int, bids: list) -> aiohttp.WSMessage:
    event = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last, "b": bids, "a": []}
    text = orjson.dumps({"stream": "btcusdt@depth@100ms", "data": event}).decode()
    return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None)


def _mbp(seq: int, prev: int, bids: bytes) -> aiohttp.WSMessage:
    raw = (b'{"ch":"market.btcusdt.mbp.150","ts":1,"tick":{"seqNum":%d,"prevSeqNum":%d,"bids":%s}}'
           % (seq, prev, bids))
    return aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, gzip.compress(raw), None)


@pytest.mark.parametrize("level", [["abc", "1"], ["100.5", "nan"], ["-1", "1"], ["100.5", "-2"]])
async def test_binance_bad_level_in_order_is_a_counted_resync(level: list) -> None:
    feed, conn, asked = _feed("binance", "BTCUSDT")
    sync = conn.syncs[SYM]
    feed.deliver_snapshot(conn, SYM, Snapshot(100, [("100", "1"), ("99", "2")], [("101", "1")]))
    await _handle(feed, conn, _binance(101, 101, [["99.5", "1"]]))
    assert sync.live and sync.confirmed and sync.counters.applied == 1
    await _handle(feed, conn, _binance(102, 102, [["98", "1"], level]))  # the next id: the fast path
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.DECODE_ERROR
    assert sync.counters.resyncs == {Reason.DECODE_ERROR: 1} and sync.counters.applied == 1
    assert len(sync.book) == 0 and sync.book.best_bid() is None
    assert asked == []  # the bad delta is not kept: the next one starts the buffer and asks for a snapshot
    await _handle(feed, conn, _binance(103, 103, [["98", "2"]]))
    assert asked == [SYM] and sync.buffered == 1 and not sync.live


async def test_nhex_bad_frames_on_a_live_book() -> None:
    feed, conn, asked = _feed("nhex", "btcusdt")
    sync = conn.syncs[SYM]
    conn.venue_state.topics[feed.topic_for(SYM)] = SYM  # type: ignore[attr-defined]
    feed.deliver_snapshot(conn, SYM, Snapshot(10, [("100", "1")], [("101", "1")]))
    await _handle(feed, conn, _mbp(12, 10, b"[[99.5,1.25]]"))
    assert sync.live and sync.book.bids() == [("100", "1"), ("99.5", "1.25")]
    with pytest.raises(FrameError):  # not JSON: the read loop counts it and resyncs the connection
        await _handle(feed, conn, _mbp(13, 12, b"[[NaN,1]]"))
    with pytest.raises(FrameError):  # a size that is not a number
        await _handle(feed, conn, _mbp(13, 12, b"[[99.5,true]]"))
    assert sync.live and sync.last_id == 12 and sync.book.bids() == [("100", "1"), ("99.5", "1.25")]
    await _handle(feed, conn, _mbp(14, 12, b'[[99.5,"x"]]'))  # decodes, but "x" is no size
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.DECODE_ERROR
    assert len(sync.book) == 0 and sync.counters.resyncs == {Reason.DECODE_ERROR: 1}


def _ticker(book_id: int, bid: str, ask: str) -> aiohttp.WSMessage:
    event = {"u": book_id, "s": "BTCUSDT", "b": bid, "B": "1", "a": ask, "A": "1"}
    text = orjson.dumps({"stream": "btcusdt@bookTicker", "data": event}).decode()
    return aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, text, None)


async def test_deltas_are_cross_checked_once_a_bbo_has_arrived() -> None:
    """Deliver skips the cross-check while no bbo was seen, and runs it on every delta after one."""
    feed, conn, asked = _feed("binance", "BTCUSDT")
    sync = conn.syncs[SYM]
    feed.deliver_snapshot(conn, SYM, Snapshot(100, [("100", "1"), ("99", "2")], [("101", "1")]))
    await _handle(feed, conn, _binance(101, 101, [["99.5", "1"]]))
    assert sync.live and not feed.crosscheck.checks  # nothing to compare with yet
    await _handle(feed, conn, _ticker(103, "100", "101"))  # the venue's top at id 103
    await _handle(feed, conn, _ticker(104, "98", "101"))  # and at id 104: bid 100 is gone by then
    assert feed.crosscheck.counters.compared == 0  # the book is not at either id yet
    await _handle(feed, conn, _binance(102, 103, [["99.25", "1"]]))  # reaches 103: its top agrees
    assert sync.live and feed.crosscheck.counters.compared == 1
    await _handle(feed, conn, _binance(104, 104, [["99.75", "1"]]))  # reaches 104, but bid 100 is kept
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.BBO_MISMATCH
    assert feed.crosscheck.counters.compared == 2 and len(sync.book) == 0
