"""The connection lifecycle every venue shares: connect, subscribe, synchronise, live, and back.

A venue module subclasses :class:`VenueFeed` and writes only its protocol:
``ws_url_for`` (where to connect), ``subscribe`` (what to send), ``handle`` (decode
a frame and call :meth:`VenueFeed.deliver` / :meth:`VenueFeed.deliver_snapshot`),
``fetch_snapshot`` (REST, ``req`` on the socket, or a resubscribe) and optional
heartbeat tasks.  This module does the rest, once:

* symbols packed into as few connections as the venue's per-connection limit allows;
* one supervisor per connection group: reconnect with capped, jittered backoff,
  every attempt counted; a connection silent past ``silence_timeout`` is dropped;
* snapshots queued through one :class:`~feeds.pacing.RequestPacer` per venue that
  honours 429/418 ``Retry-After``, with a per-symbol backoff on failures;
* make-before-break rollover: at ``max_connection_age`` or when the venue announces
  a shutdown (:meth:`VenueFeed.request_rollover`), a replacement connection is
  opened and its books brought live, each swapped in as it goes live, and only
  then is the old connection closed, so the consolidated book never loses the venue;
* every BookSync that becomes current is handed to ``on_sync`` callbacks (the
  service wires it into the consolidated book and metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

import aiohttp
import orjson

from aggbook.book.sync import BookSync, Delta, Reason, SequenceRule, Snapshot, SyncState, Transition
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics, NullMetrics
from aggbook.feeds.pacing import Backoff, RequestPacer

log = logging.getLogger("aggbook.feeds")

_conn_ids = itertools.count(1)

# a venue's per-connection protocol state (pending requests, routing tables, its own pacers)
S = TypeVar("S")


class FeedError(Exception):
    """The connection cannot continue (protocol violation, silence, venue closing): reconnect."""


class FrameError(Exception):
    """A frame could not be decoded.  Counted; the books on the connection resync."""


class RateLimited(Exception):
    """The venue answered 429/418: wait ``retry_after`` seconds before any further request."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(detail or f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class SnapshotError(Exception):
    """A snapshot could not be obtained this time (HTTP error, error reply, timeout)."""


class InvalidSymbol(Exception):
    """The venue says the symbol does not exist: stop that book, do not retry in a loop."""


# snapshot failures that are the venue's or the network's doing, logged without a traceback
_SNAPSHOT_FAILURES = (SnapshotError, aiohttp.ClientError, TimeoutError, ValueError, OSError)


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """``Retry-After`` as seconds; a value that looks like an epoch (s or ms) is turned into a delay."""
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    now = time.time()
    if number > 1e12:  # epoch milliseconds
        return max(0.0, number / 1000 - now)
    if number > 1e9:  # epoch seconds
        return max(0.0, number - now)
    return max(0.0, number)


@dataclass
class Connection(Generic[S]):
    """One WebSocket and the books synchronised over it.

    ``venue_state`` is the venue module's own typed state for this socket (a slotted dataclass made
    by :meth:`VenueFeed.new_connection_state`): it lives and dies with the socket, so a reconnect
    never inherits a stale request table or pacer.
    """

    symbols: list[str]
    syncs: dict[str, BookSync]
    venue_state: S
    publish_when_live: bool = False
    id: int = field(default_factory=lambda: next(_conn_ids))
    ws: aiohttp.ClientWebSocketResponse | None = None
    state: str = "connecting"
    since: float = field(default_factory=time.time)
    opened_at: float = field(default_factory=time.monotonic)
    last_rx: float = field(default_factory=time.monotonic)
    rollover: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task] = field(default_factory=set)
    snapshot_attempts: dict[str, int] = field(default_factory=dict)
    frame_bytes: int = 0
    frame_counted: bool = False
    went_live: bool = False
    task: asyncio.Task | None = None

    @property
    def open(self) -> bool:
        return self.state == "open" and self.ws is not None and not self.ws.closed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


class VenueFeed(Generic[S]):
    """Base class of every venue feed; ``S`` is the venue's per-connection state type."""

    # Defaults a venue module overrides; ``config.options`` overrides both (same names).
    max_symbols_per_connection: int = 50
    silence_timeout: float = 30.0
    max_connection_age: float | None = None
    rollover_timeout: float = 30.0
    connect_timeout: float = 10.0
    snapshot_rate: float = 5.0  # pacer weight per second
    snapshot_burst: float = 10.0
    snapshot_timeout: float = 10.0
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    max_buffer: int = 10_000

    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        self.config = config
        self.venue = config.name
        self.metrics: FeedMetrics = metrics or NullMetrics()
        for key, value in config.options.items():
            if key not in self.option_names():
                raise ValueError(f"venues.{config.name}.options: unknown option {key!r}; "
                                 f"known: {', '.join(sorted(self.option_names()))}")
            problem = self.option_problem(key, value)
            if problem:
                raise ValueError(f"venues.{config.name}.options.{key}: {problem}")
            setattr(self, key, value)
        self.pacer = RequestPacer(self.snapshot_rate, self.snapshot_burst)
        self.session: aiohttp.ClientSession | None = None
        self.connections: dict[int, Connection] = {}
        self.reconnects = 0
        self.invalid: dict[str, str] = {}  # canonical -> why the venue rejected it
        # learned from the venue's symbol endpoint at start-up (validate_symbols)
        self.tick_sizes: dict[str, Decimal] = {}  # canonical -> price step
        self.lot_sizes: dict[str, Decimal] = {}  # canonical -> size step
        self._callbacks: list[Callable[[str, BookSync], None]] = []
        self._current: dict[str, BookSync] = {}
        self._supervisors: list[asyncio.Task] = []
        self._stopping = False
        self._ever_live: set[str] = set()
        self._down_since: dict[str, float] = {}  # canonical -> when its current book stopped being live

    @classmethod
    def option_names(cls) -> set[str]:
        """Tunables settable from ``config.options``: the plain (non-callable, public) class attributes."""
        names = set()
        for klass in cls.__mro__:
            for key, value in vars(klass).items():
                if not key.startswith("_") and isinstance(value, (int, float, str, bool, type(None))):
                    names.add(key)
        return names

    @classmethod
    def option_problem(cls, name: str, value: object) -> str | None:
        """Why ``value`` cannot set option ``name`` (None when it can).

        Options are timers, rates and limits: a number must be a finite, non-negative
        number of the default's kind (TOML spells ``nan`` and ``inf``, which would pass
        every range check and then stall or spin a timer); other options keep their type.
        """
        default = getattr(cls, name)
        expected = f"must be {type(default).__name__}, got {value!r}"
        if isinstance(default, bool) or isinstance(value, bool):
            return None if type(value) is type(default) else expected
        if default is None or isinstance(default, (int, float)):
            if value is None and default is None:
                return None
            wants_int = isinstance(default, int)
            if not isinstance(value, int if wants_int else (int, float)):
                return f"must be {'an integer' if wants_int else 'a number'}, got {value!r}"
            if not math.isfinite(value) or value < 0:
                return f"must be a finite number >= 0, got {value!r}"
            return None
        return None if isinstance(value, type(default)) else expected

    # ------------------------------------------------------------------ venue hooks
    def rule_for(self, canonical: str) -> SequenceRule:
        raise NotImplementedError

    def new_connection_state(self) -> S:
        """Fresh per-connection protocol state for a new socket."""
        raise NotImplementedError

    def ws_url_for(self, conn: Connection) -> str:
        return self.config.ws_url

    async def connect(self, conn: Connection) -> aiohttp.ClientWebSocketResponse:
        assert self.session is not None
        return await self.session.ws_connect(self.ws_url_for(conn), autoping=True, heartbeat=None,
                                             max_msg_size=64 * 1024 * 1024, compress=0)

    async def subscribe(self, conn: Connection) -> None:
        """Send the subscription frames for ``conn.symbols``."""

    async def handle(self, conn: Connection, msg: aiohttp.WSMessage) -> None:
        raise NotImplementedError

    async def fetch_snapshot(self, conn: Connection, canonical: str) -> Snapshot | None:
        """Obtain a snapshot; None when it will arrive on the stream (resubscribe)."""
        raise NotImplementedError

    def snapshot_weight(self, canonical: str) -> float:
        return 1.0

    def connection_tasks(self, conn: Connection) -> list[Coroutine[Any, Any, Any]]:
        """Per-connection coroutines (client pings, req queues) started once the socket is open."""
        return []

    def book_transition(self, sync: BookSync, transition: Transition) -> None:
        """A book of this feed changed state; venues that pace resubscribes by it override this."""

    async def validate_symbols(self) -> dict[str, str]:
        """Check the mapping against the venue's symbol endpoint; returns canonical -> error for bad ones."""
        return {}

    # ------------------------------------------------------------------ public API
    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None:
        self._callbacks.append(callback)

    def current_syncs(self) -> dict[str, BookSync]:
        return dict(self._current)

    def status(self) -> dict:
        return {
            "venue": self.venue,
            "kind": self.config.kind,
            "reconnects": self.reconnects,
            "invalid_symbols": dict(self.invalid),
            "tick_sizes": {c: str(t) for c, t in self.tick_sizes.items()},
            "lot_sizes": {c: str(t) for c, t in self.lot_sizes.items()},
            "snapshot_queue_wait_seconds": round(self.pacer.waited, 3),
            "rate_limit_penalties": self.pacer.penalties,
            "connections": [
                {
                    "id": c.id,
                    "state": c.state,
                    "since": c.since,
                    "age_seconds": round(time.monotonic() - c.opened_at, 3),
                    "symbols": list(c.symbols),
                    "url": self.ws_url_for(c),
                }
                for c in self.connections.values()
            ],
        }

    async def start(self) -> None:
        self._stopping = False
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.snapshot_timeout))
        symbols = list(self.config.symbols)
        try:
            self.invalid = await self.validate_symbols()
        except Exception as exc:  # the symbol endpoint being down must not stop the feed
            log.warning("%s: symbol validation skipped: %s", self.venue, exc)
        for canonical, why in self.invalid.items():
            sync = self._new_sync(canonical)
            sync.invalidate(why)
            self._publish(canonical, sync)
            log.error("%s: symbol %s rejected by the venue: %s", self.venue, canonical, why)
        symbols = [s for s in symbols if s not in self.invalid]
        size = max(1, int(self.max_symbols_per_connection))
        for i in range(0, len(symbols), size):
            group = symbols[i:i + size]
            self._supervisors.append(asyncio.create_task(self._supervise(group), name=f"{self.venue}-sup"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        for task in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._supervisors.clear()
        for conn in list(self.connections.values()):
            await self._close(conn)
        for sync in self._current.values():
            if sync.state is not SyncState.INVALID:
                sync.fail(Reason.STOPPED, "feed stopped")
        if self.session is not None:
            await self.session.close()
            self.session = None

    def request_rollover(self, conn: Connection) -> None:
        """The venue announced it will close this connection: replace it before it goes."""
        log.info("%s: rollover requested on connection %s", self.venue, conn.id)
        conn.rollover.set()

    # ------------------------------------------------------------------ delivery (called by handle())
    def sync_for(self, conn: Connection, canonical: str) -> BookSync | None:
        return conn.syncs.get(canonical)

    def count_frame(self, conn: Connection, canonical: str) -> None:
        if not conn.frame_counted:
            conn.frame_counted = True
            self.metrics.message(self.venue, canonical, conn.frame_bytes)

    def deliver(self, conn: Connection, canonical: str, delta: Delta) -> None:
        sync = conn.syncs.get(canonical)
        if sync is None:
            return
        self.count_frame(conn, canonical)
        sync.on_delta(delta)
        if delta.event_time is not None:
            self.metrics.lag(self.venue, max(0.0, time.time() - delta.event_time))
        if sync.wants_snapshot():
            self.request_snapshot(conn, canonical)

    def deliver_snapshot(self, conn: Connection, canonical: str, snap: Snapshot) -> None:
        sync = conn.syncs.get(canonical)
        if sync is None:
            return
        self.count_frame(conn, canonical)
        sync.on_snapshot(snap)
        if sync.live:
            conn.snapshot_attempts[canonical] = 0
        elif sync.wants_snapshot():
            self.request_snapshot(conn, canonical)

    def fail_connection_books(self, conn: Connection, reason: Reason, detail: str) -> None:
        """A frame was lost or mangled: every book on the connection may have missed it."""
        for canonical, sync in conn.syncs.items():
            if sync.state is SyncState.INVALID:
                continue
            sync.fail(reason, detail)
            if conn.open and sync.wants_snapshot(allow_empty_buffer=sync.rule.snapshot_in_stream):
                self.request_snapshot(conn, canonical)

    def request_snapshot(self, conn: Connection, canonical: str) -> None:
        sync = conn.syncs.get(canonical)
        if sync is None or sync.snapshot_pending or not conn.open:
            return
        sync.snapshot_requested()
        conn.spawn(self._snapshot_task(conn, canonical, sync), name=f"{self.venue}-snap-{canonical}")

    async def _snapshot_task(self, conn: Connection, canonical: str, sync: BookSync) -> None:
        backoff = Backoff(self.backoff_base, min(self.backoff_cap, 10.0))
        attempts = conn.snapshot_attempts.get(canonical, 0)
        for _ in range(attempts):
            backoff.next()
        conn.snapshot_attempts[canonical] = attempts + 1
        if attempts:
            await asyncio.sleep(backoff.next())
        while conn.open and conn.syncs.get(canonical) is sync and sync.state is not SyncState.INVALID:
            try:
                await self.pacer.acquire(self.snapshot_weight(canonical))
                if not conn.open:
                    return
                snap = await asyncio.wait_for(self.fetch_snapshot(conn, canonical), self.snapshot_timeout)
            except RateLimited as exc:
                self.pacer.penalize(exc.retry_after)
                self.metrics.snapshot(self.venue, canonical, False)
                log.warning("%s %s: snapshot rate limited, retry after %.1fs", self.venue, canonical,
                            exc.retry_after)
                continue  # the pacer now holds every request until the venue's deadline
            except InvalidSymbol as exc:
                self.metrics.snapshot(self.venue, canonical, False)
                self.invalid[canonical] = str(exc)
                sync.invalidate(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - whatever the venue answered, retry: never stay pending
                self.metrics.snapshot(self.venue, canonical, False)
                delay = backoff.next()
                expected = isinstance(exc, _SNAPSHOT_FAILURES)
                log.warning("%s %s: snapshot failed (%s); retry in %.2fs", self.venue, canonical,
                            exc if expected else repr(exc), delay, exc_info=not expected)
                await asyncio.sleep(delay)
                continue
            self.metrics.snapshot(self.venue, canonical, True)
            if snap is None:
                return  # arrives on the stream; the sync stays pending until it does
            sync.snapshot_failed()  # clear pending so a stale answer can ask again
            self.deliver_snapshot(conn, canonical, snap)
            return

    # ------------------------------------------------------------------ lifecycle internals
    def _new_sync(self, canonical: str) -> BookSync:
        watcher = _LiveWatcher(self, canonical)

        def owner(sync: BookSync, transition: Transition) -> None:
            watcher.on_transition(sync, transition)
            self.book_transition(sync, transition)

        return BookSync(self.rule_for(canonical), venue=self.venue, symbol=canonical,
                        max_buffer=self.max_buffer, owner=owner)

    def _publish(self, canonical: str, sync: BookSync) -> None:
        old = self._current.get(canonical)
        if old is sync:
            return
        self._current[canonical] = sync
        for callback in self._callbacks:  # the service attaches the new book and detaches the old
            callback(canonical, sync)

    def _new_connection(self, symbols: list[str], publish_when_live: bool) -> Connection:
        syncs = {s: self._new_sync(s) for s in symbols}
        conn = Connection(list(symbols), syncs, self.new_connection_state(),
                          publish_when_live=publish_when_live)
        self.connections[conn.id] = conn
        if not publish_when_live:
            for canonical, sync in syncs.items():
                self._publish(canonical, sync)
        return conn

    async def _supervise(self, symbols: list[str]) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap)
        old: Connection | None = None
        first = True
        while not self._stopping:
            rollover = old is not None and old.open
            conn = self._new_connection(symbols, publish_when_live=rollover)
            if not first:
                self.reconnects += 1
                self.metrics.reconnect(self.venue)
            first = False
            conn.task = asyncio.create_task(self._run(conn), name=f"{self.venue}-conn-{conn.id}")
            if rollover and old is not None:
                await self._await_live(conn, self.rollover_timeout)
                for canonical, sync in conn.syncs.items():
                    self._publish(canonical, sync)
                await self._close(old)
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
                log.warning("%s: connection %s ended (%s); reconnecting in %.2fs", self.venue, conn.id,
                            exc or "closed", delay)
                self.connections.pop(conn.id, None)
                await asyncio.sleep(delay)

    async def _await_live(self, conn: Connection, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and conn.task is not None and not conn.task.done():
            if all(s.state in (SyncState.LIVE, SyncState.INVALID) for s in conn.syncs.values()):
                return
            await asyncio.sleep(0.02)

    async def _run(self, conn: Connection) -> None:
        try:
            conn.ws = await asyncio.wait_for(self.connect(conn), self.connect_timeout)
            conn.state = "open"
            conn.since = time.time()
            conn.opened_at = conn.last_rx = time.monotonic()
            for coro in self.connection_tasks(conn):
                conn.spawn(coro)
            if self.max_connection_age:
                conn.spawn(self._age_timer(conn))
            await self.subscribe(conn)
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

    async def _age_timer(self, conn: Connection) -> None:
        assert self.max_connection_age is not None
        await asyncio.sleep(self.max_connection_age)
        self.request_rollover(conn)

    async def _read(self, conn: Connection) -> None:
        ws = conn.ws
        assert ws is not None
        while True:
            try:
                msg = await ws.receive(timeout=self.silence_timeout)
            except TimeoutError as exc:
                raise FeedError(f"no frame for {self.silence_timeout}s") from exc
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise FeedError(f"closed by venue ({ws.close_code})")
            if msg.type is aiohttp.WSMsgType.ERROR:
                raise FeedError(f"socket error: {ws.exception()}")
            conn.last_rx = time.monotonic()
            data = msg.data
            conn.frame_bytes = len(data) if isinstance(data, (bytes, str)) else 0
            conn.frame_counted = False
            try:
                await self.handle(conn, msg)
            except FrameError as exc:
                self.metrics.decode_error(self.venue)
                log.warning("%s: undecodable frame on connection %s: %s", self.venue, conn.id, exc)
                self.fail_connection_books(conn, Reason.DECODE_ERROR, str(exc))
            except FeedError:
                raise
            except Exception as exc:  # noqa: BLE001 - a frame shape the handler did not foresee
                # counted and resynced like any undecodable frame; the traceback says where it broke
                self.metrics.decode_error(self.venue)
                log.exception("%s: frame on connection %s broke its handler: %r", self.venue, conn.id, exc)
                self.fail_connection_books(conn, Reason.DECODE_ERROR, f"handler failed: {exc!r}")
            if not conn.frame_counted:
                self.metrics.message(self.venue, "", conn.frame_bytes)

    async def _close(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task

    # ------------------------------------------------------------------ helpers for venue modules
    async def get_json(self, url: str, params: dict | None = None) -> tuple[int, Any, Any]:
        """GET and decode JSON; 429/418 raise RateLimited (Retry-After).  Returns (status, headers, body)."""
        assert self.session is not None
        async with self.session.get(url, params=params) as resp:
            text = await resp.text()
            if resp.status in (429, 418):
                default = 1.0 if resp.status == 429 else 30.0
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), default)
                raise RateLimited(retry_after, f"HTTP {resp.status}: {text[:200]}")
            try:
                body = orjson.loads(text) if text else None
            except ValueError as exc:
                raise SnapshotError(f"HTTP {resp.status}: not JSON: {text[:200]}") from exc
            return resp.status, resp.headers, body


class _LiveWatcher:
    """Times how long books take to go live and publishes rollover books once they are."""

    def __init__(self, feed: VenueFeed, canonical: str) -> None:
        self.feed = feed
        self.canonical = canonical
        # when the venue's book for this symbol stopped being live: a reconnect's fresh BookSync
        # inherits the moment the previous one went down, so time-to-live covers the whole outage
        self.down_since = feed._down_since.get(canonical, time.monotonic())

    def on_transition(self, sync: BookSync, transition: Transition) -> None:
        if transition.new is not SyncState.LIVE and transition.old is SyncState.LIVE:
            self.down_since = transition.at
            if self.feed._current.get(self.canonical) is sync:
                self.feed._down_since[self.canonical] = transition.at
        if transition.new is SyncState.LIVE and transition.old is not SyncState.LIVE:
            self.feed._down_since.pop(self.canonical, None)
            seconds = transition.at - self.down_since
            after = "resync" if self.canonical in self.feed._ever_live else "start"
            self.feed._ever_live.add(self.canonical)
            self.feed.metrics.time_to_live(self.feed.venue, self.canonical, max(0.0, seconds), after)
            for conn in self.feed.connections.values():
                if conn.syncs.get(self.canonical) is sync:
                    conn.went_live = True
                    if conn.publish_when_live:
                        self.feed._publish(self.canonical, sync)
