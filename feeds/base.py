"""The class every venue feed subclasses, and the lifecycle it shares: connect, subscribe,
synchronise, live, and back.

A venue module subclasses :class:`VenueFeed` and writes only its protocol: ``ws_url_for`` (where
to connect), ``subscribe`` (what to send), ``handle`` (decode a frame and call
:meth:`VenueFeed.deliver` / :meth:`VenueFeed.deliver_snapshot`), ``fetch_snapshot`` (REST, ``req``
on the socket, or a resubscribe), optional per-connection tasks, and its per-connection state
(``new_connection_state``).  The rest is done once, by parts with one job each, which this class
wires together:

* :class:`~aggbook.feeds.supervisor.ConnectionSupervisor`: one per group of symbols (as many as
  the venue's per-connection limit allows); connect, read, reconnect with backoff, roll over
  make-before-break;
* :class:`~aggbook.feeds.snapshots.SnapshotScheduler`: snapshots paced venue-wide, honouring
  429/418 ``Retry-After``, retried per symbol with backoff;
* :class:`~aggbook.feeds.publisher.BookPublisher`: the current BookSync per symbol, handed to
  ``on_sync`` callbacks (the service wires it into the consolidated book and metrics);
* :class:`~aggbook.feeds.http.HttpClient`: the session and ``get_json``;
* :class:`~aggbook.feeds.listing.ListingWatch`: a symbol the venue refuses is re-checked against
  the venue's symbol list with backoff (``symbol_listed``) and resumed (``resume_symbol``) when
  listed, instead of being disabled until restart;
* :func:`~aggbook.feeds.status.render_status` and :mod:`~aggbook.feeds.options`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, Generic

import aiohttp

from aggbook.book.sync import BookSync, Delta, Liveness, Reason, SequenceRule, Snapshot, SyncState, Transition
from aggbook.feeds.audit import BookAudit
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.connection import Connection, S
from aggbook.feeds.crosscheck import Bbo, TopCrossCheck
from aggbook.feeds.errors import FeedError, FrameError, InvalidSymbol, RateLimited, SnapshotError
from aggbook.feeds.http import HttpClient, parse_retry_after
from aggbook.feeds.listing import ListingWatch
from aggbook.feeds.metrics import FeedMetrics, NullMetrics
from aggbook.feeds.options import apply_options, option_names, option_problem
from aggbook.feeds.pacing import RequestPacer, drain_s
from aggbook.feeds.publisher import BookPublisher
from aggbook.feeds.snapshots import SnapshotScheduler
from aggbook.feeds.status import render_status
from aggbook.feeds.supervisor import ConnectionSupervisor, close_connection

__all__ = [
    "Connection", "FeedError", "FrameError", "InvalidSymbol", "RateLimited", "SnapshotError", "VenueFeed",
    "parse_retry_after",
]

log = logging.getLogger("aggbook.feeds")
_LIVE = SyncState.LIVE  # bound once: a member read off its enum class is slow on Python 3.11


class VenueFeed(Generic[S]):
    """Base class of every venue feed; ``S`` is the venue's per-connection state type."""

    # Defaults a venue module overrides; ``config.options`` overrides both (same names).
    max_symbols_per_connection: int = 50
    silence_timeout: float = 30.0
    # silence (no frame at all, heartbeats included) after which the connection's books count as
    # stale and leave the consolidated view; below silence_timeout, which drops the socket
    liveness_timeout: float = 10.0
    max_connection_age: float | None = None
    rollover_timeout: float = 30.0
    connect_timeout: float = 10.0
    # the close handshake of a socket being dropped; a dead path (the usual reason to drop one) never
    # answers, and aiohttp's default of 10 s would hold the reconnect back that long
    close_timeout: float = 2.0
    snapshot_rate: float = 5.0  # pacer weight per second
    snapshot_burst: float = 10.0
    snapshot_timeout: float = 10.0
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    max_buffer: int = 10_000
    listing_check_base: float = 5.0  # first re-check of a refused symbol's listing, doubling...
    listing_check_cap: float = 300.0  # ...up to this; a delisted symbol is re-checked this often
    bbo_check: bool = True  # subscribe the venue's best bid/offer and check each book's top by it
    bbo_allowance: float = 2.0  # seconds a top may disagree with an id-less bbo (feeds/crosscheck.py)
    # seconds over which a connection compares each of its live books with a fresh snapshot at the
    # book's own id, every level (feeds/audit.py); 0: no audits
    audit_interval: float = 0.0
    # a snapshot that answers a request on the stream's own socket (Huobi-style ``req``) comes after
    # every push before it and may be the only word on a quiet book: it is loaded as it arrives.
    # Others (REST) are parked until a diff shows the stream continues them (deliver_snapshot)
    _snapshot_on_stream_socket = False

    def __init__(self, config: VenueConfig, *, metrics: FeedMetrics | None = None) -> None:
        self.config = config
        self.venue = config.name
        self.metrics: FeedMetrics = metrics or NullMetrics()
        apply_options(self, config.name, config.options)
        self.http = HttpClient()
        self.snapshots = SnapshotScheduler(self)
        self.connections: dict[int, Connection[S]] = {}
        self.publisher = BookPublisher(self.venue, self.metrics, self.connections)
        self.reconnects = 0
        self.stopping = False
        self.invalid: dict[str, str] = {}  # canonical -> why the venue refused it, until a re-check
        self.listing = ListingWatch(self)
        self.crosscheck = TopCrossCheck(self._bbo_mismatch, allowance=float(self.bbo_allowance))
        self.audit = BookAudit(self)
        # learned from the venue's symbol endpoint at start-up (validate_symbols)
        self.tick_sizes: dict[str, Decimal] = {}  # canonical -> price step
        self.lot_sizes: dict[str, Decimal] = {}  # canonical -> size step
        self._supervisors: list[asyncio.Task] = []

    @classmethod
    def option_names(cls) -> set[str]:
        """Tunables settable from ``config.options``: the plain (non-callable, public) class attributes."""
        return option_names(cls)

    @classmethod
    def option_problem(cls, name: str, value: object) -> str | None:
        """Why ``value`` cannot set option ``name`` (None when it can); see :mod:`~aggbook.feeds.options`."""
        return option_problem(cls, name, value)

    # ------------------------------------------------------------------ venue hooks
    def rule_for(self, canonical: str) -> SequenceRule:
        raise NotImplementedError

    def new_connection_state(self) -> S:
        """Fresh per-connection protocol state for a new socket."""
        raise NotImplementedError

    def ws_url_for(self, conn: Connection[S]) -> str:
        return self.config.ws_url

    async def connect(self, conn: Connection[S]) -> aiohttp.ClientWebSocketResponse:
        """Open the socket; no autoping: the read loop answers pings so that they count as activity."""
        assert self.http.session is not None, "the feed is not started"
        return await self.http.session.ws_connect(self.ws_url_for(conn), autoping=False, heartbeat=None,
                                                  max_msg_size=64 * 1024 * 1024, compress=0,
                                                  timeout=self.ws_timeout())

    def ws_timeout(self) -> aiohttp.ClientWSTimeout:
        """No receive timeout (the supervisor watches silence), a short close handshake."""
        return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.close_timeout)

    async def subscribe(self, conn: Connection[S]) -> None:
        """Send the subscription frames for ``conn.symbols``."""

    async def handle(self, conn: Connection[S], msg: aiohttp.WSMessage) -> None:
        raise NotImplementedError

    async def fetch_snapshot(self, conn: Connection[S], canonical: str) -> Snapshot | None:
        """Obtain a snapshot; None when it will arrive on the stream (resubscribe)."""
        raise NotImplementedError

    def snapshot_weight(self, canonical: str) -> float:
        return 1.0

    def snapshot_pacing(self) -> tuple[float, float]:
        """``(rate, burst)`` of the venue-wide snapshot pacer, in snapshot weight.

        The options ``snapshot_rate``/``snapshot_burst`` by default; a venue that publishes a
        request budget derives them from it (Binance's ``exchangeInfo``).
        """
        return float(self.snapshot_rate), float(self.snapshot_burst)

    def cold_start_bound_s(self, symbols: int | None = None) -> float:
        """Earliest second at which the snapshot pacer lets the last of ``symbols`` cold-start requests out.

        ``symbols`` defaults to the configured ones; ``aggbook check-config`` prints this per venue.
        """
        count = len(self.config.symbols) if symbols is None else symbols
        rate, burst = self.snapshot_pacing()
        weights = [self.snapshot_weight(c) for c in self.config.symbols] or [self.snapshot_weight("")]
        return drain_s(rate, burst, max(weights), count)

    @classmethod
    def depth_problem(cls, depth: int) -> str | None:
        """Why the venue cannot serve snapshots of ``depth`` (None when it can); the config parser asks."""
        return None

    def connection_tasks(self, conn: Connection[S]) -> list[Coroutine[Any, Any, Any]]:
        """Per-connection coroutines (client pings, req queues) started once the socket is open."""
        return []

    def book_transition(self, sync: BookSync, transition: Transition) -> None:
        """A book of this feed changed state; venues that pace resubscribes by it override this."""

    async def validate_symbols(self) -> dict[str, str]:
        """Check the mapping against the venue's symbol endpoint; returns canonical -> error for bad ones."""
        return {}

    async def symbol_listed(self, canonical: str) -> bool | None:
        """Does the venue's symbol list have ``canonical`` (and offer it)?  None: cannot tell.

        Asked by the listing re-check after the venue refused the symbol; a venue without a symbol
        list keeps this default, so its refused books are simply tried again with backoff.
        """
        return None

    def resume_symbol(self, conn: Connection[S], canonical: str) -> None:
        """A refused symbol was found listed and its book on ``conn`` revived: ask for it again.

        The default requests a snapshot (REST, or the venue's ``fetch_snapshot`` resubscribe); venues
        whose refusal also cancelled the subscription override this to subscribe again.
        """
        if conn.open:
            self.request_snapshot(conn, canonical)

    # ------------------------------------------------------------------ public API
    @property
    def pacer(self) -> RequestPacer:
        """The venue-wide snapshot pacer (venue modules penalize it on the venue's weight signals)."""
        return self.snapshots.pacer

    @property
    def running(self) -> bool:
        """Every connection supervisor is still at work (none ended on an unexpected error)."""
        return all(not task.done() for task in self._supervisors)

    def on_sync(self, callback: Callable[[str, BookSync], None]) -> None:
        self.publisher.on_sync(callback)

    def current_syncs(self) -> dict[str, BookSync]:
        return dict(self.publisher.current)

    def status(self) -> dict:
        return render_status(self)

    async def start(self) -> None:
        self.stopping = False
        self.http.open(self.snapshot_timeout)
        self.listing.restart()
        rejected: dict[str, str] = {}
        try:
            rejected = await self.validate_symbols()
        except Exception as exc:  # the symbol endpoint being down must not stop the feed
            log.warning("%s: symbol validation skipped: %s", self.venue, exc)
        self.snapshots.repace()  # the venue may have published its request budget
        for canonical, why in rejected.items():
            # not listed now; its books start delisted and the listing is re-checked, so a symbol
            # listed later (or a list that was wrong at start) comes back without a restart
            self.listing.refused(canonical, why, listed=False)
        symbols = list(self.config.symbols)
        size = max(1, int(self.max_symbols_per_connection))
        for i in range(0, len(symbols), size):
            supervisor = ConnectionSupervisor(self, symbols[i:i + size])
            self._supervisors.append(asyncio.create_task(supervisor.run(), name=f"{self.venue}-sup"))

    async def stop(self) -> None:
        self.stopping = True
        self.listing.stop()
        for task in self._supervisors:
            task.cancel()
        for task in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._supervisors.clear()
        for conn in list(self.connections.values()):
            await close_connection(self, conn)
        for sync in self.publisher.current.values():
            if sync.state is not SyncState.INVALID:
                sync.fail(Reason.STOPPED, "feed stopped")
        await self.http.close()

    def request_rollover(self, conn: Connection[S]) -> None:
        """The venue announced it will close this connection: replace it before it goes."""
        log.info("%s: rollover requested on connection %s", self.venue, conn.id)
        conn.rollover.set()

    # ------------------------------------------------------------------ delivery (called by handle())
    def sync_for(self, conn: Connection[S], canonical: str) -> BookSync | None:
        return conn.syncs.get(canonical)

    def count_frame(self, conn: Connection[S], canonical: str) -> None:
        if not conn.frame_counted:
            conn.frame_counted = True
            self.metrics.message(self.venue, canonical, conn.frame_bytes)

    def deliver(self, conn: Connection[S], canonical: str, delta: Delta) -> None:
        """Every diff of every venue passes here: kept to plain attribute reads and the calls it needs."""
        sync = conn.syncs.get(canonical)
        if sync is None:
            return
        if not conn.frame_counted:  # count_frame, inlined
            conn.frame_counted = True
            self.metrics.message(self.venue, canonical, conn.frame_bytes)
        sync.on_delta(delta)
        crosscheck = self.crosscheck
        if crosscheck.checks:  # a bbo has been seen: the book's top has something to be compared with
            crosscheck.after_book(sync)
        if self.audit.waiting:
            self.audit.after_book(sync)
        live = sync.state is _LIVE
        if live and conn.snapshot_attempts and sync.confirmed:
            # the stream continued the snapshot: the symbol's snapshot backoff starts afresh
            conn.snapshot_attempts.pop(canonical, None)
        event_time = delta.event_time
        if event_time is not None:
            lag = time.time() - event_time
            self.metrics.lag(self.venue, lag if lag > 0.0 else 0.0)
        if not live:
            if conn.parked:
                snap = conn.parked.pop(canonical, None)
                if snap is not None:  # the diff that can tell whether the parked snapshot fits
                    sync.snapshot_failed()  # no longer held: on_snapshot clears what it must
                    self.deliver_snapshot(conn, canonical, snap)
                    return
            if sync.wants_snapshot():  # a live book never wants one
                self.request_snapshot(conn, canonical)

    def deliver_snapshot(self, conn: Connection[S], canonical: str, snap: Snapshot) -> None:
        """A snapshot for the book of ``canonical`` on ``conn``.

        A request-based snapshot that arrives before any diff of its book is parked until the first
        one: only a diff shows whether the stream continues the snapshot (``L >= F - 1``).  Loaded
        at once, a snapshot older than the stream's start (a venue's stale REST cache) would be
        served live, and wrong, until the next diff of a possibly quiet book.  It arises when a
        snapshot is asked for before the stream has spoken: MEXC asks once the subscription is
        acknowledged, and any venue once a refused symbol is listed again.
        """
        sync = conn.syncs.get(canonical)
        if sync is None:
            return
        if (not sync.buffered and not sync.rule.snapshot_in_stream and not self._snapshot_on_stream_socket
                and sync.state is not _LIVE and sync.state is not SyncState.INVALID):
            conn.parked[canonical] = snap
            sync.snapshot_requested()  # held: no other request while it waits
            return
        self.count_frame(conn, canonical)
        if not (self.audit.waiting and self.audit.in_stream_snapshot(sync, snap)):
            sync.on_snapshot(snap)
        self.crosscheck.after_book(sync)
        if sync.confirmed:
            conn.snapshot_attempts.pop(canonical, None)
        elif not sync.live and sync.wants_snapshot():
            self.request_snapshot(conn, canonical)

    def deliver_bbo(self, conn: Connection[S], canonical: str, bbo: Bbo) -> None:
        """The venue's best bid/offer for ``canonical``: checked against the book's top, never applied.

        Not counted as a book message (it may arrive on a socket of its own: NHEX/BitV ``/ws``).
        """
        sync = conn.syncs.get(canonical)
        if sync is None or not self.bbo_check:
            return
        try:
            self.crosscheck.on_bbo(sync, bbo)
        except ValueError as exc:  # a bad bbo says nothing about the book: logged, not acted on
            log.warning("%s %s: %s", self.venue, canonical, exc)

    def _bbo_mismatch(self, sync: BookSync, detail: str) -> None:
        """The cross-check found the book's top wrong: resync it like any other broken book."""
        for conn in self.connections.values():
            if conn.syncs.get(sync.symbol) is sync:
                sync.fail(Reason.BBO_MISMATCH, detail)
                if conn.open and sync.wants_snapshot(allow_empty_buffer=sync.rule.snapshot_in_stream):
                    self.request_snapshot(conn, sync.symbol)
                return

    def fail_connection_books(self, conn: Connection[S], reason: Reason, detail: str) -> None:
        """A frame was lost or mangled: every book on the connection may have missed it."""
        for canonical, sync in conn.syncs.items():
            if sync.state is SyncState.INVALID:
                continue
            sync.fail(reason, detail)
            if conn.open and sync.wants_snapshot(allow_empty_buffer=sync.rule.snapshot_in_stream):
                self.request_snapshot(conn, canonical)

    def request_snapshot(self, conn: Connection[S], canonical: str) -> None:
        self.snapshots.request(conn, canonical)

    async def get_json(self, url: str, params: dict | None = None) -> tuple[int, Any, Any]:
        """GET and decode JSON; 429/418 raise RateLimited (Retry-After).  Returns (status, headers, body)."""
        return await self.http.get_json(url, params)

    # ------------------------------------------------------------------ books and connections
    def new_sync(self, canonical: str) -> BookSync:
        """A book for ``canonical`` whose owner hook is the publisher's watcher and ``book_transition``."""
        watcher = self.publisher.watcher(canonical)

        def owner(sync: BookSync, transition: Transition) -> None:
            watcher(sync, transition)
            self.listing.book_transition(canonical, transition)
            self.book_transition(sync, transition)

        sync = BookSync(self.rule_for(canonical), venue=self.venue, symbol=canonical,
                        max_buffer=self.max_buffer, owner=owner)
        self.listing.new_book(canonical, sync)
        return sync

    def new_connection(self, symbols: list[str], publish_when_live: bool) -> Connection[S]:
        """A connection with fresh books; they are published now unless it replaces a live one."""
        syncs = {s: self.new_sync(s) for s in symbols}
        conn = Connection(list(symbols), syncs, self.new_connection_state(),
                          publish_when_live=publish_when_live,
                          liveness=Liveness(timeout=float(self.liveness_timeout)))
        for sync in syncs.values():
            sync.liveness = conn.liveness
        self.connections[conn.id] = conn
        if not publish_when_live:
            for canonical, sync in syncs.items():
                self.publisher.publish(canonical, sync)
        return conn
