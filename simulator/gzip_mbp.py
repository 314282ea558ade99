"""Shared Huobi-style market-by-price venue (NHEX and BitV speak the same protocol).

Wire protocol (NHEX's and BitV's API documentation, both copies of the Huobi spot API: the
"Market By Price (incremental update)" WebSocket topic and the market-data REST endpoints):

* WebSocket ``/feed`` carries ``market.<sym>.mbp.<levels>``: ``sub`` / ``unsub`` / ``req``.  WebSocket
  ``/ws`` carries only ``market.<sym>.mbp.refresh.<5|10|20>`` (a full top-N book on the 100 ms timer,
  ``seqNum`` = the mbp.150 topic's seqNum at that moment); every other topic there is ``invalid topic``.
* ``/ws`` also carries ``market.<sym>.bbo``: after every market step that moved the best bid or ask
  (price or size), ``tick`` = ``symbol``, ``quoteTime``, ``bid``, ``bidSize``, ``ask``, ``askSize`` (decimal
  strings, as in the doc's example) and ``seqId`` (its own counter, not the mbp ``seqNum``).
* Every server frame (data, acks, errors, pings) is binary GZIP of JSON.  Client frames are JSON text.
* Prices and sizes are JSON numbers written raw, never through a binary float, as each channel's
  example in the documents writes them: 18 decimals on mbp.5/mbp.20 (``645.140000000000000000``),
  the shortest exact form on mbp.150/400, ``req`` replies of 150 and ``mbp.refresh`` (``645.14``).
  ``fine_size_symbols`` get sizes with 18 significant decimals (``26.755973959140651643``), so a
  client that decodes with floats visibly loses precision.
* Heartbeat: ``{"ping": ts}`` every ``ping_interval`` seconds on both paths; the client answers
  ``{"pong": ts}`` with one of the outstanding ping values (any other value is ignored).  When
  ``max_missed_pongs`` pings in a row went unanswered the next ping round closes the connection
  (code 1000) instead of pinging: about ``max_missed_pongs * ping_interval`` seconds.
* ``req`` spacing: a ``req`` less than ``req_min_interval`` seconds after the previous ``req`` on the same
  connection (rejected ones count too) gets ``bad-request`` / ``429 too many request``.

Sequencing.  Every (symbol, levels) topic has its own chain: ``seqNum`` starts near 1e11 and grows by
random jumps (mostly 1-7, now and then several hundred); ``prevSeqNum`` is always the previous push's
``seqNum`` on that topic.  Topics exist and advance whether or not anyone is subscribed.

* 5 and 20 (tick-by-tick): after each market step the new top-N is diffed against the last pushed top-N;
  a push goes out only if it changed, and it carries only the changed side(s) (the other key is absent).
* 150 (and 400 when ``enable_mbp400`` at NHEX): on the ``mbp_interval`` timer the current top-N is
  diffed against the last pushed top-N and pushed with both keys, ``[]`` for an unchanged side, both
  ``[]`` when nothing changed (the chain still advances).  ``mbp150_future_shape`` gives 150 the 5/20
  shape (an unchanged side left out, nothing pushed when nothing changed), the behaviour the doc
  announces; it stays a 100 ms snapshot diff on the timer, since the doc changes only the shape.
* Window: a level leaving the top-N is sent as size 0, a level entering as an insert (what a snapshot
  diff gives).  ``window_exit_deletes=False`` omits the size 0 for a level that was only pushed out of
  the window (still in the market); a client trimming to N still equals the truth.
* ``req`` answers ``data.seqNum = S`` = the last pushed seqNum of that topic with exactly the pushed
  top-N state, so the next push has ``prevSeqNum == S``.  ``straddle_snapshots=True`` instead answers a
  seqNum strictly between two pushes (``prevSeqNum < S < seqNum`` for the next push) with the live top-N.

Truth.  ``topic_truth(symbol, levels)`` / ``topic_seq(symbol, levels)`` give the last pushed top-N book of
one topic and its seqNum.  ``truth(symbol)`` / ``current_seq(symbol)`` are the mbp.150 topic's;
``truth(symbol, depth=N)`` is the mbp.N topic's truth when that topic exists for the symbol, else the top
N of the mbp.150 truth.  Between two 100 ms ticks the market may have moved on: the 150 truth is what was
last pushed, not the live market.  ``truth_sent(conn_id, symbol, levels=N)`` (HTTP: ``GET
/_sim/truth/{symbol}?conn=&levels=``) is the topic's book at the highest seqNum actually written to that
connection (pushes, ``req`` replies and ``/ws`` refresh books count; a push still in the writer queue
does not); without ``levels`` it reads the topic the connection subscribed to.

Faults, per connection, taken when a push is about to be sent on ``/feed`` (symbol = venue spelling):
GAP (push not sent), DUPLICATE (sent twice), REORDER (held back and sent right after the next push of
the same topic on that connection), MALFORMED (params ``kind="gzip"``: truncated gzip bytes; ``"json"``:
valid gzip of truncated JSON; without ``kind`` the two alternate; the push itself is lost), CROSSED (the
push also carries a bid at the topic's best ask price, size 1), SILENT_LOSS (the push leaves out a level
that moved the topic's top; seqNums stay chained, the topic's truth keeps the level), DISCONNECT /
SILENT / SERVER_CLOSE (base class).  On ``req``: UNKNOWN_SYMBOL (``invalid symbol``), SNAPSHOT_429
(``429 too many request``),
STALE_SNAPSHOT (params ``steps_back``, default 1: a state pushed before this connection subscribed, so
``S`` < the first buffered ``prevSeqNum``; ``straddle=True``: a misaligned one instead, as with
``straddle_snapshots`` for this one ``req``), SLOW_SNAPSHOT (params ``delay`` seconds, default 1.0; the
snapshot is taken at once and sent late; ``timeout=True`` sends ``request timeout`` instead).

REST: ``GET /market/depth`` (``tick``-wrapped unless ``bare_rest_depth``; live market book, ``version``
not a seqNum), and the reference data a client loads markets from: ``GET /v1/common/symbols``,
``/v1/common/currencys``, ``/v2/reference/currencies`` (``?currency=``), ``/v1/common/timestamp``.
Subclasses add venue-specific routes and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import re
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import orjson
from aiohttp import web

from aggbook.simulator.faults import Fault
from aggbook.simulator.market import Level, LevelChange, MarketModel, SymbolSpec, TruthBook
from aggbook.simulator.venue import (
    DEFAULT_HISTORY,
    SimConnection,
    VenueOptions,
    VenueServer,
    book_at,
    read_text_frames,
    venue_websocket,
)

FEED_PATH = "/feed"
WS_PATH = "/ws"

FINE_LOT = Decimal(1).scaleb(-18)
SEQ_BASE = 100_000_000_000
REST_VERSION_BASE = 31_615_842_081
REFRESH_LEVELS = (5, 10, 20)
REST_DEPTHS = (5, 10, 20)
TICK_LEVELS = (5, 20)  # pushed tick by tick; the rest on the 100 ms timer
REQ_LEVELS = (5, 20, 150)  # req answers these only, whatever the topic list offers (mbp.400 is sub-only)
HISTORY = DEFAULT_HISTORY  # pushed books kept per topic unless history_len says otherwise

BAD_REQUEST = "bad-request"
INVALID_TOPIC = "invalid topic"
INVALID_SYMBOL = "invalid symbol"
NOT_OPEN = "symbol trade not open now"
TOO_MANY = "429 too many request"
NOT_SUBBED = "unsub with not subbed topic"
NOT_JSON = "not json string"
REQUEST_TIMEOUT = "request timeout"

ERRORS = frozenset({INVALID_TOPIC, INVALID_SYMBOL, NOT_OPEN, TOO_MANY, NOT_SUBBED, NOT_JSON, REQUEST_TIMEOUT})

log = logging.getLogger("aggbook.simulator")

_MBP_RE = re.compile(r"^market\.([a-z0-9]+)\.mbp\.(\d+)$")
_REFRESH_RE = re.compile(r"^market\.([a-z0-9]+)\.mbp\.refresh\.(\d+)$")
_BBO_RE = re.compile(r"^market\.([a-z0-9]+)\.bbo$")

# what the per-connection writer notes once a frame went out: (topic, seqNum, the frame's own book or None)
SentMark = tuple[str, int, TruthBook | None]


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------- JSON with raw decimal numbers
class Levels(list):
    """``[price, size]`` pairs that the encoder writes as raw JSON numbers.

    ``style="fixed"`` writes 18 decimals (the MBP wire form); ``"plain"`` the shortest exact text (REST).
    ``compact_deletes`` writes a size-0 level as ``[645.14,0]``, so a client must key by value, not text.
    """

    def __init__(self, items: Iterable[Level] = (), style: str = "fixed", compact_deletes: bool = False):
        super().__init__(items)
        self.style = style
        self.compact_deletes = compact_deletes


def number_style(levels: int) -> str:
    """How a topic writes its numbers, as the documents' examples of it do: the mbp.5 push example
    has 18 decimals (``645.140000000000000000``), the mbp.150 push, the ``req`` reply and the
    ``mbp.refresh`` examples short ones (``645.14``, ``26.75597395914065``)."""
    return "fixed" if levels in TICK_LEVELS else "plain"


def plain_number(value: Decimal) -> str:
    """Shortest exact fixed-point text (``7964``, ``0.0678``), never an exponent."""
    return f"{value.normalize():f}"


def fixed_number(value: Decimal) -> str:
    return f"{value:.18f}"


def _levels_json(levels: Levels) -> str:
    parts = []
    for price, size in levels:
        if levels.style == "plain" or (levels.compact_deletes and size == 0):
            parts.append(f"[{plain_number(price)},{plain_number(size)}]")
        else:
            parts.append(f"[{fixed_number(price)},{fixed_number(size)}]")
    return "[" + ",".join(parts) + "]"


def encode(obj: object, plain: bool = False) -> str:
    """JSON text in which Decimals are raw numbers (never converted to float on the way).

    A bare Decimal is written with 18 decimals, or in its shortest exact form when ``plain``.
    """
    if isinstance(obj, Levels):
        return _levels_json(obj)
    if isinstance(obj, dict):
        items = (f"{orjson.dumps(str(k)).decode()}:{encode(v, plain)}" for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(encode(v, plain) for v in obj) + "]"
    if isinstance(obj, Decimal):
        return plain_number(obj) if plain else fixed_number(obj)
    return orjson.dumps(obj).decode()


def gz(text: str) -> bytes:
    return gzip.compress(text.encode(), compresslevel=5, mtime=0)


# ---------------------------------------------------------------------- market with 18-decimal sizes
@dataclass
class FineSizeMarket(MarketModel):
    """Sizes carry 18 decimals (``spec.lot`` is 1e-18) and most need all of them.

    A size is a thousand coarse lots per lot drawn, times a random fraction with 18 decimals, so
    nearly every size has more significant digits than a binary float keeps.  The truth holds these
    exact Decimals, and the wire writes them with all 18 decimals, so the 18-decimal exactness of a
    client is actually exercised.
    """

    coarse_lot: Decimal = Decimal("0.0001")

    def _size(self, lots: int) -> Decimal:
        frac = Decimal(self._rng.randrange(1, 10**18)).scaleb(-18)
        return (Decimal(lots * 1000) * self.coarse_lot * (1 + frac)).quantize(self.spec.lot)


# ---------------------------------------------------------------------- one mbp topic
@dataclass
class MbpTopic:
    """One ``market.<sym>.mbp.<levels>`` chain: the last pushed top-N book and its seqNum."""

    symbol: str
    levels: int
    interval: bool  # True: diff on the 100 ms timer; False: tick-by-tick after each market step
    seq: int
    bids: dict[Decimal, Decimal]
    asks: dict[Decimal, Decimal]
    history: deque[TruthBook] = field(default_factory=lambda: deque(maxlen=HISTORY))
    reserved: int = 0  # highest seqNum handed out by a straddling req; the next push goes above it
    sparse: bool = False  # 5/20 shape: an unchanged side is left out, nothing is pushed without a change

    @property
    def name(self) -> str:
        return f"market.{self.symbol}.mbp.{self.levels}"

    def truth(self) -> TruthBook:
        return TruthBook(
            self.seq,
            tuple(sorted(self.bids.items(), key=lambda kv: kv[0], reverse=True)),
            tuple(sorted(self.asks.items(), key=lambda kv: kv[0])),
        )


def _side_diff(old: dict[Decimal, Decimal], new: dict[Decimal, Decimal], market_side: dict[Decimal, Decimal],
               exit_deletes: bool, descending: bool) -> Levels:
    out: list[Level] = []
    for price in old:
        if price not in new and (exit_deletes or price not in market_side):
            out.append((price, Decimal(0)))
    for price, size in new.items():
        if old.get(price) != size:
            out.append((price, size))
    out.sort(key=lambda kv: kv[0], reverse=descending)
    return Levels(out)


# ---------------------------------------------------------------------- the venue
@dataclass(frozen=True, kw_only=True)
class GzipMbpOptions(VenueOptions):
    """NHEX's and BitV's options beyond the common ones.

    ``ping_interval`` seconds between server pings; ``max_missed_pongs`` unanswered pings in a row
    before the server closes (None = the venue's default, 0 = never close); ``req_min_interval``
    minimum seconds between two reqs on one connection (0 disables the 429); ``mbp_interval`` the
    150/400 timer in seconds (None: no timer, call :meth:`GzipMbpVenue.interval_tick` yourself);
    ``fine_size_symbols`` symbols (either spelling) whose sizes get 18 significant decimals (None =
    the first symbol, ``()`` = none); ``window_exit_deletes``, ``mbp150_future_shape``,
    ``straddle_snapshots``: variants described in the module docstring; ``enable_mbp400`` offer
    mbp.400 where the venue lists it (BitV lists none); ``fast_symbols`` symbols allowed on mbp.5/20
    (None = venue default); ``symbol_states`` symbol -> ``online``/``offline``/``suspend``/
    ``pre-online`` (anything but online answers ``symbol trade not open now``); ``compact_deletes``
    write size-0 levels as ``[645.14,0]``; ``bare_rest_depth`` REST depth without the ``tick``
    envelope.
    """

    ping_interval: float = 5.0
    max_missed_pongs: int | None = None
    req_min_interval: float = 0.1
    mbp_interval: float | None = 0.1
    fine_size_symbols: Iterable[str] | None = None
    window_exit_deletes: bool = True
    mbp150_future_shape: bool = False
    enable_mbp400: bool = False
    fast_symbols: Iterable[str] | None = None
    symbol_states: Mapping[str, str] | None = None
    straddle_snapshots: bool = False
    compact_deletes: bool = False
    bare_rest_depth: bool = False


class GzipMbpVenue(VenueServer):
    """Huobi-family mbp venue; NHEX and BitV subclasses set only what differs (class attributes)."""

    name = "gzip-mbp"
    base_levels: tuple[int, ...] = (5, 20, 150)
    optional_levels: tuple[int, ...] = ()  # offered only with enable_mbp400
    tick_levels: tuple[int, ...] = (5, 20)
    fast_symbols_default: frozenset[str] | None = None  # symbols allowed on 5/20; None = all
    depth_steps: Mapping[str, int] = {"step0": 1, "step1": 10, "step2": 100, "step3": 1000}
    step0_default_depth = 20
    default_max_missed_pongs = 2
    default_levels = 150

    Options = GzipMbpOptions
    options: GzipMbpOptions

    def configure(self) -> None:
        o = self.options
        self.ping_interval = o.ping_interval
        self.max_missed_pongs = (self.default_max_missed_pongs if o.max_missed_pongs is None
                                 else o.max_missed_pongs)
        self.req_min_interval = o.req_min_interval
        self.mbp_interval = o.mbp_interval
        self.window_exit_deletes = o.window_exit_deletes
        self.straddle_snapshots = o.straddle_snapshots
        self.compact_deletes = o.compact_deletes
        self.bare_rest_depth = o.bare_rest_depth
        self.amount_precision = {vs: spec.size_decimals for vs, spec in self.specs.items()}

        if o.fine_size_symbols is None:
            fine = [spec.canonical for spec in list(self.specs.values())[:1]]
        else:
            fine = list(o.fine_size_symbols)
        for name in fine:
            vs = self.resolve_symbol(name)
            coarse = self.specs[vs]
            spec = replace(coarse, lot=FINE_LOT)
            self.specs[vs] = spec
            plain = self.markets[vs]
            self.markets[vs] = FineSizeMarket(spec, seed=o.seed, depth=o.depth, venue=plain.venue,
                                              profile=plain.profile, reference_spec=plain.reference_spec,
                                              coarse_lot=coarse.lot)
        self.fine_size_symbols = frozenset(self.resolve_symbol(n) for n in fine)

        self.symbol_state = {vs: "online" for vs in self.markets}
        for name, state in (o.symbol_states or {}).items():
            self.symbol_state[self.resolve_symbol(name)] = state

        if o.fast_symbols is not None:
            self.fast_symbols: frozenset[str] | None = frozenset(s.lower() for s in o.fast_symbols)
        else:
            self.fast_symbols = self.fast_symbols_default
        self.levels_offered = self.base_levels + (self.optional_levels if o.enable_mbp400 else ())

        self._seq_rng = random.Random(f"{self.name}:{o.seed}:seq")
        self.topics: dict[str, MbpTopic] = {}
        for vs, market in self.markets.items():
            for levels in self.levels_offered:
                fast = levels in self.tick_levels
                if fast and self.fast_symbols is not None and vs not in self.fast_symbols:
                    continue
                sparse = fast or (levels == 150 and o.mbp150_future_shape)
                bids, asks = market.snapshot(levels)
                topic = MbpTopic(vs, levels, not fast, SEQ_BASE + self._seq_rng.randrange(10**9),
                                 dict(bids), dict(asks), deque(maxlen=self.history_len), sparse=sparse)
                topic.history.append(topic.truth())
                self.topics[topic.name] = topic
        self._tick_topics = {vs: [t for t in self.topics.values() if t.symbol == vs and not t.interval]
                             for vs in self.markets}
        self._interval_topics = [t for t in self.topics.values() if t.interval]
        self._lock = asyncio.Lock()
        self._spawned: set[asyncio.Task] = set()
        self._last_ping_ts = 0
        self._malformed_flip = 0
        self._last_bbo: dict[str, tuple] = {}  # symbol -> the top last pushed on market.<sym>.bbo
        self._bbo_seq: dict[str, int] = {}
        self._rest_window: dict[str, tuple[float, int]] = {}  # per-IP (window start, count) for headers

    # ------------------------------------------------------------------ VenueServer API
    def venue_symbol(self, spec: SymbolSpec) -> str:
        return f"{spec.base}{spec.quote}".lower()

    def urls(self) -> dict[str, str]:
        return {"rest_url": self.base_url, "ws_url": self.base_url.replace("http://", "ws://") + FEED_PATH}

    def current_seq(self, symbol: str) -> int:
        """seqNum of the mbp.150 topic's last push (the default topic)."""
        return self.topic_seq(symbol, self.default_levels)

    def background_tasks(self) -> list:
        tasks = [self._ping_loop()]
        if self.mbp_interval:
            tasks.append(self._interval_loop())
        return tasks

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(FEED_PATH, self._ws_handler)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_get("/market/depth", self._rest_depth)
        app.router.add_get("/v1/common/symbols", self._rest_symbols)
        # the rest of the "reference data" section a client loads markets from
        app.router.add_get("/v1/common/currencys", self._rest_currencys)
        app.router.add_get("/v2/reference/currencies", self._rest_reference_currencies)
        app.router.add_get("/v1/common/timestamp", self._rest_timestamp)

    async def stop(self) -> None:
        for task in list(self._spawned):
            task.cancel()
        for task in list(self._spawned):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await super().stop()

    # ------------------------------------------------------------------ truth per topic
    def topic(self, symbol: str, levels: int) -> MbpTopic:
        return self.topics[f"market.{self.resolve_symbol(symbol)}.mbp.{levels}"]

    def topic_seq(self, symbol: str, levels: int) -> int:
        """The last pushed seqNum of ``market.<symbol>.mbp.<levels>`` (what a req answers as ``S``)."""
        return self.topic(symbol, levels).seq

    def topic_truth(self, symbol: str, levels: int) -> TruthBook:
        """The top-``levels`` book as last pushed on that topic, at :meth:`topic_seq`."""
        return self.topic(symbol, levels).truth()

    def truth(self, symbol: str, depth: int | None = None) -> TruthBook:
        """mbp.``depth`` topic truth if that topic exists, else the mbp.150 truth (cut to ``depth``)."""
        symbol = self.resolve_symbol(symbol)
        if depth is not None and f"market.{symbol}.mbp.{depth}" in self.topics:
            return self.topic_truth(symbol, depth)
        book = self.topic_truth(symbol, self.default_levels)
        return book if depth is None else book.top(depth)

    def truth_at(self, symbol: str, seq: int) -> TruthBook:
        """The default topic's book as pushed with seqNum ``seq``.

        The generic per-step history does not fit here: interval topics push on their own
        timer, so a market step and a seqNum are not one-to-one.
        """
        return book_at(self.topic(symbol, self.default_levels).history, seq, symbol)

    def stale_truth(self, symbol: str, steps_back: int = 10) -> TruthBook:
        hist = self.topic(symbol, self.default_levels).history
        return hist[max(0, len(hist) - 1 - steps_back)]

    def sent_key(self, conn: SimConnection, symbol: str, levels: int | None = None) -> str:
        """The topic a ``truth_sent`` read means: ``levels``, else the one the connection has for ``symbol``.

        Each mbp level is its own seqNum chain, so marks are kept per topic.  Without ``levels`` the
        topic must be unambiguous: the only one of ``symbol`` the connection subscribed to or was sent,
        or the default mbp.150 among several.
        """
        symbol = self.resolve_symbol(symbol)
        if levels is not None:
            if conn.path == WS_PATH:
                return f"market.{symbol}.mbp.refresh.{levels}"
            return f"market.{symbol}.mbp.{levels}"
        names = sorted(name for name in {*conn.subscriptions, *conn.sent}
                       if (m := _MBP_RE.match(name) or _REFRESH_RE.match(name)) is not None
                       and m[1] == symbol)
        if not names:
            raise KeyError(f"connection {conn.id} has no topic of {symbol}")
        if len(names) == 1:
            return names[0]
        default = f"market.{symbol}.mbp.{self.default_levels}"
        if default in names:
            return default
        raise ValueError(f"connection {conn.id} has several topics of {symbol} ({', '.join(names)}): "
                         "name the levels")

    def sent_truth(self, conn: SimConnection, key: str, seq: int) -> TruthBook:
        """The topic's book as pushed with seqNum ``seq`` (``KeyError`` once it left the topic's history)."""
        topic = self.topics.get(key)
        return book_at(topic.history if topic is not None else (), seq, key)

    # ------------------------------------------------------------------ advancing the chains
    def _next_seq(self, topic: MbpTopic) -> int:
        rng = self._seq_rng
        jump = rng.randint(100, 1000) if rng.random() < 0.03 else rng.choice((1, 1, 1, 2, 2, 3, 7))
        return max(topic.seq, topic.reserved) + jump

    def _advance(self, topic: MbpTopic) -> dict | None:
        """Diff the live top-N against the last pushed one; move the chain; return the ``tick`` or None."""
        market = self.markets[topic.symbol]
        bids, asks = market.snapshot(topic.levels)
        new_bids, new_asks = dict(bids), dict(asks)
        bid_diff = _side_diff(topic.bids, new_bids, market.bids, self.window_exit_deletes, True)
        ask_diff = _side_diff(topic.asks, new_asks, market.asks, self.window_exit_deletes, False)
        changed_top = new_bids != topic.bids or new_asks != topic.asks
        if topic.sparse and not changed_top:
            return None
        prev = topic.seq
        topic.seq = self._next_seq(topic)
        topic.bids, topic.asks = new_bids, new_asks
        topic.history.append(topic.truth())
        tick: dict = {"seqNum": topic.seq, "prevSeqNum": prev}
        bid_diff.compact_deletes = ask_diff.compact_deletes = self.compact_deletes
        bid_diff.style = ask_diff.style = number_style(topic.levels)
        if not topic.sparse:
            tick["bids"], tick["asks"] = bid_diff, ask_diff
        else:  # the 5/20 shape: an unchanged side is left out
            if bid_diff:
                tick["bids"] = bid_diff
            if ask_diff:
                tick["asks"] = ask_diff
        return tick

    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        """Tick-by-tick topics (5/20) push right after the market step when their top-N changed."""
        async with self._lock:
            for topic in self._tick_topics[symbol]:
                tick = self._advance(topic)
                if tick is not None:
                    await self._dispatch(topic, tick)
            self._send_bbo(symbol)

    def _send_bbo(self, symbol: str) -> None:
        """``market.<sym>.bbo`` on ``/ws`` when the live best bid or ask moved (price or size)."""
        name = f"market.{symbol}.bbo"
        subscribers = [c for c in self.subscribers(name) if c.path == WS_PATH and not c.silent]
        if not subscribers:
            return
        market = self.markets[symbol]
        bid_price, ask_price = market.best_bid(), market.best_ask()
        top = (None if bid_price is None else (bid_price, market.bids[bid_price]),
               None if ask_price is None else (ask_price, market.asks[ask_price]))
        if self._last_bbo.get(symbol) == top:
            return
        self._last_bbo[symbol] = top
        self._bbo_seq[symbol] = self._bbo_seq.get(symbol, 10_242_474_683) + 1
        empty = (Decimal(0), Decimal(0))
        (bid, bid_size), (ask, ask_size) = top[0] or empty, top[1] or empty
        stamp = now_ms()
        frame = {"ch": name, "ts": stamp, "tick": {
            "symbol": symbol, "quoteTime": str(stamp), "bid": plain_number(bid),
            "bidSize": plain_number(bid_size), "ask": plain_number(ask), "askSize": plain_number(ask_size),
            "seqId": str(self._bbo_seq[symbol])}}
        for conn in subscribers:
            self._send_json(conn, frame)

    async def interval_tick(self) -> None:
        """One run of the 100 ms timer: push every 150/400 topic's diff, then the /ws refresh books."""
        async with self._lock:
            for topic in self._interval_topics:
                tick = self._advance(topic)
                if tick is not None:
                    await self._dispatch(topic, tick)
            self._send_refresh()

    async def _interval_loop(self) -> None:
        assert self.mbp_interval
        while True:
            await asyncio.sleep(self.mbp_interval)
            try:
                await self.interval_tick()
            except Exception:  # a bug in one tick must not stop the timer
                log.exception("%s mbp timer failed", self.name)

    # ------------------------------------------------------------------ sending
    def _enqueue(self, conn: SimConnection, data: bytes, mark: SentMark | None = None) -> None:
        """Queue a frame for the connection's writer; ``mark`` is noted for truth_sent once it is written."""
        queue = conn.state.get("outq")
        if queue is not None and not conn.closed:
            queue.put_nowait((data, mark))

    def _send_json(self, conn: SimConnection, obj: dict, mark: SentMark | None = None) -> None:
        self._enqueue(conn, gz(encode(obj)), mark)

    async def _writer(self, conn: SimConnection, queue: asyncio.Queue[tuple[bytes, SentMark | None]]) -> None:
        """One writer per connection keeps frames in the order they were produced.

        A frame's seqNum is noted only here, after the write: a push still queued, or swallowed by a
        SILENT connection, was not sent.
        """
        while True:
            data, mark = await queue.get()
            if await conn.send_bytes(data) and mark is not None:
                self.note_sent(conn, *mark)

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def server_close(self, conn: SimConnection) -> None:
        """Orderly close (code 1000) without waiting for the client's close reply."""
        self._spawn(conn.ws.close(code=1000, message=b"server close"))

    async def _dispatch(self, topic: MbpTopic, tick: dict) -> None:
        subs = [c for c in self.subscribers(topic.name) if c.path == FEED_PATH]
        if not subs:
            return
        frame = {"ch": topic.name, "ts": now_ms(), "tick": tick}
        data = gz(encode(frame))
        for conn in subs:
            if await self.apply_connection_faults(conn, topic.symbol):
                continue
            self._send_push(conn, topic, frame, data)

    def _send_push(self, conn: SimConnection, topic: MbpTopic, frame: dict, data: bytes) -> None:
        sym, cid, take = topic.symbol, conn.id, self.faults.take
        if take(Fault.GAP, sym, cid) is not None:
            return
        params = take(Fault.MALFORMED, sym, cid)
        if params is not None:
            self._enqueue(conn, self._malformed(frame, params))
            return
        if take(Fault.CROSSED, sym, cid) is not None:
            data = gz(encode(self._crossed(frame, topic)))
        elif (self.faults.may_fire(Fault.SILENT_LOSS)
              and (lossy := self._silent_loss(frame, topic)) is not None
              and take(Fault.SILENT_LOSS, sym, cid) is not None):
            data = gz(encode(lossy))  # seqNum and prevSeqNum untouched
        copies = 2 if take(Fault.DUPLICATE, sym, cid) is not None else 1
        item = (data, (topic.name, frame["tick"]["seqNum"], None))
        held: dict[str, tuple[bytes, SentMark]] = conn.state["held"]
        if topic.name in held:
            out = [item] * copies + [held.pop(topic.name)]
        elif take(Fault.REORDER, sym, cid) is not None:
            held[topic.name] = item
            out = [item] * (copies - 1)
        else:
            out = [item] * copies
        for push, mark in out:
            self._enqueue(conn, push, mark)

    def _malformed(self, frame: dict, params: dict) -> bytes:
        kind = params.get("kind")
        if kind is None:
            kind = ("gzip", "json")[self._malformed_flip % 2]
            self._malformed_flip += 1
        text = encode(frame)
        if kind == "json":
            return gz(text[: len(text) // 2])
        good = gz(text)
        return good[: max(12, len(good) // 2)]

    @staticmethod
    def _crossed(frame: dict, topic: MbpTopic) -> dict:
        if not topic.asks:
            return frame
        tick = dict(frame["tick"])
        bids = tick.get("bids") or Levels()
        tick["bids"] = Levels([(min(topic.asks), Decimal(1)), *bids], style=bids.style,
                              compact_deletes=bids.compact_deletes)
        return {**frame, "tick": tick}

    @staticmethod
    def _silent_loss(frame: dict, topic: MbpTopic) -> dict | None:
        """The push less the level that moved the topic's top (None when no level did)."""
        tick = frame["tick"]
        for key, best, moved in (("bids", max(topic.bids, default=None), Decimal.__ge__),
                                 ("asks", min(topic.asks, default=None), Decimal.__le__)):
            levels: Levels = tick.get(key) or Levels()
            for price, _size in levels:
                if best is None or moved(price, best):
                    kept = Levels([lvl for lvl in levels if lvl[0] != price],
                                  compact_deletes=levels.compact_deletes)
                    return {**frame, "tick": {**tick, key: kept}}
        return None

    def _send_refresh(self) -> None:
        for conn in list(self.connections.values()):
            if conn.path != WS_PATH or conn.closed or conn.silent:
                continue
            for name in conn.subscriptions:
                match = _REFRESH_RE.match(name)
                if match is None:
                    continue  # market.<sym>.bbo: pushed by the market step
                book = self.topic_truth(match[1], self.default_levels).top(int(match[2]))
                self._send_json(conn, {"ch": name, "ts": now_ms(), "tick": {
                    "seqNum": book.seq, "bids": Levels(book.bids, style="plain"),
                    "asks": Levels(book.asks, style="plain")}},
                    (name, book.seq, book))

    # ------------------------------------------------------------------ heartbeat
    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            self.ping_round()

    def ping_round(self) -> None:
        """Ping every live connection, or close it if ``max_missed_pongs`` pings are unanswered."""
        for conn in list(self.connections.values()):
            state = conn.state
            if conn.closed or conn.silent or "outq" not in state:
                continue
            if self.max_missed_pongs and state["unanswered"] >= self.max_missed_pongs:
                self._spawn(conn.ws.close(code=1000, message=b"ping timeout"))
                continue
            ts = max(now_ms(), self._last_ping_ts + 1)
            self._last_ping_ts = ts
            state["pings"].append(ts)
            state["unanswered"] += 1
            self._send_json(conn, {"ping": ts})

    # ------------------------------------------------------------------ WebSocket
    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = venue_websocket(compress=False)
        await ws.prepare(request)
        conn = self.register(ws, request.path)
        queue: asyncio.Queue[tuple[bytes, SentMark | None]] = asyncio.Queue()
        conn.state.update(outq=queue, held={}, sub_seq={}, pings=deque(maxlen=16), unanswered=0,
                          last_req=None)
        writer = asyncio.create_task(self._writer(conn, queue))
        try:
            async for text in read_text_frames(conn):
                await self._on_message(conn, text)
        finally:
            self.unregister(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    def _error(self, conn: SimConnection, msg: dict | None, err: str) -> None:
        reply: dict = {"status": "error", "err-code": BAD_REQUEST, "err-msg": err}
        if msg is not None and "id" in msg:
            reply["id"] = msg["id"]
        reply["ts"] = now_ms()
        self._send_json(conn, reply)

    def _ok(self, conn: SimConnection, msg: dict, key: str, topic: str) -> None:
        reply: dict = {"id": msg["id"]} if "id" in msg else {}
        reply.update({"status": "ok", key: topic, "ts": now_ms()})
        self._send_json(conn, reply)

    async def _on_message(self, conn: SimConnection, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            self._error(conn, None, NOT_JSON)
            return
        if "pong" in msg:
            if msg["pong"] in conn.state["pings"]:
                conn.state["unanswered"] = 0
                conn.state["pings"].clear()
        elif "ping" in msg:  # undocumented client ping: answered the way old Huobi did
            self._send_json(conn, {"pong": msg["ping"]})
        elif "sub" in msg:
            self._on_sub(conn, msg)
        elif "unsub" in msg:
            if not isinstance(msg["unsub"], str) or msg["unsub"] not in conn.subscriptions:
                self._error(conn, msg, NOT_SUBBED)
                return
            conn.subscriptions.discard(msg["unsub"])
            conn.state["held"].pop(msg["unsub"], None)
            self._ok(conn, msg, "unsubbed", msg["unsub"])
        elif "req" in msg:
            await self._on_req(conn, msg)
        else:
            self._error(conn, msg, INVALID_TOPIC)

    def _find_topic(self, conn: SimConnection, name: object) -> MbpTopic | str:
        """The topic object (``/feed``), the topic name (``/ws`` refresh) or an error message."""
        regex = _MBP_RE if conn.path == FEED_PATH else _REFRESH_RE
        if not isinstance(name, str):
            return INVALID_TOPIC
        bbo = _BBO_RE.match(name) if conn.path == WS_PATH else None
        if bbo is not None:
            if not self.listed(bbo[1]):
                return INVALID_SYMBOL
            return NOT_OPEN if self.symbol_state[bbo[1]] != "online" else name
        match = regex.match(name)
        if match is None:
            return INVALID_TOPIC
        symbol, levels = match[1], int(match[2])
        known_levels = self.levels_offered if conn.path == FEED_PATH else REFRESH_LEVELS
        if not self.listed(symbol):
            return INVALID_SYMBOL if levels in known_levels else INVALID_TOPIC
        if conn.path == FEED_PATH and name not in self.topics:
            return INVALID_TOPIC
        if conn.path == WS_PATH and levels not in REFRESH_LEVELS:
            return INVALID_TOPIC
        if self.symbol_state[symbol] != "online":
            return NOT_OPEN
        return self.topics[name] if conn.path == FEED_PATH else name

    def _on_sub(self, conn: SimConnection, msg: dict) -> None:
        found = self._find_topic(conn, msg["sub"])
        if isinstance(found, MbpTopic):
            conn.subscriptions.add(found.name)
            conn.state["sub_seq"][found.name] = found.seq
        elif found in ERRORS:
            self._error(conn, msg, found)
            return
        else:
            conn.subscriptions.add(found)
        self._ok(conn, msg, "subbed", msg["sub"])

    async def _on_req(self, conn: SimConnection, msg: dict) -> None:
        now = time.monotonic()
        last, conn.state["last_req"] = conn.state["last_req"], now
        if last is not None and now - last < self.req_min_interval:
            self._error(conn, msg, TOO_MANY)
            return
        found = self._find_topic(conn, msg["req"]) if conn.path == FEED_PATH else INVALID_TOPIC
        if isinstance(found, MbpTopic) and found.levels not in REQ_LEVELS:
            found = INVALID_TOPIC  # the documents: "REQ頻道支持5檔/20檔/150檔全量數據的獲取"
        if not isinstance(found, MbpTopic):
            self._error(conn, msg, found)
            return
        sym, cid, take = found.symbol, conn.id, self.faults.take
        if take(Fault.UNKNOWN_SYMBOL, sym, cid) is not None:
            self._error(conn, msg, INVALID_SYMBOL)
            return
        if take(Fault.SNAPSHOT_429, sym, cid) is not None:
            self._error(conn, msg, TOO_MANY)
            return
        stale = take(Fault.STALE_SNAPSHOT, sym, cid)
        if stale is not None and stale.get("straddle"):
            book = self._straddle_book(found)
        elif stale is not None:
            book = self._stale_book(conn, found, int(stale.get("steps_back", 1)))
        elif self.straddle_snapshots:
            book = self._straddle_book(found)
        else:
            book = found.truth()
        reply: dict = {"id": msg["id"]} if "id" in msg else {}
        reply.update({"rep": found.name, "status": "ok", "ts": now_ms(), "data": {
            "seqNum": book.seq, "bids": Levels(book.bids, style=number_style(found.levels)),
            "asks": Levels(book.asks, style=number_style(found.levels))}})
        # a snapshot reply is a book the client may stop at; a stale one is below the mark and leaves it
        mark: SentMark | None = (found.name, book.seq, book)
        slow = take(Fault.SLOW_SNAPSHOT, sym, cid)
        if slow is None:
            self._send_json(conn, reply, mark)
            return
        delay = float(slow.get("delay", 1.0))
        if slow.get("timeout"):
            reply = {"status": "error", "err-code": BAD_REQUEST, "err-msg": REQUEST_TIMEOUT,
                     **({"id": msg["id"]} if "id" in msg else {}), "ts": now_ms()}
            mark = None
        self._spawn(self._send_later(conn, delay, reply, mark))

    async def _send_later(self, conn: SimConnection, delay: float, reply: dict,
                          mark: SentMark | None) -> None:
        await asyncio.sleep(delay)
        self._send_json(conn, reply, mark)

    def _stale_book(self, conn: SimConnection, topic: MbpTopic, steps_back: int) -> TruthBook:
        """A state pushed before this connection's first buffered push (``S`` < its ``prevSeqNum``)."""
        first_prev = conn.state["sub_seq"].get(topic.name, topic.seq)
        older = [b for b in topic.history if b.seq < first_prev]
        if older:
            return older[max(0, len(older) - steps_back)]
        oldest = topic.history[0]
        return TruthBook(min(oldest.seq, first_prev) - steps_back, oldest.bids, oldest.asks)

    def _straddle_book(self, topic: MbpTopic) -> TruthBook:
        """The live top-N at a seqNum strictly between the last push and the next one."""
        seq = max(topic.seq, topic.reserved) + 1
        topic.reserved = seq
        bids, asks = self.markets[topic.symbol].snapshot(topic.levels)
        return TruthBook(seq, tuple(bids), tuple(asks))

    # ------------------------------------------------------------------ REST
    def rest_headers(self, request: web.Request) -> dict[str, str]:
        """Extra response headers (BitV adds its rate-limit headers)."""
        return {}

    def _rest(self, request: web.Request, body: object) -> web.Response:
        return web.Response(text=encode(body, plain=True), content_type="application/json",
                            headers=self.rest_headers(request))

    def _rest_error(self, request: web.Request, msg: str) -> web.Response:
        return self._rest(request, {"status": "error", "err-code": "invalid-parameter", "err-msg": msg,
                                    "data": None})

    async def _rest_depth(self, request: web.Request) -> web.Response:
        symbol, step = request.query.get("symbol", ""), request.query.get("type", "")
        if not self.listed(symbol):
            return self._rest_error(request, INVALID_SYMBOL)
        if step not in self.depth_steps:
            return self._rest_error(request, "invalid type")
        limit = self.step0_default_depth if step == "step0" else 20
        if "depth" in request.query:
            raw = request.query["depth"]
            if not raw.isdigit() or int(raw) not in REST_DEPTHS:
                return self._rest_error(request, "invalid depth")
            limit = int(raw)
        market = self.markets[symbol]
        bids, asks = market.snapshot()
        mult = self.depth_steps[step]
        if mult > 1:
            bucket = market.spec.tick * mult
            bids, asks = _aggregate(bids, bucket, ROUND_FLOOR), _aggregate(asks, bucket, ROUND_CEILING)
        ts = now_ms()
        tick = {"ts": ts, "version": REST_VERSION_BASE + market.steps,
                "bids": Levels(bids[:limit], style="plain"), "asks": Levels(asks[:limit], style="plain")}
        if self.bare_rest_depth:
            return self._rest(request, tick)
        return self._rest(request, {"ch": f"market.{symbol}.depth.{step}", "status": "ok", "ts": ts,
                                    "tick": tick})

    async def _rest_symbols(self, request: web.Request) -> web.Response:
        data = []
        for vs, spec in self.specs.items():
            if not self.listed(vs):
                continue
            amount = self.amount_precision[vs]
            min_amt = Decimal(1).scaleb(-amount)
            data.append({
                "base-currency": spec.base.lower(),
                "quote-currency": spec.quote.lower(),
                "price-precision": spec.price_decimals,
                "amount-precision": amount,
                "symbol-partition": "main",
                "symbol": vs,
                "state": self.symbol_state[vs],
                "value-precision": 8,
                "min-order-amt": min_amt,
                "max-order-amt": Decimal(1000000),
                "min-order-value": Decimal(5),
                "limit-order-min-order-amt": min_amt,
                "limit-order-max-order-amt": Decimal(1000000),
                "sell-market-min-order-amt": min_amt,
                "sell-market-max-order-amt": Decimal(100000),
                "buy-market-max-order-value": Decimal(1000000),
                "api-trading": "enabled",
            })
        return self._rest(request, {"status": "ok", "data": data})

    def _currencies(self) -> list[str]:
        """Every currency of a listed symbol, lower case, in first-seen order."""
        seen: dict[str, None] = {}
        for vs, spec in self.specs.items():
            if self.listed(vs):
                seen.setdefault(spec.base.lower())
                seen.setdefault(spec.quote.lower())
        return list(seen)

    async def _rest_currencys(self, request: web.Request) -> web.Response:
        """``GET /v1/common/currencys``: ``data`` is an array of currency names (the documents)."""
        return self._rest(request, {"status": "ok", "data": self._currencies()})

    async def _rest_reference_currencies(self, request: web.Request) -> web.Response:
        """``GET /v2/reference/currencies[?currency=]``: ``code`` 200 and per currency its chains, with the
        fields the documents' table marks required; an unknown currency is code 2002."""
        wanted = request.query.get("currency")
        currencies = self._currencies()
        if wanted is not None and wanted not in currencies:
            return self._rest(request, {"code": 2002, "message": 'invalid field value in "currency"',
                                        "data": None})
        data = []
        for name in [wanted] if wanted is not None else currencies:
            chain = {
                "chain": name, "displayName": name.upper(), "baseChain": name.upper(),
                "baseChainProtocol": "", "isDynamic": False, "numOfConfirmations": 12,
                "numOfFastConfirmations": 6, "minDepositAmt": "0.0001", "depositStatus": "allowed",
                "minWithdrawAmt": "0.001", "maxWithdrawAmt": "1000000.00000000",
                "withdrawQuotaPerDay": "1000000.00000000", "withdrawQuotaPerYear": "100000000.00000000",
                "withdrawQuotaTotal": "1000000000.00000000", "withdrawPrecision": 8,
                "withdrawFeeType": "fixed", "transactFeeWithdraw": "0.00010000", "withdrawStatus": "allowed",
            }
            data.append({"currency": name, "chains": [chain], "instStatus": "normal"})
        return self._rest(request, {"code": 200, "data": data})

    async def _rest_timestamp(self, request: web.Request) -> web.Response:
        """``GET /v1/common/timestamp``: milliseconds since the epoch in ``data``."""
        return self._rest(request, {"status": "ok", "data": now_ms()})


def _aggregate(levels: list[Level], bucket: Decimal, rounding: str) -> list[Level]:
    """Merge levels into price buckets (bids rounded down, asks up), sizes summed."""
    merged: dict[Decimal, Decimal] = {}
    for price, size in levels:
        key = ((price / bucket).to_integral_value(rounding) * bucket).quantize(bucket)
        merged[key] = merged.get(key, Decimal(0)) + size
    return sorted(merged.items(), key=lambda kv: kv[0], reverse=(rounding == ROUND_FLOOR))
