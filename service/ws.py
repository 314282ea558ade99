"""The ``/v1/ws`` WebSocket: subscriptions to quotes and merged books, with per-client conflation.

Protocol (see ``docs/api.md`` for the full description):

* client ops: ``subscribe`` (``quotes`` for ``symbols``, or ``book`` for one
  ``symbol`` at ``depth``), ``unsubscribe``, ``ping``;
* server messages: ``ack``, ``snapshot``, ``update``, ``status``, ``pong``,
  ``heartbeat``, ``error``.  ``snapshot`` and ``update`` carry the subscription's
  ``seq``, which increases by exactly one per message of that subscription.

Why it is built this way:

* Changes are coalesced at the source: venue updates only mark a symbol dirty and
  one flush per event-loop iteration (or per ``publish_interval``) computes each
  distinct payload once, serialises it once and hands the same bytes to every
  subscriber.  Payloads come from the service's render cache (``service/renders.py``),
  so a new subscriber's snapshot and an HTTP request for the same thing reuse them
  until the symbol changes again.  Every update carries the full state of the
  subscription (the quote, or the top ``depth`` ladder), so a client never applies
  diffs and never has to repair a missed one.
* Each client has a bounded queue drained by its own writer task, so a slow
  client never blocks the feeds or anyone else.  When the queue is full, the
  subscription being updated is conflated: its queued updates are dropped and one
  marker takes their place, which becomes a fresh ``snapshot`` (reason
  ``conflated``) rendered from the latest state when the writer reaches it.  The
  ``seq`` stays gap-free from the client's point of view; the ``snapshot`` tells
  it intermediate states were skipped.
* A client that has had more than ``max_behind`` updates dropped without its
  queue ever draining, whose queue passes a hard cap, or whose socket accepts
  nothing for ``stall_timeout`` seconds is closed with code **4008** (slow
  consumer).  Memory per client is therefore bounded by the queue limits plus the
  socket's write buffer.
* Render cost is shared fairly.  Distinct subscriptions are capped across all clients
  (``max_distinct_subscriptions``: identical ones share one render, so only distinct
  ones cost), and book subscriptions deeper than ``heavy_depth`` are *heavy*: updated
  at most every ``heavy_interval`` (changes in between are conflated into one update
  carrying the latest state) and rendered at most ``render_budget`` seconds per
  event-loop iteration, the rest waiting for the next one.  Quotes and shallow books
  always go out in the iteration of the change, so ten clients with a hundred deep
  books each cannot delay anyone's quotes by more than one render budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from typing import Any, cast

import orjson
from aiohttp import WSMsgType, web

from aggbook.book.sync import Transition
from aggbook.service.aggregator import Aggregator, SymbolChange
from aggbook.service.config import WebSocketSettings
from aggbook.service.metrics import ServiceMetrics
from aggbook.service.renders import RenderCache
from aggbook.service.source import Payloads, Source
from aggbook.service.tasks import cancel_and_wait

log = logging.getLogger("aggbook.ws")

CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TIMEOUT = 5.0
CLIENT_CLOSED_REQUEST = 499  # the HTTP status a client that left before its answer is counted under

# queue item kinds
_SUB = 0  # a rendered snapshot/update of a subscription: (kind, sub, bytes)
_MARK = 1  # conflation marker: render a fresh snapshot of ``sub`` when sent
_STATUS = 2  # venue status, replaceable by a newer one for the same (venue, symbol)
_PLAIN = 3  # ack, error, pong, heartbeat


class Subscription:
    __slots__ = (
        "key",
        "client",
        "channel",
        "symbol",
        "depth",
        "venues",
        "fees",
        "seq",
        "pending_snapshot",
        "last",
        "render_key",
        "heads",
    )

    def __init__(
        self,
        key: str,
        client: Client,
        channel: str,
        symbol: str,
        *,
        depth: int = 0,
        venues: tuple[str, ...] | None = None,
        fees: bool = False,
    ) -> None:
        self.key = key
        self.client = client
        self.channel = channel
        self.symbol = symbol
        self.depth = depth
        self.venues = venues
        self.fees = fees
        self.seq = 0  # seq of the last message of this subscription queued or sent
        self.pending_snapshot = False  # a conflation marker is queued
        self.last: bytes | None = None  # payload of the last message queued, to skip repeats
        # subscriptions with the same render key receive the same payload bytes
        self.render_key: tuple = (channel, symbol, depth, venues, fees)
        # each message's JSON up to its seq, by type: the part that is this subscription's own
        self.heads = {kind: _head(kind, key, channel, symbol) for kind in ("snapshot", "update")}

    def describe(self) -> dict:
        out: dict[str, Any] = {"sub": self.key, "channel": self.channel, "symbol": self.symbol}
        if self.channel == "book":
            out["depth"] = self.depth
            if self.venues is not None:
                out["venues"] = list(self.venues)
        else:
            out["fees"] = self.fees
        return out


def _render_key(spec: dict) -> tuple:
    """The :attr:`Subscription.render_key` of a parsed subscribe request."""
    return (spec["channel"], spec["symbol"], spec.get("depth", 0), spec.get("venues"),
            spec.get("fees", False))


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _head(kind: str, key: str, channel: str, symbol: str) -> bytes:
    """``{"type":kind,"sub":key,"channel":channel,"symbol":symbol,"seq":`` as orjson writes it."""
    return b"".join(
        (b'{"type":', orjson.dumps(kind), b',"sub":', orjson.dumps(key), b',"channel":',
         orjson.dumps(channel), b',"symbol":', orjson.dumps(symbol), b',"seq":')
    )


def frame_tail(source: Source, symbol: str, payload: bytes, reason: str | None = None) -> bytes:
    """A snapshot's or update's JSON after its ``seq``: the same bytes for every subscriber of the
    same payload, so a change fanned out to many subscribers is serialised once, not once each.

    ``ts`` is when the tail was made; ``event_ts`` and ``recv_ts`` the latest venue event folded
    into this state and when the service applied it (docs/api.md)."""
    parts = [b',"ts":', orjson.dumps(round(time.time(), 6))]
    times = source.event_times.get(symbol)
    if times is not None:
        event_ts, recv_ts = times
        if event_ts is not None:
            parts += (b',"event_ts":', orjson.dumps(round(event_ts, 6)))
        parts += (b',"recv_ts":', orjson.dumps(round(recv_ts, 6)))
    if reason is not None:
        parts += (b',"reason":', orjson.dumps(reason))
    parts += (b',"data":', payload, b"}")
    return b"".join(parts)


def _text_frame_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final, uncompressed text frame (a server's, no extensions)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def _frame(kind: str, sub: Subscription, tail: bytes) -> bytes:
    """The whole message: the subscription's head, its ``seq``, the shared tail.

    Byte for byte what ``orjson.dumps`` of the message object writes (the keys in the order
    type, sub, channel, symbol, seq, ts, event_ts, recv_ts, reason, data)."""
    return b"%b%d%b" % (sub.heads[kind], sub.seq, tail)


class Client:
    """One connected WebSocket: its subscriptions, bounded queue and writer task."""

    def __init__(
        self, ws: web.WebSocketResponse, hub: Hub, peer: str, transport: asyncio.Transport | None = None
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.hub = hub
        self.peer = peer
        self.settings = hub.settings
        self.subs: dict[str, Subscription] = {}
        self.queue: deque[list] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.closing = False
        self.behind = 0  # updates dropped since the queue was last empty
        self.total_conflations = 0
        self.max_queued = 0  # high-water mark of the queue length (observability, tests)
        self.max_queued_bytes = 0
        self.sent = 0
        self.dropped = 0
        self.sending_since: float | None = None
        self.close_code: int | None = None
        self.writer: asyncio.Task | None = None
        self._close_task: asyncio.Task | None = None  # held so the task is not garbage-collected
        limit = self.settings.queue_size
        self.hard_cap = 2 * limit + 2 * self.settings.max_subscriptions + 64
        # bytes the transport may hold unsent before frames go through the queue (its high-water mark)
        self.write_limit = transport.get_write_buffer_limits()[1] if transport is not None else 0
        # frames written at once during this event-loop iteration, sent together at its end (flush_out)
        self.out: list[bytes] = []
        self.out_bytes = 0

    # ------------------------------------------------------------------ queueing
    def _push(self, item: list) -> None:
        self.queue.append(item)
        if item[2] is not None:
            self.queued_bytes += len(item[2])
        n = len(self.queue)
        if n > self.max_queued:
            self.max_queued = n
        if self.queued_bytes > self.max_queued_bytes:
            self.max_queued_bytes = self.queued_bytes
        self.wakeup.set()
        if n > self.hard_cap:
            self.close_slow(f"queue passed {self.hard_cap} messages")

    @property
    def full(self) -> bool:
        return len(self.queue) >= self.settings.queue_size or self.queued_bytes >= self.settings.queue_bytes

    def send_plain(self, obj: dict) -> None:
        if not self.closing:
            self._push([_PLAIN, None, orjson.dumps(obj)])

    def send_error(self, code: str, message: str, req_id: Any = None) -> None:
        err: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if req_id is not None:
            err["id"] = req_id
        self.send_plain(err)

    def send_status(self, key: tuple[str, str], payload: bytes) -> None:
        if self.closing:
            return
        if self.full:
            # The newest state of a venue makes an older one worthless: overwrite the newest queued
            # status of that venue, so the last status a client reads is always the current state.
            for item in reversed(self.queue):
                if item[0] == _STATUS and item[1] == key:
                    self.queued_bytes += len(payload) - len(item[2])
                    item[2] = payload
                    self._drop(1)
                    return
        self._push([_STATUS, key, payload])

    def send_heartbeat(self, payload: bytes) -> None:
        if self.closing:
            return
        for item in self.queue:
            if item[0] == _PLAIN and item[1] == "heartbeat":
                self.queued_bytes += len(payload) - len(item[2])
                item[2] = payload
                return
        self._push([_PLAIN, "heartbeat", payload])

    def send_sub(
        self,
        sub: Subscription,
        payload: bytes,
        kind: str = "update",
        reason: str | None = None,
        tail: bytes | None = None,
    ) -> None:
        """Queue a snapshot or update of ``sub`` carrying ``payload`` (the data object's JSON).

        ``tail`` is :func:`frame_tail` of ``payload`` (and ``reason``) when the caller has made it
        once for every subscriber of the payload; made here otherwise."""
        if self.closing or sub.key not in self.subs:
            return
        if kind == "update" and payload == sub.last:
            return
        if sub.pending_snapshot:  # the queued marker will render the latest state anyway
            sub.last = payload
            self._drop(1)
            return
        if self.full:
            sub.last = payload
            self._conflate(sub)
            return
        sub.seq += 1
        sub.last = payload
        if tail is None:
            tail = frame_tail(self.hub.aggregator, sub.symbol, payload, reason)
        frame = _frame(kind, sub, tail)
        if self.queue or not self._write_now(frame):
            self._push([_SUB, sub, frame])

    def _write_now(self, data: bytes) -> bool:
        """Write ``data`` at once, as the writer task would, when nothing can be ahead of it: the
        queue is empty, the writer is not in a send, the socket is open and the transport's buffer
        (with what this iteration wrote) is below its high-water mark (the client keeps up).
        Otherwise it is queued.

        A change fanned out to many clients then costs each client no queue entry, task wake-up or
        send of its own: the frame joins the client's :attr:`out`, and at the end of the event-loop
        iteration every client's frames of the iteration go to its transport in one write (one
        ``send`` system call, which was most of a gateway's time when each frame had its own).  A
        client that does not keep up fills its transport to the mark and goes through the bounded
        queue, with its conflation and stall detection, as before."""
        transport = self.transport
        if (
            transport is None
            or self.sending_since is not None
            or self.ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size() + self.out_bytes >= self.write_limit
        ):
            return False
        frame = _text_frame_header(len(data)) + data
        if not self.out:
            self.hub.flush_later(self)
        self.out.append(frame)
        self.out_bytes += len(frame)
        self.sent += 1
        self.hub.count_sent()
        return True

    def flush_out(self) -> None:
        """Hand the frames written at once in this iteration to the transport, in one write.

        Called by the hub at the end of the iteration, and by everything else that writes to the
        socket (the writer task, the close) before it does, so that frames keep their order."""
        out = self.out
        if not out:
            return
        self.out = []
        self.out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.behind += n
        self.hub.metrics.ws.messages_dropped(n)
        if self.behind > self.settings.max_behind:
            self.close_slow(f"{self.behind} updates dropped without catching up")

    def _conflate(self, sub: Subscription) -> None:
        kept: deque[list] = deque()
        removed = 0
        for item in self.queue:
            if item[0] == _SUB and item[1] is sub:
                removed += 1
                self.queued_bytes -= len(item[2])
            else:
                kept.append(item)
        self.queue = kept
        sub.seq -= removed  # the removed messages were the newest of this subscription: reuse their seqs
        sub.pending_snapshot = True
        self._drop(removed + 1)  # + the update that did not fit
        if self.closing:
            return
        self.total_conflations += 1
        self._push([_MARK, sub, None])

    def remove_sub(self, sub: Subscription) -> None:
        self.subs.pop(sub.key, None)
        kept: deque[list] = deque()
        for item in self.queue:
            if item[0] in (_SUB, _MARK) and item[1] is sub:
                if item[2] is not None:
                    self.queued_bytes -= len(item[2])
            else:
                kept.append(item)
        self.queue = kept

    # ------------------------------------------------------------------ writer
    async def run_writer(self) -> None:
        ws = self.ws
        metrics = self.hub.metrics
        unreported = 0  # messages sent and not yet counted in the metrics: counted once per batch
        try:
            while True:
                if not self.queue:
                    if unreported:
                        metrics.ws.messages_sent(unreported)
                        unreported = 0
                    self.behind = 0
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                item = self.queue.popleft()
                kind, ref, data = item
                if kind == _MARK:
                    sub = ref
                    sub.pending_snapshot = False
                    if sub.key not in self.subs:
                        continue
                    payload = self.hub.render(sub)
                    sub.seq += 1
                    sub.last = payload
                    data = _frame("snapshot", sub, frame_tail(self.hub.aggregator, sub.symbol, payload,
                                                              "conflated"))
                else:
                    self.queued_bytes -= len(data)
                if ws.closed:
                    return
                self.flush_out()  # frames written at once before this one was queued go first
                self.sending_since = time.monotonic()
                await ws.send_frame(data, WSMsgType.TEXT)
                self.sending_since = None
                self.sent += 1
                unreported += 1
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("ws writer for %s stopped: %s", self.peer, exc)
        finally:
            if unreported:
                metrics.ws.messages_sent(unreported)

    # ------------------------------------------------------------------ closing
    def close_slow(self, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        log.warning(
            "closing slow websocket client",
            extra={"peer": self.peer, "why": why, "code": CLOSE_SLOW_CONSUMER},
        )
        self._drop(sum(1 for item in self.queue if item[0] in (_SUB, _MARK)))
        self.queue.clear()
        self.queued_bytes = 0
        self._close_task = asyncio.get_running_loop().create_task(
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer")
        )

    async def close(self, code: int, message: str) -> None:
        if self.close_code is not None:
            return
        self.closing = True
        self.close_code = code
        self.flush_out()  # already counted as sent: they go before the close frame
        self.queue.clear()
        self.queued_bytes = 0
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        transport = self.transport
        if transport is not None:  # a peer that never reads must not pin its buffered bytes forever
            asyncio.get_running_loop().call_later(2 * CLOSE_TIMEOUT, transport.abort)
        try:
            # drain=False: the close frame joins the buffered bytes instead of waiting for a stuck reader
            await asyncio.wait_for(
                self.ws.close(code=code, message=message.encode(), drain=False), CLOSE_TIMEOUT
            )
        except (TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
            pass  # aiohttp has closed the transport; buffered bytes (the close frame too) still flush

    # ------------------------------------------------------------------ client requests
    def handle_text(self, text: str) -> None:
        req_id = None
        try:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError("bad_json", f"message is not valid JSON: {exc}") from None
            if not isinstance(msg, dict):
                raise ProtocolError("bad_request", "message must be a JSON object")
            req_id = msg.get("id")
            if isinstance(req_id, dict | list | bool):  # echoed back as given: a value, not a structure
                req_id = None
                raise ProtocolError("bad_request", "id must be a string or a number")
            op = msg.get("op")
            if op == "ping":
                self.send_plain({"type": "pong", "id": req_id, "ts": round(time.time(), 6)})
            elif op == "subscribe":
                self.hub.subscribe(self, msg, req_id)
            elif op == "unsubscribe":
                self.hub.unsubscribe(self, msg, req_id)
            else:
                raise ProtocolError(
                    "unknown_op", f"unknown op {op!r}; expected subscribe, unsubscribe or ping"
                )
        except ProtocolError as exc:
            self.send_error(exc.code, exc.message, req_id)
        except Exception:  # a bug must cost this one request, not the connection (or the process)
            log.exception("websocket request failed", extra={"peer": self.peer})
            self.send_error("internal", "internal error; the details are in the server log", req_id)


class Hub:
    """All WebSocket clients, the subscription index and the coalesced publisher."""

    def __init__(
        self,
        aggregator: Source,
        settings: WebSocketSettings,
        metrics: ServiceMetrics,
        *,
        default_depth: int = 10,
        max_depth: int = 1000,
        renders: Payloads | None = None,
    ) -> None:
        """``renders`` must already be subscribed to ``aggregator`` (made before this hub), so it has
        forgotten a symbol's old payloads when the hub renders for the change; without one the hub
        makes its own, subscribed first."""
        self.aggregator = aggregator
        self.renders = renders if renders is not None else RenderCache(cast(Aggregator, aggregator))
        self.settings = settings
        self.metrics = metrics
        self.default_depth = default_depth
        self.max_depth = max_depth
        self.clients: set[Client] = set()
        self.by_symbol: dict[str, set[Subscription]] = {s: set() for s in aggregator.consolidated}
        # changes held back by ``publish_interval`` (with the default 0 every change goes out at once:
        # the aggregator already delivers at most one change per symbol per event-loop iteration)
        self._held_tops: set[str] = set()
        self._held_books: set[str] = set()  # every symbol held
        self._held_depths: set[str] = set()  # ... whose merged book may have moved
        self._handle: asyncio.TimerHandle | None = None
        self._last_publish = 0.0
        # every subscription by what it renders: the service-wide count of distinct subscriptions,
        # and who gets a heavy payload once it is rendered
        self._by_key: dict[tuple, set[Subscription]] = {}
        # heavy (deep book) render keys waiting for their turn, oldest first, and when each may next go
        self._heavy_pending: dict[tuple, None] = {}
        self._heavy_next: dict[tuple, float] = {}
        self._heavy_handle: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self.flushes = 0
        self._unreported_sent = 0  # messages written at once and not yet counted (count_sent)
        self._to_flush: list[Client] = []  # clients with frames written at once in this iteration
        aggregator.subscribe(self)  # the one signal the hub hears: "this symbol changed"
        metrics.ws.bind(lambda: len(self.clients), lambda: sum(len(c.queue) for c in self.clients))

    def flush_later(self, client: Client) -> None:
        """``client`` has frames in its :attr:`Client.out`: write them at the end of this iteration."""
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._flush_clients)
        self._to_flush.append(client)

    def _flush_clients(self) -> None:
        clients, self._to_flush = self._to_flush, []
        for client in clients:
            client.flush_out()

    def count_sent(self) -> None:
        """One message written at once: counted in the metrics once per event-loop iteration,
        not once each (the counter takes a lock; a change may reach thousands of clients)."""
        if not self._unreported_sent:
            asyncio.get_running_loop().call_soon(self._report_sent)
        self._unreported_sent += 1

    def _report_sent(self) -> None:
        self.metrics.ws.messages_sent(self._unreported_sent)
        self._unreported_sent = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._heartbeats(), name="ws-heartbeat"))
        self._tasks.append(asyncio.create_task(self._watch_stalls(), name="ws-stalls"))

    async def close_all(self, code: int = CLOSE_GOING_AWAY, message: str = "server shutdown") -> None:
        await cancel_and_wait(self._tasks)
        await asyncio.gather(*(c.close(code, message) for c in list(self.clients)), return_exceptions=True)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._heavy_handle is not None:
            self._heavy_handle.cancel()
            self._heavy_handle = None

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            payload = orjson.dumps({"type": "heartbeat", "ts": round(time.time(), 6)})
            for client in list(self.clients):
                client.send_heartbeat(payload)

    async def _watch_stalls(self) -> None:
        limit = self.settings.stall_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            now = time.monotonic()
            for client in list(self.clients):
                since = client.sending_since
                if since is not None and now - since > limit:
                    client.close_slow(f"socket accepted nothing for {limit}s")

    # ------------------------------------------------------------------ connection handler
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.settings.heartbeat,
            max_msg_size=self.settings.max_message_size,
            compress=False,
            timeout=CLOSE_TIMEOUT,
        )
        try:
            await ws.prepare(request)
        except ConnectionError as exc:  # aiohttp's ClientConnectionResetError: the 101 found no one
            # a client that vanishes mid-handshake is an ordinary disconnect, not a service error
            self.metrics.ws.handshake_abandoned()
            log.info("websocket client left during the handshake",
                     extra={"peer": request.remote or "?", "error": str(exc)})
            # not the half-started socket: aiohttp would try to close it and fail loudly; this answer
            # is never delivered either, and counts as 499 (client closed request) in the HTTP metrics
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        client = Client(ws, self, request.remote or "?", request.transport)
        self.clients.add(client)
        client.writer = asyncio.create_task(client.run_writer(), name="ws-writer")
        log.info("websocket client connected", extra={"peer": client.peer, "clients": len(self.clients)})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    client.handle_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    client.send_error("bad_request", "binary frames are not supported; send JSON text")
                elif msg.type == WSMsgType.ERROR:
                    break
        except Exception:  # after the upgrade no HTTP error page can be sent: close the socket properly
            log.exception("websocket session failed", extra={"peer": client.peer})
            await client.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.clients.discard(client)
            for sub in list(client.subs.values()):
                self._unindex(sub)
            if client.writer is not None and not client.closing:
                client.writer.cancel()
            log.info(
                "websocket client disconnected",
                extra={
                    "peer": client.peer,
                    # the code we sent when we closed (4008, 1001), else the peer's; aiohttp's own
                    # close_code is the code the peer echoed back, which would hide a 4008
                    "code": client.close_code if client.close_code is not None else ws.close_code,
                    "sent": client.sent,
                    "dropped": client.dropped,
                },
            )
        return ws

    # ------------------------------------------------------------------ subscribe / unsubscribe
    def _symbol(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise ProtocolError("bad_request", f'{field} must be a symbol string like "BTC-USDT"')
        symbol = value.upper()
        if symbol not in self.aggregator.consolidated:
            raise ProtocolError(
                "unknown_symbol",
                f"unknown symbol {value!r}; known: {', '.join(self.aggregator.consolidated)}",
            )
        return symbol

    def _parse(self, msg: dict) -> list[tuple[str, dict]]:
        """(key, spec) of every subscription a subscribe/unsubscribe message names."""
        channel = msg.get("channel")
        if channel == "quotes":
            symbols = msg.get("symbols", [msg["symbol"]] if "symbol" in msg else None)
            if not isinstance(symbols, list) or not symbols:
                raise ProtocolError("bad_request", 'quotes needs "symbols": a non-empty list of symbols')
            fees = msg.get("fees", False)
            if not isinstance(fees, bool):
                raise ProtocolError("bad_request", "fees must be true or false")
            out = []
            for s in symbols:
                symbol = self._symbol(s, "symbols[]")
                key = f"quotes:{symbol}" + (":fees" if fees else "")
                out.append((key, {"channel": "quotes", "symbol": symbol, "fees": fees}))
            return out
        if channel == "book":
            symbol = self._symbol(msg.get("symbol"), "symbol")
            depth = msg.get("depth", self.default_depth)
            if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= self.max_depth:
                raise ProtocolError("bad_request", f"depth must be an integer from 1 to {self.max_depth}")
            venues = msg.get("venues")
            if venues is not None and not self.renders.venue_filters:
                raise ProtocolError("bad_request", "venues is not served here: this source has the merged "
                                    "book of all venues only (ask the shard that owns the symbol)")
            if venues is not None:
                known = self.aggregator.venues_for(symbol)
                if not isinstance(venues, list) or not venues or not all(isinstance(v, str) for v in venues):
                    raise ProtocolError("bad_request", "venues must be a non-empty list of venue names")
                unknown = [v for v in venues if v not in known]
                if unknown:
                    raise ProtocolError(
                        "unknown_venue",
                        f"unknown venue(s) for {symbol}: {', '.join(unknown)}; known: {', '.join(known)}",
                    )
                venues = tuple(sorted(set(venues)))
            key = f"book:{symbol}:{depth}" + (f":{','.join(venues)}" if venues else "")
            return [(key, {"channel": "book", "symbol": symbol, "depth": depth, "venues": venues})]
        raise ProtocolError("unknown_channel", f"unknown channel {channel!r}; expected quotes or book")

    def subscribe(self, client: Client, msg: dict, req_id: Any) -> None:
        wanted = self._parse(msg)
        new = [(k, spec) for k, spec in dict(wanted).items() if k not in client.subs]
        if len(client.subs) + len(new) > self.settings.max_subscriptions:
            self.metrics.ws.subscription_refused("per_connection")
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.max_subscriptions} subscriptions per connection "
                f"(have {len(client.subs)}, asked for {len(new)} more)",
            )
        distinct = {_render_key(spec) for _, spec in new} - self._by_key.keys()
        if len(self._by_key) + len(distinct) > self.settings.max_distinct_subscriptions:
            self.metrics.ws.subscription_refused("service")
            raise ProtocolError(
                "too_many_subscriptions",
                f"the service serves at most {self.settings.max_distinct_subscriptions} distinct "
                f"subscriptions across all clients; subscribe to one that is already served "
                f"(same channel, symbol, depth, venues, fees) or try again later",
            )
        created = []
        for key, spec in new:
            sub = Subscription(
                key,
                client,
                spec["channel"],
                spec["symbol"],
                depth=spec.get("depth", 0),
                venues=spec.get("venues"),
                fees=spec.get("fees", False),
            )
            client.subs[key] = sub
            self.by_symbol.setdefault(sub.symbol, set()).add(sub)  # a gateway learns symbols as it runs
            self._by_key.setdefault(sub.render_key, set()).add(sub)
            created.append(sub)
        ack: dict[str, Any] = {
            "type": "ack",
            "op": "subscribe",
            "subs": [client.subs[k].describe() for k, _ in dict(wanted).items()],
        }
        if req_id is not None:
            ack["id"] = req_id
        client.send_plain(ack)
        for sub in created:
            client.send_sub(sub, self.render(sub), kind="snapshot", reason="subscribe")

    def unsubscribe(self, client: Client, msg: dict, req_id: Any) -> None:
        if "subs" in msg:
            keys = msg["subs"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ProtocolError("bad_request", "subs must be a list of subscription ids")
        else:
            keys = [k for k, _ in self._parse(msg)]
        keys = list(dict.fromkeys(keys))  # a name given twice ("BTC-USDT", "btc-usdt") is one subscription
        missing = [k for k in keys if k not in client.subs]
        if missing or not keys:
            raise ProtocolError(
                "not_subscribed", f"not subscribed: {', '.join(missing) or '(nothing named)'}"
            )
        for key in keys:
            sub = client.subs[key]
            client.remove_sub(sub)
            self._unindex(sub)
        ack: dict[str, Any] = {"type": "ack", "op": "unsubscribe", "subs": keys}
        if req_id is not None:
            ack["id"] = req_id
        client.send_plain(ack)

    def _unindex(self, sub: Subscription) -> None:
        self.by_symbol.get(sub.symbol, set()).discard(sub)
        key = sub.render_key
        same = self._by_key.get(key)
        if same is not None:
            same.discard(sub)
            if not same:
                del self._by_key[key]
                self._heavy_pending.pop(key, None)
                self._heavy_next.pop(key, None)

    def is_heavy(self, sub: Subscription) -> bool:
        return sub.channel == "book" and sub.depth > self.settings.heavy_depth

    # ------------------------------------------------------------------ rendering
    def render(self, sub: Subscription) -> bytes:
        """The subscription's payload now, from the render cache (rendered there at most once per change)."""
        if sub.channel == "quotes":
            return self.renders.quote_stream(sub.symbol, sub.fees)
        return self.renders.ladder(sub.symbol, sub.depth, sub.venues)

    # ------------------------------------------------------------------ the aggregator's one signal
    def on_symbol_changed(self, change: SymbolChange) -> None:
        """A symbol's top, depth or venue states moved: status messages now, updates now or when due."""
        symbol = change.symbol
        subs = self.by_symbol.get(symbol)
        if not subs:
            return
        for venue, transition in change.transitions:
            if transition.old is not transition.new:
                self._send_status(venue, symbol, transition, subs)
        if not (change.top or change.depth):
            return  # only venue states: the status messages above are all there is to send
        interval = self.settings.publish_interval
        if interval <= 0:
            self._publish(symbol, change.top, subs, change.depth)
            return
        if change.top:
            self._held_tops.add(symbol)
        if change.depth:
            self._held_depths.add(symbol)
        self._held_books.add(symbol)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last_publish + interval - loop.time())
            self._handle = loop.call_later(delay, self._publish_held)

    def resnapshot(self, symbol: str, reason: str = "conflated") -> None:
        """The source may have skipped states of ``symbol`` (it lost messages or restarted): every
        subscription of it gets a fresh snapshot, so no client mistakes the jump for one update."""
        for sub in list(self.by_symbol.get(symbol, ())):
            sub.client.send_sub(sub, self.render(sub), kind="snapshot", reason=reason)

    def _send_status(self, venue: str, symbol: str, transition: Transition, subs: set[Subscription]) -> None:
        payload = orjson.dumps(
            {
                "type": "status",
                "venue": venue,
                "symbol": symbol,
                "state": transition.new.value,
                "previous": transition.old.value,
                "reason": transition.reason.value,
                "detail": transition.detail,
                "ts": round(time.time(), 6),
            }
        )
        for client in {s.client for s in subs}:
            client.send_status((venue, symbol), payload)

    def _publish_held(self) -> None:
        self._handle = None
        self._last_publish = asyncio.get_running_loop().time()
        tops, self._held_tops = self._held_tops, set()
        depths, self._held_depths = self._held_depths, set()
        books, self._held_books = self._held_books, set()
        for symbol in books:
            subs = self.by_symbol.get(symbol)
            if subs:
                self._publish(symbol, symbol in tops, subs, symbol in depths)

    def _publish(self, symbol: str, top: bool, subs: set[Subscription], depth: bool = True) -> None:
        """Look each distinct payload up once and hand the same bytes to every subscriber of it.

        ``top``: the quote may have moved; ``depth``: the merged book may have moved.

        Quotes and shallow books go out now.  Heavy (deep) books wait their turn in
        :meth:`_publish_heavy`, so no client's deep subscriptions can delay anyone's quotes.
        """
        self.flushes += 1
        rendered: dict[tuple, tuple[bytes, bytes]] = {}  # render key -> (payload, frame tail)
        for sub in list(subs):
            if sub.channel == "quotes":
                if not top:
                    continue  # depth below every venue's top moved: only ladders change
            elif not depth:
                continue  # the source knows the merged book did not move (a gateway's quote message)
            key = sub.render_key
            if self.is_heavy(sub):
                if key not in rendered:
                    rendered[key] = (b"", b"")  # held once per key, whatever the number of its subscribers
                    self._hold_heavy(key)
                continue
            done = rendered.get(key)
            if done is None:
                payload = self.render(sub)
                done = rendered[key] = (payload, frame_tail(self.aggregator, symbol, payload))
            sub.client.send_sub(sub, done[0], tail=done[1])

    # ------------------------------------------------------------------ heavy subscriptions
    def _hold_heavy(self, key: tuple) -> None:
        if key in self._heavy_pending:
            self.metrics.ws.heavy_render("conflated")  # merged into the update already waiting
            return
        self._heavy_pending[key] = None
        self._schedule_heavy()

    def _schedule_heavy(self) -> None:
        if self._heavy_handle is not None or not self._heavy_pending:
            return
        loop = asyncio.get_running_loop()
        due = min(self._heavy_next.get(key, 0.0) for key in self._heavy_pending)
        self._heavy_handle = loop.call_later(max(0.0, due - loop.time()), self._publish_heavy)

    def _publish_heavy(self) -> None:
        """Heavy keys that are due, oldest first, until ``render_budget`` is spent in this iteration.

        What is left waits for the next iteration, after whatever else the loop has to do (the
        aggregator's quotes first), so the cost of deep books is spread instead of blocking.
        """
        self._heavy_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        started = time.perf_counter()
        budget = self.settings.render_budget
        interval = self.settings.heavy_interval
        rendered = 0
        for key in list(self._heavy_pending):
            if self._heavy_next.get(key, 0.0) > now:
                continue
            if rendered and time.perf_counter() - started >= budget:
                waiting = sum(1 for k in self._heavy_pending if self._heavy_next.get(k, 0.0) <= now)
                self.metrics.ws.heavy_render("deferred", waiting)
                break
            del self._heavy_pending[key]
            self._heavy_next[key] = now + interval
            subs = self._by_key.get(key)
            if not subs:
                continue
            first = next(iter(subs))
            payload = self.render(first)
            tail = frame_tail(self.aggregator, first.symbol, payload)
            rendered += 1
            for sub in list(subs):
                sub.client.send_sub(sub, payload, tail=tail)
        self._schedule_heavy()

    # ------------------------------------------------------------------ observability
    def stats(self) -> dict:
        return {
            "clients": len(self.clients),
            "subscriptions": sum(len(c.subs) for c in self.clients),
            "queued": sum(len(c.queue) for c in self.clients),
            "flushes": self.flushes,
        }
