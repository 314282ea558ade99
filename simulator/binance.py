"""Simulated Binance Spot, USDⓈ-M and COIN-M Futures market data (REST depth + diff-depth WebSocket).

Both venues speak the wire protocol of the real endpoints closely enough that a feed
written against the Binance docs runs unchanged against them:

* REST ``/api/v3/depth`` + ``/api/v3/exchangeInfo`` (spot) and ``/fapi/v1/depth`` +
  ``/fapi/v1/exchangeInfo`` (futures), with the ``X-MBX-USED-WEIGHT-1M`` weight
  counter, 429 + ``Retry-After`` when the budget is spent and 418 (ban) for requests
  sent during a 429 window.
* WebSocket raw (``/ws/<stream>``) and combined (``/stream?streams=a/b``) connections,
  futures under ``/public`` (the legacy unrouted paths are tolerated), the JSON control
  methods with their replies and error codes, server pings with a pong deadline, the
  incoming-message rate limit, the stream limit per connection and the connection
  lifetime (spot announces it with ``serverShutdown``).
* ``<symbol>@depth`` / ``<symbol>@depth@100ms`` (and futures ``@depth@500ms``) diff
  events.  Update ids advance by more than one per event (one id per level change plus
  a random number of invisible updates), as on the real venue; spot keeps
  ``U == previous u + 1``, futures carries ``pu`` and lets ``U`` jump so that only the
  ``pu`` chain proves continuity.

USD-M also serves the book with RPI orders (``/fapi/v1/rpiDepth``, ``<symbol>@rpiDepth@500ms``):
an overlay of RPI quantity at or behind each side's best ordinary price, with its own ``pu``
chain; :meth:`BinanceFuturesVenue.rpi_truth` is that book.  COIN-M (``/dapi/v1``,
``dstream``) is USD-M's protocol with inverse symbols (``BTCUSD_PERP``) sized in contracts.

Update speeds are not modelled: every market step is pushed at once on every depth
stream of the symbol, whatever its suffix.

``<symbol>@bookTicker`` pushes the truth's best bid and ask (``u`` = the update id of the
depth event that produced it) whenever either moved in price or size: spot
``{"u","s","b","B","a","A"}``, futures adds ``"e":"bookTicker"``, ``E`` and ``T``.
SILENT_LOSS leaves a top-moving level change out of one depth event without touching its
ids; the bookTicker still reports the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import struct
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import ClassVar

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from aggbook.simulator.faults import Fault
from aggbook.simulator.market import BID, LevelChange, MarketModel, MarketProfile, SymbolSpec, TruthBook
from aggbook.simulator.venue import SimConnection, VenueOptions, VenueServer, decimal_text, venue_websocket

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

# a lowercase symbol, '@', then a stream type; or a '!' all-market stream
_STREAM_RE = re.compile(r"^(?:[a-z0-9_.\-]{1,40}@[A-Za-z0-9_@]{1,40}|![A-Za-z0-9_@]{1,40})$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
_DIGITS_RE = re.compile(r"^[0-9]{1,20}$")
_SPOT_STRING_ID_RE = re.compile(r"^[A-Za-z0-9\-]{1,36}$")

_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_INT64 = 2**63
_UINT64 = 2**64


def _now_ms() -> int:
    return int(time.time() * 1000)


class WeightLimiter:
    """The REST request-weight budget of one IP (every local client shares it).

    The window opens at the first request after the previous one expired, so a test's
    requests never straddle a reset by accident.  A request that would exceed the budget
    gets 429 with the seconds left in the window; any request sent while that 429 is in
    force gets 418 and a ban of ``ban_seconds``, as Binance bans IPs that keep going.

    It also keeps the counts a client's pacing is judged by: requests and weight charged, the most
    weight used in any one window (``peak``) and the requests refused with 429/418.
    """

    def __init__(self, limit: int, window: float, ban_seconds: float) -> None:
        self.limit = limit
        self.window = window
        self.ban_seconds = ban_seconds
        self.used = 0
        self._window_start: float | None = None
        self._limited_until = 0.0
        self._banned_until = 0.0
        self.requests = 0  # requests charged (allowed)
        self.charged = 0  # weight charged over all windows
        self.peak = 0  # the most weight used in one window
        self.refused = 0  # requests answered 429 or 418

    def _roll(self, now: float) -> None:
        if self._window_start is None or now >= self._window_start + self.window:
            self._window_start = now
            self.used = 0

    def charge(self, weight: int) -> tuple[int, float]:
        """Charge one request.  Returns (HTTP status, Retry-After seconds); 200 means allowed."""
        now = time.monotonic()
        if now < self._banned_until:
            self.refused += 1
            return 418, self._banned_until - now
        self._roll(now)
        if now < self._limited_until:
            self.refused += 1
            self._banned_until = now + self.ban_seconds
            return 418, self.ban_seconds
        if self.used + weight > self.limit:
            assert self._window_start is not None
            self.refused += 1
            self._limited_until = self._window_start + self.window
            return 429, self._limited_until - now
        self.used += weight
        self.requests += 1
        self.charged += weight
        self.peak = max(self.peak, self.used)
        return 200, 0.0

    def interval(self) -> tuple[str, int]:
        """The window as exchangeInfo spells it: ``("MINUTE", 1)``, or whole seconds for a shortened one."""
        for name, seconds in (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60)):
            if self.window % seconds == 0:
                return name, int(self.window // seconds)
        return "SECOND", max(1, round(self.window))

    def current(self) -> int:
        self._roll(time.monotonic())
        return self.used


def encode_sbe_depth_diff(spec: SymbolSpec, event: dict) -> bytes:
    """A JSON ``depthUpdate`` as the SBE ``DepthDiffStreamEvent`` (schema 1 version 0, template 10003).

    Written from the schema (``proto/binance_stream_1_0.xml``), not with the feed's decoder:
    header (blockLength 26, templateId, schemaId, version), eventTime in µs, first and last
    update id, price and qty exponents (the symbol's tick and lot decimals), then the ``bids`` and
    ``asks`` groups (u16 blockLength 16, u16 count, int64 mantissas) and the varString8 symbol.
    """
    price_exp, qty_exp = -spec.price_decimals, -spec.size_decimals
    out = bytearray(struct.pack("<HHHH", 26, 10003, 1, 0))
    out += struct.pack("<qqqbb", event["E"] * 1000, event["U"], event["u"], price_exp, qty_exp)
    for side in ("b", "a"):
        levels = event[side]
        out += struct.pack("<HH", 16, len(levels))
        for price, qty in levels:
            mantissas = int(Decimal(price).scaleb(-price_exp)), int(Decimal(qty).scaleb(-qty_exp))
            out += struct.pack("<qq", *mantissas)
    name = event["s"].encode()
    out += struct.pack("<B", len(name)) + name
    return bytes(out)


class _ControlError(Exception):
    """A JSON control message the venue rejects: ``{"error":{"code":..,"msg":..},"id":..}``."""

    def __init__(self, code: int, msg: str, with_id: bool = True) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.with_id = with_id


@dataclass(frozen=True)
class BinanceEndpoint:
    """What differs between the simulated Binance Spot and USDⓈ-M Futures endpoints, as data.

    The JSON bodies of the two markets differ in shape too; those stay methods of the two
    venue classes.
    """

    rest_prefix: str
    ws_prefixes: tuple[str, ...]  # WebSocket route prefixes ("" = unrouted /ws and /stream)
    ws_url_path: str  # appended to the WebSocket base URL a client is given
    depth_streams: tuple[str, ...]  # depth stream suffixes served
    ping_interval: float  # server ping cadence, seconds
    pong_timeout: float  # close a connection whose pong is this late
    max_incoming: int  # client frames per second per connection
    weight_limit: int  # REST request weight per minute
    # spot: only a pong echoing an outstanding ping's payload counts.  Futures: the Connect page lets
    # any pong keep the connection, the 2024-02-09 changelog says a pong must echo the ping's payload
    # and unsolicited pongs do not prevent disconnection; the default follows the Connect page and
    # ``pong_must_echo=True`` gives the changelog's rule
    pong_must_echo: bool
    invalid_json_disconnects: bool  # error 3 (invalid JSON) closes the connection
    sends_shutdown_notice: bool  # a ``serverShutdown`` event before the lifetime close
    exchange_info_weight: int
    default_limit: int  # depth levels when the request names no limit
    max_limit: int  # larger limits are served at this size (spot)
    allowed_limits: tuple[int, ...] | None  # only these limits are accepted (futures); None = 1..
    depth_weights: tuple[tuple[int, int], ...]  # (limit up to, request weight), ascending
    min_decimals: int  # prices and sizes written with at least this many decimals (spot: 8)
    rpi_depth: bool = False  # serves /rpiDepth and <sym>@rpiDepth@500ms (the book with RPI orders)
    # WebSocket route prefix standing for the SBE stream host (stream-sbe.binance.com); None = no SBE
    sbe_prefix: str | None = None


SPOT = BinanceEndpoint(
    rest_prefix="/api/v3",
    ws_prefixes=("",),
    ws_url_path="",
    depth_streams=("depth", "depth@100ms"),
    ping_interval=20.0,
    pong_timeout=60.0,
    max_incoming=5,
    weight_limit=6000,
    pong_must_echo=True,
    invalid_json_disconnects=False,
    sends_shutdown_notice=True,
    exchange_info_weight=20,
    default_limit=100,
    max_limit=5000,
    allowed_limits=None,
    depth_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
    min_decimals=8,  # "93180.10000000"
    sbe_prefix="/sbe",
)

FUTURES = BinanceEndpoint(
    rest_prefix="/fapi/v1",
    ws_prefixes=("/public", ""),  # "" = the legacy unrouted /ws and /stream paths
    ws_url_path="/public",
    depth_streams=("depth", "depth@100ms", "depth@500ms"),  # "@depth (supports @500ms / @100ms)"
    ping_interval=180.0,
    pong_timeout=600.0,
    max_incoming=10,
    weight_limit=2400,
    pong_must_echo=False,
    invalid_json_disconnects=True,
    sends_shutdown_notice=False,
    exchange_info_weight=1,
    default_limit=500,
    max_limit=1000,
    allowed_limits=(5, 10, 20, 50, 100, 500, 1000),
    depth_weights=((50, 2), (100, 5), (500, 10), (1000, 20)),
    min_decimals=0,
    rpi_depth=True,
)

RPI_LIMIT = 1000  # "Order Book RPI": limit default 1000, valid [1000], weight 20
RPI_WEIGHT = 20

# COIN-M: USD-M's protocol on /dapi/v1 and dstream.binance.com, whose Connect page has no /public
# routing (raw /ws/<stream> and combined /stream?streams=)
COINM = replace(FUTURES, rest_prefix="/dapi/v1", ws_prefixes=("",), ws_url_path="", rpi_depth=False)


@dataclass(frozen=True, kw_only=True)
class BinanceOptions(VenueOptions):
    """Binance's knobs; ``None`` takes the endpoint's own value (:class:`BinanceEndpoint`)."""

    ping_interval: float | None = None
    pong_timeout: float | None = None
    max_incoming_per_sec: int | None = None
    pong_must_echo: bool | None = None
    max_streams: int = 1024
    max_connection_age: float = 24 * 3600.0
    shutdown_grace: float = 1.0  # seconds between ``serverShutdown`` and the close
    weight_limit: int | None = None  # REQUEST_WEIGHT per window (exchangeInfo publishes it)
    weight_window: float = 60.0  # seconds; published as MINUTE, or SECOND with intervalNum when shortened
    ban_seconds: float = 120.0
    id_extra_max: int = 3  # invisible update ids per event, at most


class _BinanceVenue(VenueServer):
    """What spot and USDⓈ-M futures share; the subclasses pick the :class:`BinanceEndpoint`."""

    endpoint: ClassVar[BinanceEndpoint]
    Options = BinanceOptions
    options: BinanceOptions

    def configure(self) -> None:
        o, m = self.options, self.endpoint
        self.ping_interval = o.ping_interval if o.ping_interval is not None else m.ping_interval
        self.pong_timeout = o.pong_timeout if o.pong_timeout is not None else m.pong_timeout
        self.max_incoming_per_sec = (
            o.max_incoming_per_sec if o.max_incoming_per_sec is not None else m.max_incoming
        )
        self.pong_must_echo = o.pong_must_echo if o.pong_must_echo is not None else m.pong_must_echo
        self.max_streams = o.max_streams
        self.max_connection_age = o.max_connection_age
        self.shutdown_grace = o.shutdown_grace
        budget = o.weight_limit if o.weight_limit is not None else m.weight_limit
        self.limiter = WeightLimiter(budget, o.weight_window, o.ban_seconds)
        self.id_extra_max = o.id_extra_max
        self._rng = random.Random(f"{self.name}:{o.seed}")
        self._last_u: dict[str, int] = {s: self._rng.randint(10**9, 9 * 10**9) for s in self.markets}
        self._last_top: dict[str, tuple] = {}  # symbol -> the top last pushed on @bookTicker
        self._by_lower = {s.lower(): s for s in self.markets}
        self._closers: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ VenueServer API
    def venue_symbol(self, spec: SymbolSpec) -> str:
        return f"{spec.base}{spec.quote}".upper()

    def current_seq(self, symbol: str) -> int:
        return self._last_u[self.resolve_symbol(symbol)]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{self.endpoint.rest_prefix}/depth", self._h_depth)
        app.router.add_get(f"{self.endpoint.rest_prefix}/exchangeInfo", self._h_exchange_info)
        app.router.add_get(f"{self.endpoint.rest_prefix}/ping", self._h_ping)
        app.router.add_get(f"{self.endpoint.rest_prefix}/time", self._h_time)
        for prefix in self._all_ws_prefixes():
            app.router.add_get(f"{prefix}/ws", self._h_ws)
            app.router.add_get(f"{prefix}/ws/{{streams:.*}}", self._h_ws)
            app.router.add_get(f"{prefix}/stream", self._h_ws)

    def _all_ws_prefixes(self) -> tuple[str, ...]:
        sbe = self.endpoint.sbe_prefix
        return (*self.endpoint.ws_prefixes, *((sbe,) if sbe else ()))

    def _is_sbe(self, request: web.Request) -> bool:
        sbe = self.endpoint.sbe_prefix
        return sbe is not None and request.path.startswith(f"{sbe}/")

    def urls(self) -> dict[str, str]:
        base = super().urls()
        return {**base, "ws_url": base["ws_url"] + self.endpoint.ws_url_path}

    def background_tasks(self) -> list:
        return [self._heartbeats()]

    async def stop(self) -> None:
        for task in list(self._closers):
            task.cancel()
        await super().stop()

    # ------------------------------------------------------------------ formatting
    def _places(self, decimals: int) -> int:
        return max(self.endpoint.min_decimals, decimals)

    def _fmt_price(self, market: MarketModel, price: Decimal) -> str:
        return decimal_text(price, self._places(market.spec.price_decimals))

    def _fmt_size(self, market: MarketModel, size: Decimal) -> str:
        return decimal_text(size, self._places(market.spec.size_decimals))

    def _levels(self, market: MarketModel, levels: Iterable[tuple[Decimal, Decimal]]) -> list[list[str]]:
        return [[self._fmt_price(market, p), self._fmt_size(market, s)] for p, s in levels]

    # ------------------------------------------------------------------ REST
    def _json(self, body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = {WEIGHT_HEADER: str(self.limiter.current())}
        if headers:
            hdrs.update(headers)
        return web.Response(body=orjson.dumps(body), status=status, headers=hdrs,
                            content_type="application/json")

    def _error(self, status: int, code: int, msg: str, retry_after: float | None = None) -> web.Response:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        return self._json({"code": code, "msg": msg}, status=status, headers=headers)

    def _limit_error(self, status: int, retry_after: float) -> web.Response:
        if status == 418:
            until = _now_ms() + int(retry_after * 1000)
            msg = (f"Way too much request weight used; IP banned until {until}. "
                   "Please use WebSocket Streams for live updates to avoid bans.")
        else:
            msg = (f"Too much request weight used; current limit is {self.limiter.limit} request weight "
                   "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.")
        return self._error(status, -1003, msg, retry_after)

    def _charge(self, weight: int) -> web.Response | None:
        status, retry_after = self.limiter.charge(weight)
        return None if status == 200 else self._limit_error(status, retry_after)

    def _parse_symbol(self, raw: str | None) -> tuple[str | None, web.Response | None]:
        if not raw:
            return None, self._error(
                400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if not _SYMBOL_RE.match(raw):
            return None, self._error(
                400, -1100,
                "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.")
        if not self.listed(raw):
            return None, self._error(400, -1121, "Invalid symbol.")
        return raw, None

    def _parse_limit(self, raw: str | None) -> tuple[int | None, web.Response | None]:
        e = self.endpoint
        if raw is None:
            return e.default_limit, None
        if not _DIGITS_RE.match(raw):
            return None, self._error(
                400, -1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        limit = int(raw)
        valid = limit in e.allowed_limits if e.allowed_limits is not None else limit >= 1
        if not valid:
            return None, self._error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return min(limit, e.max_limit), None

    def _depth_weight(self, limit: int) -> int:
        for upto, weight in self.endpoint.depth_weights:
            if limit <= upto:
                return weight
        return self.endpoint.depth_weights[-1][1]

    def _snapshot_body(self, market: MarketModel, book: TruthBook, limit: int) -> dict:
        raise NotImplementedError

    async def _h_depth(self, request: web.Request) -> web.Response:
        limit, bad_limit = self._parse_limit(request.query.get("limit"))
        refused = self._charge(self._depth_weight(limit if limit is not None else 100))
        if refused is not None:
            return refused
        if bad_limit is not None:
            return bad_limit
        assert limit is not None
        symbol, bad_symbol = self._parse_symbol(request.query.get("symbol"))
        if bad_symbol is not None:
            return bad_symbol
        assert symbol is not None
        status_filter = request.query.get("symbolStatus")
        if status_filter is not None and status_filter != "TRADING":
            return self._error(400, -1220, "The symbol's status does not match the requested symbolStatus.")
        faults = self.faults
        if faults.take(Fault.UNKNOWN_SYMBOL, symbol) is not None:
            return self._error(400, -1121, "Invalid symbol.")
        if (params := faults.take(Fault.SNAPSHOT_418, symbol)) is not None:
            return self._limit_error(418, float(params.get("retry_after", 1)))
        if (params := faults.take(Fault.SNAPSHOT_429, symbol)) is not None:
            return self._limit_error(429, float(params.get("retry_after", 1)))
        market = self.markets[symbol]
        stale = faults.take(Fault.STALE_SNAPSHOT, symbol)
        book = self._stale_book(symbol, stale.get("steps_back")) if stale is not None else self.truth(symbol)
        # the book is read before a SLOW_SNAPSHOT delay: the answer is already old when it lands
        body = self._snapshot_body(market, book, limit)
        if (params := faults.take(Fault.SLOW_SNAPSHOT, symbol)) is not None:
            await asyncio.sleep(float(params.get("delay", 1.0)))
        return self._json(body)

    def _stale_book(self, symbol: str, steps_back: object = None) -> TruthBook:
        """A book older than the first event any current subscriber of ``symbol`` was sent.

        "Older" means ``L < U_first - 1``: not even the ``U == L + 1`` boundary case can
        join it to the stream, so both readings of the docs' step 4 must fetch again.
        """
        if steps_back is not None:
            return self.stale_truth(symbol, int(steps_back))  # type: ignore[call-overload]
        firsts = [c.state["first_U"][symbol] for c in self.connections.values()
                  if symbol in c.state.get("first_U", {})]
        bound = min(firsts) - 1 if firsts else self._last_u[symbol]
        for book in reversed(self.history[symbol]):
            if book.seq < bound:
                return book
        # not enough history (e.g. right after start): the current levels under an id that is
        # certainly too old; a client that checks the id never uses the levels
        current = self.truth(symbol)
        return TruthBook(bound - 1 - self._rng.randint(1, 50), current.bids, current.asks)

    async def _h_exchange_info(self, request: web.Request) -> web.Response:
        refused = self._charge(self.endpoint.exchange_info_weight)
        if refused is not None:
            return refused
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"]]
        elif "symbols" in request.query:
            try:
                parsed = orjson.loads(request.query["symbols"])
                if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                    raise ValueError
            except ValueError:
                return self._error(400, -1100, "Illegal characters found in parameter 'symbols'.")
            if len(set(parsed)) != len(parsed):
                return self._error(400, -1151, "Symbol is present multiple times in the list.")
            wanted = parsed
        if wanted is not None and not all(self.listed(s) for s in wanted):
            return self._error(400, -1121, "Invalid symbol.")
        names = wanted if wanted is not None else [s for s in self.markets if self.listed(s)]
        return self._json(self._exchange_info_body(names))

    def _exchange_info_body(self, names: list[str]) -> dict:
        raise NotImplementedError

    def _weight_limit_entry(self) -> dict:
        """The ``REQUEST_WEIGHT`` entry of ``rateLimits``: the budget this venue enforces."""
        interval, num = self.limiter.interval()
        return {"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": num,
                "limit": self.limiter.limit}

    async def _h_ping(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        return refused if refused is not None else self._json({})

    async def _h_time(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        return refused if refused is not None else self._json({"serverTime": _now_ms()})

    # ------------------------------------------------------------------ WebSocket: connect
    def _parse_ws_request(self, request: web.Request) -> tuple[list[str], bool]:
        """Streams named in the URL and the initial ``combined`` property."""
        path = request.path
        for prefix in self._all_ws_prefixes():
            if path == f"{prefix}/stream":
                raw = request.query.get("streams", "")
                return [s for s in raw.split("/") if s], True
            if path == f"{prefix}/ws":
                return [], False
            if path.startswith(f"{prefix}/ws/"):
                return [s for s in request.match_info.get("streams", "").split("/") if s], False
        return [], False

    async def _h_ws(self, request: web.Request) -> web.StreamResponse:
        streams, combined = self._parse_ws_request(request)
        # A URL segment that is no stream name ("/ws/0", which ccxt opens on the production venue
        # before it sends SUBSCRIBE) connects and subscribes to nothing; only SUBSCRIBE validates.
        streams = [s for s in streams if _STREAM_RE.match(s)]
        if len(set(streams)) > self.max_streams:
            return self._error(400, 2, f"Invalid request: too many streams (max {self.max_streams})")
        sbe = self._is_sbe(request)
        if sbe and not request.headers.get("X-MBX-APIKEY"):  # "an API key is required"
            return self._error(401, -2014, "API-key format invalid.")
        ws = venue_websocket()
        await ws.prepare(request)
        conn = self.register(ws, request.path_qs)
        now = time.monotonic()
        conn.state.update(
            sbe=sbe,  # depth events go out as SBE DepthDiffStreamEvent binary frames
            combined=combined,
            streams={},  # ordered set: LIST_SUBSCRIPTIONS answers in subscription order
            first_U={},  # symbol -> U of the first event sent (STALE_SNAPSHOT reference)
            held={},  # stream -> (frame, its u; None if MALFORMED) held back by REORDER
            pings={},  # payload -> send time of each unanswered server ping
            pings_sent=0,
            pings_answered=0,  # server pings a pong has answered
            last_ping=now,
            incoming=deque(),
            micros=request.query.get("timeUnit", "").upper() == "MICROSECOND",
            shutting_down=False,
        )
        for stream in streams:
            self._subscribe(conn, stream)
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if self._over_rate(conn):
                    self.unregister(conn)
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Too many requests")
                    break
                if msg.type == WSMsgType.PING:
                    await conn.pong(msg.data)  # none on a SILENT connection
                elif msg.type == WSMsgType.PONG:
                    self._on_pong(conn, msg.data)
                elif msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    text = msg.data if isinstance(msg.data, str) else msg.data.decode("utf-8", "replace")
                    if not await self._on_control(conn, text):
                        self.unregister(conn)
                        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"Invalid JSON")
                        break
        finally:
            self.unregister(conn)
        return ws

    def _over_rate(self, conn: SimConnection) -> bool:
        """Pings, pongs and JSON frames all count toward the per-second incoming limit."""
        now = time.monotonic()
        window: deque[float] = conn.state["incoming"]
        window.append(now)
        while window and now - window[0] >= 1.0:
            window.popleft()
        return len(window) > self.max_incoming_per_sec

    def _on_pong(self, conn: SimConnection, payload: bytes) -> None:
        pings: dict[bytes, float] = conn.state["pings"]
        if not self.pong_must_echo:
            conn.state["pings_answered"] += len(pings)
            pings.clear()  # futures: any pong keeps the connection alive
            return
        sent = pings.get(bytes(payload))
        if sent is None:
            return  # unsolicited pong: allowed, but it does not satisfy the deadline
        for key in [k for k, t in pings.items() if t <= sent]:
            del pings[key]
            conn.state["pings_answered"] += 1

    # ------------------------------------------------------------------ WebSocket: control messages
    async def _on_control(self, conn: SimConnection, text: str) -> bool:
        """Answer one JSON control frame.  False means the connection must be dropped."""
        req_id: object = None
        try:
            try:
                request = json.loads(text)
            except ValueError as exc:
                lineno = getattr(exc, "lineno", 1)
                colno = getattr(exc, "colno", 1)
                raise _ControlError(
                    3, f"Invalid JSON: expected value at line {lineno} column {colno}", with_id=False
                ) from exc
            req_id = self._check_request(request, text)
            result = self._run_method(conn, request)
        except _ControlError as err:
            reply: dict = {"error": {"code": err.code, "msg": err.msg}}
            if err.with_id:
                reply["id"] = req_id
            await conn.send_json(reply)
            return not (err.code == 3 and self.endpoint.invalid_json_disconnects)
        await conn.send_json({"result": result, "id": req_id})
        return True

    def _check_request(self, request: object, text: str) -> object:
        """Validate the envelope; returns the request id to echo."""
        if not isinstance(request, dict):
            raise _ControlError(2, "Invalid request: expected a JSON object", with_id=False)
        lines = text.splitlines() or [""]
        if "method" not in request:
            raise _ControlError(
                2, f"Invalid request: missing field `method` at line {len(lines)} column {len(lines[-1])}",
                with_id=False)
        method = request["method"]
        if method not in _METHODS:
            shown = method if isinstance(method, str) else json.dumps(method)
            pos = text.find(json.dumps(method))
            column = pos + len(json.dumps(method)) if pos >= 0 else 1
            raise _ControlError(
                2, f"Invalid request: unknown variant `{shown}`, expected one of "
                   + ", ".join(f"`{m}`" for m in _METHODS) + f" at line 1 column {column}",
                with_id=False)
        if "id" not in request or not self._valid_id(request["id"]):
            raise _ControlError(2, "Invalid request: request ID must be an unsigned integer", with_id=False)
        return request["id"]

    def _valid_id(self, value: object) -> bool:
        raise NotImplementedError

    def _run_method(self, conn: SimConnection, request: dict) -> object:
        method = request["method"]
        params = request.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list):
                raise _ControlError(2, "Invalid request: missing field `params`")
            if any(not isinstance(s, str) or not _STREAM_RE.match(s) for s in params):
                raise _ControlError(2, "Invalid request: invalid stream")
            if method == "SUBSCRIBE":
                new = [s for s in dict.fromkeys(params) if s not in conn.state["streams"]]
                if len(conn.state["streams"]) + len(new) > self.max_streams:
                    raise _ControlError(2, f"Invalid request: too many streams (max {self.max_streams})")
                for stream in new:
                    self._subscribe(conn, stream)
            else:
                for stream in params:
                    self._unsubscribe(conn, stream)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise _ControlError(2, "Invalid request: too many parameters")
            return list(conn.state["streams"])
        # SET_PROPERTY / GET_PROPERTY
        expected = 2 if method == "SET_PROPERTY" else 1
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise _ControlError(2, "Invalid request: property name must be a string")
        if len(params) > expected:
            raise _ControlError(2, "Invalid request: too many parameters")
        if params[0] != "combined":
            raise _ControlError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return conn.state["combined"]
        if len(params) < 2 or not isinstance(params[1], bool):
            raise _ControlError(1, "Invalid value type: expected Boolean")
        conn.state["combined"] = params[1]
        return None

    def _subscribe(self, conn: SimConnection, stream: str) -> None:
        conn.state["streams"][stream] = None
        conn.subscriptions.add(stream)

    def _unsubscribe(self, conn: SimConnection, stream: str) -> None:
        conn.state["streams"].pop(stream, None)
        conn.state["held"].pop(stream, None)
        conn.subscriptions.discard(stream)

    # ------------------------------------------------------------------ heartbeats, lifetime
    async def _heartbeats(self) -> None:
        """Server pings, pong deadlines and the connection lifetime, for every connection."""
        tick = max(0.005, min(self.ping_interval, self.pong_timeout, self.max_connection_age, 1.0) / 10)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.closed or conn.silent:
                    continue
                state = conn.state
                if not state["shutting_down"] and now - conn.opened_at >= self.max_connection_age:
                    await self._begin_shutdown(conn)
                pings: dict[bytes, float] = state["pings"]
                if pings and now - min(pings.values()) > self.pong_timeout:
                    self._close_later(conn, WSCloseCode.POLICY_VIOLATION, b"Pong timeout", 0.0)
                    continue
                if now - state["last_ping"] >= self.ping_interval:
                    state["last_ping"] = now
                    payload = str(_now_ms()).encode()
                    while payload in pings:
                        payload += b"."
                    pings[payload] = now
                    state["pings_sent"] += 1
                    await conn.ping(payload)

    async def server_close(self, conn: SimConnection) -> None:
        """SERVER_CLOSE fault: the connection-lifetime rollover, right now."""
        await self._begin_shutdown(conn)

    async def _begin_shutdown(self, conn: SimConnection) -> None:
        conn.state["shutting_down"] = True
        grace = 0.0
        if self.endpoint.sends_shutdown_notice:
            event = {"e": "serverShutdown", "E": _now_ms()}
            frame = {"stream": "!serverShutdown", "data": event} if conn.state["combined"] else event
            await conn.send_json(frame)
            grace = self.shutdown_grace
        self._close_later(conn, WSCloseCode.OK, b"", grace)

    def _close_later(self, conn: SimConnection, code: int, message: bytes, delay: float) -> None:
        """Close in a task of its own: ``ws.close`` waits for the client's close frame."""
        conn.state["shutting_down"] = True

        async def closer() -> None:
            if delay > 0:
                await asyncio.sleep(delay)
            self.unregister(conn)
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=message)

        task = asyncio.create_task(closer())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    # ------------------------------------------------------------------ publishing
    def _make_event(self, symbol: str, changes: list[LevelChange]) -> dict:
        raise NotImplementedError

    def _depth_stream_names(self, symbol: str) -> set[str]:
        lower = symbol.lower()
        return {f"{lower}@{suffix}" for suffix in self.endpoint.depth_streams}

    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        if not changes:
            return  # nothing changed: no update id is consumed and no event is sent
        event = self._make_event(symbol, changes)
        names = self._depth_stream_names(symbol)
        ticker_stream = f"{symbol.lower()}@bookTicker"
        ticker = None
        if any(ticker_stream in c.state.get("streams", ()) for c in self.connections.values()):
            ticker = self._book_ticker(symbol, event)
        for conn in list(self.connections.values()):
            if conn.closed:
                continue
            for stream in [s for s in conn.state["streams"] if s in names]:
                await self._send_event(conn, symbol, stream, event)
            if ticker is not None and ticker_stream in conn.state["streams"]:
                await conn.send_str(self._frame(conn, ticker_stream, ticker))  # nothing when silent

    def _book_ticker(self, symbol: str, event: dict) -> dict | None:
        """The truth's best bid and ask as of ``event``'s ``u``; None when neither moved."""
        market = self.markets[symbol]
        bids, asks = market.snapshot(1)
        top = (bids[0] if bids else None, asks[0] if asks else None)
        if self._last_top.get(symbol) == top:
            return None
        self._last_top[symbol] = top
        bid, ask = top
        zero = ("0", "0")
        b, bq = (self._fmt_price(market, bid[0]), self._fmt_size(market, bid[1])) if bid else zero
        a, aq = (self._fmt_price(market, ask[0]), self._fmt_size(market, ask[1])) if ask else zero
        return {"u": event["u"], "s": symbol, "b": b, "B": bq, "a": a, "A": aq}

    def _silent_loss(self, symbol: str, event: dict) -> dict | None:
        """``event`` less one level change that moves the truth's top (None when none does)."""
        market = self.markets[symbol]
        best_bid, best_ask = market.best_bid(), market.best_ask()
        for key, best, better in (("b", best_bid, Decimal.__ge__), ("a", best_ask, Decimal.__le__)):
            for price, _size in event[key]:
                if best is None or better(Decimal(price), best):  # at or above the new top: it moved it
                    # every entry at that price goes (a step may touch a price twice; the last one counts)
                    return {**event, key: [lvl for lvl in event[key] if lvl[0] != price]}
        return None

    def _depth_frame(self, conn: SimConnection, stream: str, event: dict) -> str | bytes:
        """A diff event as JSON text, or as an SBE binary frame on the SBE endpoint."""
        if conn.state.get("sbe"):
            return encode_sbe_depth_diff(self.markets[event["s"]].spec, event)
        return self._frame(conn, stream, event)

    def _frame(self, conn: SimConnection, stream: str, event: dict) -> str:
        if conn.state["micros"]:
            event = {**event, **{k: event[k] * 1000 for k in ("E", "T") if k in event}}
        body = {"stream": stream, "data": event} if conn.state["combined"] else event
        return orjson.dumps(body).decode()

    def _crossed(self, symbol: str, event: dict) -> dict:
        """The same event plus a bid one tick above the best ask (not part of the truth)."""
        market = self.markets[symbol]
        best_ask = market.best_ask()
        assert best_ask is not None
        tick, lot = market.spec.tick, market.spec.lot
        bogus = [self._fmt_price(market, best_ask + tick), self._fmt_size(market, lot)]
        return {**event, "b": [*event["b"], bogus]}

    async def _send_event(self, conn: SimConnection, symbol: str, stream: str, event: dict) -> None:
        conn.state["first_U"].setdefault(symbol, event["U"])
        if await self.apply_connection_faults(conn, symbol):
            return
        take = self.faults.take
        if take(Fault.GAP, symbol, conn.id) is not None:
            return
        if take(Fault.CROSSED, symbol, conn.id) is not None:
            event = self._crossed(symbol, event)
        if (self.faults.may_fire(Fault.SILENT_LOSS)
                and (lossy := self._silent_loss(symbol, event)) is not None
                and take(Fault.SILENT_LOSS, symbol, conn.id) is not None):
            event = lossy  # asked only where a top-moving change exists, so an armed fault waits for one
        text = self._depth_frame(conn, stream, event)
        last_id: int | None = event["u"]  # what note_sent records once the frame is written
        if take(Fault.MALFORMED, symbol, conn.id) is not None:
            text = text[: len(text) // 2]
            last_id = None  # a frame that does not parse carries no id the client can have reached
        held = conn.state["held"].pop(stream, None)
        if held is None and take(Fault.REORDER, symbol, conn.id) is not None:
            conn.state["held"][stream] = (text, last_id)
            return
        await self._write_event(conn, symbol, text, last_id)
        if take(Fault.DUPLICATE, symbol, conn.id) is not None:
            await self._write_event(conn, symbol, text, last_id)
        if held is not None:
            await self._write_event(conn, symbol, *held)

    async def _write_event(self, conn: SimConnection, symbol: str, text: str | bytes,
                           last_id: int | None) -> None:
        """Write one diff frame and, if it really went out, note its ``u`` for ``truth_sent``."""
        sent = await (conn.send_bytes(text) if isinstance(text, bytes) else conn.send_str(text))
        if sent and last_id is not None:
            self.note_sent(conn, symbol, last_id)


class BinanceSpotVenue(_BinanceVenue):
    """Binance Spot: ``/api/v3`` REST and ``stream.binance.com`` WebSocket streams."""

    name = "binance"
    endpoint = SPOT
    # the deepest book and the tightest quote, first to follow the reference price
    market_profile = MarketProfile(spread=2, size_scale=2.0, size_slope=0.05, drift=0.5, activity=12)

    def _snapshot_body(self, market: MarketModel, book: TruthBook, limit: int) -> dict:
        return {"lastUpdateId": book.seq,
                "bids": self._levels(market, book.bids[:limit]),
                "asks": self._levels(market, book.asks[:limit])}

    def _valid_id(self, value: object) -> bool:
        if value is None:
            return True
        if isinstance(value, bool):
            return False
        if isinstance(value, int):
            return -_INT64 <= value < _INT64
        return isinstance(value, str) and bool(_SPOT_STRING_ID_RE.match(value))

    def _make_event(self, symbol: str, changes: list[LevelChange]) -> dict:
        market = self.markets[symbol]
        first = self._last_u[symbol] + 1
        last = first + len(changes) - 1 + self._rng.randint(0, self.id_extra_max)
        self._last_u[symbol] = last
        return {
            "e": "depthUpdate", "E": _now_ms(), "s": symbol, "U": first, "u": last,
            "b": [[self._fmt_price(market, c.price), self._fmt_size(market, c.size)]
                  for c in changes if c.side == BID],
            "a": [[self._fmt_price(market, c.price), self._fmt_size(market, c.size)]
                  for c in changes if c.side != BID],
        }

    def _exchange_info_body(self, names: list[str]) -> dict:
        symbols = []
        for name in names:
            spec = self.specs[name]
            tick, lot = self._fmt_filter(spec.tick), self._fmt_filter(spec.lot)
            symbols.append({
                "symbol": name, "status": "TRADING",
                "baseAsset": spec.base, "baseAssetPrecision": 8,
                "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
                     "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": lot, "maxQty": "9000000.00000000", "stepSize": lot},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
            })
        return {
            "timezone": "UTC", "serverTime": _now_ms(),
            "rateLimits": [
                self._weight_limit_entry(),
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
            ],
            "exchangeFilters": [], "symbols": symbols,
        }

    def _fmt_filter(self, value: Decimal) -> str:
        return decimal_text(value, self._places(max(0, -value.as_tuple().exponent)))  # type: ignore[operator]


class BinanceFuturesVenue(_BinanceVenue):
    """Binance USDⓈ-M Futures: ``/fapi/v1`` REST and ``fstream.binance.com/public`` streams."""

    name = "binance-futures"
    endpoint = FUTURES
    # a small premium over spot, on the futures contract's coarser tick and lot
    market_profile = MarketProfile(
        spread=2, size_scale=3.0, offset=2, drift=1.0, noise=1,
        rules={"BTC-USDT": ("0.1", "0.001"), "ETH-USDT": ("0.01", "0.001"), "SOL-USDT": ("0.01", "1"),
               "DOGE-USDT": ("0.00001", "1"), "XRP-USDT": ("0.0001", "0.1")},
    )

    def _snapshot_body(self, market: MarketModel, book: TruthBook, limit: int) -> dict:
        now = _now_ms()
        return {"lastUpdateId": book.seq, "E": now, "T": now - self._rng.randint(0, 5),
                "bids": self._levels(market, book.bids[:limit]),
                "asks": self._levels(market, book.asks[:limit])}

    # ------------------------------------------------------------------ RPI book
    # RPI (Retail Price Improvement) orders rest beside the ordinary ones but /depth, @depth and
    # @bookTicker leave them out; /rpiDepth and <sym>@rpiDepth@500ms show the book with them,
    # aggregated per price, with crossed RPI quantity hidden.  Here the RPI orders are an overlay
    # of extra quantity at or behind each side's best ordinary price, moved now and then as the
    # market steps; the RPI view (ordinary + visible RPI quantity) has an update-id chain of its
    # own, chained by ``pu`` like @depth.
    def configure(self) -> None:
        super().configure()
        # a generator of its own, so the ordinary @depth stream is the same with or without RPI
        self._rpi_rng = random.Random(f"{self.name}:rpi:{self.options.seed}")
        self._rpi_orders: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {
            s: ({}, {}) for s in self.markets}
        self._rpi_view: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {
            s: (dict(m.bids), dict(m.asks)) for s, m in self.markets.items()}
        self._rpi_u: dict[str, int] = {s: self._rpi_rng.randint(10**9, 9 * 10**9) for s in self.markets}

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        if self.endpoint.rpi_depth:
            app.router.add_get(f"{self.endpoint.rest_prefix}/rpiDepth", self._h_rpi_depth)

    def rpi_truth(self, symbol: str) -> TruthBook:
        """The book /rpiDepth serves: ordinary plus visible RPI quantity, at the RPI stream's last ``u``."""
        symbol = self.resolve_symbol(symbol)
        bids, asks = self._rpi_view[symbol]
        return TruthBook(self._rpi_u[symbol], tuple(sorted(bids.items(), reverse=True)),
                         tuple(sorted(asks.items())))

    def _move_rpi_orders(self, symbol: str) -> set[Decimal]:
        """Place, resize or pull an RPI order now and then; the prices it touched."""
        market = self.markets[symbol]
        touched: set[Decimal] = set()
        for _ in range(self._rpi_rng.choice((0, 0, 1, 2))):
            side = self._rpi_rng.randrange(2)
            orders = self._rpi_orders[symbol][side]
            levels = market.snapshot(6)[side]
            if orders and self._rpi_rng.random() < 0.4:
                price = self._rpi_rng.choice(sorted(orders))
                del orders[price]
            elif levels:
                price = self._rpi_rng.choice(levels)[0]
                orders[price] = market.spec.lot * self._rpi_rng.randint(1, 50)
            else:
                continue
            touched.add(price)
        return touched

    def _rpi_changes(self, symbol: str, changes: list[LevelChange]) -> tuple[list, list]:
        """The RPI view's level changes after ``changes``: ``[price, qty]`` per side."""
        market = self.markets[symbol]
        best_bid, best_ask = market.best_bid(), market.best_ask()
        candidates: tuple[set[Decimal], set[Decimal]] = (set(), set())
        for change in changes:
            candidates[0 if change.side == BID else 1].add(change.price)
        touched = self._move_rpi_orders(symbol)
        out: tuple[list, list] = ([], [])
        for side, base in ((0, market.bids), (1, market.asks)):
            orders, view = self._rpi_orders[symbol][side], self._rpi_view[symbol][side]
            prices = candidates[side] | touched | set(orders)
            for price in sorted(prices):
                # crossed RPI quantity is hidden: a bid above the best ordinary bid (or at or above
                # the best ask), an ask below the best ordinary ask
                if side == 0:
                    visible = (best_bid is not None and price <= best_bid
                               and (best_ask is None or price < best_ask))
                else:
                    visible = (best_ask is not None and price >= best_ask
                               and (best_bid is None or price > best_bid))
                qty = base.get(price, Decimal(0)) + (orders.get(price, Decimal(0)) if visible else 0)
                if qty == view.get(price, Decimal(0)):
                    continue
                if qty:
                    view[price] = qty
                else:
                    view.pop(price, None)
                out[side].append([self._fmt_price(market, price), self._fmt_size(market, qty)])
        return out

    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        await super().publish(symbol, changes)
        if not self.endpoint.rpi_depth or not changes:
            return
        bids, asks = self._rpi_changes(symbol, changes)
        if not bids and not asks:
            return
        previous = self._rpi_u[symbol]
        first = previous + 1 + self._rpi_rng.choice((0, 0, 1, 3))
        last = first + len(bids) + len(asks) - 1 + self._rpi_rng.randint(0, self.id_extra_max)
        self._rpi_u[symbol] = last
        now = _now_ms()
        event = {"e": "depthUpdate", "E": now, "T": now - self._rpi_rng.randint(0, 5), "s": symbol,
                 "U": first, "u": last, "pu": previous, "b": bids, "a": asks}
        stream = f"{symbol.lower()}@rpiDepth@500ms"
        for conn in list(self.connections.values()):
            if conn.closed or stream not in conn.state["streams"]:
                continue
            if self.faults.take(Fault.GAP, symbol, conn.id) is not None:
                continue
            await conn.send_str(self._frame(conn, stream, event))

    async def _h_rpi_depth(self, request: web.Request) -> web.Response:
        refused = self._charge(RPI_WEIGHT)
        if refused is not None:
            return refused
        raw_limit = request.query.get("limit")
        if raw_limit is not None and raw_limit != str(RPI_LIMIT):
            return self._error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        symbol, bad_symbol = self._parse_symbol(request.query.get("symbol"))
        if bad_symbol is not None:
            return bad_symbol
        assert symbol is not None
        return self._json(self._snapshot_body(self.markets[symbol], self.rpi_truth(symbol), RPI_LIMIT))

    def _valid_id(self, value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _UINT64

    def _book_ticker(self, symbol: str, event: dict) -> dict | None:
        ticker = super()._book_ticker(symbol, event)
        if ticker is None:
            return None
        now = _now_ms()
        return {"e": "bookTicker", "u": ticker.pop("u"), "E": now, "T": now - self._rng.randint(0, 5),
                **ticker}

    def _make_event(self, symbol: str, changes: list[LevelChange]) -> dict:
        market = self.markets[symbol]
        previous = self._last_u[symbol]
        # U may jump past previous + 1 (ids used by updates this stream never shows); only pu chains
        first = previous + 1 + self._rng.choice((0, 0, 0, 1, 2, 7))
        last = first + len(changes) - 1 + self._rng.randint(0, self.id_extra_max)
        self._last_u[symbol] = last
        now = _now_ms()
        return {
            "e": "depthUpdate", "E": now, "T": now - self._rng.randint(0, 5), "s": symbol,
            "U": first, "u": last, "pu": previous,
            "b": [[self._fmt_price(market, c.price), self._fmt_size(market, c.size)]
                  for c in changes if c.side == BID],
            "a": [[self._fmt_price(market, c.price), self._fmt_size(market, c.size)]
                  for c in changes if c.side != BID],
        }

    def _exchange_info_body(self, names: list[str]) -> dict:
        symbols = []
        for name in names:
            spec = self.specs[name]
            tick = decimal_text(spec.tick, spec.price_decimals)
            lot = decimal_text(spec.lot, spec.size_decimals)
            symbols.append({
                "symbol": name, "pair": name, "contractType": "PERPETUAL", "status": "TRADING",
                "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": spec.quote,
                "pricePrecision": spec.price_decimals, "quantityPrecision": spec.size_decimals,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "stepSize": lot, "maxQty": "1000", "minQty": lot},
                ],
            })
        return {
            "timezone": "UTC", "serverTime": _now_ms(), "futuresType": "U_MARGINED",
            "rateLimits": [
                self._weight_limit_entry(),
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [], "assets": [], "symbols": symbols,
        }


class BinanceCoinMVenue(BinanceFuturesVenue):
    """Binance COIN-M Futures: ``/dapi/v1`` REST and ``dstream.binance.com`` streams.

    Each symbol is the base asset's inverse perpetual against USD (``BTC-USDT`` of the shared
    reference is served as ``BTCUSD_PERP``), quoted in USD per coin, with sizes in whole
    contracts of ``contractSize`` USD (100 for BTC, 10 for the others).  The depth event adds
    ``ps`` (the pair), the snapshot ``symbol`` and ``pair``; exchangeInfo's symbol status is
    ``contractStatus``.
    """

    name = "binance-coinm"
    endpoint = COINM
    # inverse contracts: a whole number of contracts per level, on the coin's coarse USD tick
    market_profile = MarketProfile(
        spread=2, size_scale=3.0, offset=1, drift=1.0, noise=1,
        rules={"BTC-USDT": ("0.1", "1"), "ETH-USDT": ("0.01", "1"), "SOL-USDT": ("0.01", "1"),
               "DOGE-USDT": ("0.00001", "1"), "XRP-USDT": ("0.0001", "1")},
    )

    def venue_symbol(self, spec: SymbolSpec) -> str:
        return f"{spec.base}USD_PERP".upper()

    @staticmethod
    def _pair(symbol: str) -> str:
        return symbol.partition("_")[0]

    @staticmethod
    def contract_size(symbol: str) -> int:
        return 100 if symbol.startswith("BTCUSD") else 10

    def _snapshot_body(self, market: MarketModel, book: TruthBook, limit: int) -> dict:
        body = super()._snapshot_body(market, book, limit)
        name = self.venue_symbol(market.spec)
        return {"lastUpdateId": body.pop("lastUpdateId"), "symbol": name, "pair": self._pair(name), **body}

    def _make_event(self, symbol: str, changes: list[LevelChange]) -> dict:
        event = super()._make_event(symbol, changes)
        return {**event, "ps": self._pair(symbol)}

    def _exchange_info_body(self, names: list[str]) -> dict:
        symbols = []
        for name in names:
            spec = self.specs[name]
            tick = decimal_text(spec.tick, spec.price_decimals)
            lot = decimal_text(spec.lot, spec.size_decimals)
            symbols.append({
                "symbol": name, "pair": self._pair(name), "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000, "onboardDate": 1597042800000,
                "contractStatus": "TRADING", "contractSize": self.contract_size(name),
                "marginAsset": spec.base, "baseAsset": spec.base, "quoteAsset": "USD",
                "pricePrecision": spec.price_decimals, "quantityPrecision": spec.size_decimals,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4520958", "tickSize": tick},
                    {"filterType": "LOT_SIZE", "stepSize": lot, "maxQty": "1000000", "minQty": lot},
                ],
            })
        return {
            "timezone": "UTC", "serverTime": _now_ms(),
            "rateLimits": [
                self._weight_limit_entry(),
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [], "symbols": symbols,
        }
