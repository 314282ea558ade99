"""Binance Spot, USDⓈ-M Futures and COIN-M Futures diff-depth feeds.

The procedure is Binance's "How to manage a local order book correctly" (Spot, USDⓈ-M
Futures and COIN-M Futures API docs; COIN-M's page is USDⓈ-M's with ``dstream``/``dapi`` URLs).

The markets speak the same protocol with different constants, so there is one
implementation, :class:`_BinanceFeed`, and the differences are data
(:class:`BinanceMarket`): REST prefix, sequencing rule (spot ``U``/``u``, futures
``pu``), snapshot limits and their request weights, the default weight budget,
stream speeds, the incoming-message limit and the name of exchangeInfo's status field.

COIN-M (``binance-coinm``) trades inverse contracts: ``BTCUSD_PERP`` is quoted in USD per BTC
and its depth sizes are **contracts** (each worth ``contractSize`` USD, 100 for BTC and 10 for
the others), which is what the book holds, exactly as the venue writes them.  The canonical
``BTC-USD`` is spelled ``BTCUSD_PERP``, the perpetual; a delivery contract takes an explicit
mapping (``symbols = { "BTC-USD" = "BTCUSD_260626" }``).  Sizes are not converted to BTC: that
takes a division by the price, which is not exact, and a contract count is what one can trade.

What the feed does, per Binance's Spot and USDⓈ-M Futures API docs:

* combined streams ``/stream?streams=<sym>@depth@100ms/...`` (futures under
  ``ws_url`` which already ends in ``/public``); streams that do not fit the URL
  (``url_max_streams``) are added with batched ``SUBSCRIBE`` frames, paced per
  connection under the venue's incoming-message limit (5/s spot, 10/s futures)
  because pings, pongs and control frames all count (the docs' WebSocket limits);
* REST snapshot ``/api/v3/depth`` or ``/fapi/v1/depth`` at ``config.depth``
  (default 1000) with the request weight of that limit (the "Order Book" endpoint's weight
  table), paced by the base's venue-wide pacer at the venue's ``REQUEST_WEIGHT`` budget
  (:class:`~aggbook.feeds.pacing.WeightBudget`: ``weight_headroom`` of it, less ``weight_reserve``
  for the feed's own ``exchangeInfo`` calls, never more in one window); ``X-MBX-USED-WEIGHT-1M``
  is read on every response and the pacer is held back when the IP's used weight (other clients
  included) nears the budget; 429/418 with ``Retry-After`` become :class:`RateLimited`;
  ``-1121`` becomes :class:`InvalidSymbol`;
* ``exchangeInfo`` at start-up: unknown symbols are reported, tick and step sizes
  and the ``REQUEST_WEIGHT`` budget (limit and interval) learned ("Exchange Information" and the
  docs' "LIMITS" section); without an answer the documented defaults (6000/min spot, 2400/min
  futures) stand; a refused symbol's listing is re-checked with ``exchangeInfo?symbol=``
  (``-1121``: not listed);
* ``<sym>@bookTicker`` beside each depth stream (unless ``bbo_check`` is off): the venue's best bid
  and ask as of order-book update id ``u``, compared with the book's top when the book is at that
  id (:mod:`~aggbook.feeds.crosscheck`);
* ``rpi`` (USD-M only, off by default): the book with RPI orders, from ``/fapi/v1/rpiDepth``
  (limit 1000, weight 20) and ``<sym>@rpiDepth@500ms`` ("Order Book RPI" and "RPI Diff. Book Depth
  Streams"), same ``pu`` procedure; ``bookTicker`` excludes RPI orders, so the cross-check is off;
* ``transport = "sbe"`` (spot only): ``<sym>@depth`` as SBE ``DepthDiffStreamEvent`` frames (25 ms)
  from ``stream-sbe.binance.com`` with an Ed25519 API key in ``X-MBX-APIKEY``, decoded by
  :mod:`~aggbook.feeds.binance_sbe` ("SBE Market Data Streams"); same spot procedure;
* ``serverShutdown`` (raw, or ``!serverShutdown`` on combined streams) triggers the
  base's make-before-break rollover, as does ``max_connection_age`` (23.5 h, before
  the venue's 24 h cut);
* server pings are answered with the ping's payload by the shared read loop (not by aiohttp's
  autoping, which would hide them), so every ping counts as the connection's activity; futures,
  whose server pings only every 3 minutes, also sends client pings so a quiet connection still
  proves it is alive (its pongs) within ``liveness_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import aiohttp
import msgspec
import orjson

from aggbook.book.sync import Chain, Delta, FirstAfterSnapshot, SequenceRule, Snapshot
from aggbook.feeds.base import (
    Connection,
    FeedError,
    FrameError,
    InvalidSymbol,
    SnapshotError,
    VenueFeed,
)
from aggbook.feeds.binance_sbe import DEPTH_DIFF_TEMPLATE, SbeError, decode_depth_diff, read_header
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.crosscheck import Bbo
from aggbook.feeds.metrics import FeedMetrics
from aggbook.feeds.pacing import RequestPacer, WeightBudget
from aggbook.feeds.spec import SymbolSpelling, VenueSpec

log = logging.getLogger("aggbook.feeds.binance")

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
INVALID_SYMBOL_CODE = -1121
SBE_KEY_ENV = "BINANCE_SBE_API_KEY"

_INTERVAL_SECONDS = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}

BINANCE_SPOT = SequenceRule("binance-spot", Chain.NEXT_ID, FirstAfterSnapshot.COVERS_NEXT,
                            drop_through_snapshot=True, overlap_ok=True)
# futures: an event whose ``pu`` is not the last ``u`` restarts the sync, a late or repeated one included
# (the USD-M "manage a local order book" procedure has no "ignore" case once events are applied)
BINANCE_FUTURES = SequenceRule("binance-futures", Chain.PREV_ID, FirstAfterSnapshot.COVERS_SNAPSHOT,
                               drop_through_snapshot=False, duplicate_is_gap=True)


# ---------------------------------------------------------------------- frame schemas
Level = tuple[str, str]  # [price, quantity] as the venue's decimal text


class DepthUpdate(msgspec.Struct, kw_only=True, gc=False):
    """A ``<symbol>@depth`` event: Spot chains by ``U``/``u``, USDⓈ-M adds ``pu``; other keys are ignored.

    ``gc=False`` (as :class:`CombinedDepth`): one is made per frame and holds no reference back to
    itself, so the cycle collector need not track it.
    """

    e: Literal["depthUpdate"]
    s: str
    U: int
    u: int
    pu: int | None = None
    b: list[Level]
    a: list[Level]
    E: int | None = None


class CombinedDepth(msgspec.Struct, gc=False):
    """A depth event on a combined stream (``/stream?streams=``): ``{"stream": ..., "data": event}``."""

    stream: str
    data: DepthUpdate


class DepthSnapshot(msgspec.Struct):
    """The REST ``depth`` body."""

    lastUpdateId: int
    bids: list[Level]
    asks: list[Level]
    E: int | None = None


class BookTicker(msgspec.Struct, kw_only=True):
    """A ``<symbol>@bookTicker`` event: best bid ``b``/``B`` and ask ``a``/``A`` as of order-book
    update id ``u`` (spot sends no ``e``; USDⓈ-M adds ``"e":"bookTicker"``, ``E`` and ``T``)."""

    u: int
    s: str
    b: str
    B: str
    a: str
    A: str


_COMBINED_DEPTH = msgspec.json.Decoder(CombinedDepth)
_RAW_DEPTH = msgspec.json.Decoder(DepthUpdate)
_TEXT = aiohttp.WSMsgType.TEXT
_BINARY = aiohttp.WSMsgType.BINARY


@dataclass(frozen=True)
class BinanceMarket:
    """What differs between Binance Spot and USDⓈ-M Futures market data."""

    rest_prefix: str
    rule: SequenceRule
    prev_field: str | None  # futures chains deltas by "pu"; spot has no previous id
    default_depth: int
    max_depth: int
    allowed_depths: tuple[int, ...] | None  # futures accepts only fixed limits; spot any 1..max
    depth_weights: tuple[tuple[int, int], ...]  # (limit up to, request weight), ascending
    weight_budget: int  # REQUEST_WEIGHT per minute unless exchangeInfo says otherwise
    exchange_info_weight: int  # what one exchangeInfo request costs
    speeds: tuple[str, ...]  # allowed depth-stream speed suffixes ("" = the stream's default)
    exchange_info_filter: bool  # exchangeInfo accepts ?symbols=[...]
    title: str = "Binance spot"
    rpi_limit: int | None = None  # the one limit /rpiDepth takes; None = the market has no RPI book
    status_field: str = "status"  # exchangeInfo's symbol status; COIN-M calls it "contractStatus"


SPOT = BinanceMarket(
    rest_prefix="/api/v3",
    rule=BINANCE_SPOT,
    prev_field=None,
    default_depth=1000,
    max_depth=5000,
    allowed_depths=None,
    depth_weights=((100, 5), (500, 25), (1000, 50), (5000, 250)),
    weight_budget=6000,  # "REQUEST_WEIGHT is 6000 per minute" (since 2023-08-25)
    exchange_info_weight=20,
    speeds=("", "100ms"),  # the documented <sym>@depth and <sym>@depth@100ms
    exchange_info_filter=True,
)

FUTURES = BinanceMarket(
    rest_prefix="/fapi/v1",
    rule=BINANCE_FUTURES,
    prev_field="pu",
    default_depth=1000,
    max_depth=1000,
    allowed_depths=(5, 10, 20, 50, 100, 500, 1000),
    depth_weights=((50, 2), (100, 5), (500, 10), (1000, 20)),
    weight_budget=2400,  # not in our copy of the docs (the public USD-M "LIMITS" page); exchangeInfo says
    exchange_info_weight=1,
    speeds=("", "100ms", "500ms"),  # "@depth (supports @500ms / @100ms)"
    exchange_info_filter=False,
    title="Binance USD-M futures",
    rpi_limit=1000,  # "Order Book RPI": limit default 1000, valid [1000], weight 20
)

# COIN-M: the same procedure and pu chain as USD-M ("How to manage a local order book correctly",
# COIN-M Futures), on /dapi/v1 and dstream.binance.com.  Limits, weights and the 2400/min budget
# are from the public COIN-M "Order Book" and "LIMITS" pages (not in our copy); exchangeInfo says.
COINM = replace(
    FUTURES,
    rest_prefix="/dapi/v1",
    title="Binance COIN-M futures",
    rpi_limit=None,
    status_field="contractStatus",
)


@dataclass(slots=True)
class BinanceConnState:
    """What one Binance socket tracks: its control-frame pacer and the SUBSCRIBEs awaiting a reply.

    Per connection because Binance counts incoming frames per connection, and a reply's ``id`` only
    means something on the socket the request went out on.
    """

    pacer: RequestPacer
    pending: dict[int, list[str]] = field(default_factory=dict)  # request id -> streams asked for


class _BinanceFeed(VenueFeed[BinanceConnState]):
    """Spot and futures diff-depth feed; subclasses pick the :class:`BinanceMarket`."""

    market: ClassVar[BinanceMarket]

    # knobs (config.options overrides any of them)
    max_symbols_per_connection: int = 200  # one stream per symbol; the venue allows 1024
    max_streams_per_connection: int = 1024
    silence_timeout: float = 30.0
    # spot's server pings every 20 s, futures' client pings (below) every 10 s: either proves a quiet
    # connection alive well within this
    liveness_timeout: float = 25.0
    max_connection_age: float | None = 23.5 * 3600  # roll over before the venue's 24 h cut
    stream_speed: str = "100ms"  # "<sym>@depth@100ms"; "" = "<sym>@depth"
    combined: bool = True  # /stream?streams= (wrapped events) or /ws/<s1>/<s2> (raw events)
    url_max_streams: int = 200  # streams named in the URL; the rest go in SUBSCRIBE frames
    subscribe_batch: int = 200  # streams per SUBSCRIBE frame
    # outgoing control frames (SUBSCRIBE, client pings) per second; with the burst at most 4 leave in
    # any second, so the pong to a server ping still fits under spot's 5 incoming frames/s
    control_rate: float = 3.0
    control_burst: float = 2.0
    client_ping_interval: float = 0.0  # 0 = rely on the venue's pings
    # snapshot pacing comes from the REQUEST_WEIGHT budget (:meth:`snapshot_pacing`); an explicit
    # snapshot_rate/snapshot_burst in config.options overrides it
    weight_budget: int | None = None  # REQUEST_WEIGHT per weight_window; None = exchangeInfo, else default
    weight_window: float | None = None  # seconds; None = exchangeInfo's interval, else 60
    weight_headroom: float = 0.8  # snapshots spend at most this share a window; the header watch holds here
    # no audits by default (feeds/audit.py): @bookTicker proves each book's top at its own id, and a
    # REST snapshot costs request weight (50 for 1000 levels); the option turns them on
    audit_interval: float = 0.0
    weight_reserve: float | None = None  # weight a window left to other requests; None = 2 exchangeInfo calls
    snapshot_burst_share: float = 0.1  # share of the usable weight the pacer may send at once
    # USD-M only: keep the book that includes RPI (Retail Price Improvement) orders, from
    # /fapi/v1/rpiDepth and <sym>@rpiDepth@500ms, instead of /depth and @depth, which leave them out
    rpi: bool = False
    # spot only: "sbe" reads <sym>@depth as SBE DepthDiffStreamEvent frames (every 25 ms) from
    # sbe_ws_url, authenticated by an Ed25519 API key (api_key, else $BINANCE_SBE_API_KEY) sent as
    # X-MBX-APIKEY on the handshake ("SBE Market Data Streams"); "json" is the ordinary stream
    transport: str = "json"
    sbe_ws_url: str = "wss://stream-sbe.binance.com:9443"
    api_key: str = ""

    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        market = self.market
        # before the base class builds the snapshot pacer, whose pacing depends on the snapshot weight
        rpi = config.options.get("rpi", False) is True
        if rpi and market.rpi_limit is None:
            raise ValueError(f"venues.{config.name}.options.rpi: {market.title} publishes no RPI book "
                             "(only binance-futures does)")
        self.depth = int(config.depth) if config.depth is not None else (
            market.rpi_limit if rpi and market.rpi_limit else market.default_depth)
        if rpi and self.depth != market.rpi_limit:
            raise ValueError(f"venues.{config.name}.depth: {self.depth} is not a limit /rpiDepth accepts "
                             f"(only {market.rpi_limit})")
        if (problem := self.depth_problem(self.depth)) is not None:
            raise ValueError(f"venues.{config.name}.depth: {problem}")
        super().__init__(config, metrics=metrics)
        if self.rpi:
            # bookTicker leaves RPI orders out, so it would disagree with an RPI book's top by design
            if config.options.get("bbo_check") is True:
                raise ValueError(f"venues.{config.name}.options: bbo_check cannot check an RPI book "
                                 "(bookTicker excludes RPI orders)")
            self.bbo_check = False
        if self.transport not in ("json", "sbe"):
            raise ValueError(f"venues.{config.name}.options.transport: {self.transport!r} not json or sbe")
        if self.transport == "sbe":
            if market is not SPOT:
                raise ValueError(f"venues.{config.name}.options.transport: SBE streams are spot's only")
            self.api_key = self.api_key or os.environ.get(SBE_KEY_ENV, "")
            if not self.api_key:
                raise ValueError(f"venues.{config.name}.options.api_key: the SBE streams need an Ed25519 API "
                                 f"key (options.api_key or ${SBE_KEY_ENV})")
            if config.options.get("bbo_check") is True:
                raise ValueError(f"venues.{config.name}.options: bbo_check reads the JSON bookTicker, "
                                 "not available with transport sbe")
            self.bbo_check = False  # the SBE bestBidAsk is culled under load and not read here
        if self.stream_speed not in market.speeds:
            raise ValueError(f"venues.{config.name}.options.stream_speed: {self.stream_speed!r} "
                             f"not one of {market.speeds}")
        if int(self.url_max_streams) < 1 or int(self.subscribe_batch) < 1:
            raise ValueError(f"venues.{config.name}.options: url_max_streams and subscribe_batch "
                             "must be >= 1")
        streams_per_symbol = 2 if self.bbo_check else 1  # @depth, and @bookTicker for the cross-check
        self.max_symbols_per_connection = min(int(self.max_symbols_per_connection),
                                              int(self.max_streams_per_connection) // streams_per_symbol)
        self._weight_budget_configured = self.weight_budget is not None
        if self.weight_budget is None:
            self.weight_budget = market.weight_budget
        if self.weight_window is None:
            self.weight_window = 60.0
        if (int(self.weight_budget) <= 0 or float(self.weight_window) <= 0
                or not 0 < self.weight_headroom <= 1):
            raise ValueError(f"venues.{config.name}.options: weight_budget and weight_window must be > 0 "
                             "and weight_headroom in (0, 1]")
        self._by_symbol = {vs.upper(): canonical for canonical, vs in config.symbols.items()}
        self._depth_decoder = _COMBINED_DEPTH if self.combined else _RAW_DEPTH
        self._needs_prev = market.prev_field is not None  # futures chain by ``pu``; spot has none
        self._ids = itertools.count(1)
        self.symbol_status: dict[str, str] = {}  # canonical -> TRADING / HALT / BREAK ...
        self.weight_used: int | None = None  # last X-MBX-USED-WEIGHT-1M seen
        self.weight_slowdowns = 0
        self.control_errors = 0
        self.snapshots.repace()

    # ------------------------------------------------------------------ protocol facts
    def rule_for(self, canonical: str) -> SequenceRule:
        return self.market.rule

    @classmethod
    def depth_problem(cls, depth: int) -> str | None:
        """Spot takes any limit 1..5000, futures only its fixed set (the "Order Book" endpoints)."""
        market = cls.market
        if not 1 <= depth <= market.max_depth or (
            market.allowed_depths is not None and depth not in market.allowed_depths
        ):
            allowed = (", ".join(map(str, market.allowed_depths)) if market.allowed_depths
                       else f"1..{market.max_depth}")
            return f"{depth} is not a snapshot limit {cls.market_title()} accepts ({allowed})"
        return None

    @classmethod
    def market_title(cls) -> str:
        return cls.market.title

    def snapshot_weight(self, canonical: str) -> float:
        for upto, weight in self.market.depth_weights:
            if self.depth <= upto:
                return float(weight)
        return float(self.market.depth_weights[-1][1])

    @property
    def budget(self) -> WeightBudget:
        """The REQUEST_WEIGHT budget as learned (or configured, or documented) and the share snapshots use."""
        reserve = self.weight_reserve
        if reserve is None:
            reserve = 2 * self.market.exchange_info_weight  # start-up: filtered query, maybe the full list
        return WeightBudget(float(self.weight_budget or self.market.weight_budget),
                            float(self.weight_window or 60.0),
                            headroom=float(self.weight_headroom), reserve=float(reserve),
                            burst_share=float(self.snapshot_burst_share))

    def snapshot_pacing(self) -> tuple[float, float]:
        rate, burst = self.budget.pacing(self.snapshot_weight(""))
        options = self.config.options
        return (float(options.get("snapshot_rate", rate)), float(options.get("snapshot_burst", burst)))

    def stream_name(self, canonical: str) -> str:
        if self.rpi:
            return f"{self.config.symbols[canonical].lower()}@rpiDepth@500ms"  # the only RPI speed
        if self.transport == "sbe":
            return f"{self.config.symbols[canonical].lower()}@depth"  # DepthDiffStreamEvent, 25 ms
        suffix = f"@{self.stream_speed}" if self.stream_speed else ""
        return f"{self.config.symbols[canonical].lower()}@depth{suffix}"

    def streams(self, conn: Connection[BinanceConnState]) -> list[str]:
        depth = [self.stream_name(c) for c in conn.symbols]
        if not self.bbo_check:
            return depth
        return depth + [f"{self.config.symbols[c].lower()}@bookTicker" for c in conn.symbols]

    def ws_url_for(self, conn: Connection[BinanceConnState]) -> str:
        in_url = "/".join(self.streams(conn)[: int(self.url_max_streams)])
        base = self.sbe_ws_url if self.transport == "sbe" else self.config.ws_url
        if self.combined:
            return f"{base}/stream?streams={in_url}"
        return f"{base}/ws/{in_url}"

    async def connect(self, conn: Connection[BinanceConnState]) -> aiohttp.ClientWebSocketResponse:
        if self.transport != "sbe":
            return await super().connect(conn)
        assert self.http.session is not None, "the feed is not started"
        return await self.http.session.ws_connect(self.ws_url_for(conn), autoping=True, heartbeat=None,
                                                  max_msg_size=64 * 1024 * 1024, compress=0,
                                                  timeout=self.ws_timeout(),
                                                  headers={"X-MBX-APIKEY": self.api_key})

    # ------------------------------------------------------------------ control frames
    def new_connection_state(self) -> BinanceConnState:
        return BinanceConnState(RequestPacer(self.control_rate, self.control_burst))

    async def subscribe(self, conn: Connection[BinanceConnState]) -> None:
        rest = self.streams(conn)[int(self.url_max_streams):]
        if rest:
            # in a task of its own so the socket is read (and pings answered) while frames are paced
            conn.spawn(self._subscribe_rest(conn, rest), name=f"{self.venue}-subscribe-{conn.id}")

    async def _subscribe_rest(self, conn: Connection[BinanceConnState], streams: list[str]) -> None:
        pacer = conn.venue_state.pacer
        batch = int(self.subscribe_batch)
        try:
            for i in range(0, len(streams), batch):
                params = streams[i:i + batch]
                await pacer.acquire()
                ws = conn.ws
                if ws is None or ws.closed:
                    return
                req_id = next(self._ids)
                conn.venue_state.pending[req_id] = params
                request = {"method": "SUBSCRIBE", "params": params, "id": req_id}
                await ws.send_str(orjson.dumps(request).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.warning("%s: SUBSCRIBE on connection %s failed: %s", self.venue, conn.id, exc)
            if conn.ws is not None:
                await conn.ws.close()

    def connection_tasks(self, conn: Connection[BinanceConnState]) -> list:
        if self.client_ping_interval and self.client_ping_interval > 0:
            return [self._keepalive(conn)]
        return []

    async def _keepalive(self, conn: Connection[BinanceConnState]) -> None:
        """Client pings, paced with the control frames; each pong proves the connection alive."""
        pacer = conn.venue_state.pacer
        while True:
            await asyncio.sleep(self.client_ping_interval)
            await pacer.acquire()
            ws = conn.ws
            if ws is None or ws.closed:
                return
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.ping(b"")

    @staticmethod
    def _is_reply(obj: dict) -> bool:
        """A control reply: ``{"result":..,"id":..}``, ``{"error":{"code","msg"},"id":..}`` or the
        flat ``{"code":..,"msg":..,"id":..}`` the docs' error table shows."""
        return "result" in obj or "error" in obj or ("code" in obj and "msg" in obj and "e" not in obj)

    def _on_reply(self, conn: Connection[BinanceConnState], obj: dict) -> None:
        req_id = obj.get("id")
        pending = conn.venue_state.pending
        params = pending.pop(req_id, None) if isinstance(req_id, int) else None
        error = obj.get("error")
        if error is None and "result" not in obj:
            error = {"code": obj.get("code"), "msg": obj.get("msg")}
        if error is None:
            if params is not None:
                log.debug("%s: connection %s subscribed %d streams", self.venue, conn.id, len(params))
            return
        self.control_errors += 1
        log.error("%s: connection %s: control request %s rejected: %s (streams %s)", self.venue, conn.id,
                  req_id, error, params)
        if params is not None or req_id is None:
            raise FeedError(f"venue rejected control request {req_id}: {error}")

    # ------------------------------------------------------------------ frames
    async def handle(self, conn: Connection[BinanceConnState], msg: aiohttp.WSMessage) -> None:
        """Depth events decode straight into :class:`DepthUpdate`; anything else takes the slow path."""
        kind = msg.type
        if kind is not _TEXT:
            if kind is _BINARY:
                if self.transport != "sbe":
                    raise FrameError("unexpected binary frame")
                self._on_sbe(conn, msg.data)
            return
        try:
            decoded = self._depth_decoder.decode(msg.data)
        except msgspec.DecodeError:
            self._on_other(conn, msg.data)  # control replies, shutdown notices, malformed frames
            return
        self._on_depth(conn, decoded.data if isinstance(decoded, CombinedDepth) else decoded)

    def _on_depth(self, conn: Connection[BinanceConnState], event: DepthUpdate) -> None:
        canonical = self._by_symbol.get(event.s)
        if canonical is None:
            log.debug("%s: depth event for unconfigured symbol %r", self.venue, event.s)
            return
        prev = None
        if self._needs_prev:
            prev = event.pu
            if prev is None:
                raise FrameError(f"bad depthUpdate: {self.market.prev_field} missing")
        event_ms = event.E
        self.deliver(conn, canonical, Delta(event.U, event.u, prev, event.b, event.a,
                                            None if event_ms is None else event_ms / 1000))

    def _on_sbe(self, conn: Connection[BinanceConnState], frame: bytes) -> None:
        """A binary frame of the SBE streams: a DepthDiffStreamEvent, or a template the book does not use."""
        try:
            header = read_header(frame)
            if header.template_id != DEPTH_DIFF_TEMPLATE:
                log.debug("%s: ignored SBE template %d", self.venue, header.template_id)
                return
            event = decode_depth_diff(frame, header)
        except SbeError as exc:
            raise FrameError(f"bad SBE frame: {exc}") from exc
        canonical = self._by_symbol.get(event.symbol)
        if canonical is None:
            log.debug("%s: SBE depth event for unconfigured symbol %r", self.venue, event.symbol)
            return
        self.deliver(conn, canonical, Delta(event.first_update_id, event.last_update_id, None, event.bids,
                                            event.asks, event.event_time_us / 1_000_000))

    def _on_other(self, conn: Connection[BinanceConnState], text: str) -> None:
        """A frame that is not a well-formed depth event: a control frame, or a broken depth event."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise FrameError(f"unexpected JSON {type(obj).__name__}")
        stream = obj.get("stream")
        event = obj.get("data") if stream is not None else obj
        if not isinstance(event, dict):
            raise FrameError(f"stream {stream!r} carries no event object")
        kind = event.get("e")
        if kind == "depthUpdate":  # a raw event on a combined socket (or the reverse), or a broken one
            try:
                depth = msgspec.convert(event, DepthUpdate)
            except msgspec.ValidationError as exc:
                raise FrameError(f"bad depthUpdate: {exc}") from exc
            self._on_depth(conn, depth)
        elif kind == "bookTicker" or (isinstance(stream, str) and stream.endswith("@bookTicker")) or (
                kind is None and stream is None and "u" in event and "B" in event):
            try:
                ticker = msgspec.convert(event, BookTicker)
            except msgspec.ValidationError as exc:
                raise FrameError(f"bad bookTicker: {exc}") from exc
            canonical = self._by_symbol.get(ticker.s)
            if canonical is not None:
                self.deliver_bbo(conn, canonical, Bbo((ticker.b, ticker.B), (ticker.a, ticker.A), ticker.u))
        elif kind == "serverShutdown" or stream == "!serverShutdown":
            self.request_rollover(conn)
        elif self._is_reply(obj):
            self._on_reply(conn, obj)
        else:
            log.debug("%s: ignored frame %.200s", self.venue, text)

    # ------------------------------------------------------------------ REST
    def _rest(self, path: str) -> str:
        return f"{self.config.rest_url}{self.market.rest_prefix}/{path}"

    async def fetch_snapshot(self, conn: Connection[BinanceConnState], canonical: str) -> Snapshot | None:
        symbol = self.config.symbols[canonical]
        status, headers, body = await self.get_json(self._rest("rpiDepth" if self.rpi else "depth"),
                                                    {"symbol": symbol.upper(), "limit": str(self.depth)})
        self._note_weight(headers)
        if status != 200:
            raise self._rest_error(status, body, symbol)
        try:
            depth = msgspec.convert(body, DepthSnapshot)
        except msgspec.ValidationError as exc:
            raise SnapshotError(f"{symbol}: bad depth snapshot: {exc}") from exc
        return Snapshot(depth.lastUpdateId, depth.bids, depth.asks,
                        depth.E / 1000 if depth.E is not None else None, depth=self.depth)

    def _rest_error(self, status: int, body: Any, symbol: str) -> Exception:
        code = body.get("code") if isinstance(body, dict) else None
        text = body.get("msg") if isinstance(body, dict) else body
        if code == INVALID_SYMBOL_CODE:
            return InvalidSymbol(f"{symbol}: {text} ({code})")
        return SnapshotError(f"{symbol}: HTTP {status} {code}: {text}")

    def _note_weight(self, headers: Any) -> None:
        """Hold the snapshot pacer back when the IP's used weight nears the budget (the docs' "LIMITS")."""
        raw = headers.get(WEIGHT_HEADER) if headers is not None else None
        if not raw:
            return
        try:
            used = int(raw)
        except ValueError:
            return
        self.weight_used = used
        budget = float(self.weight_budget or self.market.weight_budget)
        threshold = budget * float(self.weight_headroom)
        if used < threshold:
            return
        per_second = budget / float(self.weight_window or 60.0)
        delay = (used - threshold) / per_second + self.snapshot_weight("") / per_second
        self.weight_slowdowns += 1
        log.warning("%s: request weight %d of %d used; holding snapshots for %.2fs", self.venue, used,
                    int(budget), delay)
        self.pacer.penalize(delay)

    async def validate_symbols(self) -> dict[str, str]:
        """exchangeInfo: which configured symbols the venue lists, tick/step sizes, the weight budget."""
        url = self._rest("exchangeInfo")
        wanted = [s.upper() for s in self.config.symbols.values()]
        body: Any = None
        if self.market.exchange_info_filter and wanted:
            status, headers, body = await self.get_json(url, {"symbols": orjson.dumps(wanted).decode()})
            self._note_weight(headers)
            if status != 200:
                body = None  # -1121 when any one is unknown: list everything and compare
        if body is None:
            status, headers, body = await self.get_json(url)
            self._note_weight(headers)
            if status != 200:
                raise SnapshotError(f"exchangeInfo: HTTP {status}: {body}")
        self._learn_rate_limits(body.get("rateLimits") or [])
        listed = {s.get("symbol"): s for s in body.get("symbols") or [] if isinstance(s, dict)}
        errors: dict[str, str] = {}
        for canonical, venue_symbol in self.config.symbols.items():
            info = listed.get(venue_symbol.upper())
            if info is None:
                errors[canonical] = f"{venue_symbol} is not listed by {self.venue} (exchangeInfo)"
                continue
            status_text = str(info.get(self.market.status_field, ""))
            self.symbol_status[canonical] = status_text
            if status_text != "TRADING":
                log.warning("%s: %s status is %s; its book stays quiet until TRADING", self.venue,
                            canonical, status_text)
            for flt in info.get("filters") or []:
                try:
                    if flt.get("filterType") == "PRICE_FILTER":
                        self.tick_sizes[canonical] = Decimal(flt["tickSize"])
                    elif flt.get("filterType") == "LOT_SIZE":
                        self.lot_sizes[canonical] = Decimal(flt["stepSize"])
                except (KeyError, InvalidOperation, TypeError) as exc:
                    log.warning("%s: %s has a bad %s filter: %s", self.venue, canonical,
                                flt.get("filterType"), exc)
        return errors

    async def symbol_listed(self, canonical: str) -> bool | None:
        """``exchangeInfo?symbol=``: listed when the venue returns it, not listed on ``-1121``."""
        symbol = self.config.symbols[canonical].upper()
        status, headers, body = await self.get_json(self._rest("exchangeInfo"), {"symbol": symbol})
        self._note_weight(headers)
        if status == 200 and isinstance(body, dict):
            return any(isinstance(s, dict) and s.get("symbol") == symbol for s in body.get("symbols") or [])
        if isinstance(body, dict) and body.get("code") == INVALID_SYMBOL_CODE:
            return False
        return None

    def _learn_rate_limits(self, limits: list) -> None:
        """The REQUEST_WEIGHT limit and its window; of several, the lowest weight per second wins.

        A budget set in ``options`` (``weight_budget``) is the operator's word and is kept.
        """
        if self._weight_budget_configured:
            return
        found: list[tuple[float, int, float]] = []  # (weight per second, limit, window seconds)
        for item in limits:
            if not isinstance(item, dict) or item.get("rateLimitType") != "REQUEST_WEIGHT":
                continue
            seconds = _INTERVAL_SECONDS.get(str(item.get("interval")))
            limit, num = item.get("limit"), item.get("intervalNum") or 1
            if (seconds is None or not isinstance(limit, int) or limit <= 0
                    or not isinstance(num, int) or num <= 0):
                continue
            window = seconds * num
            found.append((limit / window, limit, window))
        if found:
            _, self.weight_budget, self.weight_window = min(found)
            log.info("%s: REQUEST_WEIGHT budget %d per %gs from exchangeInfo", self.venue, self.weight_budget,
                     self.weight_window)


class BinanceSpotFeed(_BinanceFeed):
    """Binance Spot ``<sym>@depth@100ms`` + ``/api/v3/depth``."""

    market = SPOT


class BinanceFuturesFeed(_BinanceFeed):
    """Binance USDⓈ-M Futures ``<sym>@depth@100ms`` on ``/public`` + ``/fapi/v1/depth``."""

    market = FUTURES
    control_rate = 8.0  # 10 incoming frames/s allowed: at most 9 control frames a second, plus a pong
    client_ping_interval = 10.0  # the venue pings only every 3 minutes


class BinanceCoinMFeed(_BinanceFeed):
    """Binance COIN-M Futures ``<sym>@depth@100ms`` on ``dstream.binance.com`` + ``/dapi/v1/depth``.

    The Connect page: pings every 3 minutes, 10 incoming messages a second, 1024 streams.
    """

    market = COINM
    control_rate = 8.0
    client_ping_interval = 10.0


VENUES = (
    VenueSpec(
        kind="binance",
        title="Binance spot",
        feed=BinanceSpotFeed,
        rest_url="https://api.binance.com",
        ws_url="wss://stream.binance.com:9443",
        rules=(BINANCE_SPOT,),
        simulator="aggbook.simulator.binance:BinanceSpotVenue",
        demo_fee_bps=Decimal("10"),
    ),
    VenueSpec(
        kind="binance-futures",
        title="Binance USD-M futures",
        feed=BinanceFuturesFeed,
        rest_url="https://fapi.binance.com",
        ws_url="wss://fstream.binance.com/public",
        rules=(BINANCE_FUTURES,),
        simulator="aggbook.simulator.binance:BinanceFuturesVenue",
    ),
    VenueSpec(
        kind="binance-coinm",
        title="Binance COIN-M futures",
        feed=BinanceCoinMFeed,
        rest_url="https://dapi.binance.com",
        ws_url="wss://dstream.binance.com",
        rules=(BINANCE_FUTURES,),
        simulator="aggbook.simulator.binance:BinanceCoinMVenue",
        spelling=SymbolSpelling(suffix="_PERP"),  # BTC-USD -> BTCUSD_PERP, the perpetual
    ),
)
