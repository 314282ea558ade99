"""Simulated BTSE spot: the OSS order-book WebSocket, the main WebSocket and the public REST API.

Wire protocol (BTSE's Spot API v3.3 documentation, the OSS WebSocket order-book section, and its
REST ``orderbook`` endpoints):

* OSS WebSocket ``/ws/oss/spot`` carries the book.  ``{"op":"subscribe","args":["update:BTC-USDT_0"]}``
  is answered with ``{"event":"subscribe","channel":[accepted topics]}``; rejected topics are left out
  of ``channel`` and reported in one ``{"severity":"ERROR","errors":[{"arg":topic,"error":{...}}]}``
  frame sent right after the ack.  Each accepted ``update:`` topic then gets a ``type:"snapshot"``
  frame (at most ``snapshot_depth`` levels per side, asks listed descending as in the doc sample),
  followed by ``type:"delta"`` frames with absolute sizes (``"0"`` or ``"0.00000"`` removes).
* Every delta has ``seqNum == prevSeqNum + 1`` and ``prevSeqNum`` equal to the previous frame's
  ``seqNum`` on that subscription.  A fraction of ``_0`` delta frames carry the legacy topic without
  the grouping suffix (``update:BTC-USDT``), as in the doc's own delta example.
* The topic is ``update:<symbol>_<grouping>``; groupings ``0``-``8`` are the REST ``group`` levels
  (``GROUP_TICKS``).  A grouped subscription gets its snapshot and deltas on the grouped price grid
  (bids rounded down, asks up, sizes summed); only ``_0`` streams take stream faults and set the
  ``truth_sent`` mark, since only they carry the truth book.
* ``snapshotL1:<symbol>`` pushes the truth's best bid and ask, with no seqNum, whenever either
  moved.  SILENT_LOSS leaves a top-moving level out of one ``_0`` delta, seq contiguous.
* ``ping``/``pong`` are plain text.  A connection that sends no ``ping`` for ``idle_timeout`` seconds
  is closed.  The main WebSocket ``/ws/spot`` answers pings but has no book topics (1005).
* REST under ``/spot``: ``/api/v3.3/orderbook`` (group, limit_bids, limit_asks), ``/api/v3.3/orderbook/L2``
  (depth), ``/api/v3.3/market_summary`` and ``/api/v3.3/time``.  REST books carry no sequence number.

Sequence numbers.  The venue keeps one counter per symbol (``current_seq``), advanced by one on every
market step.  Each subscription (connection + topic) gets its own random offset, drawn afresh on every
(re)subscribe, and sees ``seqNum = current_seq + offset``; so every resubscribe starts an unrelated
seq base while deltas stay contiguous within a subscription and other subscribers are unaffected.
``truth_for(conn_id, symbol)`` / ``truth_seq_for(conn_id, symbol)`` give the truth in the seq space of
one subscription.  ``truth_sent(conn_id, symbol)`` (and ``GET /_sim/truth/{symbol}?conn=``) gives the
truth at the last snapshot or delta actually written on that connection, in the seq space of the
subscription that frame belonged to.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import orjson
from aiohttp import web

from aggbook.simulator.faults import Fault
from aggbook.simulator.market import (
    ASK,
    BID,
    LevelChange,
    MarketModel,
    MarketProfile,
    SymbolSpec,
    TruthBook,
)
from aggbook.simulator.venue import (
    SimConnection,
    VenueOptions,
    VenueServer,
    read_text_frames,
    venue_websocket,
)

OSS_PATH = "/ws/oss/spot"
MAIN_WS_PATH = "/ws/spot"
REST_PREFIX = "/spot"

# OSS error codes and the messages BTSE puts next to them.
ERR_PAIR = 1000
ERR_OP = 1001
ERR_REQUEST = 1002
ERR_TOPIC = 1005
ERR_BUFFER = 1007
ERR_ATTEMPTS = 1008
ERROR_MESSAGES: dict[int, str] = {
    ERR_PAIR: "Market pair provided is currently not supported.",
    ERR_OP: "Operation provided is currently not supported.",
    ERR_REQUEST: "Invalid request. Please check again your request and provide all information required.",
    ERR_TOPIC: "Topic provided does not exist.",
    ERR_BUFFER: "User message buffer is full.",
    ERR_ATTEMPTS: "Max failed attempts reached, closing session.",
}

# REST ``group`` 0..8 -> price grid in ticks (the doc's BTC example: 0.1, 0.5, 1 for levels 0, 1, 2).
GROUP_TICKS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000)
_GROUPINGS = frozenset(str(g) for g in range(len(GROUP_TICKS)))  # topic suffixes served

_OFFSET_RANGE = (1_000_000, 2_000_000_000)
_OFFSET_MIN_DISTANCE = 100_000


def error_frame(errors: list[tuple[str, int]]) -> str:
    """The June-2023 error shape: one frame listing every rejected argument of one request."""
    return orjson.dumps({
        "severity": "ERROR",
        "errors": [{"arg": arg, "error": {"code": code, "message": ERROR_MESSAGES[code]}}
                   for arg, code in errors],
    }).decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _BookSub:
    """One ``update:`` subscription of one connection."""

    topic: str
    symbol: str
    offset: int  # wire seqNum = venue counter + offset
    since: int  # venue counter of the snapshot; deltas at or below it are not sent
    held: tuple[str, int] | None = None  # REORDER: (frame, venue counter) waiting for the next one
    drop_left: int = 0  # BUFFER_FULL: deltas still to be lost
    group: int = 0  # grouping level of the topic suffix (index into GROUP_TICKS)


@dataclass(frozen=True, kw_only=True)
class BtseOptions(VenueOptions):
    """``idle_timeout``: seconds without a client ``ping`` before the server closes the socket
    (None or 0 disables).  ``snapshot_depth``: levels per side in a WS snapshot.
    ``bare_topic_fraction``: share of delta frames whose topic lacks the ``_0`` suffix.
    ``max_failed_attempts``: rejected request arguments per connection before error 1008 and a
    close (None disables).
    """

    idle_timeout: float | None = 60.0
    snapshot_depth: int = 50
    bare_topic_fraction: float = 0.25
    max_failed_attempts: int | None = 10


class BtseVenue(VenueServer):
    """BTSE spot: OSS book stream with per-subscription seq bases, REST snapshots without seq."""

    name = "btse"
    Options = BtseOptions
    options: BtseOptions
    # wider and slower: depth that grows away from the top, re-quoting every third step
    market_profile = MarketProfile(
        spread=4, level_gap=2, size_slope=0.2, lag=6, drift=1.0, noise=1, quote_interval=3, activity=6,
        rules={"ETH-USDT": ("0.01", "0.001"), "SOL-USDT": ("0.01", "0.01"), "XRP-USDT": ("0.0001", "1")},
    )

    def configure(self) -> None:
        o = self.options
        self.idle_timeout = o.idle_timeout
        self.snapshot_depth = o.snapshot_depth
        self.bare_topic_fraction = o.bare_topic_fraction
        self.max_failed_attempts = o.max_failed_attempts
        self._rng = random.Random(f"btse:{o.seed}")
        self._seq: dict[str, int] = {s: self._rng.randint(1_000, 999_999) for s in self.markets}
        self._last_l1: dict[str, tuple] = {}

    # ------------------------------------------------------------------ VenueServer API
    def venue_symbol(self, spec: SymbolSpec) -> str:
        return f"{spec.base}-{spec.quote}"

    def urls(self) -> dict[str, str]:
        ws_base = self.base_url.replace("http://", "ws://")
        return {"rest_url": self.base_url + REST_PREFIX, "ws_url": ws_base + OSS_PATH}

    def current_seq(self, symbol: str) -> int:
        """The venue's own counter for ``symbol``; a subscription's seqNum is this plus its offset."""
        return self._seq[self.resolve_symbol(symbol)]

    def background_tasks(self) -> list:
        return [self._idle_reaper()] if self.idle_timeout else []

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(OSS_PATH, self._ws_oss)
        app.router.add_get(MAIN_WS_PATH, self._ws_main)
        api = REST_PREFIX + "/api/v3.3"
        app.router.add_get(api + "/orderbook", self._rest_orderbook)
        app.router.add_get(api + "/orderbook/L2", self._rest_orderbook_l2)
        app.router.add_get(api + "/market_summary", self._rest_market_summary)
        app.router.add_get(api + "/time", self._rest_time)

    # ------------------------------------------------------------------ truth per subscription
    def _sub(self, conn_id: int, symbol: str) -> _BookSub:
        symbol = self.resolve_symbol(symbol)
        conn = self.connections[conn_id]
        for sub in self._subs(conn).values():
            if sub.symbol == symbol and sub.group == 0:  # only the ungrouped stream carries the truth
                return sub
        raise KeyError(f"connection {conn_id} has no update subscription for {symbol}")

    def seq_offset(self, conn_id: int, symbol: str) -> int:
        """Offset between ``current_seq(symbol)`` and the seqNum this subscription sees."""
        return self._sub(conn_id, symbol).offset

    def truth_seq_for(self, conn_id: int, symbol: str) -> int:
        """The seqNum, on connection ``conn_id``, of the frame that brings a book to the current truth."""
        return self.current_seq(symbol) + self.seq_offset(conn_id, symbol)

    def truth_for(self, conn_id: int, symbol: str, depth: int | None = None) -> TruthBook:
        """``truth(symbol)`` with ``seq`` expressed in the seq space of one subscription."""
        book = self.truth(symbol, depth)
        return TruthBook(self.truth_seq_for(conn_id, symbol), book.bids, book.asks)

    async def _write_book(self, conn: SimConnection, sub: _BookSub, frame: str, seq: int,
                          book: TruthBook | None = None) -> None:
        """Write a snapshot or delta at venue counter ``seq``; once it went out, note it for truth_sent.

        The mark is kept in venue-counter space (comparable across resubscribes); the offset of the
        subscription the frame belonged to is kept beside it to answer in that frame's seqNum space.
        """
        if not await conn.send_str(frame) or sub.group:
            return
        if self.note_sent(conn, sub.symbol, seq, book):
            conn.state.setdefault("sent_offset", {})[sub.symbol] = sub.offset

    def truth_sent(self, conn_id: int, symbol: str, depth: int | None = None, *,
                   levels: int | None = None) -> TruthBook:
        """The truth at the last snapshot or delta written on ``conn_id``, with ``seq`` as its seqNum.

        Like :meth:`truth_for`, the seq is in a subscription's wire space: that of the subscription
        whose frame set the mark, so a client that stopped there holds exactly this book.
        """
        book = super().truth_sent(conn_id, symbol, depth, levels=levels)
        offset = self.sent_connection(conn_id).state["sent_offset"][self.resolve_symbol(symbol)]
        return TruthBook(book.seq + offset, book.bids, book.asks)

    # ------------------------------------------------------------------ frames
    def _levels(self, market: MarketModel, levels: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
        out = []
        for price, size in levels:
            if size == 0:  # the doc writes removals as "0"; fixed-decimal zeros occur too
                text = "0" if self._rng.random() < 0.5 else market.fmt_size(size)
            else:
                text = market.fmt_size(size)
            out.append([market.fmt_price(price), text])
        return out

    def _book_frame(self, topic: str, symbol: str, bids: list, asks: list, seq: int, kind: str) -> str:
        return orjson.dumps({
            "topic": topic,
            "data": {
                "bids": bids,
                "asks": asks,
                "seqNum": seq,
                "prevSeqNum": seq - 1,
                "type": kind,
                "timestamp": _now_ms(),
                "symbol": symbol,
            },
        }).decode()

    def _snapshot_frame(self, sub: _BookSub) -> str:
        market = self.markets[sub.symbol]
        if sub.group:
            step = self._group_step(sub.symbol, sub.group)
            full_bids, full_asks = market.snapshot()
            bids = _group(full_bids, step, ROUND_FLOOR)[:self.snapshot_depth]
            asks = _group(full_asks, step, ROUND_CEILING)[:self.snapshot_depth]
        else:
            bids, asks = market.snapshot(self.snapshot_depth)
        asks = list(reversed(asks))  # listed descending, like the doc's sample
        return self._book_frame(sub.topic, sub.symbol, self._levels(market, bids), self._levels(market, asks),
                                self._seq[sub.symbol] + sub.offset, "snapshot")

    def _l1_frame(self, symbol: str) -> str:
        market = self.markets[symbol]
        bids, asks = market.snapshot(1)
        return orjson.dumps({
            "topic": f"snapshotL1:{symbol}",
            "data": {"bids": self._levels(market, bids), "asks": self._levels(market, asks),
                     "type": "snapshotL1", "symbol": symbol, "timestamp": _now_ms()},
        }).decode()

    # ------------------------------------------------------------------ publishing
    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        """One market step -> one delta per subscription (empty sides allowed), seq advanced by one."""
        self._seq[symbol] += 1
        seq = self._seq[symbol]
        market = self.markets[symbol]
        final: dict[str, dict[Decimal, Decimal]] = {BID: {}, ASK: {}}
        for change in changes:  # one entry per price: the last absolute size of this step
            final[change.side][change.price] = change.size
        bids = sorted(final[BID].items(), key=lambda kv: kv[0], reverse=True)
        asks = sorted(final[ASK].items(), key=lambda kv: kv[0], reverse=True)
        topic = f"update:{symbol}_0"
        for conn in self.subscribers(topic):
            sub = self._subs(conn).get(topic)
            if sub is None or sub.since >= seq:  # (re)subscribed after this step: its snapshot has it
                continue
            frame_bids, frame_asks = self._levels(market, bids), self._levels(market, asks)
            wire_topic = f"update:{symbol}" if self._rng.random() < self.bare_topic_fraction else topic
            frame = self._book_frame(wire_topic, symbol, frame_bids, frame_asks, seq + sub.offset, "delta")
            await self._send_delta(conn, sub, frame, seq, market)
        for group in range(1, len(GROUP_TICKS)):
            await self._publish_grouped(symbol, group, final, seq)
        await self._publish_l1(symbol)

    def _group_step(self, symbol: str, group: int) -> Decimal:
        return self.specs[symbol].tick * GROUP_TICKS[group]

    async def _publish_grouped(self, symbol: str, group: int, final: dict[str, dict[Decimal, Decimal]],
                               seq: int) -> None:
        """One delta per ``update:<symbol>_<group>`` subscription: the new summed size of every bucket
        this step touched (``0`` once a bucket is empty).  Connection faults apply, stream faults not."""
        topic = f"update:{symbol}_{group}"
        subscribers = self.subscribers(topic)
        if not subscribers:
            return
        market = self.markets[symbol]
        step = self._group_step(symbol, group)
        sides: dict[str, list[tuple[Decimal, Decimal]]] = {}
        for side, book, rounding in ((BID, market.bids, ROUND_FLOOR), (ASK, market.asks, ROUND_CEILING)):
            buckets = {_bucket(price, step, rounding) for price in final[side]}
            sizes = dict.fromkeys(buckets, Decimal(0))
            for price, size in book.items():
                key = _bucket(price, step, rounding)
                if key in sizes:
                    sizes[key] += size
            sides[side] = sorted(sizes.items(), key=lambda kv: kv[0], reverse=True)
        frame_bids, frame_asks = self._levels(market, sides[BID]), self._levels(market, sides[ASK])
        for conn in subscribers:
            sub = self._subs(conn).get(topic)
            if sub is None or sub.since >= seq:
                continue
            if await self.apply_connection_faults(conn, symbol):
                continue
            frame = self._book_frame(topic, symbol, frame_bids, frame_asks, seq + sub.offset, "delta")
            await self._write_book(conn, sub, frame, seq)

    async def _send_delta(self, conn: SimConnection, sub: _BookSub, frame: str, seq: int,
                          market: MarketModel) -> None:
        """Send one delta (venue counter ``seq``) through the per-connection fault pipeline.

        At most one stream fault per frame.  Only deltas written whole count for ``truth_sent``.
        """
        if await self.apply_connection_faults(conn, sub.symbol):
            return
        if sub.drop_left > 0:
            sub.drop_left -= 1
            return
        take = self.faults.take
        if take(Fault.GAP, sub.symbol, conn.id) is not None:
            return
        params = take(Fault.BUFFER_FULL, sub.symbol, conn.id)
        if params is not None:
            await conn.send_str(error_frame([(sub.topic, ERR_BUFFER)]))
            sub.drop_left = max(1, int(params.get("drop", 3))) - 1
            return
        if take(Fault.MALFORMED, sub.symbol, conn.id) is not None:
            await conn.send_str(frame[: max(1, len(frame) // 2)])
            return
        params = take(Fault.CROSSED, sub.symbol, conn.id)
        if params is not None:
            frame = self._crossed(frame, market, params)
        elif (self.faults.may_fire(Fault.SILENT_LOSS)
              and (lossy := self._silent_loss(frame, market)) is not None
              and take(Fault.SILENT_LOSS, sub.symbol, conn.id) is not None):
            frame = lossy  # asked only where a top-moving change exists, so an armed fault waits for one
        elif take(Fault.DUPLICATE, sub.symbol, conn.id) is not None:
            await self._write_book(conn, sub, frame, seq)
        elif sub.held is None and take(Fault.REORDER, sub.symbol, conn.id) is not None:
            sub.held = (frame, seq)  # goes out right after the next delta of this subscription
            return
        await self._write_book(conn, sub, frame, seq)
        if sub.held is not None:
            (held, held_seq), sub.held = sub.held, None
            await self._write_book(conn, sub, held, held_seq)

    @staticmethod
    def _silent_loss(frame: str, market: MarketModel) -> str | None:
        """The delta less one level change that moved the truth's top (None when none did); seq kept."""
        obj = orjson.loads(frame)
        data = obj["data"]
        for key, best, moved in (("bids", market.best_bid(), Decimal.__ge__),
                                 ("asks", market.best_ask(), Decimal.__le__)):
            for i, (price, _size) in enumerate(data[key]):
                if best is None or moved(Decimal(price), best):
                    del data[key][i]
                    return orjson.dumps(obj).decode()
        return None

    def _crossed(self, frame: str, market: MarketModel, params: dict) -> str:
        """Add one level that crosses (or, with ``lock=True``, locks) the truth book after this step.

        ``side`` ("bid" default / "ask") picks the side of the bogus level.  The truth is unchanged,
        so a client that keeps the frame diverges from it; the seq stays contiguous.
        """
        obj = orjson.loads(frame)
        lock = bool(params.get("lock", False))
        tick = market.spec.tick
        size = market.fmt_size(market.spec.lot * 7)
        best_bid, best_ask = market.best_bid(), market.best_ask()
        if params.get("side", BID) == ASK and best_bid is not None:
            price = best_bid if lock else best_bid - tick
            obj["data"]["asks"].append([market.fmt_price(price), size])
        elif best_ask is not None:
            price = best_ask if lock else best_ask + tick
            obj["data"]["bids"].insert(0, [market.fmt_price(price), size])
        return orjson.dumps(obj).decode()

    async def _publish_l1(self, symbol: str) -> None:
        """``snapshotL1`` frames go out whenever the best bid or ask (price or size) changed."""
        topic = f"snapshotL1:{symbol}"
        market = self.markets[symbol]
        bids, asks = market.snapshot(1)
        top_key = (tuple(bids), tuple(asks))
        if self._last_l1.get(symbol) == top_key:
            return
        self._last_l1[symbol] = top_key
        subscribers = self.subscribers(topic)
        if not subscribers:
            return
        frame = self._l1_frame(symbol)
        for conn in subscribers:
            if not await self.apply_connection_faults(conn, symbol):
                await conn.send_str(frame)

    # ------------------------------------------------------------------ WebSocket handlers
    @staticmethod
    def _subs(conn: SimConnection) -> dict[str, _BookSub]:
        return conn.state.setdefault("btse_subs", {})

    async def _ws_oss(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve_ws(request, oss=True)

    async def _ws_main(self, request: web.Request) -> web.WebSocketResponse:
        return await self._serve_ws(request, oss=False)

    async def _serve_ws(self, request: web.Request, oss: bool) -> web.WebSocketResponse:
        ws = venue_websocket()
        await ws.prepare(request)
        conn = self.register(ws, request.path)
        conn.state["last_ping"] = time.monotonic()
        conn.state["failures"] = 0
        try:
            async for text in read_text_frames(conn):
                if text == "ping":
                    conn.state["last_ping"] = time.monotonic()
                    await conn.send_str("pong")
                    continue
                await self._on_request(conn, text, oss)
                if ws.closed:
                    break
        finally:
            self.unregister(conn)
        return ws

    async def _on_request(self, conn: SimConnection, text: str, oss: bool) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            await self._reject(conn, [(text[:200], ERR_REQUEST)])
            return
        op, args = req["op"], req.get("args")
        if op not in ("subscribe", "unsubscribe"):
            await self._reject(conn, [(op, ERR_OP)])
            return
        if not isinstance(args, list) or not args:
            await self._reject(conn, [(text[:200], ERR_REQUEST)])
            return
        accepted: list[tuple[str, str, str]] = []  # (topic, kind, symbol)
        errors: list[tuple[str, int]] = []
        for arg in args:
            if not isinstance(arg, str):
                errors.append((orjson.dumps(arg).decode(), ERR_REQUEST))
                continue
            parsed = self._parse_topic(arg, oss)
            if isinstance(parsed, int):
                errors.append((arg, parsed))
            elif op == "subscribe" and self.faults.take(Fault.UNKNOWN_SYMBOL, parsed[1], conn.id) is not None:
                errors.append((arg, ERR_PAIR))
            elif (arg, *parsed) not in accepted:
                accepted.append((arg, *parsed))
        if op == "subscribe":
            await conn.send_json({"event": "subscribe", "channel": [t for t, _, _ in accepted]})
            if errors and not await self._reject(conn, errors):
                return
            for topic, kind, symbol in accepted:
                await self._subscribe(conn, topic, kind, symbol)
        else:
            await self._unsubscribe(conn, accepted)
            if errors:
                await self._reject(conn, errors)

    def _parse_topic(self, topic: str, oss: bool) -> tuple[str, str] | int:
        """``(kind, symbol)`` for a topic this endpoint serves, else the OSS error code."""
        prefix, sep, rest = topic.partition(":")
        if not sep or not oss:
            return ERR_TOPIC
        if prefix == "update":
            symbol, underscore, grouping = rest.rpartition("_")
            # update:symbol_grouping with a REST group level; the legacy bare topic is not served
            if not underscore or grouping not in _GROUPINGS:
                return ERR_TOPIC
        elif prefix == "snapshotL1":
            symbol = rest
        else:
            return ERR_TOPIC
        if not self.listed(symbol):
            return ERR_PAIR
        return prefix, symbol

    async def _reject(self, conn: SimConnection, errors: list[tuple[str, int]]) -> bool:
        """Send an error frame; after ``max_failed_attempts`` send 1008 and close.  False if closed."""
        await conn.send_str(error_frame(errors))
        conn.state["failures"] = conn.state.get("failures", 0) + len(errors)
        if self.max_failed_attempts and conn.state["failures"] >= self.max_failed_attempts:
            await conn.send_str(error_frame([(errors[-1][0], ERR_ATTEMPTS)]))
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1008, message=b"max failed attempts")
            return False
        return True

    def _new_offset(self, previous: int | None) -> int:
        while True:
            offset = self._rng.randint(*_OFFSET_RANGE)
            if previous is None or abs(offset - previous) >= _OFFSET_MIN_DISTANCE:
                return offset

    async def _subscribe(self, conn: SimConnection, topic: str, kind: str, symbol: str) -> None:
        if conn.closed:
            return
        if kind == "snapshotL1":
            conn.subscriptions.add(topic)
            if not await self.apply_connection_faults(conn, symbol):
                await conn.send_str(self._l1_frame(symbol))
            return
        subs = self._subs(conn)
        old = subs.get(topic)
        if old is not None and old.held is not None:  # an in-flight frame of the old stream
            (held, held_seq), old.held = old.held, None
            await self._write_book(conn, old, held, held_seq)
        skip_snapshot = await self.apply_connection_faults(conn, symbol)
        # No await between fixing the seq base and writing the snapshot: a concurrent publish
        # then either precedes both or sees ``since`` and leaves this subscription alone.
        sub = _BookSub(topic, symbol, self._new_offset(old.offset if old else None), self._seq[symbol],
                       group=int(topic.rpartition("_")[2]))
        subs[topic] = sub
        conn.subscriptions.add(topic)
        if not skip_snapshot:
            # the snapshot is a book frame too; its own book, since history may not hold this seq yet
            await self._write_book(conn, sub, self._snapshot_frame(sub), sub.since, self.truth(symbol))

    async def _unsubscribe(self, conn: SimConnection, accepted: list[tuple[str, str, str]]) -> None:
        subs = self._subs(conn)
        stale: list[_BookSub] = []
        for topic, _, _ in accepted:
            conn.subscriptions.discard(topic)
            sub = subs.pop(topic, None)
            if sub is not None and sub.held is not None:
                stale.append(sub)
        await conn.send_json({"event": "unsubscribe", "channel": [t for t, _, _ in accepted]})
        for sub in stale:  # REORDER-held deltas still "in flight" arrive after the ack
            assert sub.held is not None
            (frame, seq), sub.held = sub.held, None
            await self._write_book(conn, sub, frame, seq)

    async def _idle_reaper(self) -> None:
        """Close connections that sent no ``ping`` for ``idle_timeout`` seconds (SILENT ones excepted)."""
        assert self.idle_timeout
        period = max(0.01, min(1.0, self.idle_timeout / 5))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.closed or conn.silent:
                    continue
                if now - conn.state.get("last_ping", conn.opened_at) > self.idle_timeout:
                    with contextlib.suppress(Exception):
                        await conn.ws.close(code=1000, message=b"idle timeout")

    # ------------------------------------------------------------------ REST
    @staticmethod
    def _rest_error(status: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"code": status, "msg": msg, "time": _now_ms(), "data": None, "success": False}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    async def _rest_book_source(self, request: web.Request) -> tuple[str, TruthBook] | web.Response:
        """Common snapshot-fault handling of both order-book endpoints."""
        symbol = request.query.get("symbol")
        if not symbol:
            return self._rest_error(400, "BAD_REQUEST: symbol is required")
        if not self.listed(symbol) or self.faults.take(Fault.UNKNOWN_SYMBOL, symbol) is not None:
            return self._rest_error(400, f"BAD_REQUEST: Invalid market {symbol}")
        params = self.faults.take(Fault.SNAPSHOT_429, symbol)
        if params is not None:
            retry = str(params.get("retry_after", 1))
            return self._rest_error(429, "Too many requests", headers={"Retry-After": retry})
        params = self.faults.take(Fault.SLOW_SNAPSHOT, symbol)
        if params is not None:
            await asyncio.sleep(float(params.get("delay", 1.0)))
        params = self.faults.take(Fault.STALE_SNAPSHOT, symbol)
        if params is not None:
            return symbol, self.stale_truth(symbol, int(params.get("steps_back", 10)))
        return symbol, self.truth(symbol)

    @staticmethod
    def _int_param(request: web.Request, name: str, low: int, high: int | None = None) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        value = int(raw)  # ValueError -> 400 by the caller
        if value < low or (high is not None and value > high):
            raise ValueError(name)
        return value

    def _rest_book(self, symbol: str, bids: list, asks: list) -> web.Response:
        market = self.markets[symbol]

        def quotes(levels: list) -> list[dict[str, str]]:
            return [{"price": market.fmt_price(p), "size": market.fmt_size(s)} for p, s in levels]

        body = {"buyQuote": quotes(bids), "sellQuote": quotes(list(reversed(asks))),  # asks descending
                "timestamp": _now_ms(), "symbol": symbol}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _rest_orderbook(self, request: web.Request) -> web.Response:
        try:
            group = self._int_param(request, "group", 0, len(GROUP_TICKS) - 1) or 0
            limit_bids = self._int_param(request, "limit_bids", 0)
            limit_asks = self._int_param(request, "limit_asks", 0)
        except ValueError:
            return self._rest_error(400, "BAD_REQUEST: invalid parameter")
        source = await self._rest_book_source(request)
        if isinstance(source, web.Response):
            return source
        symbol, book = source
        step = self.specs[symbol].tick * GROUP_TICKS[group]
        bids = _group(book.bids, step, ROUND_FLOOR)
        asks = _group(book.asks, step, ROUND_CEILING)
        return self._rest_book(symbol, bids[:limit_bids] if limit_bids is not None else bids,
                               asks[:limit_asks] if limit_asks is not None else asks)

    async def _rest_orderbook_l2(self, request: web.Request) -> web.Response:
        try:
            depth = self._int_param(request, "depth", 0)
        except ValueError:
            return self._rest_error(400, "BAD_REQUEST: invalid parameter")
        source = await self._rest_book_source(request)
        if isinstance(source, web.Response):
            return source
        symbol, book = source
        bids, asks = list(book.bids), list(book.asks)
        if depth is not None:
            bids, asks = bids[:depth], asks[:depth]
        return self._rest_book(symbol, bids, asks)

    async def _rest_market_summary(self, request: web.Request) -> web.Response:
        """Field names of the v3.3 doc; numbers are JSON numbers written from exact decimals."""
        wanted = request.query.get("symbol")
        if wanted and not self.listed(wanted):
            return self._rest_error(400, f"BAD_REQUEST: Invalid market {wanted}")
        items = [self._summary(s) for s in self.markets if self.listed(s) and (not wanted or s == wanted)]
        return web.Response(text="[" + ",".join(items) + "]", content_type="application/json")

    def _summary(self, symbol: str) -> str:
        spec, market = self.specs[symbol], self.markets[symbol]
        bid, ask = market.best_bid() or Decimal(0), market.best_ask() or Decimal(0)
        zero = Decimal(0)
        fields: list[tuple[str, object]] = [
            ("symbol", symbol), ("last", ask), ("lowestAsk", ask), ("highestBid", bid),
            ("percentageChange", zero), ("volume", zero), ("high24Hr", ask), ("low24Hr", bid),
            ("base", spec.base), ("quote", spec.quote), ("active", True), ("size", zero),
            ("minValidPrice", spec.tick), ("minPriceIncrement", spec.tick), ("minOrderSize", spec.lot),
            ("maxOrderSize", Decimal(2000)), ("minSizeIncrement", spec.lot), ("openInterest", zero),
            ("openInterestUSD", zero), ("contractStart", 0), ("contractEnd", 0), ("timeBasedContract", False),
            ("openTime", 0), ("closeTime", 0), ("startMatching", 0), ("inactiveTime", 0),
            ("fundingRate", zero), ("contractSize", zero), ("maxPosition", zero), ("minRiskLimit", zero),
            ("maxRiskLimit", zero), ("availableSettlement", None), ("futures", False),
            ("isMarketOpenToOtc", False), ("isMarketOpenToSpot", True),
        ]
        parts = []
        for key, value in fields:
            text = format(value, "f") if isinstance(value, Decimal) else orjson.dumps(value).decode()
            parts.append(f'"{key}":{text}')
        return "{" + ",".join(parts) + "}"

    async def _rest_time(self, request: web.Request) -> web.Response:
        now = dt.datetime.now(dt.UTC)
        iso = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return web.json_response({"iso": iso, "epoch": int(now.timestamp())})


def _group(levels: Iterable[tuple[Decimal, Decimal]], step: Decimal,
           rounding: str) -> list[tuple[Decimal, Decimal]]:
    """Aggregate levels onto a coarser grid (bids round down, asks up), keeping best-first order."""
    out: dict[Decimal, Decimal] = {}
    for price, size in levels:
        key = _bucket(price, step, rounding)
        out[key] = out.get(key, Decimal(0)) + size
    return list(out.items())


def _bucket(price: Decimal, step: Decimal, rounding: str) -> Decimal:
    return (price / step).to_integral_value(rounding=rounding) * step
