"""BTSE spot order books from the OSS WebSocket (``/ws/oss/spot``).

The authority is the BTSE Spot API v3.3 docs (OSS WebSocket, ``update:`` topic).

Protocol in brief: ``{"op":"subscribe","args":["update:BTC-USD_0", ...]}``; each topic first
gets a ``type:"snapshot"`` frame, then ``type:"delta"`` frames chained by ``prevSeqNum``.  The
REST book has no sequence number, so it can never seed the stream: every (re)synchronisation is
an unsubscribe + subscribe of the topic on the same socket, and the snapshot arrives in-stream.

What this module adds to the shared lifecycle (:mod:`feeds.base`):

* ``fetch_snapshot`` is that resubscribe; it returns None and the snapshot is awaited on the
  stream (deltas are dropped by the BTSE rule until it comes).  A guard re-requests a snapshot
  that has not arrived within ``snapshot_wait`` seconds (a failed subscribe is silent in the ack),
  and after ``max_snapshot_failures`` misses in a row drops the connection.
* Frames are routed on the ``update:`` prefix and ``data.symbol``: the topic of a delta may lack
  the ``_0`` grouping suffix.
* Error frames are routed by ``errors[].arg`` (the topic): 1000 (pair not supported) marks the
  symbol invalid until the shared listing re-check (:mod:`~aggbook.feeds.listing`) finds it in
  ``/api/v3.3/market_summary`` again and resubscribes it, 1007 (buffer full, messages lost)
  resyncs that symbol, 1008 (too many failed attempts, session closing) reconnects.  The documents
  list the codes but show no error frame: any other code, an error that names no topic of ours, and
  any frame of a shape this module does not know (an ``event`` other than ``subscribe``, a top-level
  ``code``/``error``/``message``) is logged and counted (``venue_errors`` by code,
  ``unrecognised_frames``, in the feed's status), never ignored and never a reason to drop the socket.
* A plain-text ``ping`` every ``ping_interval`` seconds keeps the session (the venue drops sockets
  idle for 60 s); a ``pong`` not back within ``pong_timeout`` means the socket is stale.
* Resyncs are paced: the base queues them through the venue's request pacer with a per-symbol
  backoff, and a book that fails again soon after going live keeps its backoff step, so a stream
  that keeps breaking is resubscribed ever more slowly instead of in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

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
    Transition,
)
from aggbook.feeds.base import Connection, FeedError, FrameError, SnapshotError, VenueFeed
from aggbook.feeds.crosscheck import Bbo
from aggbook.feeds.spec import SymbolSpelling, VenueSpec

log = logging.getLogger("aggbook.feeds.btse")

TOPIC_PREFIX = "update:"
SNAPSHOT_LEVELS = 50  # levels per side in an OSS ``type:"snapshot"`` frame (the docs: "at most 50")
L1_PREFIX = "snapshotL1:"  # the OSS best bid/ask topic, ``snapshotL1:BTC-USD``
GROUPING = "0"  # the snapshot is ungrouped; any other grouping would mix two price grids

ERR_PAIR = 1000  # market pair not supported
ERR_TOPIC = 1005  # topic does not exist
ERR_BUFFER = 1007  # user message buffer full: messages were lost
ERR_ATTEMPTS = 1008  # too many failed attempts: the venue closes the session

BTSE = SequenceRule("btse", Chain.PREV_ID, FirstAfterSnapshot.PREV_IS_SNAPSHOT, drop_through_snapshot=True,
                    duplicate_is_gap=True, contiguous_ids=True, snapshot_in_stream=True)

# Reasons after which a quick relapse keeps the symbol's resubscribe backoff step.
_STREAM_REASONS = frozenset({Reason.GAP, Reason.CROSSED_BOOK, Reason.VENUE_ERROR, Reason.DECODE_ERROR,
                             Reason.STALE_SNAPSHOT})


Level = tuple[str, str]  # [price, size] as the venue's decimal text


class BookData(msgspec.Struct, kw_only=True, gc=False):
    """The ``data`` of an ``update:`` frame; ``prevSeqNum`` is required of deltas (checked on use).

    ``gc=False`` (as :class:`BookFrame`): one per frame, never part of a reference cycle.
    """

    type: Literal["snapshot", "delta"]
    seqNum: int
    prevSeqNum: int | None = None
    bids: list[Level]
    asks: list[Level]
    symbol: str | None = None
    timestamp: int | float | None = None  # epoch ms (the doc types it Double)


class BookFrame(msgspec.Struct, gc=False):
    """A frame of an OSS book topic: ``{"topic": "update:BTC-USD_0", "data": {...}}``."""

    topic: str
    data: BookData


_BOOK_FRAME = msgspec.json.Decoder(BookFrame)
_TEXT = aiohttp.WSMsgType.TEXT  # bound once: a member read off its enum class is slow on Python 3.11


def _l1_level(levels: list) -> tuple[str, str] | None:
    """The one ``[price, size]`` of a ``snapshotL1`` side, or None for an empty side."""
    if not levels:
        return None
    level = levels[0]
    if not isinstance(level, list) or len(level) != 2 or not all(isinstance(x, str) for x in level):
        raise FrameError(f"bad snapshotL1 level {level!r}")
    return level[0], level[1]


def topic_for(venue_symbol: str) -> str:
    return f"{TOPIC_PREFIX}{venue_symbol}_{GROUPING}"


def symbol_of_topic(topic: str) -> str | None:
    """``update:BTC-USD_0`` or legacy ``update:BTC-USD`` -> ``BTC-USD``; None for other topics."""
    if not topic.startswith(TOPIC_PREFIX):
        return None
    rest = topic[len(TOPIC_PREFIX):]
    head, sep, tail = rest.rpartition("_")
    return head if sep and tail.isdigit() else rest


@dataclass(slots=True)
class BtseConnState:
    """What one BTSE socket tracks between frames.

    Subscribe acks come back in request order on the socket that sent them, and an in-stream
    snapshot can only arrive on the socket that resubscribed, so all of it is per connection.
    """

    pending_subscribes: deque[list[str]] = field(default_factory=deque)  # topics per unacked subscribe
    snapshot_deadline: dict[str, float] = field(default_factory=dict)  # canonical -> when to ask again
    snapshot_misses: dict[str, int] = field(default_factory=dict)  # canonical -> snapshots missed in a row
    pong: asyncio.Event | None = None  # set by the ``pong`` answering the last ``ping``


class BtseFeed(VenueFeed[BtseConnState]):
    """BTSE spot: OSS ``update:<SYMBOL>_0`` books with in-stream snapshots."""

    snapshot_rate = 5.0  # resubscribes per second across the venue (no documented WS limit: stay modest)
    snapshot_burst = 10.0
    # every book resubscribed this often, its in-stream snapshot compared with it before it becomes
    # the base of the new stream (feeds/audit.py)
    audit_interval = 60.0
    ping_interval = 15.0  # docs.btse.com: ping every 15 s; idle sockets are dropped after 60 s
    pong_timeout = 10.0
    silence_timeout = 30.0  # pongs arrive every ``ping_interval`` even on a quiet market
    liveness_timeout = 25.0  # a pong every ping_interval proves a quiet connection alive
    snapshot_wait = 10.0  # seconds to wait for the in-stream snapshot after a (re)subscribe
    max_snapshot_failures = 3  # missed snapshots in a row for one symbol before reconnecting
    resync_stable_after = 5.0  # a book live at least this long starts its resubscribe backoff afresh

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._canonical: dict[str, str] = {v: c for c, v in self.config.symbols.items()}
        # the OSS snapshot holds at most 50 levels per side (the docs); ``depth`` in the config says
        # otherwise for a venue that sends more.  A side that full is complete only to its worst price.
        self.snapshot_depth = int(self.config.depth) if self.config.depth is not None else SNAPSHOT_LEVELS
        # A quiet market sends no deltas: only pongs prove the socket alive, so the base's silence
        # limit must leave room for one ping round trip.
        self.silence_timeout = max(self.silence_timeout, self.ping_interval + self.pong_timeout)
        if self.liveness_timeout <= self.ping_interval:
            raise ValueError(f"venues.{self.venue}.options.liveness_timeout ({self.liveness_timeout}) "
                             f"must exceed ping_interval ({self.ping_interval}): a quiet book's pongs")
        self.pong_timeouts = 0  # stale sockets detected by the pong deadline (observability)
        self.venue_errors: Counter[str] = Counter()  # error code (or "?") -> frames carrying it
        self.unrecognised_frames = 0  # JSON frames of no shape this module knows
        self.snapshot_timeouts = 0  # in-stream snapshots that did not arrive within ``snapshot_wait``
        # per subscribed book; weak, so a closed connection's books take their pacers with them
        self.resync_pacers: weakref.WeakKeyDictionary[BookSync, _ResyncPacer] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ venue hooks
    def book_transition(self, sync: BookSync, transition: Transition) -> None:
        pacer = self.resync_pacers.get(sync)
        if pacer is not None:
            pacer.on_transition(sync, transition)

    def rule_for(self, canonical: str) -> SequenceRule:
        return BTSE

    def cold_start_bound_s(self, symbols: int | None = None) -> float:
        """A cold start is one subscribe frame per connection carrying every topic, not paced: the
        snapshots arrive in-stream at once.  ``snapshot_rate`` paces only the resubscribes of resyncs."""
        return 0.0

    def status(self) -> dict:
        out = super().status()
        out.update(venue_errors=dict(self.venue_errors), unrecognised_frames=self.unrecognised_frames,
                   pong_timeouts=self.pong_timeouts, snapshot_timeouts=self.snapshot_timeouts)
        return out

    def new_connection_state(self) -> BtseConnState:
        return BtseConnState()

    def ws_url_for(self, conn: Connection[BtseConnState]) -> str:
        return self.config.ws_url  # already the OSS endpoint, e.g. wss://ws.btse.com/ws/oss/spot

    def connection_tasks(self, conn: Connection[BtseConnState]) -> list:
        return [self._heartbeat(conn), self._snapshot_guard(conn)]

    async def subscribe(self, conn: Connection[BtseConnState]) -> None:
        """One subscribe frame for every symbol not already known to be unsupported."""
        topics = []
        for canonical, sync in conn.syncs.items():
            self.resync_pacers[sync] = _ResyncPacer(self, conn, canonical)
            if sync.state is SyncState.INVALID:
                continue  # refused: not subscribed again until its listing re-check says so
            sync.snapshot_requested()  # the subscribe itself brings the snapshot
            self._expect_snapshot(conn, canonical)
            topics.append(topic_for(self.config.symbols[canonical]))
            if self.bbo_check:  # the best bid/ask, for the top-of-book cross-check (feeds/crosscheck.py)
                topics.append(f"{L1_PREFIX}{self.config.symbols[canonical]}")
        if topics:
            await self._send(conn, {"op": "subscribe", "args": topics})

    async def fetch_snapshot(self, conn: Connection[BtseConnState], canonical: str) -> Snapshot | None:
        """Unsubscribe and subscribe again: the venue answers with a fresh snapshot in-stream."""
        topic = topic_for(self.config.symbols[canonical])
        self._expect_snapshot(conn, canonical)
        await self._send(conn, {"op": "unsubscribe", "args": [topic]})
        await self._send(conn, {"op": "subscribe", "args": [topic]})
        return None

    async def _market_summary(self) -> dict[str, dict]:
        """``/api/v3.3/market_summary``: venue symbol -> its entry."""
        status, _, body = await self.get_json(self.config.rest_url + "/api/v3.3/market_summary")
        if status != 200 or not isinstance(body, list):
            raise SnapshotError(f"market_summary: HTTP {status}")
        return {item["symbol"]: item for item in body
                if isinstance(item, dict) and isinstance(item.get("symbol"), str)}

    @staticmethod
    def _unlisted(venue_symbol: str, item: dict | None) -> str | None:
        """Why the summary entry does not offer the pair for spot (None when it does)."""
        if item is None:
            return f"{venue_symbol} is not listed by market_summary"
        if item.get("active") is False or item.get("isMarketOpenToSpot") is False:
            return f"{venue_symbol} is not active for spot trading"
        return None

    async def validate_symbols(self) -> dict[str, str]:
        """Symbols missing from (or inactive in) ``/api/v3.3/market_summary``; their price and size steps."""
        listed = await self._market_summary()
        bad: dict[str, str] = {}
        for canonical, venue_symbol in self.config.symbols.items():
            item = listed.get(venue_symbol)
            why = self._unlisted(venue_symbol, item)
            if why is not None:
                bad[canonical] = why
            elif item is not None:
                self._learn_steps(canonical, item)
        return bad

    async def symbol_listed(self, canonical: str) -> bool | None:
        """The market summary lists the pair as active for spot (the whole list: one request)."""
        venue_symbol = self.config.symbols[canonical]
        return self._unlisted(venue_symbol, (await self._market_summary()).get(venue_symbol)) is None

    def _learn_steps(self, canonical: str, item: dict) -> None:
        """Price and size steps from ``minPriceIncrement`` / ``minSizeIncrement``.

        They are JSON numbers; a step has few significant digits, so the float's shortest
        repr is the decimal the venue wrote.
        """
        for key, steps in (("minPriceIncrement", self.tick_sizes), ("minSizeIncrement", self.lot_sizes)):
            raw = item.get(key)
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                continue
            try:
                step = Decimal(str(raw))
            except InvalidOperation:
                log.warning("%s: %s has a bad %s %r", self.venue, canonical, key, raw)
                continue
            if step > 0:
                steps[canonical] = step

    # ------------------------------------------------------------------ frames
    async def handle(self, conn: Connection[BtseConnState], msg: aiohttp.WSMessage) -> None:
        if msg.type is not _TEXT:
            raise FrameError(f"unexpected {msg.type.name} frame")
        text: str = msg.data
        if text == "pong":
            pong = conn.venue_state.pong
            if pong is not None:
                pong.set()
            return
        try:
            frame = _BOOK_FRAME.decode(text)
        except msgspec.DecodeError as exc:
            self._on_other(conn, text, exc)  # control frames, other topics, broken book frames
            return
        if frame.topic.startswith(TOPIC_PREFIX):
            self._on_book(conn, frame.topic, frame.data)

    def _on_book(self, conn: Connection[BtseConnState], topic: str, data: BookData) -> None:
        canonical = self._canonical.get(data.symbol or symbol_of_topic(topic))  # type: ignore[arg-type]
        if canonical is None or canonical not in conn.syncs:
            return  # a symbol this connection does not carry
        event_time = data.timestamp / 1000 if data.timestamp is not None else None
        if data.type == "snapshot":
            self._snapshot_arrived(conn, canonical)
            self.deliver_snapshot(conn, canonical, Snapshot(data.seqNum, data.bids, data.asks, event_time,
                                                            depth=self.snapshot_depth))
        elif data.prevSeqNum is None:
            self._bad_book_frame(conn, canonical, topic, "a delta needs prevSeqNum")
        else:
            self.deliver(conn, canonical, Delta(data.seqNum, data.seqNum, data.prevSeqNum, data.bids,
                                                data.asks, event_time))

    def _on_l1(self, conn: Connection[BtseConnState], topic: str, data: object) -> None:
        """``snapshotL1``: the venue's best bid and ask, no seqNum (so compared by time)."""
        if not isinstance(data, dict):
            raise FrameError(f"{topic}: no data object")
        canonical = self._canonical_on(conn, data.get("symbol") or topic[len(L1_PREFIX):])
        if canonical is None:
            return
        bids, asks = data.get("bids"), data.get("asks")
        if not isinstance(bids, list) or not isinstance(asks, list):
            raise FrameError(f"{topic}: bids and asks must be lists")
        self.deliver_bbo(conn, canonical, Bbo(_l1_level(bids), _l1_level(asks)))

    def _canonical_on(self, conn: Connection[BtseConnState], venue_symbol: object) -> str | None:
        canonical = self._canonical.get(venue_symbol) if isinstance(venue_symbol, str) else None
        return canonical if canonical in conn.syncs else None

    def _bad_book_frame(self, conn: Connection[BtseConnState], canonical: str, topic: str, why: str) -> None:
        """Only that symbol's frame broke (its topic still says whose): resync that book alone."""
        self.metrics.decode_error(self.venue)
        self._resync(conn, canonical, Reason.DECODE_ERROR, f"bad {topic} frame: {why}")

    def _on_other(self, conn: Connection[BtseConnState], text: str, schema_error: Exception) -> None:
        """A frame that is not a well-formed book frame: acks, errors, other topics, or a broken book."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise FrameError(f"not JSON: {text[:120]!r}") from exc
        if not isinstance(obj, dict):
            raise FrameError(f"unexpected frame: {text[:120]!r}")
        topic = obj.get("topic")
        if isinstance(topic, str):
            if topic.startswith(TOPIC_PREFIX):
                data = obj.get("data")
                if not isinstance(data, dict):
                    raise FrameError(f"{topic}: no data object")
                canonical = self._canonical_on(conn, data.get("symbol") or symbol_of_topic(topic))
                if canonical is not None:
                    self._bad_book_frame(conn, canonical, topic, str(schema_error))
            if topic.startswith(L1_PREFIX):
                self._on_l1(conn, topic, obj.get("data"))
            return  # other topics are not subscribed here
        if "errors" in obj:
            self._on_errors(conn, obj)
        elif obj.get("event") == "subscribe":
            self._on_ack(conn, obj)
        elif obj.get("event") == "unsubscribe":
            return  # the resubscribe's first half, answered as asked
        elif obj.get("event") == "error" or any(k in obj for k in ("code", "error", "errorCode", "message")):
            code = obj.get("code", obj.get("errorCode"))
            self.venue_errors[str(code) if code is not None else "?"] += 1
            log.warning("%s: error frame of an undocumented shape on connection %s: %s", self.venue, conn.id,
                        text[:300])
        else:
            self.unrecognised_frames += 1
            log.warning("%s: unrecognised frame on connection %s: %s", self.venue, conn.id, text[:300])

    def _on_ack(self, conn: Connection[BtseConnState], obj: dict) -> None:
        """Rejected topics are left out of ``channel``; the error frame that follows says why.

        Acks come in request order, so each is matched with the oldest unanswered subscribe.  A topic
        left out is only logged here: the error frame decides (1000 -> invalid), and without one the
        snapshot guard asks again.
        """
        pending = conn.venue_state.pending_subscribes
        channel = obj.get("channel")
        if not isinstance(channel, list):
            self.unrecognised_frames += 1  # the snapshot guard still asks again for what never comes
            log.warning("%s: subscribe ack of an undocumented shape: %s", self.venue, str(obj)[:300])
            return
        if not pending:
            return
        left_out = [t for t in pending.popleft() if t not in channel]
        if left_out:
            log.warning("%s: subscribe not acknowledged for %s", self.venue, ", ".join(left_out))

    def _on_errors(self, conn: Connection[BtseConnState], obj: dict) -> None:
        errors = obj.get("errors")
        if not isinstance(errors, list):
            errors = [errors]
        closing = False
        for entry in errors:
            if not isinstance(entry, dict):
                self.venue_errors["?"] += 1
                log.warning("%s: error entry of an undocumented shape: %s", self.venue, str(obj)[:300])
                continue
            arg = entry.get("arg")
            raw = entry.get("error")
            err = raw if isinstance(raw, dict) else entry  # {"code", "message"} without the wrapper
            code, message = err.get("code"), err.get("message", "")
            self.venue_errors[str(code) if code is not None else "?"] += 1
            venue_symbol = symbol_of_topic(arg) if isinstance(arg, str) else None
            canonical = self._canonical.get(venue_symbol or "")
            detail = f"error {code} on {arg}: {message}"
            if code == ERR_ATTEMPTS:
                closing = True
                log.warning("%s: %s; the venue is closing the session", self.venue, detail)
            elif canonical is None or canonical not in conn.syncs:
                log.error("%s: %s", self.venue, detail)
            elif code in (ERR_PAIR, ERR_TOPIC):
                self._invalidate(conn, canonical, detail)
            elif code == ERR_BUFFER:
                self._resync(conn, canonical, Reason.VENUE_ERROR, detail)
            else:
                log.error("%s: %s", self.venue, detail)
                self._resync(conn, canonical, Reason.VENUE_ERROR, detail)
        if closing:
            raise FeedError("venue error 1008: too many failed attempts, session closing")

    # ------------------------------------------------------------------ per-symbol actions
    def _invalidate(self, conn: Connection[BtseConnState], canonical: str, detail: str) -> None:
        """InvalidSymbol semantics: the book stops until the listing re-check resubscribes it."""
        conn.venue_state.snapshot_deadline.pop(canonical, None)
        self.metrics.snapshot(self.venue, canonical, False)
        self.listing.refused(canonical, detail)

    def _resync(self, conn: Connection[BtseConnState], canonical: str, reason: Reason, detail: str) -> None:
        sync = conn.syncs[canonical]
        if sync.state is SyncState.INVALID:
            return
        sync.fail(reason, detail)
        conn.venue_state.snapshot_deadline.pop(canonical, None)
        if sync.wants_snapshot():
            self.request_snapshot(conn, canonical)

    # ------------------------------------------------------------------ snapshot guard
    def _expect_snapshot(self, conn: Connection[BtseConnState], canonical: str) -> None:
        conn.venue_state.snapshot_deadline[canonical] = time.monotonic() + self.snapshot_wait

    def _snapshot_arrived(self, conn: Connection[BtseConnState], canonical: str) -> None:
        conn.venue_state.snapshot_deadline.pop(canonical, None)
        conn.venue_state.snapshot_misses.pop(canonical, None)

    async def _snapshot_guard(self, conn: Connection[BtseConnState]) -> None:
        """Re-request snapshots that never came; too many misses in a row -> reconnect."""
        period = max(0.01, min(1.0, self.snapshot_wait / 5))
        deadlines, misses = conn.venue_state.snapshot_deadline, conn.venue_state.snapshot_misses
        while conn.open:
            await asyncio.sleep(period)
            now = time.monotonic()
            for canonical, deadline in list(deadlines.items()):
                sync = conn.syncs[canonical]
                if sync.state in (SyncState.LIVE, SyncState.INVALID):
                    deadlines.pop(canonical, None)
                    continue
                if now < deadline:
                    continue
                deadlines.pop(canonical, None)
                self.snapshot_timeouts += 1
                self.metrics.snapshot(self.venue, canonical, False)
                misses[canonical] = misses.get(canonical, 0) + 1
                if misses[canonical] >= self.max_snapshot_failures:
                    await self._drop(conn, f"no snapshot for {canonical} after {misses[canonical]} "
                                           f"subscribes of {self.snapshot_wait}s each")
                    return
                log.warning("%s %s: no snapshot within %.1fs; subscribing again", self.venue, canonical,
                            self.snapshot_wait)
                sync.snapshot_failed()
                self.request_snapshot(conn, canonical)

    # ------------------------------------------------------------------ heartbeat
    async def _heartbeat(self, conn: Connection[BtseConnState]) -> None:
        """Text ``ping`` every ``ping_interval``; no ``pong`` within ``pong_timeout`` -> reconnect."""
        while conn.open:
            await asyncio.sleep(self.ping_interval)
            if not conn.open:
                return
            pong = conn.venue_state.pong = asyncio.Event()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_str("ping")  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(pong.wait(), self.pong_timeout)
            except TimeoutError:
                self.pong_timeouts += 1
                await self._drop(conn, f"no pong within {self.pong_timeout}s")
                return

    async def _drop(self, conn: Connection[BtseConnState], why: str) -> None:
        """The socket is unusable: close it so the supervisor reconnects with backoff."""
        log.warning("%s: dropping connection %s: %s", self.venue, conn.id, why)
        if conn.ws is not None and not conn.ws.closed:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=why.encode()[:120])

    async def _send(self, conn: Connection[BtseConnState], obj: dict) -> None:
        if conn.ws is None or conn.ws.closed:
            raise SnapshotError("socket closed")
        if obj["op"] == "subscribe":
            conn.venue_state.pending_subscribes.append(list(obj["args"]))
        await conn.ws.send_str(orjson.dumps(obj).decode())


VENUES = (
    VenueSpec(
        kind="btse",
        title="BTSE spot",
        feed=BtseFeed,
        rest_url="https://api.btse.com/spot",
        ws_url="wss://ws.btse.com/ws/oss/spot",
        rules=(BTSE,),
        simulator="aggbook.simulator.btse:BtseVenue",
        spelling=SymbolSpelling(separator="-"),
        demo_fee_bps=Decimal("10"),
    ),
)


class _ResyncPacer:
    """Keeps a symbol's resubscribe backoff step when its book breaks again soon after going live.

    The base resets a symbol's snapshot attempts once its book is live; on a stream that breaks on
    every other frame that would resubscribe as fast as the snapshots arrive.  A relapse within
    ``resync_stable_after`` seconds restores the step reached before, so the delay keeps growing.
    """

    def __init__(self, feed: BtseFeed, conn: Connection[BtseConnState], canonical: str) -> None:
        self.feed = feed
        self.conn = conn
        self.canonical = canonical
        self.live_at: float | None = None
        self.step = 0

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        attempts = self.conn.snapshot_attempts
        if transition.new is SyncState.LIVE and transition.old is not SyncState.LIVE:
            self.live_at = transition.at
            self.step = attempts.get(self.canonical, 0)  # read before the base resets it
        elif (transition.old is SyncState.LIVE and transition.new is SyncState.RESYNCING
              and transition.reason in _STREAM_REASONS and self.live_at is not None
              and transition.at - self.live_at < self.feed.resync_stable_after):
            attempts[self.canonical] = max(attempts.get(self.canonical, 0), self.step)


