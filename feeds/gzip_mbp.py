"""The Huobi-style market-by-price feed that NHEX and BitV share (their Huobi-style API docs).

One ``/feed`` WebSocket carries, per symbol, ``sub`` to ``market.<sym>.mbp.<levels>`` and the ``req``
for that topic's snapshot; the venue modules (``feeds.nhex``, ``feeds.bitv``) only say which level
counts and symbols they allow.  What this module does and why:

* Every server frame is gzip: gunzip (``zlib`` with the gzip window bits, no ``gzip`` module
  wrapper), then JSON through one msgspec decoder whose ``float_hook`` is ``str``, so prices and
  sizes (JSON *numbers* with up to 18 decimals) reach the book as the venue's exact text and never
  pass through a binary float.  An integer-valued number (``7964``) becomes ``"7964"``.
* ``{"ping": n}`` is answered at once with ``{"pong": n}``; like every frame it proves the
  connection alive, so a quiet 5/20 book (nothing pushed while unchanged) stays included; its books
  are stale after ``liveness_timeout`` (10 s: two missed 5 s pings) and the base watchdog drops a
  connection silent for ``silence_timeout`` (15 s: three).
* Acks and ``req`` replies are matched by ``id`` only (a reply's ``rep`` may name another topic).
* Two ``req`` on one connection must be 100 ms apart or the venue answers ``429 too many request``:
  each connection has its own :class:`~feeds.pacing.RequestPacer` spacing them ``req_min_interval``.
* Sequencing is :data:`MBP_TICK` for 5/20 (tick-by-tick, a straddling snapshot is
  exact) and :data:`MBP_100MS` for 150/400; empty 150 pushes are delivered because
  they advance the ``prevSeqNum`` chain.  A 150 snapshot is never forced to fit: the documents
  want its ``seqNum`` to equal a push's ``prevSeqNum``, and one that falls between two pushes
  (``prevSeqNum < seqNum_snapshot < seqNum``) is discarded (resync reason ``misaligned_snapshot``)
  and ``req``-ed again with the symbol's snapshot backoff, for as long as it takes; the book stays
  not live meanwhile and says why.  ``mbp.refresh`` cannot stand in: it offers 5/10/20 levels only,
  on the other endpoint (``/ws``), so it cannot seed a 150-level book.  Each book is an
  ``L2Book(max_depth=levels)``, so it is trimmed to the topic's window after every message
  whatever the venue sends for levels leaving it.
* A quiet 5/20 book pushes nothing, so its snapshot is requested ``quiet_snapshot_delay`` after the
  ``subbed`` ack (or after it stopped being live) even with nothing buffered.
* ``invalid symbol`` on a ``sub`` or ``req`` marks the book invalid; the shared listing re-check
  (:mod:`~aggbook.feeds.listing`) reloads ``/v1/common/symbols`` with backoff and, once the symbol
  is listed, subscribes it again (or ``req``s its snapshot when the topic is still subscribed).
  ``invalid topic`` on a 5/20 ``sub`` falls back to ``fallback_levels`` on the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import zlib
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import orjson

from aggbook.book.sync import (
    BookSync,
    Chain,
    Delta,
    FirstAfterSnapshot,
    Reason,
    SequenceRule,
    Snapshot,
    SyncState,
)
from aggbook.feeds.base import Connection, FrameError, InvalidSymbol, RateLimited, SnapshotError, VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.crosscheck import Bbo
from aggbook.feeds.metrics import FeedMetrics
from aggbook.feeds.pacing import RequestPacer

log = logging.getLogger("aggbook.feeds.gzip_mbp")
_BINARY = aiohttp.WSMsgType.BINARY  # bound once: a member read off its enum class is slow on Python 3.11

_GZIP_WBITS = 16 + zlib.MAX_WBITS
# JSON numbers with a fraction or an exponent come out as their own text (what ``json.loads`` does with
# ``parse_float=str``, at a fraction of its cost); integers stay ints and are made text by ``_text``
_JSON = msgspec.json.Decoder(float_hook=str)

INVALID_TOPIC = "invalid topic"
INVALID_SYMBOL = "invalid symbol"
TOO_MANY = "429 too many request"

MBP_TICK = SequenceRule("mbp-tick", Chain.PREV_ID, FirstAfterSnapshot.PREV_IS_SNAPSHOT,
                        drop_through_snapshot=True, straddle_ok=True)
MBP_100MS = SequenceRule("mbp-100ms", Chain.PREV_ID, FirstAfterSnapshot.PREV_IS_SNAPSHOT,
                         drop_through_snapshot=True)

RawPair = tuple[str, str]


# ---------------------------------------------------------------------- decoding
def decode_frame(data: bytes) -> dict:
    """Gunzip and parse one server frame; numbers with a fraction or exponent stay text.

    Strict JSON: ``NaN``/``Infinity`` literals and bytes that are not UTF-8 make the frame bad.
    """
    try:
        text = zlib.decompress(data, _GZIP_WBITS)
    except zlib.error as exc:
        raise FrameError(f"bad gzip: {exc}") from exc
    try:
        obj = _JSON.decode(text)
    except msgspec.DecodeError as exc:
        raise FrameError(f"bad JSON: {exc}") from exc
    if obj.__class__ is not dict:
        raise FrameError(f"frame is not a JSON object: {type(obj).__name__}")
    return obj


def _bbo(tick: dict) -> Bbo:
    """A ``bbo`` tick (``bid``/``bidSize``/``ask``/``askSize``: strings in the doc's example, numbers in
    its field table; both taken as exact text)."""
    def side(price: object, size: object) -> tuple[str, str] | None:
        return None if price is None else (_text(price), _text(size))

    return Bbo(side(tick.get("bid"), tick.get("bidSize")), side(tick.get("ask"), tick.get("askSize")))


def _text(value: object) -> str:
    """A decoded JSON number as exact text: ``float_hook`` already gave text; ints are made text."""
    if value.__class__ is str:
        return value
    if value.__class__ is int:
        return str(value)
    raise FrameError(f"level value is not a number: {value!r}")


def exact_levels(raw: object) -> list[RawPair] | None:
    """``[[price, size], ...]`` as exact text pairs; None when the side is absent (unchanged).

    Most values are already text (``float_hook``): only the others go through ``_text``.
    """
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise FrameError(f"levels are not a list: {raw!r}")
    out: list[RawPair] = []
    append = out.append
    try:
        for p, s in raw:
            append((p if p.__class__ is str else _text(p), s if s.__class__ is str else _text(s)))
    except (TypeError, ValueError) as exc:
        raise FrameError(f"malformed level list: {exc}") from exc
    return out


# ---------------------------------------------------------------------- the feed
@dataclass(slots=True)
class PendingReply:
    """A ``sub`` or ``req`` sent on a socket, awaiting the reply with its ``id``."""

    kind: str  # "sub" or "req"
    canonical: str
    future: asyncio.Future[dict] | None = None  # a req's caller waits on it; a sub's ack is handled inline


@dataclass(slots=True)
class MbpConnState:
    """What one NHEX/BitV socket tracks.

    Reply ids and the 100 ms spacing between ``req`` frames are per socket in the venue's rules,
    and a topic is only routed on the socket that subscribed it.
    """

    pacer: RequestPacer  # spaces ``req`` frames ``req_min_interval`` apart
    pending: dict[str, PendingReply] = field(default_factory=dict)  # id -> what it answers
    topics: dict[str, str] = field(default_factory=dict)  # topic -> canonical
    subbed: dict[str, float] = field(default_factory=dict)  # canonical -> monotonic time of the ok ack
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


class GzipMbpFeed(VenueFeed[MbpConnState]):
    """Everything NHEX and BitV share; subclasses set the levels and symbols their venue allows."""

    # venue facts (class attributes; subclasses override)
    base_levels: tuple[int, ...] = (5, 20, 150)
    tick_levels: tuple[int, ...] = (5, 20)  # pushed per change; the rest on the 100 ms timer
    _fast_symbols_default: frozenset[str] | None = None  # symbols allowed on 5/20; None = all

    # knobs (settable from config.options)
    default_levels: int = 150
    fast_symbols: str | None = None  # comma-separated override of the 5/20 whitelist
    fallback_levels: int = 150  # levels used where 5/20 is not offered; 0 = no fallback
    max_symbols_per_connection: int = 30  # specs: plan ~20-50 mbp topics per /feed connection
    silence_timeout: float = 15.0
    liveness_timeout: float = 10.0  # two of the venue's 5 s pings missed: the books are stale
    req_min_interval: float = 0.11  # the venue wants >= 100 ms between two reqs on a connection
    req_timeout: float = 5.0  # re-req when a reply has not come
    rate_limit_pause: float = 0.5  # after "429 too many request"
    quiet_snapshot_delay: float = 1.0  # req a book with nothing buffered this long after subbed
    _snapshot_on_stream_socket = True  # ``req`` answers on the /feed socket (a quiet 5/20 book has no push)
    not_open_retry: float = 60.0  # "symbol trade not open now": resubscribe after this many seconds
    # the documents state no venue-wide req budget (only the 100 ms spacing per connection, and 10 REST
    # requests/s per IP, which reqs on the socket are not): this only caps a venue-wide storm
    snapshot_rate: float = 50.0
    # every book compared with a req snapshot at its own seqNum this often (feeds/audit.py): a req on
    # the book's own socket, 30 books a connection, one every second
    audit_interval: float = 30.0
    snapshot_burst: float = 50.0

    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        super().__init__(config, metrics=metrics)
        allowed = self.allowed_levels()
        requested = self.config.depth or self.default_levels
        if requested not in allowed:
            raise ValueError(f"venues.{config.name}.depth: {requested} mbp levels not offered; "
                             f"choose one of {', '.join(map(str, allowed))}")
        if self.fallback_levels and self.fallback_levels not in allowed:
            raise ValueError(f"venues.{config.name}.options.fallback_levels: {self.fallback_levels} "
                             f"not offered")
        if self.fast_symbols is not None:
            self._fast: frozenset[str] | None = frozenset(
                s.strip().lower() for s in self.fast_symbols.split(",") if s.strip())
        else:
            self._fast = self._fast_symbols_default
        self._levels: dict[str, int] = {}
        for canonical in config.symbols:
            levels = requested
            if (levels in self.tick_levels and self._fast is not None and self.fallback_levels
                    and self.venue_symbol(canonical) not in self._fast):
                log.info("%s %s: mbp.%d is offered for %s only; using mbp.%d", self.venue, canonical, levels,
                         ",".join(sorted(self._fast)), self.fallback_levels)
                levels = self.fallback_levels
            self._levels[canonical] = levels
        self.venue_errors: Counter[str] = Counter()  # err-msg -> count (sub and req replies)
        self.pongs = 0

    # ------------------------------------------------------------------ venue facts
    def cold_start_bound_s(self, symbols: int | None = None) -> float:
        """Reqs leave each connection ``req_min_interval`` apart (the venue's 100 ms rule), connections in
        parallel, all through the venue-wide pacer: the later of the two moments."""
        count = len(self.config.symbols) if symbols is None else symbols
        per_connection = min(count, max(1, int(self.max_symbols_per_connection)))
        spaced = max(0, per_connection - 1) * float(self.req_min_interval)
        return max(super().cold_start_bound_s(count), spaced)

    def allowed_levels(self) -> tuple[int, ...]:
        """mbp level counts this venue offers (NHEX adds 400 behind an option)."""
        return self.base_levels

    def venue_symbol(self, canonical: str) -> str:
        return self.config.symbols[canonical].lower()

    def levels_for(self, canonical: str) -> int:
        return self._levels[canonical]

    def topic_for(self, canonical: str) -> str:
        return f"market.{self.venue_symbol(canonical)}.mbp.{self.levels_for(canonical)}"

    def rule_for(self, canonical: str) -> SequenceRule:
        return MBP_TICK if self.levels_for(canonical) in self.tick_levels else MBP_100MS

    def new_sync(self, canonical: str) -> BookSync:
        """The base sync with its book capped to the topic's window (trimmed after every message)."""
        sync = super().new_sync(canonical)
        sync.book.max_depth = self.levels_for(canonical)
        return sync

    def status(self) -> dict:
        out = super().status()
        out["mbp_levels"] = dict(self._levels)
        out["venue_errors"] = dict(self.venue_errors)
        return out

    # ------------------------------------------------------------------ connection
    def new_connection_state(self) -> MbpConnState:
        return MbpConnState(RequestPacer(rate=1000.0, burst=1.0, min_interval=self.req_min_interval))

    def connection_tasks(self, conn: Connection[MbpConnState]) -> list[Coroutine[Any, Any, Any]]:
        tasks = [self._quiet_books(conn)]
        if self.bbo_check:
            tasks.append(self._bbo_stream(conn))
        return tasks

    def bbo_url(self) -> str:
        """``market.<sym>.bbo`` is served on the market-data socket ``/ws``, not on ``/feed``."""
        base = self.config.ws_url.rstrip("/")
        return (base.removesuffix("/feed") if base.endswith("/feed") else base) + "/ws"

    async def _bbo_stream(self, conn: Connection[MbpConnState]) -> None:
        """A ``/ws`` socket beside the connection's ``/feed``, subscribed to each symbol's ``bbo``.

        It only feeds the top-of-book cross-check (feeds/crosscheck.py, by time: ``seqId`` is not the
        mbp ``seqNum``), so its failures never touch the books: it logs, waits and connects again.
        """
        names = {f"market.{self.venue_symbol(c)}.bbo": c for c in conn.symbols}
        delay = float(self.backoff_base)
        while True:
            try:
                assert self.http.session is not None, "the feed is not started"
                async with self.http.session.ws_connect(self.bbo_url(), heartbeat=None, compress=0,
                                                        max_msg_size=8 * 1024 * 1024) as ws:
                    for name in names:
                        await ws.send_str(orjson.dumps({"sub": name, "id": name}).decode())
                    delay = float(self.backoff_base)
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.BINARY:
                            break
                        obj = decode_frame(msg.data)
                        tick = obj.get("tick")
                        if isinstance(tick, dict) and obj.get("ch") in names:
                            self.deliver_bbo(conn, names[obj["ch"]], _bbo(tick))
                        elif "ping" in obj:
                            await ws.send_str(orjson.dumps({"pong": obj["ping"]}).decode())
                        elif obj.get("status") == "error":
                            log.warning("%s: bbo subscription refused: %s", self.venue, obj)
            except (TimeoutError, aiohttp.ClientError, OSError, FrameError) as exc:
                log.warning("%s: bbo socket of connection %s: %s", self.venue, conn.id, exc)
            await asyncio.sleep(delay)
            delay = min(float(self.backoff_cap), delay * 2)

    async def subscribe(self, conn: Connection[MbpConnState]) -> None:
        for canonical in conn.symbols:
            if conn.syncs[canonical].state is not SyncState.INVALID:  # refused: wait for the re-check
                await self._sub(conn, canonical)

    def resume_symbol(self, conn: Connection[MbpConnState], canonical: str) -> None:
        """Listed again: ``req`` the snapshot if the topic is still subscribed, else ``sub`` it again."""
        if not conn.open:
            return
        if canonical in conn.venue_state.subbed:
            self.request_snapshot(conn, canonical)
        else:
            conn.spawn(self._sub(conn, canonical), name=f"{self.venue}-resub-{canonical}")

    async def symbol_listed(self, canonical: str) -> bool | None:
        return self.venue_symbol(canonical) in await self._symbol_listing()

    async def _send(self, conn: Connection[MbpConnState], obj: dict) -> None:
        assert conn.ws is not None
        await conn.ws.send_str(orjson.dumps(obj).decode())

    async def _sub(self, conn: Connection[MbpConnState], canonical: str) -> None:
        topic = self.topic_for(canonical)
        state = conn.venue_state
        state.topics[topic] = canonical
        rid = f"sub-{next(state.ids)}"
        state.pending[rid] = PendingReply("sub", canonical)
        await self._send(conn, {"sub": topic, "id": rid})

    async def _quiet_books(self, conn: Connection[MbpConnState]) -> None:
        """Request snapshots for subscribed books that have buffered nothing for a while (quiet 5/20)."""
        period = max(0.02, self.quiet_snapshot_delay / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for canonical, subbed_at in list(conn.venue_state.subbed.items()):
                sync = conn.syncs.get(canonical)
                if sync is None or now - max(subbed_at, sync.since) < self.quiet_snapshot_delay:
                    continue
                if sync.wants_snapshot(allow_empty_buffer=True):
                    self.request_snapshot(conn, canonical)

    # ------------------------------------------------------------------ frames
    async def handle(self, conn: Connection[MbpConnState], msg: aiohttp.WSMessage) -> None:
        if msg.type is not _BINARY:
            raise FrameError(f"unexpected {msg.type.name} frame (every server frame is gzip)")
        obj = decode_frame(msg.data)
        tick = obj.get("tick")
        if tick is not None:
            self._on_push(conn, obj, tick)
        elif "ping" in obj:
            with contextlib.suppress(ConnectionError):
                await self._send(conn, {"pong": obj["ping"]})
                self.pongs += 1
        elif "id" in obj:
            await self._on_reply(conn, obj)
        elif obj.get("status") == "error":
            self.venue_errors[str(obj.get("err-msg"))] += 1
            log.warning("%s: error without id on connection %s: %s", self.venue, conn.id, obj)

    def _on_push(self, conn: Connection[MbpConnState], obj: dict, tick: object) -> None:
        canonical = conn.venue_state.topics.get(obj.get("ch"))  # type: ignore[arg-type]
        if canonical is None:
            return  # a topic we no longer follow (fallback, unsub)
        if not isinstance(tick, dict):
            raise FrameError(f"tick is not an object on {obj.get('ch')}")
        seq = tick.get("seqNum")
        prev = tick.get("prevSeqNum")
        if seq.__class__ is not int or (prev is not None and prev.__class__ is not int):
            raise FrameError(f"bad seqNum/prevSeqNum on {obj.get('ch')}: {seq!r}/{prev!r}")
        ts = obj.get("ts")
        delta = Delta(seq, seq, prev, exact_levels(tick.get("bids")), exact_levels(tick.get("asks")),
                      event_time=ts / 1000 if ts.__class__ is int else None)
        self.deliver(conn, canonical, delta)

    async def _on_reply(self, conn: Connection[MbpConnState], obj: dict) -> None:
        rid = obj["id"]
        entry = conn.venue_state.pending.pop(rid, None) if isinstance(rid, str) else None
        if entry is None:
            return  # reply to a req we gave up on
        if entry.kind == "req":
            if entry.future is not None and not entry.future.done():
                entry.future.set_result(obj)
            return
        if obj.get("status") == "ok":
            conn.venue_state.subbed[entry.canonical] = time.monotonic()
            return
        await self._sub_failed(conn, entry.canonical, obj)

    async def _sub_failed(self, conn: Connection[MbpConnState], canonical: str, reply: dict) -> None:
        err = str(reply.get("err-msg", ""))
        self.venue_errors[err] += 1
        sync = conn.syncs[canonical]
        levels = self.levels_for(canonical)
        log.warning("%s %s: sub %s refused: %s %s", self.venue, canonical, self.topic_for(canonical),
                    reply.get("err-code"), err)
        if err == INVALID_TOPIC and levels in self.tick_levels and self.fallback_levels \
                and self.fallback_levels != levels and sync.state is not SyncState.LIVE:
            # 5/20 not offered for this symbol: the same book at the fallback depth, on this connection
            conn.venue_state.topics.pop(self.topic_for(canonical), None)
            self._levels[canonical] = self.fallback_levels
            sync.rule = self.rule_for(canonical)
            sync.book.max_depth = self.fallback_levels
            await self._sub(conn, canonical)
        elif err in (INVALID_SYMBOL, INVALID_TOPIC):
            conn.venue_state.subbed.pop(canonical, None)
            self.listing.refused(canonical, f"sub {self.topic_for(canonical)}: {err}")
        else:  # e.g. "symbol trade not open now": try again later
            sync.fail(Reason.VENUE_ERROR, err)
            conn.spawn(self._resubscribe_later(conn, canonical))

    async def _resubscribe_later(self, conn: Connection[MbpConnState], canonical: str) -> None:
        await asyncio.sleep(self.not_open_retry)
        if conn.open:
            await self._sub(conn, canonical)

    # ------------------------------------------------------------------ snapshot by req
    async def fetch_snapshot(self, conn: Connection[MbpConnState], canonical: str) -> Snapshot | None:
        state = conn.venue_state
        pacer = state.pacer
        await pacer.acquire()
        if not conn.open:
            raise SnapshotError("connection closed")
        rid = f"req-{next(state.ids)}"
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        state.pending[rid] = PendingReply("req", canonical, future)
        try:
            await self._send(conn, {"req": self.topic_for(canonical), "id": rid})
            reply = await asyncio.wait_for(future, self.req_timeout)
        except TimeoutError as exc:
            raise SnapshotError(f"no reply to req {rid} within {self.req_timeout}s") from exc
        except ConnectionError as exc:
            raise SnapshotError(f"req not sent: {exc}") from exc
        finally:
            state.pending.pop(rid, None)
        if reply.get("status") != "ok":
            err = str(reply.get("err-msg", ""))
            self.venue_errors[err] += 1
            if err == TOO_MANY:
                pacer.penalize(self.rate_limit_pause)
                raise RateLimited(self.rate_limit_pause, f"req {rid}: {err}")
            if err == INVALID_SYMBOL:
                raise InvalidSymbol(f"req {rid}: {err}")
            raise SnapshotError(f"req {rid}: {reply.get('err-code')} {err}")
        return self._snapshot(reply)

    @staticmethod
    def _snapshot(reply: dict) -> Snapshot:
        data = reply.get("data")
        if not isinstance(data, dict) or data.get("seqNum").__class__ is not int:
            raise SnapshotError(f"req reply without data.seqNum: {str(reply)[:200]}")
        try:
            bids = exact_levels(data.get("bids") or [])
            asks = exact_levels(data.get("asks") or [])
        except FrameError as exc:
            raise SnapshotError(str(exc)) from exc
        ts = reply.get("ts")
        return Snapshot(data["seqNum"], bids or [], asks or [],
                        event_time=ts / 1000 if ts.__class__ is int else None)

    # ------------------------------------------------------------------ symbols
    async def _symbol_listing(self) -> dict[str, dict]:
        status, _, body = await self.get_json(f"{self.config.rest_url}/v1/common/symbols")
        if status != 200 or not isinstance(body, dict) or body.get("status") != "ok" \
                or not isinstance(body.get("data"), list):
            raise SnapshotError(f"/v1/common/symbols: HTTP {status}: {str(body)[:200]}")
        return {e["symbol"]: e for e in body["data"]
                if isinstance(e, dict) and isinstance(e.get("symbol"), str)}

    async def validate_symbols(self) -> dict[str, str]:
        listing = await self._symbol_listing()
        errors: dict[str, str] = {}
        for canonical in self.config.symbols:
            vs = self.venue_symbol(canonical)
            entry = listing.get(vs)
            if entry is None:
                errors[canonical] = f"{vs} is not in /v1/common/symbols"
                continue
            # steps inferred as 10^-precision (the venue has no explicit tick field); never used to round
            for key, steps in (("price-precision", self.tick_sizes), ("amount-precision", self.lot_sizes)):
                precision = entry.get(key)
                if isinstance(precision, int) and not isinstance(precision, bool) and precision >= 0:
                    steps[canonical] = Decimal(1).scaleb(-precision)
            if entry.get("state") != "online":
                log.warning("%s %s: symbol state is %r", self.venue, canonical, entry.get("state"))
        return errors

