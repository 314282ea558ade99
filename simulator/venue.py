"""Shared machinery of a simulated venue: an aiohttp server on 127.0.0.1, a market
pump, WebSocket connection bookkeeping, fault injection and the ``/_sim/`` control API.

A venue module subclasses :class:`VenueServer` and supplies the wire protocol:
``venue_symbol`` (the venue's own symbol spelling), ``add_routes`` (REST and
WebSocket paths exactly as the real venue has them) and ``publish`` (turn one
market step into frames for the subscribed connections).  Everything else—ticking
the market, pausing, truth books, fault bookkeeping, control endpoints—lives here
once.

Control API (HTTP on the venue's own port, listed by ``GET /_sim/``):
``GET /_sim/truth/{symbol}`` answers the current truth book, ``?seq=`` the book at a kept past
sequence id and ``?conn=<id>`` the book at the last sequence id actually written to that
WebSocket connection (:meth:`VenueServer.truth_sent`), which is what a client whose stream
stopped there must hold.  ``/_sim/faults`` arms and lists faults, ``/_sim/pause`` and
``/_sim/resume`` stop and restart market events, ``/_sim/connections`` lists connection ids.
``/_sim/delist`` and ``/_sim/relist`` take a symbol off the venue's symbol list and put it back: while
it is delisted the venue answers for it as for a symbol it never had (symbol list, snapshots,
subscriptions), as a real venue does after a delisting, so a client's re-checks can be tested.
``/_sim/quiet`` keeps one symbol's market still for N seconds (heartbeats go on), so a client can
tell a quiet book from a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Reversible
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, ClassVar, Self

import orjson
from aiohttp import WSMsgType, web

from aggbook.simulator.faults import Fault, FaultInjector
from aggbook.simulator.market import (
    DEFAULT_SYMBOLS,
    NEUTRAL,
    LevelChange,
    MarketModel,
    MarketProfile,
    SymbolSpec,
    TruthBook,
)

log = logging.getLogger("aggbook.simulator")

_conn_ids = itertools.count(1)

DEFAULT_HISTORY = 64  # past truth books kept per symbol (3.2 s at the default 20 steps/s)
CLOSED_KEPT = 64  # closed connections whose sent marks stay readable by ``truth_sent``
# market steps a pump that fell behind may still owe, in seconds of its rate; older debt is dropped
# (a stalled event loop or a busy machine): paying it in one burst would stall the loop longer still
MAX_CATCH_UP = 0.25


def book_at(history: Reversible[TruthBook], seq: int, what: str) -> TruthBook:
    """The kept book with sequence id ``seq``, newest first; ``KeyError`` once it left the history."""
    for book in reversed(history):
        if book.seq == seq:
            return book
    raise KeyError(f"no truth kept for {what} at seq {seq}")


class SimConnection:
    """One client WebSocket as the venue sees it."""

    def __init__(self, ws: web.WebSocketResponse, path: str) -> None:
        self.id = next(_conn_ids)
        self.ws = ws
        self.path = path
        self.subscriptions: set[str] = set()
        self.silent = False  # SILENT fault: send nothing at all, heartbeats included
        self.opened_at = time.monotonic()
        self.state: dict = {}  # per-venue scratch space (held-back frames for REORDER, etc.)
        # highest sequence id per symbol (or per topic) whose data frame was written to this socket,
        # kept by VenueServer.note_sent: what a client whose stream stopped here must have reached
        self.sent: dict[str, int] = {}
        # the frame's own book for a mark whose seq the venue history may not hold (snapshots)
        self.sent_books: dict[str, TruthBook] = {}

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def _write(self, send: Callable[[Any], Awaitable[None]], payload: Any) -> bool:
        """One frame through ``send``.  True only if it was really written (not silent, closed or failed).

        A SILENT connection writes nothing at all, control frames included, as a dead TCP path would not.
        """
        if self.silent or self.ws.closed:
            return False
        try:
            await send(payload)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def send_str(self, text: str) -> bool:
        return await self._write(self.ws.send_str, text)

    async def send_bytes(self, data: bytes) -> bool:
        return await self._write(self.ws.send_bytes, data)

    async def send_json(self, obj: object) -> bool:
        return await self.send_str(orjson.dumps(obj).decode())

    async def ping(self, payload: bytes = b"") -> bool:
        """Send a WebSocket ping."""
        return await self._write(self.ws.ping, payload)

    async def pong(self, payload: bytes) -> bool:
        """Answer a client's ping."""
        return await self._write(self.ws.pong, payload)

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (DISCONNECT fault)."""
        transport = self.ws._req.transport if self.ws._req is not None else None  # noqa: SLF001
        if transport is not None:
            transport.abort()


@dataclass(frozen=True, kw_only=True)
class VenueOptions:
    """What every simulated venue takes; a venue with knobs of its own subclasses this.

    ``history_len``: past truth books kept per symbol, for ``truth_at``, ``truth_sent`` and
    STALE_SNAPSHOT; a sequence id older than that many steps can no longer be read back.
    ``quiet_chance``: the chance, at each market step of a symbol, that the symbol then goes quiet
    for ``quiet_seconds``: no market change, so no book frame, while connections, heartbeats and
    REST carry on (a quiet market, not a dead one).  Decided by a generator seeded from ``seed``.
    """

    seed: int = 1
    rate: float = 20.0  # market steps per second per symbol; math.inf = as fast as possible
    depth: int = 40  # levels per side of the simulated market
    faults: FaultInjector | None = None
    autostart_pump: bool = True
    history_len: int = DEFAULT_HISTORY
    quiet_chance: float = 0.0
    quiet_seconds: float = 5.0

    @classmethod
    def build(cls, venue: str, values: Mapping[str, object]) -> Self:
        """These options from keyword values; a name the venue does not know is an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"simulated venue {venue!r} has no option {', '.join(map(repr, unknown))}; "
                            f"its options: {', '.join(sorted(known))}")
        return cls(**values)  # type: ignore[arg-type]


class VenueServer:
    """Base class of every simulated venue.

    Constructed as ``Venue(symbols, seed=7, ping_interval=1.0)`` or ``Venue(symbols, options)``:
    keyword values become the venue's :attr:`Options` dataclass, so a misspelt or foreign option
    fails at construction.  A subclass with options of its own sets ``Options`` to its subclass of
    :class:`VenueOptions` and reads them in :meth:`configure`.
    """

    name = "venue"
    Options: ClassVar[type[VenueOptions]] = VenueOptions
    # how this venue's markets sit around the shared reference price, and its symbol rules
    market_profile: ClassVar[MarketProfile] = NEUTRAL

    def __init__(
        self,
        symbols: Iterable[SymbolSpec] = DEFAULT_SYMBOLS,
        options: VenueOptions | None = None,
        **values: object,
    ) -> None:
        if options is None:
            options = self.Options.build(self.name, values)
        elif values:
            raise TypeError(f"simulated venue {self.name!r}: pass options or keyword values, not both")
        elif not isinstance(options, self.Options):
            raise TypeError(f"simulated venue {self.name!r} takes {self.Options.__name__}, "
                            f"got {type(options).__name__}")
        self.options = options
        seed, depth = options.seed, options.depth
        self.specs: dict[str, SymbolSpec] = {}
        self.markets: dict[str, MarketModel] = {}
        for reference in symbols:
            vs = self.venue_symbol(reference)
            spec = self.market_profile.symbol_rules(reference)  # the venue's tick and lot
            self.specs[vs] = spec
            self.markets[vs] = MarketModel(spec, seed=seed, depth=depth, venue=self.name,
                                           profile=self.market_profile, reference_spec=reference)
        self.rate = options.rate
        self.faults = options.faults or FaultInjector()
        self.connections: dict[int, SimConnection] = {}
        self.autostart_pump = options.autostart_pump
        self.base_url = ""
        self.host = "127.0.0.1"
        self.port = 0
        self._paused = asyncio.Event()
        self._paused.set()  # set == running
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.steps_published = 0
        self.delisted: set[str] = set()  # venue symbols taken off the symbol list (/_sim/delist)
        # recent truth books per symbol, newest last: a STALE_SNAPSHOT fault serves one of these
        self.history_len = max(1, options.history_len)
        self.history: dict[str, deque[TruthBook]] = {s: deque(maxlen=self.history_len) for s in self.markets}
        # connections that closed with sent marks: their last state stays readable by truth_sent
        self._closed: OrderedDict[int, SimConnection] = OrderedDict()
        # venue symbol -> time.monotonic() at which its quiet period ends (/_sim/quiet, quiet_chance)
        self.quiet_until: dict[str, float] = {}
        self._quiet_rng = random.Random(f"{self.name}:quiet:{seed}")
        self.configure()

    # ------------------------------------------------------------------ subclass API
    def configure(self) -> None:
        """Set up the venue's own state from ``self.options`` (called once, at the end of ``__init__``)."""

    def venue_symbol(self, spec: SymbolSpec) -> str:
        """The venue's own name for a symbol (``BTCUSDT``, ``BTC-USDT``, ``btcusdt``)."""
        raise NotImplementedError

    def add_routes(self, app: web.Application) -> None:
        """Register the venue's real REST and WebSocket paths."""
        raise NotImplementedError

    async def publish(self, symbol: str, changes: list[LevelChange]) -> None:
        """Send one market step to every connection subscribed to ``symbol``."""
        raise NotImplementedError

    def current_seq(self, symbol: str) -> int:
        """The venue sequence id that the current truth book corresponds to."""
        raise NotImplementedError

    def background_tasks(self) -> list:
        """Extra coroutines to run while the server is up (heartbeats, timers)."""
        return []

    # ------------------------------------------------------------------ lifecycle
    def urls(self) -> dict[str, str]:
        """Base URLs a feed handler needs, keyed like the service config (``rest_url``, ``ws_url``).

        Venues whose real WebSocket endpoint has a fixed path (``/ws``, ``/feed``,
        ``/ws/oss/spot``, ``/public``) override this to append it.
        """
        return {"rest_url": self.base_url, "ws_url": self.base_url.replace("http://", "ws://")}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        self.add_routes(app)
        self._add_control_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]  # noqa: SLF001
        self.host, self.port = host, sockets[0].getsockname()[1]
        self.base_url = f"http://{host}:{self.port}"
        if self.autostart_pump:
            self._tasks.append(asyncio.create_task(self._pump(), name=f"{self.name}-pump"))
        for coro in self.background_tasks():
            self._tasks.append(asyncio.create_task(coro, name=f"{self.name}-bg"))
        log.info("simulated %s listening on %s", self.name, self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Stop listening first, then close the connections: a venue going away refuses reconnects.

        Otherwise a client reconnecting at once would find the port still open while the other
        connections are being closed, and come back live on a venue that is shutting down.
        """
        if self._runner is not None:
            for site in self._runner.sites:
                server = site._server  # noqa: SLF001 - asyncio.Server: close() only stops listening
                if server is not None:
                    server.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for conn in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> VenueServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ market pump
    def pause(self) -> None:
        """Stop generating market events (connections, heartbeats and REST keep working)."""
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()

    @property
    def paused(self) -> bool:
        return not self._paused.is_set()

    def quiet(self, symbol: str, seconds: float) -> None:
        """Keep ``symbol``'s market still for ``seconds`` from now (0 ends a quiet period at once).

        While quiet the symbol's market does not change, so the venue sends no book frame for it,
        but its reference clock runs on (the book catches up with the other venues afterwards) and
        every connection keeps its heartbeats; sequence ids continue where they stopped.
        """
        symbol = self.resolve_symbol(symbol)
        if seconds > 0:
            self.quiet_until[symbol] = time.monotonic() + seconds
        else:
            self.quiet_until.pop(symbol, None)

    def quiet_left(self, now: float | None = None) -> dict[str, float]:
        """Seconds of quiet left per quiet symbol (venue spelling)."""
        now = time.monotonic() if now is None else now
        return {s: until - now for s, until in self.quiet_until.items() if until > now}

    def _is_quiet(self, symbol: str, now: float) -> bool:
        until = self.quiet_until.get(symbol)
        if until is None:
            return False
        if now < until:
            return True
        del self.quiet_until[symbol]
        return False

    async def step_all(self, steps: int = 1, *, until_paused: bool = False) -> None:
        """Advance every symbol by ``steps`` events and publish them (usable while paused).

        A quiet symbol (:meth:`quiet`) lets the steps pass without a change or a frame.  With
        ``until_paused`` (the pump) a :meth:`pause` takes effect between two steps: a publish may
        wait for a socket, and a venue paused meanwhile must send nothing more.
        """
        chance = self.options.quiet_chance
        for _ in range(steps):
            if until_paused and self.paused:
                return
            now = time.monotonic()
            for symbol, market in self.markets.items():
                if self._is_quiet(symbol, now):
                    market.hold()
                    continue
                if chance and self._quiet_rng.random() < chance:
                    self.quiet(symbol, self.options.quiet_seconds)
                changes = market.step()
                await self.publish(symbol, changes)
                self.steps_published += 1
                self.history[symbol].append(
                    TruthBook(self.current_seq(symbol), *(tuple(side) for side in market.snapshot()))
                )

    async def _pump(self) -> None:
        if math.isinf(self.rate):
            await self._pump_flat_out()
            return
        interval = 1.0 / self.rate if self.rate > 0 else 1.0
        next_at = time.monotonic()
        while True:
            if self.paused:
                await self._paused.wait()
                next_at = time.monotonic()  # a pause is no debt: resume at the rate, not in a burst
            now = time.monotonic()
            # steps owed since the last batch (the sleep is coarse), but never more than MAX_CATCH_UP
            # seconds' worth: a loop that stalled must not be answered by a longer stall
            next_at = max(next_at, now - MAX_CATCH_UP)
            owed = max(1, int((now - next_at) / interval) + 1)
            await self._step_guarded(owed)
            next_at += owed * interval
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0005))

    async def _pump_flat_out(self) -> None:
        """``rate=math.inf``: as many market steps as the machine can push (for benchmarks).

        One step per loop turn, then a yield, so heartbeats, REST and the control API stay
        responsive while the pump saturates the core.
        """
        while True:
            await self._paused.wait()
            await self._step_guarded(1)
            await asyncio.sleep(0)

    async def _step_guarded(self, steps: int) -> None:
        try:
            await self.step_all(steps, until_paused=True)
        except Exception:  # a bug in one step must not kill the venue
            log.exception("%s pump step failed", self.name)

    # ------------------------------------------------------------------ truth and helpers
    def truth(self, symbol: str, depth: int | None = None) -> TruthBook:
        symbol = self.resolve_symbol(symbol)
        market = self.markets[symbol]
        bids, asks = market.snapshot(depth)
        return TruthBook(self.current_seq(symbol), tuple(bids), tuple(asks))

    def truth_at(self, symbol: str, seq: int) -> TruthBook:
        """The truth book as it was at venue sequence id ``seq`` (``current_seq`` space).

        A client whose connection went silent or was cut holds the book at the last id it was
        sent, not the current one; this is what its book must equal.  Only the last
        ``history`` steps are kept: an older or never-published id raises ``KeyError``.
        """
        symbol = self.resolve_symbol(symbol)
        if seq == self.current_seq(symbol):
            return self.truth(symbol)
        return book_at(self.history[symbol], seq, symbol)

    def stale_truth(self, symbol: str, steps_back: int = 10) -> TruthBook:
        """A truth book from ``steps_back`` published steps ago (the oldest kept if fewer)."""
        hist = self.history[self.resolve_symbol(symbol)]
        if not hist:
            return self.truth(symbol)
        return hist[max(0, len(hist) - 1 - steps_back)]

    # ------------------------------------------------------------------ truth at the last frame sent
    def note_sent(self, conn: SimConnection, key: str, seq: int, book: TruthBook | None = None) -> bool:
        """Record that a data frame with sequence id ``seq`` for ``key`` was written to ``conn``.

        Venues call this right after the write succeeded, so GAP-dropped, MALFORMED, still
        REORDER-held and SILENT-swallowed frames never count.  ``key`` is the venue symbol, or a
        topic where one symbol has several independent chains (NHEX/BitV mbp levels).  ``book`` is
        the frame's own book when the venue history may not hold that seq (a snapshot taken before
        the first market step).  Only the highest seq is kept: a duplicate or a late reordered
        frame does not move it back.  True when ``seq`` is (now) the mark.
        """
        previous = conn.sent.get(key)
        if previous is not None and seq < previous:
            return False
        conn.sent[key] = seq
        if book is not None:
            conn.sent_books[key] = book
        elif previous != seq:
            conn.sent_books.pop(key, None)
        return True

    def sent_connection(self, conn_id: int) -> SimConnection:
        """An open connection, or a recently closed one that had frames sent (``KeyError`` otherwise)."""
        conn = self.connections.get(conn_id) or self._closed.get(conn_id)
        if conn is None:
            raise KeyError(f"unknown connection {conn_id}")
        return conn

    def sent_key(self, conn: SimConnection, symbol: str, levels: int | None = None) -> str:
        """The ``note_sent`` key a truth read of ``symbol`` on ``conn`` uses (venue symbol here).

        ``levels`` names one of several chains per symbol; venues with one chain reject it.
        """
        if levels is not None:
            raise ValueError(f"{self.name} has one sequence per symbol: levels does not apply")
        return self.resolve_symbol(symbol)

    def sent_truth(self, conn: SimConnection, key: str, seq: int) -> TruthBook:
        """The full truth book at ``seq`` of ``key`` (``KeyError`` if it is no longer kept)."""
        return self.truth_at(key, seq)

    def truth_sent(self, conn_id: int, symbol: str, depth: int | None = None, *,
                   levels: int | None = None) -> TruthBook:
        """The truth book at the highest sequence id whose data frame was written to ``conn_id``.

        A client whose connection went silent, was cut or simply stopped reading must hold exactly
        this book.  It works for a connection that has closed since, as long as it is among the last
        few closed ones.  ``KeyError`` for an unknown connection, when nothing for ``symbol`` was
        sent on it, or when that seq is older than the kept history (``history_len``).
        """
        conn = self.sent_connection(conn_id)
        key = self.sent_key(conn, symbol, levels)
        seq = conn.sent.get(key)
        if seq is None:
            raise KeyError(f"nothing for {key} was sent on connection {conn_id}")
        book = conn.sent_books.get(key)
        if book is None or book.seq != seq:
            book = self.sent_truth(conn, key, seq)
        return book if depth is None else book.top(depth)

    def resolve_symbol(self, symbol: str) -> str:
        """Accept the venue spelling or the canonical ``BTC-USDT`` form."""
        if symbol in self.markets:
            return symbol
        for vs, spec in self.specs.items():
            if spec.canonical == symbol.upper() or vs.lower() == symbol.lower():
                return vs
        raise KeyError(symbol)

    def listed(self, symbol: str) -> bool:
        """The venue has ``symbol`` (venue spelling) on its list: it is one of its markets, not delisted."""
        return symbol in self.markets and symbol not in self.delisted

    def delist(self, symbol: str) -> None:
        """Take ``symbol`` off the venue's list; its market keeps running for when it comes back."""
        self.delisted.add(self.resolve_symbol(symbol))

    def relist(self, symbol: str) -> None:
        self.delisted.discard(self.resolve_symbol(symbol))

    def inject(self, fault: Fault | str, symbol: str | None = None, conn_id: int | None = None,
               count: int = 1, **params: object) -> None:
        if symbol is not None:
            symbol = self.resolve_symbol(symbol)
        self.faults.inject(fault, symbol, conn_id, count, **params)

    def register(self, ws: web.WebSocketResponse, path: str) -> SimConnection:
        conn = SimConnection(ws, path)
        self.connections[conn.id] = conn
        return conn

    def unregister(self, conn: SimConnection) -> None:
        if self.connections.pop(conn.id, None) is not None and conn.sent:
            self._closed[conn.id] = conn  # its last state stays readable by truth_sent
            while len(self._closed) > CLOSED_KEPT:
                self._closed.popitem(last=False)

    def subscribers(self, topic: str) -> list[SimConnection]:
        return [c for c in self.connections.values() if topic in c.subscriptions and not c.closed]

    async def apply_connection_faults(self, conn: SimConnection, symbol: str | None) -> bool:
        """Connection-level faults checked before each data frame.  True = frame must not be sent."""
        if self.faults.take(Fault.DISCONNECT, symbol, conn.id) is not None:
            conn.abort()
            return True
        if self.faults.take(Fault.SILENT, symbol, conn.id) is not None:
            conn.silent = True
            return True
        if self.faults.take(Fault.SERVER_CLOSE, symbol, conn.id) is not None:
            await self.server_close(conn)
            return True
        return conn.silent

    async def server_close(self, conn: SimConnection) -> None:
        """Orderly close, as at the venue's 24-hour rollover.  Venues may send a notice first."""
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1000, message=b"rollover")

    # ------------------------------------------------------------------ control API
    def _add_control_routes(self, app: web.Application) -> None:
        app.router.add_get("/_sim/", self._h_index)
        app.router.add_get("/_sim/truth/{symbol}", self._h_truth)
        app.router.add_post("/_sim/faults", self._h_fault)
        app.router.add_get("/_sim/faults", self._h_fault_list)
        app.router.add_delete("/_sim/faults", self._h_fault_clear)
        app.router.add_post("/_sim/faults/random", self._h_fault_random)
        app.router.add_post("/_sim/pause", self._h_pause)
        app.router.add_post("/_sim/resume", self._h_resume)
        app.router.add_get("/_sim/connections", self._h_connections)
        app.router.add_post("/_sim/delist", self._h_delist)
        app.router.add_post("/_sim/relist", self._h_relist)
        app.router.add_post("/_sim/quiet", self._h_quiet)
        app.router.add_get("/_sim/quiet", self._h_quiet_list)

    async def _h_index(self, request: web.Request) -> web.Response:
        """What the control API offers, so a person with curl can find their way."""
        return web.json_response({
            "venue": self.name,
            "urls": self.urls(),
            "symbols": {vs: spec.canonical for vs, spec in self.specs.items()},
            "endpoints": {
                "GET /_sim/truth/{symbol}?depth=&seq=": "truth book (current, or at a past seq)",
                "GET /_sim/truth/{symbol}?conn=&depth=&levels=":
                    "truth book at the last seq sent on WebSocket connection conn "
                    "(levels: the mbp topic, NHEX/BitV)",
                "POST /_sim/faults": '{"fault", "symbol"?, "conn_id"?, "count"?, "params"?}',
                "GET /_sim/faults": "fired counts, pending count, known faults, random mode",
                "DELETE /_sim/faults": "disarm every pending fault",
                "POST /_sim/faults/random": '{"rate", "faults"?, "seed"?}',
                "POST /_sim/pause, /_sim/resume": "stop or restart market events",
                "GET /_sim/connections": "open WebSocket connections, their subscriptions and last seq sent",
                "POST /_sim/delist, /_sim/relist": '{"symbol"}: off the symbol list, back on it',
                "POST /_sim/quiet": '{"symbol", "seconds"}: no market change for that long (0 ends it); '
                                    "heartbeats go on",
                "GET /_sim/quiet": "quiet symbols and the seconds left",
            },
        })

    async def _h_truth(self, request: web.Request) -> web.Response:
        raw_symbol = request.match_info["symbol"]
        try:
            symbol = self.resolve_symbol(raw_symbol)
        except KeyError:
            return web.json_response({"error": f"unknown symbol: {raw_symbol}"}, status=404)
        query = request.query
        try:
            depth = int(query["depth"]) if "depth" in query else None
            seq = int(query["seq"]) if "seq" in query else None
            conn_id = int(query["conn"]) if "conn" in query else None
            levels = int(query["levels"]) if "levels" in query else None
        except ValueError as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        if depth is not None and depth < 1:
            return web.json_response({"error": "bad request: depth must be at least 1"}, status=400)
        if seq is not None and conn_id is not None:
            return web.json_response({"error": "bad request: seq and conn exclude each other"}, status=400)
        if levels is not None and conn_id is None:
            return web.json_response({"error": "bad request: levels goes with conn"}, status=400)
        if conn_id is not None:
            try:
                book = self.truth_sent(conn_id, symbol, depth, levels=levels)
            except KeyError as exc:
                return web.json_response({"error": str(exc.args[0])}, status=404)
            except ValueError as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)
        elif seq is None:
            book = self.truth(symbol, depth)
        else:
            try:
                book = self.truth_at(symbol, seq)
            except KeyError as exc:
                return web.json_response({"error": str(exc.args[0])}, status=404)
            book = book if depth is None else book.top(depth)
        market = self.markets[symbol]
        body = {
            "venue": self.name,
            "seq": book.seq,
            "bids": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.bids],
            "asks": [[market.fmt_price(p), market.fmt_size(s)] for p, s in book.asks],
        }
        if conn_id is not None:
            body["conn"] = conn_id
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _h_fault(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            params = body.get("params") or {}
            count = int(body.get("count", 1))
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
            conn_id = body.get("conn_id")
            self.inject(body["fault"], body.get("symbol"), None if conn_id is None else int(conn_id),
                        count, **params)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad fault request: {exc!r}"}, status=400)
        return web.json_response({"armed": body["fault"], "count": count})

    async def _h_fault_list(self, request: web.Request) -> web.Response:
        faults = self.faults
        return web.json_response({
            "fired": dict(faults.fired), "pending": faults.pending(), "known": [f.value for f in Fault],
            "random": {"rate": faults.rate, "faults": sorted(f.value for f in faults.allowed)},
        })

    async def _h_fault_clear(self, request: web.Request) -> web.Response:
        pending = self.faults.pending()
        self.faults.clear()
        return web.json_response({"cleared": pending})

    async def _h_fault_random(self, request: web.Request) -> web.Response:
        """Random mode on demand: every listed fault fires at each decision point with ``rate``."""
        try:
            body = await request.json()
            kinds = body.get("faults")
            if kinds is not None and not isinstance(kinds, list):
                raise TypeError("faults must be a list of fault names")
            seed = body.get("seed")
            self.faults.configure_random(float(body["rate"]), kinds, None if seed is None else int(seed))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad random-fault request: {exc!r}"}, status=400)
        return web.json_response({"rate": self.faults.rate,
                                  "faults": sorted(f.value for f in self.faults.allowed)})

    async def _h_pause(self, request: web.Request) -> web.Response:
        self.pause()
        return web.json_response({"paused": True})

    async def _h_resume(self, request: web.Request) -> web.Response:
        self.resume()
        return web.json_response({"paused": False})

    async def _h_delist(self, request: web.Request) -> web.Response:
        return await self._listing_change(request, self.delist)

    async def _h_relist(self, request: web.Request) -> web.Response:
        return await self._listing_change(request, self.relist)

    async def _listing_change(self, request: web.Request, change: Callable[[str], None]) -> web.Response:
        try:
            body = await request.json()
            change(str(body["symbol"]))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad listing request: {exc!r}"}, status=400)
        return web.json_response({"delisted": sorted(self.delisted)})

    async def _h_quiet(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            seconds = float(body["seconds"])
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError("seconds must be a finite number, 0 or more")
            symbol = str(body["symbol"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad quiet request: {exc!r}"}, status=400)
        try:
            self.quiet(symbol, seconds)
        except KeyError:
            return web.json_response({"error": f"unknown symbol: {symbol}"}, status=404)
        return web.json_response({"quiet": self.quiet_left()})

    async def _h_quiet_list(self, request: web.Request) -> web.Response:
        return web.json_response({"quiet": self.quiet_left()})

    async def _h_connections(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"id": c.id, "path": c.path, "subscriptions": sorted(c.subscriptions), "silent": c.silent,
             "sent": dict(c.sent)}
            for c in self.connections.values()
        ])


def venue_websocket(*, compress: bool = True) -> web.WebSocketResponse:
    """A venue's server side of a WebSocket, without aiohttp's autoping.

    aiohttp would answer a client's ping inside ``receive`` whatever the connection's state, so a
    SILENT connection would still prove itself alive to a client that pings.  The venue's read loop
    answers pings with :meth:`SimConnection.pong` instead (:func:`read_text_frames` does), which
    stays quiet on a silent connection.
    """
    return web.WebSocketResponse(autoping=False, compress=compress)


async def read_text_frames(conn: SimConnection) -> AsyncIterator[str]:
    """Yield text frames until the client closes; pings are answered (unless the connection is
    SILENT), binary frames and pongs skipped.  ``conn.ws`` comes from :func:`venue_websocket`."""
    async for msg in conn.ws:
        if msg.type == WSMsgType.TEXT:
            yield msg.data
        elif msg.type == WSMsgType.PING:
            await conn.pong(msg.data)
        elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def decimal_text(value: Decimal, places: int) -> str:
    """Fixed-point text with exactly ``places`` decimals (``places=18`` for Huobi-style numbers)."""
    return f"{value:.{places}f}"
