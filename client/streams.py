"""One WebSocket subscription stream to ``/v1/ws``: subscribe, check ``seq``, resubscribe, reconnect.

Why it is built this way (the protocol is in docs/api.md, "WebSocket API"):

* Every ``snapshot`` and ``update`` carries the complete state of its subscription and a ``seq`` that
  rises by exactly one per message of that subscription, starting at 1 with the first snapshot.  A
  ``snapshot`` with ``reason: "conflated"`` takes the next ``seq`` too: the service skipped states
  because this client read slowly, and the snapshot is the current state, so it is passed on (its
  ``delivery.reason`` says so) and the stream goes on.
* Any other ``seq`` (a skip, a repeat, an ``update`` first) means this client missed or misordered a
  state it cannot rebuild: the subscription is dropped and made afresh (``unsubscribe`` then
  ``subscribe``, because subscribing again to a live subscription changes nothing).  Frames of the
  old subscription still in flight are ignored until the new ``subscribe`` is acknowledged; the
  service sends the ack before the snapshot it causes.  The gap is logged, counted in ``gaps`` and
  named in ``delivery.resync`` of the fresh snapshot, never passed over.
* A lost connection (a service restart, a network drop, a ``4008`` slow-consumer close, a ``1001``
  shutdown) is reconnected with jittered exponential backoff and everything is subscribed again;
  the first snapshot of each subscription after it says ``reconnect`` in ``delivery.resync``.
* What the protocol does not allow (a frame that is not a JSON object, an unknown message type, a
  field of the wrong shape, data for a subscription never acknowledged) raises
  :class:`~aggbook.client.errors.ProtocolError`, and a refused request raises
  :class:`~aggbook.client.errors.ErrorReply`: retrying would get the same answer.
* Each stream holds its own connection, so one consumer's pace never conflates another's; subscribe
  to many symbols in one :meth:`~aggbook.client.Client.quotes` call to share one connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiohttp
import orjson

from aggbook.client.errors import ErrorReply, ProtocolError, Unavailable
from aggbook.client.models import Delivery

if TYPE_CHECKING:
    from aggbook.client.api import Client

log = logging.getLogger("aggbook.client")

T = TypeVar("T")
_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
           aiohttp.WSMsgType.ERROR)
_QUIET = ("heartbeat", "pong")
_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_close=5.0)


@dataclass(slots=True)
class _Sub:
    """One subscription on the current connection, as the service acknowledged it."""

    key: str
    description: dict[str, Any]
    expected: int = 1  # the seq the next snapshot or update must carry
    resync: str | None = None  # told with the next snapshot: why this subscription was made afresh
    replacing: bool = False  # dropped after a gap: its frames are ignored until the new one is acked


class _Disconnected(Exception):
    """The connection ended; reconnect."""


class Stream(Generic[T]):
    """An async iterator of typed states (:class:`~aggbook.client.models.Quote` or
    :class:`~aggbook.client.models.Book`), one per ``snapshot`` or ``update`` received.

    Use it with ``async for`` (leaving the loop closes it) or ``await anext(stream)`` in an
    ``async with stream:`` block; the :class:`~aggbook.client.Client` closes whatever is left open
    on exit.  ``gaps``, ``reconnects`` and ``conflated`` count what happened on the way.
    """

    def __init__(self, client: Client, request: dict[str, Any], parse: Callable[[Any, Delivery], T]) -> None:
        self._client = client
        self._request = request
        self._parse = parse
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._subs: dict[str, _Sub] = {}
        self._pending: dict[int, tuple[str, str | None]] = {}  # request id -> (op, resync reason)
        self._ids = itertools.count(1)
        self._lost: str | None = None  # why the last connection ended: the next snapshots say so
        self._failures = 0
        self._closed = False
        self.gaps = 0
        self.reconnects = 0
        self.conflated = 0

    # ------------------------------------------------------------------ iteration
    def __aiter__(self) -> AsyncIterator[T]:
        """``async for``: leaving the loop (``break``, an exception, cancellation) closes the stream,
        as soon as the loop lets go of its iterator."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        try:
            while True:
                try:
                    item = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await self.aclose()

    async def __anext__(self) -> T:
        """The next state (``await anext(stream)``).  Cancelling this (a timeout around it) leaves the
        stream open: the next call reconnects, since the connection's state is no longer known."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                if self._ws is None:
                    await self._connect()
                item = await self._next_item()
            except asyncio.CancelledError:
                # cancelled half-way through a frame (a timeout around the iteration): the state of
                # this connection is no longer known, so the next call starts afresh on a new one
                self._abandon_connection("iteration cancelled")
                raise
            except _Disconnected as exc:
                await self._drop_connection()
                self._lost = str(exc)
                self.reconnects += 1
                self._failures += 1
                log.warning("aggbook stream disconnected, reconnecting", extra={"why": str(exc)})
                continue
            except BaseException:
                await self.aclose()
                raise
            if item is not None:
                return item

    async def aclose(self) -> None:
        """Unsubscribe by closing the connection; the iterator ends."""
        self._closed = True
        await self._drop_connection()
        self._client._forget(self)  # noqa: SLF001 - the client tracks its open streams

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> None:
        client = self._client
        while True:
            if self._failures:
                if client.reconnect_attempts is not None and self._failures > client.reconnect_attempts:
                    self._closed = True
                    raise Unavailable(f"gave up after {self._failures} failed connections to {client.ws_url}"
                                      + (f" (last: {self._lost})" if self._lost else ""))
                await asyncio.sleep(self._backoff())
            try:
                async with asyncio.timeout(client.timeout):  # the handshake: a silent peer must not hang us
                    self._ws = await client.session.ws_connect(
                        client.ws_url, heartbeat=client.heartbeat, timeout=_WS_TIMEOUT
                    )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._failures += 1
                self._lost = self._lost or f"connect failed: {exc}"
                log.info("aggbook connect failed", extra={"url": client.ws_url, "error": str(exc)})
                continue
            break
        self._subs.clear()
        self._pending.clear()
        # after a lost connection, every first snapshot says the stream was interrupted
        resync = f"reconnect: {self._lost}" if self._lost is not None and self.reconnects else None
        await self._send_request(dict(self._request), resync)

    async def _drop_connection(self) -> None:
        ws, self._ws = self._ws, None
        self._subs.clear()
        self._pending.clear()
        if ws is not None and not ws.closed:
            try:
                await ws.close()
            except (aiohttp.ClientError, OSError, RuntimeError):
                pass

    def _abandon_connection(self, why: str) -> None:
        ws, self._ws = self._ws, None
        self._subs.clear()
        self._pending.clear()
        if ws is not None:
            self._lost = why
            self.reconnects += 1
            self._client._close_later(ws)  # noqa: SLF001 - no await while being cancelled

    def _backoff(self) -> float:
        client = self._client
        delay = min(client.reconnect_cap, client.reconnect_base * 2 ** max(0, self._failures - 1))
        return delay * random.uniform(0.5, 1.0)

    async def _send_request(self, request: dict[str, Any], resync: str | None) -> None:
        req_id = next(self._ids)
        request["id"] = req_id
        self._pending[req_id] = (request["op"], resync)
        assert self._ws is not None
        try:
            await self._ws.send_str(orjson.dumps(request).decode())
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise _Disconnected(f"send failed: {exc}") from exc

    # ------------------------------------------------------------------ frames
    async def _next_item(self) -> T | None:
        """The next state to hand out, or None when the frame carried none (acks, heartbeats, ...)."""
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return await self._on_text(msg.data)
        if msg.type in _CLOSED:
            code = self._ws.close_code
            raise _Disconnected(f"connection closed (code {code})" if code is not None else "connection lost")
        if msg.type == aiohttp.WSMsgType.BINARY:
            raise ProtocolError("the service sent a binary frame; the protocol is JSON text")
        return None  # ping/pong frames are aiohttp's business

    async def _on_text(self, text: str) -> T | None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"frame is not valid JSON ({exc}): {text[:200]!r}") from None
        if not isinstance(msg, dict):
            raise ProtocolError(f"frame is not a JSON object: {text[:200]!r}")
        kind = msg.get("type")
        if kind == "snapshot" or kind == "update":
            return await self._on_state(kind, msg)
        if kind == "ack":
            self._on_ack(msg)
        elif kind == "error":
            raise ErrorReply(str(msg.get("code")), str(msg.get("message")), msg.get("id"))
        elif kind == "status":
            log.debug("venue status", extra={k: msg.get(k) for k in ("venue", "symbol", "state", "reason")})
        elif kind not in _QUIET:
            raise ProtocolError(f"unknown message type {kind!r}: {text[:200]!r}")
        return None

    def _on_ack(self, msg: dict[str, Any]) -> None:
        pending = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if pending is None:
            raise ProtocolError(f"ack for a request this client did not send: {msg!r}")
        op, resync = pending
        if op != "subscribe":
            return
        subs = msg.get("subs")
        if not isinstance(subs, list) or not subs:
            raise ProtocolError(f"subscribe ack without subscriptions: {msg!r}")
        for desc in subs:
            if not isinstance(desc, dict) or not isinstance(desc.get("sub"), str):
                raise ProtocolError(f"subscribe ack with a malformed subscription: {desc!r}")
            self._subs[desc["sub"]] = _Sub(desc["sub"], desc, resync=resync)

    async def _on_state(self, kind: str, msg: dict[str, Any]) -> T | None:
        key = msg.get("sub")
        sub = self._subs.get(key) if isinstance(key, str) else None
        if sub is None or not isinstance(key, str):
            raise ProtocolError(f"{kind} for subscription {key!r}, which the service never acknowledged")
        if sub.replacing:
            return None  # the old subscription's last frames: the new one starts at seq 1
        seq = msg.get("seq")
        if type(seq) is not int:
            raise ProtocolError(f"{kind} of {key} has no integer seq: {seq!r}")
        reason = msg.get("reason")
        if kind == "snapshot" and reason not in ("subscribe", "conflated"):
            raise ProtocolError(f"snapshot of {key} with unknown reason {reason!r}")
        if seq != sub.expected or (kind == "update" and sub.expected == 1):
            await self._resubscribe(sub, f"gap: expected seq {sub.expected}, got {seq} ({kind})")
            return None
        if msg.get("channel") != self._request["channel"]:
            raise ProtocolError(f"{kind} of {key} on channel {msg.get('channel')!r}")
        sub.expected = seq + 1
        if reason == "conflated":
            self.conflated += 1
        delivery = Delivery(
            sub=key,
            seq=seq,
            kind=kind,
            reason=reason if kind == "snapshot" else None,
            ts=_number(msg.get("ts"), "ts", key),
            event_ts=_opt_number(msg.get("event_ts"), "event_ts", key),
            recv_ts=_opt_number(msg.get("recv_ts"), "recv_ts", key),
            resync=sub.resync if kind == "snapshot" else None,
        )
        sub.resync = None
        if "data" not in msg:
            raise ProtocolError(f"{kind} of {key} without data")
        item = self._parse(msg["data"], delivery)
        self._failures = 0  # a connection that delivers is a good one: the next drop backs off from scratch
        self._lost = None
        return item

    async def _resubscribe(self, sub: _Sub, why: str) -> None:
        """Drop ``sub`` and make it afresh: the next snapshot is complete, with seq 1."""
        self.gaps += 1
        log.warning("aggbook stream gap, resubscribing", extra={"sub": sub.key, "why": why})
        sub.replacing = True
        await self._send_request({"op": "unsubscribe", "subs": [sub.key]}, None)
        await self._send_request(_subscribe_request(sub.description), why)


def _subscribe_request(desc: dict[str, Any]) -> dict[str, Any]:
    """The subscribe message that makes the subscription an ack described."""
    if desc.get("channel") == "quotes":
        return {"op": "subscribe", "channel": "quotes", "symbols": [desc.get("symbol")],
                "fees": bool(desc.get("fees", False))}
    request = {"op": "subscribe", "channel": "book", "symbol": desc.get("symbol"), "depth": desc.get("depth")}
    if desc.get("venues") is not None:
        request["venues"] = desc["venues"]
    return request


def _number(value: Any, name: str, key: str) -> float:
    if type(value) not in (int, float):
        raise ProtocolError(f"{name} of {key} is not a number: {value!r}")
    return float(value)


def _opt_number(value: Any, name: str, key: str) -> float | None:
    return None if value is None else _number(value, name, key)
