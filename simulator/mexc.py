"""Simulated MEXC Spot v3: protobuf WebSocket market streams plus the REST depth snapshot.

Wire protocol (MEXC Spot v3 "Websocket Market Streams"): the client sends JSON **text** commands
(``SUBSCRIPTION`` / ``UNSUBSCRIPTION`` / ``PING``) and gets JSON text replies with
``id`` 0 and ``code`` 0; market data arrives as **binary** frames, each one
serialized ``PushDataV3ApiWrapper``, written byte by byte by :mod:`~aggbook.simulator.mexc_wire` from
MEXC's official schema (never with the project's generated ``aggbook.proto`` module, which the
feed decodes with: a wrong field number there must show in the tests).  The order book is
rebuilt from ``GET /api/v3/depth`` (``lastUpdateId``) plus the aggregated diff stream
(oneof member 313) whose ``fromVersion``/``toVersion`` run on the same per-symbol
version counter: a push covers one or more versions and the next push starts at
``toVersion + 1``.

Channels served (symbol uppercase, no separator):

* ``spot@public.aggre.depth.v3.api.pb@(100ms|10ms)@SYM``: diffs (313)
* ``spot@public.limit.depth.v3.api.pb@SYM@(5|10|20)``: full top N every push (303)
* ``spot@public.aggre.bookTicker.v3.api.pb@(100ms|10ms)@SYM``: best bid/ask (315)
* ``spot@public.bookTicker.batch.v3.api.pb@SYM``: best bid/ask batch (311)
* ``spot@public.aggre.deals.v3.api.pb@(100ms|10ms)@SYM``: trades (314)
* ``spot@public.kline.v3.api.pb@SYM@Min1``…: klines, sent as oneof member 308, which
  the trimmed schema does not declare, so a conforming decoder must skip it.

Anything else (old JSON channels without ``.pb``, lowercase or unknown symbols) is
answered with MEXC's ``code: 0`` "Not Subscribed successfully! … Blocked!" reply.
A SUBSCRIPTION gets one ack whose ``msg`` is the accepted channels joined by ``,``
(plus one rejection reply if any were blocked); channels beyond
``max_subscriptions`` are silently left out of that ack and never served.

Faults (armed per symbol and optionally per connection, taken at send time):

* diff frames (313): GAP withholds one diff; DUPLICATE sends one twice in a row;
  REORDER holds one back and sends it right after the next diff of that channel;
  CROSSED adds a bid at the best ask to one diff (the truth is unaffected);
  MALFORMED sends one frame truncated so that it no longer parses (any data frame).
* every data frame: DISCONNECT (TCP abort), SILENT (nothing more is sent, PONGs
  included, the socket stays open), SERVER_CLOSE (close frame 1000).
* ``/api/v3/depth``: UNKNOWN_SYMBOL (400 -1121), SNAPSHOT_429 / SNAPSHOT_418
  (``Retry-After`` from param ``retry_after``, default 1 / 120), SLOW_SNAPSHOT (param
  ``delay``, default 1.0 s; the book is read after the delay), STALE_SNAPSHOT (a book
  with ``lastUpdateId < F - 1`` for every connected subscriber, or exactly
  ``steps_back`` steps old when that param is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import orjson
from aiohttp import web

from aggbook.simulator import mexc_wire as wire
from aggbook.simulator.faults import Fault
from aggbook.simulator.market import ASK, BID, LevelChange, MarketProfile, SymbolSpec, TruthBook
from aggbook.simulator.venue import (
    SimConnection,
    VenueOptions,
    VenueServer,
    read_text_frames,
    venue_websocket,
)

log = logging.getLogger("aggbook.simulator.mexc")

AGGRE_DEPTH = "spot@public.aggre.depth.v3.api.pb"
LIMIT_DEPTH = "spot@public.limit.depth.v3.api.pb"
AGGRE_BOOK_TICKER = "spot@public.aggre.bookTicker.v3.api.pb"
BOOK_TICKER_BATCH = "spot@public.bookTicker.batch.v3.api.pb"
AGGRE_DEALS = "spot@public.aggre.deals.v3.api.pb"
KLINE = "spot@public.kline.v3.api.pb"

KLINE_INTERVALS = ("Min1", "Min5", "Min15", "Min30", "Min60", "Hour4", "Hour8", "Day1", "Week1", "Month1")
MAX_SNAPSHOT_LIMIT = 5000
DEFAULT_SNAPSHOT_LIMIT = 100

PONG_MSG = "PONG"
# Rejection text as users observe it: note the full-width colon and the trailing space.
REJECT_TEMPLATE = "Not Subscribed successfully! [{}].  Reason\uff1a Blocked! "

# Unknown field #99 (varint 1): appended when ``unknown_fields`` is on, to exercise schema drift.
UNKNOWN_FIELD_99 = b"\x98\x06\x01"

_SYM = r"([A-Z0-9]+)"
_IVL = r"(100ms|10ms)"
_CHANNEL_PATTERNS: tuple[tuple[str, re.Pattern[str], int, int], ...] = (
    # (kind, pattern, group of the symbol, group of the parameter)
    (AGGRE_DEPTH, re.compile(rf"^{re.escape(AGGRE_DEPTH)}@{_IVL}@{_SYM}$"), 2, 1),
    (LIMIT_DEPTH, re.compile(rf"^{re.escape(LIMIT_DEPTH)}@{_SYM}@(5|10|20)$"), 1, 2),
    (AGGRE_BOOK_TICKER, re.compile(rf"^{re.escape(AGGRE_BOOK_TICKER)}@{_IVL}@{_SYM}$"), 2, 1),
    (BOOK_TICKER_BATCH, re.compile(rf"^{re.escape(BOOK_TICKER_BATCH)}@{_SYM}()$"), 1, 2),
    (AGGRE_DEALS, re.compile(rf"^{re.escape(AGGRE_DEALS)}@{_IVL}@{_SYM}$"), 2, 1),
    (KLINE, re.compile(rf"^{re.escape(KLINE)}@{_SYM}@({'|'.join(KLINE_INTERVALS)})$"), 1, 2),
)


Trade = tuple[str, Decimal, Decimal]  # (book side hit, price, quantity)
Top = tuple[Decimal, Decimal, Decimal, Decimal]  # (bid, bid quantity, ask, ask quantity)
Diff = tuple[int, int, list[LevelChange]]  # (fromVersion, toVersion, levels)


@dataclass(slots=True)
class StepFrames:
    """What one market step publishes for a symbol, shared by every connection."""

    diffs: list[Diff]
    trades: list[Trade]
    top: Top | None
    top_changed: bool
    now_ms: int
    cache: dict[tuple[str, int], bytes]  # (channel, diff index) -> serialized diff frame


@dataclass(frozen=True, slots=True)
class Channel:
    """One parsed subscription: the full channel text, its stream kind, symbol and parameter."""

    name: str
    kind: str
    symbol: str
    param: str  # interval ("100ms"), levels ("5") or kline interval; "" for the batch ticker

    @property
    def event_type(self) -> str:
        """``eventType`` inside the body: the channel without the symbol (limit depth: kind only)."""
        if self.kind in (AGGRE_DEPTH, AGGRE_DEALS):
            return f"{self.kind}@{self.param}"
        return self.kind


def parse_channel(text: str, symbols: Iterable[str]) -> Channel | None:
    """The channel if MEXC would serve it, else None (answered with the Blocked rejection)."""
    for kind, pattern, sym_group, param_group in _CHANNEL_PATTERNS:
        match = pattern.match(text)
        if match is None:
            continue
        symbol = match.group(sym_group)
        if symbol not in symbols:
            return None
        return Channel(text, kind, symbol, match.group(param_group))
    return None


def truncate_frame(data: bytes) -> bytes:
    """The longest prefix of ``data`` that no longer parses (the MALFORMED fault's frame)."""
    for cut in range(len(data) - 1, 0, -1):
        if not wire.well_formed(data[:cut]):
            return data[:cut]
    return data[:1]


def error_body(code: int, msg: str) -> bytes:
    return orjson.dumps({"code": code, "msg": msg})


@dataclass(frozen=True, kw_only=True)
class MexcOptions(VenueOptions):
    """MEXC's timers and stream-shape knobs; :class:`MexcVenue` says what each one does."""

    max_subscriptions: int = 30
    no_subscription_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_lifetime: float = 24 * 3600.0
    timer_tick: float | None = None  # None: a tenth of the shortest timer, between 0.01 and 1 s
    max_versions_per_push: int = 50
    empty_push_probability: float = 0.05
    fields_2026: bool = False
    unknown_fields: bool = False
    snapshot_id_as_string: bool = False
    ack_msg: str | None = None  # a successful SUBSCRIPTION's ack ``msg`` instead of the channel list


class MexcVenue(VenueServer):
    """MEXC Spot v3 on 127.0.0.1: ``/ws`` (protobuf pushes) and ``/api/v3/...`` (REST).

    Timers are options (:class:`MexcOptions`) so tests can shorten them:

    * ``no_subscription_timeout``: close a connection that has had no valid
      subscription for this long (MEXC: 30 s).
    * ``idle_timeout``: close a subscribed connection that has had neither a data
      frame nor a client ``PING`` for this long (MEXC: 1 min).
    * ``max_lifetime``: close any connection this old (MEXC: 24 h).

    Stream shape: ``max_versions_per_push`` bounds how many versions one diff covers;
    ``empty_push_probability`` is the chance per market step of an extra diff with no
    levels that only advances the versions.  By default the frames carry the fields of
    MEXC's stream documentation only (diff: asks, bids, eventType, fromVersion, toVersion;
    book tickers: the four price/quantity fields; batch: items).  ``fields_2026`` also
    writes the fields MEXC's official ``websocket-proto`` schema added in 2026-06 (``lastOrderCreateTime``,
    ticker and batch ``version``, ``tradeId``), which that documentation does not show: a
    schema-drift option like ``unknown_fields``, which adds an undeclared field #99 to
    every wrapper and depth body; ``snapshot_id_as_string`` writes ``lastUpdateId`` as a
    JSON string instead of a number.  ``ack_msg`` answers every successful SUBSCRIPTION
    with that ``msg`` instead of the accepted channels joined by ``,``: the documentation shows
    one example ack and never states its shape, so a client must not depend on it.
    """

    name = "mexc"
    Options = MexcOptions
    options: MexcOptions
    # thinner and a little behind, re-quoting every other step; finer lots, coarser DOGE tick
    market_profile = MarketProfile(
        spread=3, level_gap=2, size_scale=0.6, size_slope=0.1, lag=2, drift=0.8, quote_interval=2,
        activity=8,
        rules={"BTC-USDT": ("0.01", "0.000001"), "ETH-USDT": ("0.01", "0.00001"),
               "SOL-USDT": ("0.01", "0.001"), "DOGE-USDT": ("0.00001", "0.01"),
               "XRP-USDT": ("0.0001", "0.01")},
    )

    def configure(self) -> None:
        o = self.options
        self.max_subscriptions = o.max_subscriptions
        self.no_subscription_timeout = o.no_subscription_timeout
        self.idle_timeout = o.idle_timeout
        self.max_lifetime = o.max_lifetime
        shortest = min(o.no_subscription_timeout, o.idle_timeout, o.max_lifetime)
        self.timer_tick = o.timer_tick if o.timer_tick is not None else min(1.0, max(0.01, shortest / 10))
        self.max_versions_per_push = max(1, o.max_versions_per_push)
        self.empty_push_probability = o.empty_push_probability
        self.fields_2026 = o.fields_2026
        self.unknown_fields = o.unknown_fields
        self.snapshot_id_as_string = o.snapshot_id_as_string

        self._rng = random.Random(f"mexc:{o.seed}")
        self._version: dict[str, int] = {}
        # (toVersion of a step's first diff, the step's last version) for steps that also pushed an
        # empty diff: the book at the first toVersion is the step's book (truth_sent reads it so)
        self._inner_versions: dict[str, deque[tuple[int, int]]] = {
            s: deque(maxlen=self.history_len) for s in self.markets}
        self._genesis: dict[str, TruthBook] = {}
        self._shadow: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._ticker: dict[str, Top | None] = {}
        self._symbol_ids: dict[str, str] = {}
        self._trade_ids = itertools.count(1)
        self._closing: set[asyncio.Task] = set()  # closes run as tasks: a slow peer cannot stall the timers
        for symbol, market in self.markets.items():
            # ~1e10 like the real counters: versions must not fit in 32 bits
            self._version[symbol] = 10_000_000_000 + self._rng.randrange(1_000_000_000)
            bids, asks = market.snapshot()
            # the same book one version earlier: the oldest book a STALE_SNAPSHOT can serve
            self._genesis[symbol] = TruthBook(self._version[symbol] - 1, tuple(bids), tuple(asks))
            self._shadow[symbol] = (dict(market.bids), dict(market.asks))
            self._ticker[symbol] = self._top(symbol)
            self._symbol_ids[symbol] = hashlib.md5(symbol.encode(), usedforsecurity=False).hexdigest()

    # ------------------------------------------------------------------ VenueServer API
    def venue_symbol(self, spec: SymbolSpec) -> str:
        return f"{spec.base}{spec.quote}".upper()

    def current_seq(self, symbol: str) -> int:
        return self._version[self.resolve_symbol(symbol)]

    def urls(self) -> dict[str, str]:
        return {"rest_url": self.base_url, "ws_url": self.base_url.replace("http://", "ws://") + "/ws"}

    def sent_truth(self, conn: SimConnection, key: str, seq: int) -> TruthBook:
        """The book at a diff's ``toVersion``, including the first diff of a two-diff step.

        History holds one book per market step, at the step's last version.  When a step also
        pushed an empty diff, the first diff's ``toVersion`` is not in it, but the empty diff
        changed nothing: the book there is the step's book.
        """
        for inner, step_end in self._inner_versions[key]:
            if inner == seq:
                seq = step_end
                break
        return self.truth_at(key, seq)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self._h_ws)
        app.router.add_get("/api/v3/depth", self._h_depth)
        app.router.add_get("/api/v3/exchangeInfo", self._h_exchange_info)
        app.router.add_get("/api/v3/ping", self._h_ping)
        app.router.add_get("/api/v3/time", self._h_time)

    def background_tasks(self) -> list:
        return [self._timers()]

    # ------------------------------------------------------------------ publishing
    def _version_span(self) -> int:
        """How many versions one push covers: usually a few, sometimes many, at least one."""
        roll = self._rng.random()
        if roll < 0.3:
            span = 1
        elif roll < 0.9:
            span = self._rng.randint(2, 10)
        else:
            span = self._rng.randint(11, max(11, self.max_versions_per_push))
        return min(span, self.max_versions_per_push)

    def _top(self, symbol: str) -> Top | None:
        market = self.markets[symbol]
        bb, ba = market.best_bid(), market.best_ask()
        if bb is None or ba is None:
            return None
        return bb, market.bids[bb], ba, market.asks[ba]

    def _trades(self, symbol: str, changes: list[LevelChange]) -> list[Trade]:
        """Trades implied by the step: a reduction of the then-best level on a side.

        Walks the changes in order over a shadow copy of the previous book.  Returns
        ``(side, price, quantity)`` where side is the book side that was hit.
        """
        bids, asks = self._shadow[symbol]
        out: list[Trade] = []
        for change in changes:
            book = bids if change.side == BID else asks
            old = book.get(change.price)
            if old is not None and change.size < old and book:
                best = max(book) if change.side == BID else min(book)
                if change.price == best:
                    out.append((change.side, change.price, old - change.size))
            if change.size == 0:
                book.pop(change.price, None)
            else:
                book[change.price] = change.size
        return out

    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        diffs: list[Diff] = []
        start = self._version[symbol] + 1
        end = start + self._version_span() - 1
        diffs.append((start, end, changes))
        if self._rng.random() < self.empty_push_probability:
            extra_start = end + 1
            end = extra_start + self._version_span() - 1
            diffs.append((extra_start, end, []))
            self._inner_versions[symbol].append((extra_start - 1, end))
        self._version[symbol] = end
        top = self._top(symbol)
        step = StepFrames(diffs, self._trades(symbol, changes), top, top != self._ticker[symbol],
                          int(time.time() * 1000), {})
        self._ticker[symbol] = top
        for conn in list(self.connections.values()):
            channels = [c for c in conn.state.get("channels", {}).values() if c.symbol == symbol]
            if not channels or conn.closed:
                continue
            for channel in sorted(channels, key=lambda c: c.name):
                if not await self._send_channel(conn, channel, step):
                    break

    async def _send_channel(
        self,
        conn: SimConnection,
        channel: Channel,
        step: StepFrames,
    ) -> bool:
        """Send this step's frames for one subscription; False = stop sending on this connection."""
        symbol = channel.symbol
        if channel.kind == AGGRE_DEPTH:
            for index, (start, end, levels) in enumerate(step.diffs):
                key = (channel.name, index)
                data = step.cache.get(key)
                if data is None:
                    data = self._diff_frame(channel, start, end, levels, step.now_ms, crossed=False)
                    step.cache[key] = data
                if not await self._send_diff(conn, channel, start, end, levels, step.now_ms, data):
                    return False
            return True
        frame: bytes | None = None
        if channel.kind == LIMIT_DEPTH:
            frame = self._limit_frame(channel, step.now_ms)
        elif channel.kind in (AGGRE_BOOK_TICKER, BOOK_TICKER_BATCH):
            sent = conn.state["tickers_sent"]
            if step.top is not None and (step.top_changed or channel.name not in sent):
                sent.add(channel.name)
                frame = self._ticker_frame(channel, step.top, step.now_ms)
        elif channel.kind == AGGRE_DEALS:
            if step.trades:
                frame = self._deals_frame(channel, step.trades, step.now_ms)
        elif channel.kind == KLINE:
            frame = self._kline_frame(channel, step.now_ms)
        if frame is None:
            return True
        return await self._send_data(conn, symbol, frame)

    async def _send_data(self, conn: SimConnection, symbol: str, data: bytes) -> bool:
        """One non-sequenced data frame, with the connection faults and MALFORMED."""
        if await self.apply_connection_faults(conn, symbol):
            return False
        if self.faults.take(Fault.MALFORMED, symbol, conn.id) is not None:
            data = truncate_frame(data)
        await self._write(conn, data)
        return True

    async def _send_diff(
        self,
        conn: SimConnection,
        channel: Channel,
        start: int,
        end: int,
        levels: list[LevelChange],
        now_ms: int,
        data: bytes,
    ) -> bool:
        """One diff frame with the per-connection stream faults taken at send time."""
        symbol = channel.symbol
        if await self.apply_connection_faults(conn, symbol):
            return False
        conn.state["first_from"].setdefault(channel.name, start)
        faults = self.faults
        if faults.take(Fault.GAP, symbol, conn.id) is not None:
            return True  # withheld: the next diff's fromVersion jumps
        if faults.take(Fault.CROSSED, symbol, conn.id) is not None:
            data = self._diff_frame(channel, start, end, levels, now_ms, crossed=True)
        elif (faults.may_fire(Fault.SILENT_LOSS) and (lossy := self._silent_loss(symbol, levels)) is not None
              and faults.take(Fault.SILENT_LOSS, symbol, conn.id) is not None):
            data = self._diff_frame(channel, start, end, lossy, now_ms, crossed=False)  # same versions
        version: int | None = end  # what note_sent records once the diff is written
        if faults.take(Fault.MALFORMED, symbol, conn.id) is not None:
            data = truncate_frame(data)
            version = None  # a frame that does not parse carries no version the client can have reached
        held: dict[str, tuple[bytes, int | None]] = conn.state["held"]
        if channel.name not in held and faults.take(Fault.REORDER, symbol, conn.id) is not None:
            held[channel.name] = (data, version)  # goes out right after the next diff of this channel
            return True
        await self._write(conn, data, symbol, version)
        if channel.name in held:
            held_data, held_version = held.pop(channel.name)
            await self._write(conn, held_data, symbol, held_version)
        if faults.take(Fault.DUPLICATE, symbol, conn.id) is not None:
            await self._write(conn, data, symbol, version)
        return True

    def _silent_loss(self, symbol: str, levels: list[LevelChange]) -> list[LevelChange] | None:
        """``levels`` less the changes at one price that moved the truth's top (None when none did)."""
        market = self.markets[symbol]
        best_bid, best_ask = market.best_bid(), market.best_ask()
        for change in levels:
            best = best_bid if change.side == BID else best_ask
            if best is None or (change.price >= best if change.side == BID else change.price <= best):
                return [c for c in levels if (c.side, c.price) != (change.side, change.price)]
        return None

    async def _write(self, conn: SimConnection, data: bytes, symbol: str | None = None,
                     version: int | None = None) -> None:
        """Write one data frame; a diff's ``toVersion`` is noted for ``truth_sent`` once it went out."""
        if conn.silent or conn.closed:
            return
        if await conn.send_bytes(data) and symbol is not None and version is not None:
            self.note_sent(conn, symbol, version)
        conn.state["last_data"] = time.monotonic()

    # ------------------------------------------------------------------ frame builders
    def _frame(self, channel: Channel, member: int, body: bytes, now_ms: int,
               create_time: int | None = None) -> bytes:
        """The wrapper around ``body``; ``unknown_fields`` adds field #99 to both (schema drift)."""
        if self.unknown_fields:
            body += UNKNOWN_FIELD_99
        data = wire.wrapper(channel.name, member, body, symbol=channel.symbol,
                            symbol_id=self._symbol_ids[channel.symbol], create_time=create_time,
                            send_time=now_ms)
        return data + UNKNOWN_FIELD_99 if self.unknown_fields else data

    def _diff_frame(self, channel: Channel, start: int, end: int, levels: list[LevelChange],
                    now_ms: int, *, crossed: bool) -> bytes:
        market = self.markets[channel.symbol]
        asks: list[tuple[str, str]] = []
        bids: list[tuple[str, str]] = []
        for change in levels:
            side = asks if change.side == ASK else bids
            side.append((market.fmt_price(change.price), market.fmt_size(change.size)))
        if crossed:
            best_ask = market.best_ask()
            if best_ask is not None:  # a bid at the best ask: the book a client builds is crossed
                bids.append((market.fmt_price(best_ask), market.fmt_size(market.spec.lot * 7)))
        body = wire.aggre_depths(asks, bids, channel.event_type, str(start), str(end),
                                 now_ms - 1 if self.fields_2026 else None)
        return self._frame(channel, wire.PUBLIC_AGGRE_DEPTHS, body, now_ms)

    def _limit_frame(self, channel: Channel, now_ms: int) -> bytes:
        market = self.markets[channel.symbol]
        bids, asks = market.snapshot(int(channel.param))
        body = wire.limit_depths(
            [(market.fmt_price(p), market.fmt_size(q)) for p, q in asks],
            [(market.fmt_price(p), market.fmt_size(q)) for p, q in bids],
            channel.event_type, str(self._version[channel.symbol]),
            now_ms - 1 if self.fields_2026 else None)
        return self._frame(channel, wire.PUBLIC_LIMIT_DEPTHS, body, now_ms)

    def _ticker_frame(self, channel: Channel, top: Top, now_ms: int) -> bytes:
        market = self.markets[channel.symbol]
        bid, bid_qty, ask, ask_qty = top
        prices = (market.fmt_price(bid), market.fmt_size(bid_qty),
                  market.fmt_price(ask), market.fmt_size(ask_qty))
        version = str(self._version[channel.symbol]) if self.fields_2026 else None
        created = now_ms - 1 if self.fields_2026 else None
        if channel.kind == AGGRE_BOOK_TICKER:
            body = wire.aggre_book_ticker(*prices, version, created)
            return self._frame(channel, wire.PUBLIC_AGGRE_BOOK_TICKER, body, now_ms)
        body = wire.book_ticker_batch([wire.book_ticker(*prices)], version, created)
        return self._frame(channel, wire.PUBLIC_BOOK_TICKER_BATCH, body, now_ms)

    def _deals_frame(self, channel: Channel, trades: list[Trade], now_ms: int) -> bytes:
        market = self.markets[channel.symbol]
        deals = [
            wire.aggre_deal(market.fmt_price(price), market.fmt_size(qty),
                            1 if side == ASK else 2,  # asks lifted = buy (1), bids hit = sell (2)
                            now_ms, f"{next(self._trade_ids)}" if self.fields_2026 else None)
            for side, price, qty in trades
        ]
        body = wire.aggre_deals(deals, channel.event_type)
        return self._frame(channel, wire.PUBLIC_AGGRE_DEALS, body, now_ms, create_time=now_ms)

    def _kline_frame(self, channel: Channel, now_ms: int) -> bytes:
        """A kline push as member 308, which the feed's trimmed schema does not declare."""
        market = self.markets[channel.symbol]
        last = market.best_bid() or Decimal(0)
        window_start = now_ms // 1000 // 60 * 60
        payload = (wire.string(1, channel.param) + wire.int64(2, window_start)
                   + wire.string(3, market.fmt_price(last)))
        return self._frame(channel, wire.PUBLIC_SPOT_KLINE, payload, now_ms, create_time=now_ms)

    # ------------------------------------------------------------------ WebSocket
    async def _h_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = venue_websocket()
        await ws.prepare(request)
        conn = self.register(ws, request.path)
        now = time.monotonic()
        conn.state.update(
            channels={},  # channel name -> Channel (the valid subscriptions)
            first_from={},  # channel name -> fromVersion of the first diff sent on it
            stale_marks={},  # channel name -> a book older than anything this subscription gets
            held={},  # channel name -> (diff, its toVersion; None if MALFORMED) held back by REORDER
            tickers_sent=set(),
            last_ping=now,
            last_data=now,
            subscribed_at=now,
            unsubscribed_since=now,
        )
        try:
            async for text in read_text_frames(conn):  # binary frames from a client are ignored
                await self._on_text(conn, text)
        finally:
            self.unregister(conn)
        return ws

    async def _on_text(self, conn: SimConnection, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.info("mexc conn %d: ignoring non-JSON text frame", conn.id)
            return
        if not isinstance(request, dict):
            return
        method = request.get("method")
        params = request.get("params") or []
        if not isinstance(params, list):
            params = []
        params = [p for p in params if isinstance(p, str)]
        if method == "PING":
            conn.state["last_ping"] = time.monotonic()
            await conn.send_json({"id": 0, "code": 0, "msg": PONG_MSG})
        elif method == "SUBSCRIPTION":
            await self._subscribe(conn, params)
        elif method == "UNSUBSCRIPTION":
            await self._unsubscribe(conn, params)
        else:
            log.info("mexc conn %d: ignoring unknown method %r", conn.id, method)

    async def _subscribe(self, conn: SimConnection, params: list[str]) -> None:
        accepted: list[str] = []
        blocked: list[str] = []
        channels: dict[str, Channel] = conn.state["channels"]
        for name in params:
            channel = parse_channel(name, self.markets)
            if channel is None or not self.listed(channel.symbol):
                blocked.append(name)
                continue
            if name in channels:
                accepted.append(name)
                continue
            if len(channels) >= self.max_subscriptions:
                continue  # silently invalid: left out of the ack, never served
            channels[name] = channel
            conn.subscriptions.add(name)
            if channel.kind == AGGRE_DEPTH:
                conn.state["first_from"].pop(name, None)
                now_seq = self.current_seq(channel.symbol)
                conn.state["stale_marks"][name] = self._older_book(channel.symbol, now_seq)
            accepted.append(name)
        if accepted:
            conn.state["subscribed_at"] = time.monotonic()
        if blocked:
            await conn.send_json({"id": 0, "code": 0, "msg": REJECT_TEMPLATE.format(",".join(blocked))})
        if accepted or not blocked:
            odd = self.options.ack_msg
            msg = odd if odd is not None and accepted else ",".join(accepted)
            await conn.send_json({"id": 0, "code": 0, "msg": msg})

    async def _unsubscribe(self, conn: SimConnection, params: list[str]) -> None:
        channels: dict[str, Channel] = conn.state["channels"]
        for name in params:
            channels.pop(name, None)
            conn.subscriptions.discard(name)
            conn.state["first_from"].pop(name, None)
            conn.state["stale_marks"].pop(name, None)
            conn.state["held"].pop(name, None)
            conn.state["tickers_sent"].discard(name)
        if not channels:
            conn.state["unsubscribed_since"] = time.monotonic()
        await conn.send_json({"id": 0, "code": 0, "msg": ",".join(params)})

    async def _timers(self) -> None:
        """MEXC's server-side closes: no valid subscription, idle subscription, lifetime."""
        while True:
            await asyncio.sleep(self.timer_tick)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.closed:
                    continue
                state = conn.state
                if "channels" not in state:
                    continue  # handler not set up yet
                reason = None
                if not state["channels"]:
                    if now - max(state["unsubscribed_since"], conn.opened_at) >= self.no_subscription_timeout:
                        reason = b"no valid subscription"
                else:
                    active = max(state["last_ping"], state["last_data"], state["subscribed_at"])
                    if now - active >= self.idle_timeout:
                        reason = b"idle"
                if reason is None and now - conn.opened_at >= self.max_lifetime:
                    reason = b"lifetime"
                if reason is not None and not state.get("closing"):
                    state["closing"] = True
                    log.info("mexc conn %d: server close (%s)", conn.id, reason.decode())
                    task = asyncio.create_task(self._close(conn, reason))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

    async def _close(self, conn: SimConnection, reason: bytes) -> None:
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1000, message=reason)

    # ------------------------------------------------------------------ REST
    def _older_book(self, symbol: str, below: int, extra: Iterable[TruthBook] = ()) -> TruthBook:
        """The newest known book (history, genesis, ``extra``) whose version is strictly below ``below``."""
        candidates = [*self.history[symbol], self._genesis[symbol], *extra]
        older = [b for b in candidates if b.seq < below]
        return max(older, key=lambda b: b.seq) if older else self._genesis[symbol]

    def stale_snapshot(self, symbol: str, steps_back: int | None = None) -> TruthBook:
        """A book with ``lastUpdateId < F - 1`` for every client subscribed to this symbol's diffs.

        ``F`` is the fromVersion of the first diff a subscription was sent (or the
        next version, if none yet).  Each subscription remembers a book older than
        its own first diff, so a qualifying book exists however long ago it subscribed.
        ``steps_back`` instead serves exactly ``stale_truth(symbol, steps_back)``.
        """
        if steps_back is not None:
            return self.stale_truth(symbol, steps_back)
        target = self.current_seq(symbol) + 1
        marks: list[TruthBook] = []
        for conn in self.connections.values():
            for name, channel in conn.state.get("channels", {}).items():
                if channel.symbol == symbol and channel.kind == AGGRE_DEPTH:
                    target = min(target, conn.state["first_from"].get(name, self.current_seq(symbol) + 1))
                    marks.append(conn.state["stale_marks"][name])
        return self._older_book(symbol, target - 1, marks)

    def _json(self, body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                            content_type="application/json")

    def _error(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=error_body(code, msg), status=status, headers=headers,
                            content_type="application/json")

    async def _h_depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if not symbol:
            return self._error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                           "or malformed.")
        if not self.listed(symbol):  # exact spelling: lowercase is as unknown as a made-up name
            return self._error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", DEFAULT_SNAPSHOT_LIMIT))
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in parameter 'limit'.")
        limit = max(1, min(limit, MAX_SNAPSHOT_LIMIT))
        faults = self.faults
        if faults.take(Fault.UNKNOWN_SYMBOL, symbol) is not None:
            return self._error(400, -1121, "Invalid symbol.")
        params = faults.take(Fault.SNAPSHOT_429, symbol)
        if params is not None:
            retry = str(params.get("retry_after", 1))
            return self._error(429, 429, "Too Many Requests", {"Retry-After": retry})
        params = faults.take(Fault.SNAPSHOT_418, symbol)
        if params is not None:
            retry = str(params.get("retry_after", 120))
            return self._error(418, 418, "IP banned: too many requests after 429", {"Retry-After": retry})
        params = faults.take(Fault.SLOW_SNAPSHOT, symbol)
        if params is not None:
            await asyncio.sleep(float(params.get("delay", 1.0)))  # the book is taken after the delay
        params = faults.take(Fault.STALE_SNAPSHOT, symbol)
        if params is not None:
            steps_back = params.get("steps_back")
            book = self.stale_snapshot(symbol, None if steps_back is None else int(steps_back))
            book = book.top(limit)
        else:
            book = self.truth(symbol, limit)
        market = self.markets[symbol]
        body = {
            "lastUpdateId": str(book.seq) if self.snapshot_id_as_string else book.seq,
            "bids": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.bids],
            "asks": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.asks],
            "timestamp": int(time.time() * 1000),
        }
        return self._json(body)

    def _symbol_info(self, symbol: str) -> dict:
        spec = self.specs[symbol]
        return {
            "symbol": symbol,
            "status": "1",  # MEXC: "1" online, "2" paused, "3" offline
            "baseAsset": spec.base,
            "baseAssetPrecision": spec.size_decimals,
            "quoteAsset": spec.quote,
            "quotePrecision": spec.price_decimals,
            "quoteAssetPrecision": spec.price_decimals,
            "baseCommissionPrecision": spec.size_decimals,
            "quoteCommissionPrecision": spec.price_decimals,
            "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER"],
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "quoteAmountPrecision": "1",
            "baseSizePrecision": str(spec.lot),
            "permissions": ["SPOT"],
            "filters": [],
            "maxQuoteAmount": "2000000",
            "makerCommission": "0",
            "takerCommission": "0.0005",
            "quoteAmountPrecisionMarket": "1",
            "maxQuoteAmountMarket": "100000",
            "fullName": spec.base,
            "tradeSideType": 1,
        }

    async def _h_exchange_info(self, request: web.Request) -> web.Response:
        wanted: list[str]
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            wanted = [s for s in request.query["symbols"].split(",") if s]
        else:
            wanted = [s for s in self.markets if self.listed(s)]
        if not all(self.listed(s) for s in wanted):
            return self._error(400, -1121, "Invalid symbol.")
        body = {
            "timezone": "CST",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [self._symbol_info(s) for s in wanted],
        }
        return self._json(body)

    async def _h_ping(self, request: web.Request) -> web.Response:
        return self._json({})

    async def _h_time(self, request: web.Request) -> web.Response:
        return self._json({"serverTime": int(time.time() * 1000)})
