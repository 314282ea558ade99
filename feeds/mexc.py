"""MEXC Spot v3 feed: protobuf aggregated-depth diffs over WebSocket plus the REST depth snapshot.

Wire protocol (MEXC Spot v3 docs: "Websocket Market Streams" and "How to Properly Maintain a Local
Copy of the Order Book"):

* one WebSocket at ``ws_url`` (``wss://wbs-api.mexc.com/ws``); the client sends JSON
  **text** commands (``SUBSCRIPTION``, ``PING``) and gets JSON text replies; market data
  arrives as **binary** frames, each one serialized ``PushDataV3ApiWrapper``.  Frames are
  dispatched on the opcode, never by sniffing content.
* the book is built from ``spot@public.aggre.depth.v3.api.pb@100ms@SYM`` (oneof member
  313, ``fromVersion``/``toVersion``) on top of ``GET /api/v3/depth`` (``lastUpdateId``),
  sequenced by :data:`MEXC`.
* a subscription is acknowledged by a reply whose ``msg`` is the requested channels
  joined by ``,`` (the documents' one example; they never state the shape); a rejection is
  *also* ``code: 0`` with a different ``msg``, so acks are checked by comparing channel sets,
  never by ``code``.  Data arriving on a channel acknowledges it too.  A reply this feed does not
  recognise is logged and counted (``unrecognised_replies`` in the status), never a reason to
  reconnect: a channel with neither an acknowledgement nor data after ``ack_timeout`` is
  subscribed again on the same socket, waiting twice as long each time (up to
  ``ack_timeout_cap``).  A rejected channel, or one
  the venue silently left out of its ack (over its 30-subscription limit), marks that
  symbol invalid; it is not retried in a loop: the shared listing re-check
  (:mod:`~aggbook.feeds.listing`) asks ``exchangeInfo?symbol=`` with backoff and, once the symbol
  is listed, subscribes the channel again (or asks for a snapshot when it is still subscribed).
* the venue drops a connection that is quiet for a minute, so the client PINGs every
  ``ping_interval`` seconds and reconnects when no PONG arrives within ``pong_timeout``.
* at most 30 subscriptions per connection: 25 symbols per connection by default, the
  rest sharded over more connections; client frames are paced to ``control_rate`` per
  second per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
import msgspec
import orjson
from google.protobuf.message import DecodeError

from aggbook.book.sync import Chain, Delta, FirstAfterSnapshot, SequenceRule, Snapshot, SyncState
from aggbook.feeds.base import Connection, FrameError, InvalidSymbol, SnapshotError, VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.crosscheck import Bbo
from aggbook.feeds.metrics import FeedMetrics
from aggbook.feeds.pacing import RequestPacer
from aggbook.feeds.spec import VenueSpec
from aggbook.proto import mexc_push_pb2 as pb

log = logging.getLogger("aggbook.feeds.mexc")

DEPTH_CHANNEL = "spot@public.aggre.depth.v3.api.pb"
DEPTH_MEMBER = "publicAggreDepths"  # oneof member 313 of PushDataV3ApiWrapper
# best bid/ask for the top-of-book cross-check (feeds/crosscheck.py); compared by time: the docs do not
# say that its ``version`` (added 2026-06) is the depth stream's version
TICKER_CHANNEL = "spot@public.aggre.bookTicker.v3.api.pb"
TICKER_MEMBER = "publicAggreBookTicker"  # oneof member 315
INTERVALS = ("100ms", "10ms")
DEFAULT_DEPTH = 5000  # the docs' largest snapshot limit (GET /api/v3/depth)
MAX_DEPTH = 5000
VENUE_SUBSCRIPTION_LIMIT = 30  # MEXC silently ignores the 31st subscription on a connection
INVALID_SYMBOL_CODE = -1121
PONG = "PONG"
_BRACKETS = re.compile(r"\[([^\]]*)\]")  # "Not Subscribed successfully! [<channels>].  Reason: ..."

MEXC = SequenceRule("mexc", Chain.NEXT_ID, FirstAfterSnapshot.COVERS_NEXT, drop_through_snapshot=True)


# ---------------------------------------------------------------------- frame schemas
# Binary pushes have theirs in proto/mexc_push.proto (PushDataV3ApiWrapper); the JSON ones are here.
class ControlReply(msgspec.Struct):
    """A reply to a client command: ``{"id": 0, "code": 0, "msg": "PONG" | "<channels>" | "<rejection>"}``."""

    msg: str
    id: int | None = None
    code: int | None = None


class DepthSnapshot(msgspec.Struct):
    """The ``GET /api/v3/depth`` body; ``lastUpdateId`` may be a JSON number or a string of digits."""

    lastUpdateId: int | str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    timestamp: int | None = None


_CONTROL_REPLY = msgspec.json.Decoder(ControlReply)
_PARSE_PUSH = pb.PushDataV3ApiWrapper.FromString
# bound once: a member read off its enum class is slow on Python 3.11, and handle() reads one per frame
_BINARY = aiohttp.WSMsgType.BINARY
_TEXT = aiohttp.WSMsgType.TEXT


@dataclass(slots=True)
class _Batch:
    """One SUBSCRIPTION frame and what the venue has said about its channels so far."""

    channels: list[str]
    pending: set[str]  # neither acknowledged, rejected nor served data yet
    sent_at: float = field(default_factory=time.monotonic)
    replied: bool = False  # some reply (ack or rejection) named a channel of this batch
    wait: float = 0.0  # how long to wait for this batch before subscribing its pending channels again


@dataclass(slots=True)
class MexcConnState:
    """What one MEXC socket tracks: routing, unresolved SUBSCRIPTIONs, its frame pacer, PONGs.

    The 30-subscription limit, the acks and the client-frame rate are all per connection.
    """

    pacer: RequestPacer  # client frames (SUBSCRIPTION, PING) at ``control_rate``
    by_venue: dict[str, str] = field(default_factory=dict)  # venue symbol -> canonical
    by_channel: dict[str, str] = field(default_factory=dict)  # channel -> canonical
    subscribed: set[str] = field(default_factory=set)  # channels the venue acknowledged
    batches: list[_Batch] = field(default_factory=list)  # unresolved subscriptions
    pong: asyncio.Event = field(default_factory=asyncio.Event)
    pongs: int = 0


class MexcFeed(VenueFeed[MexcConnState]):
    """MEXC Spot v3 order books (kind ``mexc``)."""

    max_symbols_per_connection = 25  # the venue allows 30; keep headroom
    silence_timeout = 30.0  # PINGs are answered well within this on a healthy connection
    max_connection_age = 24 * 3600.0 - 600.0  # MEXC closes at 24 h: roll over 10 min before
    # MEXC's public "Limits" section: 500 requests per 10 s per endpoint and IP (our copy of the docs
    # states no REST limit); 20 + 10/s * 10 s = 120 a window, under a quarter of it
    snapshot_rate = 10.0
    snapshot_burst = 20.0
    # every book compared with a REST snapshot at its own version this often (feeds/audit.py): 25
    # books a connection, one snapshot every 2.4 s, a twentieth of the pacer
    audit_interval = 60.0
    depth_interval = "100ms"  # or "10ms"; never both for one book
    ping_interval = 17.0  # spec: PING every 15-20 s (the venue drops a connection idle for 60 s)
    pong_timeout = 10.0  # no PONG within this -> reconnect
    liveness_timeout = 25.0  # a PONG every ping_interval proves a quiet connection alive
    control_rate = 10.0  # client frames per second per connection (SUBSCRIPTION and PING)
    channels_per_subscribe = 5  # channels per SUBSCRIPTION frame (ack msg = channels joined by ",")
    ack_timeout = 5.0  # a channel with neither an ack nor data by then is subscribed again
    ack_timeout_cap = 60.0  # ... waiting twice as long each time, up to this
    validate_at_start = True  # check the symbol map against /api/v3/exchangeInfo

    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        super().__init__(config, metrics=metrics)
        if self.depth_interval not in INTERVALS:
            raise ValueError(f"venues.{config.name}.options.depth_interval must be one of {INTERVALS}")
        if self.max_symbols_per_connection > VENUE_SUBSCRIPTION_LIMIT:
            log.warning("%s: max_symbols_per_connection=%s exceeds MEXC's %s subscriptions per "
                        "connection; the excess will be left unsubscribed", self.venue,
                        self.max_symbols_per_connection, VENUE_SUBSCRIPTION_LIMIT)
        self.snapshot_limit = max(1, min(MAX_DEPTH, int(config.depth or DEFAULT_DEPTH)))
        if self.bbo_check:  # two channels a symbol (depth and book ticker) under the same 30 a connection
            self.max_symbols_per_connection = min(int(self.max_symbols_per_connection),
                                                  (VENUE_SUBSCRIPTION_LIMIT - 5) // 2)
        if self.liveness_timeout <= self.ping_interval:
            raise ValueError(f"venues.{config.name}.options.liveness_timeout ({self.liveness_timeout}) "
                             f"must exceed ping_interval ({self.ping_interval}): a quiet book's PONGs")
        self.pong_timeouts = 0
        self.unrecognised_replies = 0  # control replies that were neither PONG, an ack nor a rejection
        self.resubscribes = 0  # SUBSCRIPTIONs sent again for channels neither acknowledged nor served

    def status(self) -> dict:
        out = super().status()
        out.update(pong_timeouts=self.pong_timeouts, unrecognised_replies=self.unrecognised_replies,
                   resubscribes=self.resubscribes)
        return out

    @classmethod
    def depth_problem(cls, depth: int) -> str | None:
        """``GET /api/v3/depth`` takes ``limit`` up to 5000 (the docs' largest)."""
        return None if 1 <= depth <= MAX_DEPTH else f"{depth} is not a MEXC snapshot limit (1..{MAX_DEPTH})"

    # ------------------------------------------------------------------ venue hooks
    def rule_for(self, canonical: str) -> SequenceRule:
        return MEXC

    def channel_for(self, venue_symbol: str) -> str:
        return f"{DEPTH_CHANNEL}@{self.depth_interval}@{venue_symbol}"

    def ticker_channel_for(self, venue_symbol: str) -> str:
        return f"{TICKER_CHANNEL}@{self.depth_interval}@{venue_symbol}"

    def new_connection_state(self) -> MexcConnState:
        return MexcConnState(RequestPacer(self.control_rate, 1.0))

    def connection_tasks(self, conn: Connection[MexcConnState]) -> list[Coroutine[Any, Any, Any]]:
        return [self._heartbeat(conn)]

    async def subscribe(self, conn: Connection[MexcConnState]) -> None:
        """Queue the SUBSCRIPTION frames; replies are checked as they arrive, while the socket is read."""
        state = conn.venue_state
        for canonical in conn.symbols:
            if conn.syncs[canonical].state is SyncState.INVALID:
                continue  # refused: not asked for again until its listing re-check says so
            self._route(conn, canonical)
        if not state.by_channel:
            await self._park(conn)
        conn.spawn(self._subscribe_paced(conn, list(state.by_channel)), name=f"{self.venue}-subscribe")

    def _route(self, conn: Connection[MexcConnState], canonical: str) -> str:
        """Route the symbol's pushes on this connection; returns its channel."""
        state = conn.venue_state
        venue_symbol = self.config.symbols[canonical]
        channel = self.channel_for(venue_symbol)
        state.by_venue[venue_symbol] = canonical
        state.by_channel[channel] = canonical
        if self.bbo_check:
            state.by_channel[self.ticker_channel_for(venue_symbol)] = canonical
        return channel

    def resume_symbol(self, conn: Connection[MexcConnState], canonical: str) -> None:
        """Listed again: a snapshot if the channel is still subscribed, else subscribe it again.

        A connection parked with no valid symbol is ended instead, so it reconnects and subscribes.
        """
        if conn.state == "idle":
            self._abort(conn, f"{canonical} is listed again")
            return
        if not conn.open:
            return
        channel = self._route(conn, canonical)
        state = conn.venue_state
        missing = [c for c, s in state.by_channel.items() if s == canonical and c not in state.subscribed]
        if channel in state.subscribed:
            self.request_snapshot(conn, canonical)
        if missing:
            conn.spawn(self._subscribe_paced(conn, missing), name=f"{self.venue}-resubscribe")

    async def symbol_listed(self, canonical: str) -> bool | None:
        """``exchangeInfo?symbol=``: listed unless ``-1121`` or status 3 (offline)."""
        venue_symbol = self.config.symbols[canonical]
        status, _, body = await self.get_json(f"{self.config.rest_url}/api/v3/exchangeInfo",
                                              {"symbol": venue_symbol})
        if status == 200 and isinstance(body, dict) and isinstance(body.get("symbols"), list):
            info = next((s for s in body["symbols"]
                         if isinstance(s, dict) and s.get("symbol") == venue_symbol), None)
            return info is not None and str(info.get("status", "1")) != "3"
        if isinstance(body, dict) and body.get("code") == INVALID_SYMBOL_CODE:
            return False
        return None

    async def handle(self, conn: Connection[MexcConnState], msg: aiohttp.WSMessage) -> None:
        """Binary = protobuf data, text = JSON control: by opcode, as the two decoders must never mix."""
        kind = msg.type
        if kind is _BINARY:
            self._on_push(conn, msg.data)
        elif kind is _TEXT:
            self._on_control(conn, msg.data)

    async def fetch_snapshot(self, conn: Connection[MexcConnState], canonical: str) -> Snapshot:
        """``GET /api/v3/depth``; 429/418 raise RateLimited (in ``get_json``), -1121 InvalidSymbol."""
        venue_symbol = self.config.symbols[canonical]
        status, _, body = await self.get_json(f"{self.config.rest_url}/api/v3/depth",
                                              {"symbol": venue_symbol, "limit": str(self.snapshot_limit)})
        if status != 200:
            code = body.get("code") if isinstance(body, dict) else None
            if code == INVALID_SYMBOL_CODE:
                raise InvalidSymbol(f"MEXC {code} for {venue_symbol}: {body.get('msg')}")
            raise SnapshotError(f"HTTP {status}: {str(body)[:200]}")
        return parse_depth(body, self.snapshot_limit)

    async def validate_symbols(self) -> dict[str, str]:
        if not self.validate_at_start:
            return {}
        status, _, body = await self.get_json(f"{self.config.rest_url}/api/v3/exchangeInfo")
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
            raise SnapshotError(f"exchangeInfo: HTTP {status}: {str(body)[:200]}")
        listed = {s["symbol"]: s for s in body["symbols"] if isinstance(s, dict) and "symbol" in s}
        bad: dict[str, str] = {}
        for canonical, venue_symbol in self.config.symbols.items():
            info = listed.get(venue_symbol)
            if info is None:
                bad[canonical] = f"{venue_symbol} is not listed by MEXC exchangeInfo"
                continue
            status_code = str(info.get("status", "1"))
            if status_code == "3":
                bad[canonical] = f"{venue_symbol} is offline (status 3)"
                continue
            if status_code != "1":
                log.warning("%s: %s has status %s (not online)", self.venue, venue_symbol, status_code)
            self._learn_steps(canonical, info)
        return bad

    # ------------------------------------------------------------------ data frames
    def _on_push(self, conn: Connection[MexcConnState], data: bytes) -> None:
        try:
            wrapper = _PARSE_PUSH(data)
        except DecodeError as exc:
            raise FrameError(f"undecodable protobuf push ({len(data)} bytes): {exc}") from exc
        member = wrapper.WhichOneof("body")
        if member != DEPTH_MEMBER and member != TICKER_MEMBER:
            return  # other channels, oneof members this schema does not declare, or none
        venue_symbol = wrapper.symbol if wrapper.HasField("symbol") else wrapper.channel.rpartition("@")[2]
        state = conn.venue_state
        canonical = state.by_venue.get(venue_symbol)
        if canonical is None:
            log.debug("%s: push for unsubscribed symbol %r ignored", self.venue, venue_symbol)
            return
        if state.batches:  # data on a channel acknowledges it, whatever its reply looked like
            ticker = member == TICKER_MEMBER
            self._served(state, (self.ticker_channel_for if ticker else self.channel_for)(venue_symbol))
        if member == TICKER_MEMBER:
            ticker = wrapper.publicAggreBookTicker
            self.deliver_bbo(conn, canonical, Bbo(
                (ticker.bidPrice, ticker.bidQuantity) if ticker.bidPrice else None,
                (ticker.askPrice, ticker.askQuantity) if ticker.askPrice else None,
            ))
            return
        body = wrapper.publicAggreDepths
        try:
            first = int(body.fromVersion)
            last = int(body.toVersion)
        except ValueError as exc:
            span = f"{body.fromVersion!r}..{body.toVersion!r}"
            raise FrameError(f"{venue_symbol}: bad versions {span}") from exc
        if last < first:
            raise FrameError(f"{venue_symbol}: toVersion {last} < fromVersion {first}")
        event_time = wrapper.sendTime / 1000 if wrapper.HasField("sendTime") else None
        self.deliver(conn, canonical, Delta(
            first, last, None,
            [(level.price, level.quantity) for level in body.bids],
            [(level.price, level.quantity) for level in body.asks],
            event_time,
        ))

    # ------------------------------------------------------------------ control frames
    def _on_control(self, conn: Connection[MexcConnState], text: str) -> None:
        try:
            msg = _CONTROL_REPLY.decode(text).msg
        except msgspec.DecodeError as exc:  # not JSON, or no ``msg`` text: nothing this feed asked for
            log.warning("%s: unexpected control frame ignored (%s): %r", self.venue, exc, text[:200])
            return
        state = conn.venue_state
        if msg == PONG:
            state.pongs += 1
            state.pong.set()
            return
        if not msg:  # an ack of nothing: the oldest unanswered batch was dropped whole (over the limit)
            batch = next((b for b in state.batches if not b.replied), None)
            if batch is not None:
                batch.replied = True
                self._drop_unacknowledged(conn, batch)
            return
        channels = set(msg.split(","))
        batch = next((b for b in state.batches if channels <= set(b.channels)), None)
        if batch is not None:  # success: msg is (a subset of) the requested channel set
            batch.replied = True
            batch.pending -= channels
            state.subscribed |= channels
            self._drop_unacknowledged(conn, batch)
            self._snapshots_on_ack(conn, channels)
            return
        match = _BRACKETS.search(msg)
        rejected = set(match.group(1).split(",")) if match else set()
        hit = False
        for batch in state.batches:
            named = batch.pending & rejected
            if named:
                hit = batch.replied = True
                batch.pending -= named
                for channel in sorted(named):
                    self._invalidate(conn, state.by_channel[channel], f"subscription rejected: {msg.strip()}")
        state.batches = [b for b in state.batches if b.pending]
        if not hit:
            self.unrecognised_replies += 1
            log.warning("%s: unrecognised control reply on connection %s (counted; data on a channel "
                        "acknowledges it): %r", self.venue, conn.id, msg)

    def _snapshots_on_ack(self, conn: Connection[MexcConnState], channels: set[str]) -> None:
        """Ask for the snapshots of the books whose depth channel the venue just acknowledged.

        Why not wait for the first diff, as the documented procedure reads: the pacer lets a cold
        start's snapshots out at the venue's budget from a full bucket, and every second spent
        waiting for first diffs (up to a second per symbol on a quiet market) is a second of that
        budget gone; the cold start ended about a second past its bound.  Asking once the venue has
        the subscription is as safe: every change after the acknowledgement reaches the stream, so a
        snapshot taken after it is never older than the first diff (``L >= F - 1``); a diff the
        snapshot already holds is dropped, and a snapshot that does not reach the first diff is
        discarded and asked again (``stale_snapshot``), exactly as when asked after a diff.
        """
        syncs = conn.syncs
        by_channel = conn.venue_state.by_channel
        for channel in channels:
            canonical = by_channel.get(channel)
            if canonical is None or channel != self.channel_for(self.config.symbols[canonical]):
                continue  # a book ticker
            sync = syncs.get(canonical)
            if sync is not None and sync.wants_snapshot(allow_empty_buffer=True):
                self.request_snapshot(conn, canonical)

    def _served(self, state: MexcConnState, channel: str) -> None:
        """Data arrived on ``channel``: whatever its acknowledgement looked like, it is subscribed."""
        state.subscribed.add(channel)
        for batch in state.batches:
            batch.pending.discard(channel)
        state.batches = [b for b in state.batches if b.pending]

    def _drop_unacknowledged(self, conn: Connection[MexcConnState], batch: _Batch) -> None:
        """The venue answered the batch without these channels: over its limit, never served."""
        state = conn.venue_state
        for channel in sorted(batch.pending):
            self._invalidate(conn, state.by_channel[channel],
                             "subscription not acknowledged (over the venue's per-connection limit?)")
        batch.pending.clear()
        state.batches = [b for b in state.batches if b.pending]

    def _invalidate(self, conn: Connection[MexcConnState], canonical: str, why: str) -> None:
        """The venue refused the channel: invalid until the shared listing re-check resumes it."""
        self.listing.refused(canonical, why)
        if conn.open and all(s.state is SyncState.INVALID for s in conn.syncs.values()):
            self._abort(conn, "no valid symbol left")  # the next attempt parks instead of subscribing

    # ------------------------------------------------------------------ connection tasks
    async def _subscribe_paced(self, conn: Connection[MexcConnState], channels: list[str]) -> None:
        """Send SUBSCRIPTION frames at the control rate, then watch for their replies."""
        state = conn.venue_state
        size = max(1, int(self.channels_per_subscribe))
        for i in range(0, len(channels), size):
            names = channels[i:i + size]
            batch = _Batch(names, set(names), wait=float(self.ack_timeout))
            state.batches.append(batch)  # before sending: the reply may come back at once
            if not await self._send(conn, {"method": "SUBSCRIPTION", "params": names}):
                return
            batch.sent_at = time.monotonic()
        while state.batches and conn.open:
            await asyncio.sleep(min(0.1, self.ack_timeout / 5))
            now = time.monotonic()
            for batch in [b for b in state.batches if now - b.sent_at >= b.wait]:
                if batch.replied:
                    self._drop_unacknowledged(conn, batch)
                    continue
                # no reply we recognised and no data: ask again on this socket, never reconnect for it
                again = sorted(batch.pending)
                self.resubscribes += 1
                log.warning("%s: neither an acknowledgement nor data for %s within %.1fs on connection %s; "
                            "subscribing again", self.venue, again, batch.wait, conn.id)
                batch.wait = min(batch.wait * 2, float(self.ack_timeout_cap))
                if not await self._send(conn, {"method": "SUBSCRIPTION", "params": again}):
                    return
                batch.sent_at = time.monotonic()

    async def _heartbeat(self, conn: Connection[MexcConnState]) -> None:
        """PING so the venue keeps the connection; a missing PONG means the connection is dead."""
        state = conn.venue_state
        while True:
            await asyncio.sleep(self.ping_interval)
            state.pong.clear()
            if not await self._send(conn, {"method": "PING"}):
                return
            try:
                await asyncio.wait_for(state.pong.wait(), self.pong_timeout)
            except TimeoutError:
                self.pong_timeouts += 1
                self._abort(conn, f"no PONG within {self.pong_timeout}s")
                return

    async def _send(self, conn: Connection[MexcConnState], command: dict) -> bool:
        state = conn.venue_state
        await state.pacer.acquire()
        ws = conn.ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_str(orjson.dumps(command).decode())
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("%s: send on connection %s failed: %s", self.venue, conn.id, exc)
            return False
        return True

    def _abort(self, conn: Connection[MexcConnState], why: str) -> None:
        """End the connection from one of its own tasks; the supervisor reconnects."""
        log.warning("%s: connection %s: %s; reconnecting", self.venue, conn.id, why)
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()

    async def _park(self, conn: Connection[MexcConnState]) -> None:
        """Every symbol of this connection is invalid: hold no socket, and do not reconnect in a loop.

        The listing re-check ends the parked connection (``resume_symbol``) once a symbol is listed.
        """
        log.error("%s: connection %s has no valid symbol left; idle until one is listed again", self.venue,
                  conn.id)
        for task in list(conn.tasks):
            task.cancel()
        conn.state = "idle"
        if conn.ws is not None:
            with contextlib.suppress(Exception):
                await conn.ws.close()
        await asyncio.Future()  # until the feed stops (which cancels this task)

    # ------------------------------------------------------------------ helpers
    def _learn_steps(self, canonical: str, info: dict) -> None:
        """Price and size steps from exchangeInfo (``quotePrecision`` decimals, ``baseSizePrecision``)."""
        try:
            precision = info.get("quotePrecision")
            if isinstance(precision, int) and not isinstance(precision, bool):
                self.tick_sizes[canonical] = Decimal(1).scaleb(-precision)
            lot = Decimal(str(info.get("baseSizePrecision", "0")))
            if lot > 0:
                self.lot_sizes[canonical] = lot
        except (InvalidOperation, ValueError):
            log.warning("%s: %s: unreadable precision in exchangeInfo", self.venue, canonical)


def parse_depth(body: object, limit: int | None = None) -> Snapshot:
    """``GET /api/v3/depth`` -> Snapshot, checked against :class:`DepthSnapshot`; ``limit`` is the
    ``limit`` asked for (a side that came back this deep is complete only to its worst price)."""
    try:
        depth = msgspec.convert(body, DepthSnapshot)
        last = int(depth.lastUpdateId)
    except (msgspec.ValidationError, ValueError) as exc:
        raise SnapshotError(f"depth: {exc}: {str(body)[:200]}") from exc
    return Snapshot(last, depth.bids, depth.asks,
                    depth.timestamp / 1000 if depth.timestamp is not None else None, depth=limit)


VENUES = (
    VenueSpec(
        kind="mexc",
        title="MEXC spot",
        feed=MexcFeed,
        rest_url="https://api.mexc.com",
        ws_url="wss://wbs-api.mexc.com/ws",
        rules=(MEXC,),
        simulator="aggbook.simulator.mexc:MexcVenue",
        demo_fee_bps=Decimal("5"),
    ),
)
