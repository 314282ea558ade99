"""Keeping one group of symbols connected: connect, read, reconnect, roll over.

One supervisor per connection group (as many symbols as the venue allows on a socket).  It is
the only code that opens and closes a feed's sockets, so the rules live in one place:

* reconnect with capped, jittered backoff, every attempt counted; the backoff starts afresh
  only after a connection got a book live (a venue that accepts and drops at once is not
  hammered);
* every frame, pings and pongs included, marks the connection alive (its ``Liveness``, shared by its
  books): control frames are answered here rather than by aiohttp's autoping, which would hide
  them, so a quiet market whose only frames are heartbeats keeps its books included (quiet, not
  stale); a connection silent past ``silence_timeout`` is dropped, and so is one that closes or
  errors;
* a frame the venue module cannot decode is counted and resyncs the connection's books; it never
  ends the read loop;
* make-before-break rollover: at ``max_connection_age`` or when the venue announces a shutdown,
  a replacement connection is opened and its books brought live, each published as it goes
  live, and only then is the old connection closed, so the consolidated book never loses the
  venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiohttp

from aggbook.book.sync import Reason, SyncState
from aggbook.feeds.connection import Connection
from aggbook.feeds.errors import FeedError, FrameError
from aggbook.feeds.pacing import Backoff

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed

log = logging.getLogger("aggbook.feeds")

_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
_ERROR, _PING, _PONG = aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG


class ConnectionSupervisor:
    """Holds ``symbols`` on one live connection (two during a rollover) until cancelled."""

    def __init__(self, feed: VenueFeed, symbols: list[str]) -> None:
        self.feed = feed
        self.symbols = list(symbols)

    async def run(self) -> None:
        feed = self.feed
        backoff = Backoff(feed.backoff_base, feed.backoff_cap)
        old: Connection | None = None
        first = True
        while not feed.stopping:
            rollover = old is not None and old.open
            conn = feed.new_connection(self.symbols, publish_when_live=rollover)
            if not first:
                feed.reconnects += 1
                feed.metrics.reconnect(feed.venue)
            first = False
            conn.task = asyncio.create_task(self._run(conn), name=f"{feed.venue}-conn-{conn.id}")
            if rollover and old is not None:
                await self._await_live(conn, feed.rollover_timeout)
                for canonical, sync in conn.syncs.items():
                    feed.publisher.publish(canonical, sync)
                await close_connection(feed, old)
            old = conn
            waiter = asyncio.create_task(conn.rollover.wait())
            try:
                done, _ = await asyncio.wait({conn.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if conn.task in done:
                exc = conn.task.exception() if not conn.task.cancelled() else None
                if conn.went_live:
                    backoff.reset()
                delay = backoff.next()
                log.warning("%s: connection %s ended (%s); reconnecting in %.2fs", feed.venue, conn.id,
                            exc or "closed", delay)
                feed.connections.pop(conn.id, None)
                await asyncio.sleep(delay)

    @staticmethod
    async def _await_live(conn: Connection, timeout: float) -> None:
        """Until every book of the replacement is live (or invalid), it ends, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and conn.task is not None and not conn.task.done():
            if all(s.state in (SyncState.LIVE, SyncState.INVALID) for s in conn.syncs.values()):
                return
            await asyncio.sleep(0.02)

    async def _run(self, conn: Connection) -> None:
        """One socket's life: connect, start its tasks, subscribe, read until it fails."""
        feed = self.feed
        try:
            conn.ws = await asyncio.wait_for(feed.connect(conn), feed.connect_timeout)
            conn.state = "open"
            conn.since = time.time()
            conn.opened_at = time.monotonic()
            conn.liveness.heard(conn.opened_at)
            for coro in feed.connection_tasks(conn):
                conn.spawn(coro)
            conn.spawn(feed.audit.run(conn))
            if feed.max_connection_age:
                conn.spawn(self._age_timer(conn, feed.max_connection_age))
            await feed.subscribe(conn)
            await self._read(conn)
        finally:
            conn.state = "closed"
            for task in list(conn.tasks):
                task.cancel()
            if conn.ws is not None and not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.close()
            for sync in conn.syncs.values():
                if sync.state is not SyncState.INVALID:
                    sync.fail(Reason.DISCONNECT, f"connection {conn.id} closed")

    async def _age_timer(self, conn: Connection, age: float) -> None:
        await asyncio.sleep(age)
        self.feed.request_rollover(conn)

    async def _read(self, conn: Connection) -> None:
        """Read until the socket fails; silence past ``silence_timeout`` (the watch below) fails it too."""
        reader = asyncio.current_task()
        watch = conn.spawn(self._silence_watch(conn, reader), name=f"{self.feed.venue}-silence")
        try:
            await self._read_frames(conn)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if conn.silenced and task is not None and task.uncancel() == 0:  # the watch's, not a stop
                raise FeedError(f"no frame for {self.feed.silence_timeout}s") from None
            raise
        finally:
            watch.cancel()

    async def _silence_watch(self, conn: Connection, reader: asyncio.Task | None) -> None:
        """Cancel ``reader`` once the connection has been silent for ``silence_timeout``.

        One timer per silence period instead of a timeout around every receive: arming and
        disarming a timer per frame cost as much as the rest of the read loop (aiohttp says so of
        its own receive timeout), for a limit measured in seconds.
        """
        limit = self.feed.silence_timeout
        if not limit:
            return  # no silence limit configured
        while True:
            silent = conn.liveness.silent_for(time.monotonic())
            if silent >= limit:
                break
            await asyncio.sleep(limit - silent)
        conn.silenced = True
        if reader is not None:
            reader.cancel()

    async def _read_frames(self, conn: Connection) -> None:
        feed = self.feed
        venue, metrics = feed.venue, feed.metrics
        ws = conn.ws
        assert ws is not None
        receive = ws.receive
        liveness = conn.liveness  # one per connection, shared by its books
        monotonic = time.monotonic
        while True:
            msg = await receive()  # silence is the watch's job (_silence_watch), not a timeout per frame
            kind = msg.type
            if kind in _CLOSED:
                raise FeedError(f"closed by venue ({ws.close_code})")
            if kind is _ERROR:
                raise FeedError(f"socket error: {ws.exception()}")
            liveness.heard_at = monotonic()  # Liveness.heard, inlined: every frame of every venue
            if kind is _PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
                continue
            if kind is _PONG:
                continue
            data = msg.data
            conn.frame_bytes = len(data) if isinstance(data, (bytes, str)) else 0
            conn.frame_counted = False
            try:
                await feed.handle(conn, msg)
            except FrameError as exc:
                metrics.decode_error(venue)
                log.warning("%s: undecodable frame on connection %s: %s", venue, conn.id, exc)
                feed.fail_connection_books(conn, Reason.DECODE_ERROR, str(exc))
            except FeedError:
                raise
            except Exception as exc:  # noqa: BLE001 - a frame shape the handler did not foresee
                # counted and resynced like any undecodable frame; the traceback says where it broke
                metrics.decode_error(venue)
                log.exception("%s: frame on connection %s broke its handler: %r", venue, conn.id, exc)
                feed.fail_connection_books(conn, Reason.DECODE_ERROR, f"handler failed: {exc!r}")
            if not conn.frame_counted:
                metrics.message(venue, "", conn.frame_bytes)


async def close_connection(feed: VenueFeed, conn: Connection) -> None:
    """Forget ``conn`` and end its task (which closes the socket and fails its books)."""
    feed.connections.pop(conn.id, None)
    task = conn.task
    if task is None:
        return
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    elif not task.cancelled() and task.exception() is not None:
        # it ended on its own while being replaced (the venue closed it after a shutdown notice):
        # nothing left to do but say so, instead of asyncio reporting an exception never retrieved
        log.debug("%s: connection %s had ended: %s", feed.venue, conn.id, task.exception())
