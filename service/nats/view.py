"""A gateway's view of every shard, from NATS alone: the source its HTTP API and WebSocket hub read.

It implements :class:`aggbook.service.source.Source` (what the local aggregator offers the handlers
and the hub) and, in :class:`GatewayPayloads`, :class:`aggbook.service.source.Payloads` (what the
render cache offers), from the messages the shards publish (``publisher.py``).  State per symbol is
the newest quote and merged book only, replaced in place, so memory does not grow with the message
rate; NATS's own pending limits bound what waits to be read.

Ordering and gaps.  Every message carries its shard's instance (new per process), start time and a
per-subject sequence number.  A message older than the state held is ignored (a snapshot read from
the key-value bucket after newer live messages).  A message that does not follow the state held by
exactly one (a lost message, a slow-consumer drop, a shard restart) is applied, counted in
``aggbook_gateway_gaps_total``, and every WebSocket subscription of the symbol gets a ``snapshot``
with reason ``conflated`` instead of an ``update``: states were skipped, and the client is told.

Staleness.  Each shard heartbeats with the symbols it owns.  A shard silent for ``stale_after``
seconds has its symbols *excluded*: their quotes and books are served with every venue excluded
(reason ``shard stale``), as the local service serves a symbol whose venues all went stale, and
``/readyz`` reports them.  When the shard heartbeats again (same or new instance), its symbols are
reloaded from the key-value bucket and resnapshotted.  A quote or book held from an earlier process
of the shard is excluded the same way until the new process has published its own: a restarted
shard's first heartbeat must not bring back its predecessor's last prices as current.  After a NATS
reconnection, and after NATS dropped messages for being read too slowly, every symbol is reloaded
and resnapshotted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

from aggbook.book.sync import Reason, SyncState, Transition
from aggbook.service.aggregator import ChangeSubscriber, SymbolChange
from aggbook.service.handlers import ApiError
from aggbook.service.nats import subjects
from aggbook.service.nats.connection import NatsLink
from aggbook.service.nats.metrics import GatewayMetrics

log = logging.getLogger("aggbook.gateway")

SHARD_STALE = "shard stale"


@dataclass(frozen=True)
class ViewSettings:
    url: str
    prefix: str = "aggbook"
    bucket: str = "aggbook"
    stale_after: float = 3.0  # seconds without a shard's heartbeat before its symbols are excluded
    pending_msgs: int = 65_536  # NATS messages waiting to be read before NATS drops (slow consumer)
    pending_bytes: int = 64 * 1024 * 1024  # ... or bytes


def _order(env: dict[str, Any]) -> tuple[float, str, int]:
    return (env.get("started", 0.0), env.get("instance", ""), env.get("seq", 0))


def _follows(prev: dict[str, Any] | None, env: dict[str, Any]) -> bool:
    """Is ``env`` the very next message of its subject after ``prev``?"""
    return (
        prev is not None
        and prev.get("instance") == env.get("instance")
        and prev.get("seq", 0) + 1 == env.get("seq")
    )


def _newer(prev: dict[str, Any] | None, env: dict[str, Any]) -> bool:
    if prev is None:
        return True
    if prev.get("instance") == env.get("instance"):
        return env.get("seq", 0) > prev.get("seq", 0)
    return env.get("started", 0.0) >= prev.get("started", 0.0)  # a newer process of the shard


@dataclass
class SymbolState:
    """One symbol as the gateway knows it: its owner, its venues, the newest quote and book."""

    symbol: str
    shard: int | None = None
    venues: dict[str, str] = field(default_factory=dict)  # venue -> the venue's spelling
    quote_env: dict[str, Any] | None = None
    book_env: dict[str, Any] | None = None
    stale: bool = True  # until its shard heartbeats
    cache: dict[tuple, bytes] = field(default_factory=dict)  # rendered payloads until the next change


@dataclass
class ShardState:
    index: int
    count: int
    instance: str
    started: float
    seen: float  # monotonic time of the last heartbeat
    beat: dict[str, Any]
    fresh: bool = True


class GatewayPayloads:
    """The :class:`~aggbook.service.source.Payloads` of a gateway: the shards' rendered JSON.

    Quotes are the shard's WebSocket form as published; the HTTP form adds each venue's
    ``age_seconds`` (from the venue's last update time the shard published, read now) and
    ``last_id``.  Merged books are cut to the depth asked from the published depth; a subset of
    venues cannot be merged from the merged book, so ``venues`` is refused.
    """

    venue_filters = False

    def __init__(self, view: NatsView) -> None:
        self.view = view
        self.renders = 0
        self.hits = 0

    def _quote_dict(self, st: SymbolState, fees: bool) -> dict[str, Any]:
        assert st.quote_env is not None
        quote: dict[str, Any] = st.quote_env["quote_fees" if fees else "quote"]
        if not st.stale:
            return quote
        out = dict(quote)
        out.update(bid=None, ask=None, crossed=False, locked=False, spread=None)
        out["venues"] = [
            dict(v, included=False, excluded_reason=SHARD_STALE, bid=None, ask=None)
            for v in quote.get("venues", [])
        ]
        return out

    def quote_stream(self, symbol: str, fees: bool) -> bytes:
        st = self.view.consolidated[symbol]
        key = (subjects.QUOTE, fees)
        payload = st.cache.get(key)
        if payload is None:
            self.renders += 1
            payload = st.cache[key] = orjson.dumps(self._quote_dict(st, fees))
        else:
            self.hits += 1
        return payload

    def quote_http(self, symbol: str, fees: bool, now: float | None = None) -> bytes:
        return orjson.dumps(self._quote_http(symbol, fees))

    def _quote_http(self, symbol: str, fees: bool) -> dict[str, Any]:
        st = self.view.consolidated[symbol]
        assert st.quote_env is not None
        meta = st.quote_env.get("venues", {})
        wall = time.time()
        body = dict(self._quote_dict(st, fees))
        venues = []
        for item in body.get("venues", []):
            m = meta.get(item.get("venue"), {})
            updated = m.get("updated_at")
            venues.append(
                dict(
                    item,
                    age_seconds=None if updated is None else round(max(0.0, wall - updated), 6),
                    last_id=m.get("last_id"),
                )
            )
        body["venues"] = venues
        return body

    def quotes_http(self, symbols: Iterable[str], fees: bool, now: float) -> bytes:
        return orjson.dumps({"quotes": [self._quote_http(s, fees) for s in symbols]})

    def ladder(self, symbol: str, depth: int, venues: Iterable[str] | None = None) -> bytes:
        if venues is not None:
            raise ApiError(
                400,
                "bad_request",
                "venues is not served by a gateway: it has the merged book "
                "of all venues only (ask the shard that owns the symbol)",
            )
        st = self.view.consolidated[symbol]
        key = (subjects.BOOK, depth)
        payload = st.cache.get(key)
        if payload is not None:
            self.hits += 1
            return payload
        self.renders += 1
        book: dict[str, Any] | None = None if st.book_env is None else st.book_env["book"]
        if book is None:
            out: dict[str, Any] = {
                "symbol": symbol,
                "depth": depth,
                "bids": [],
                "asks": [],
                "venues": [],
                "excluded": dict.fromkeys(st.venues, "no book yet"),
            }
        else:
            out = dict(book)
            out["depth"] = depth
            if st.stale:
                excluded = dict.fromkeys(book.get("venues", []), SHARD_STALE)
                excluded.update(dict.fromkeys(book.get("excluded", {}), SHARD_STALE))
                out.update(bids=[], asks=[], venues=[], excluded=excluded)
            else:
                out["bids"] = book.get("bids", [])[:depth]
                out["asks"] = book.get("asks", [])[:depth]
                _cut_known_depth(out, depth)
        payload = st.cache[key] = orjson.dumps(out)
        return payload


def _cut_known_depth(out: dict[str, Any], depth: int) -> None:
    """Known depth of a merged book cut from the published depth to ``depth``, as the shard states it.

    ``complete_depth`` counts a venue's complete levels only up to the depth asked, and a side that
    now holds ``depth`` levels is no longer cut short by any venue's window (``complete_to`` null).
    """
    counts = out.get("complete_depth")
    if isinstance(counts, dict):
        out["complete_depth"] = {
            venue: {side: min(n, depth) for side, n in sides.items()} for venue, sides in counts.items()
        }
    edges = out.get("complete_to")
    if isinstance(edges, dict):
        out["complete_to"] = {
            side: None if len(out.get(side, [])) >= depth else edge for side, edge in edges.items()
        }


class NatsView:
    """Every shard's symbols as published on NATS: the gateway's :class:`~aggbook.service.source.Source`."""

    def __init__(
        self, settings: ViewSettings, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.consolidated: dict[str, SymbolState] = {}  # symbols with a quote, in the order first heard
        self.pending: dict[str, SymbolState] = {}  # symbols a heartbeat named, no quote yet
        self.event_times: dict[str, tuple[float | None, float]] = {}
        self.shards: dict[int, ShardState] = {}
        self.subscribers: list[ChangeSubscriber] = []
        self.on_resync: list[Callable[[str], None]] = []
        self.payloads = GatewayPayloads(self)
        self.started_at = time.time()
        self.link = NatsLink(settings.url, name="aggbook-gateway", metrics=metrics.link, on_up=self._on_up)
        self.link.on_slow_consumer = self._slow_consumer
        # each kind's counter child, looked up once: ``labels()`` per message costs a lock and a dict
        self._received = {kind: metrics.received.labels(kind) for kind in subjects.KINDS}
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task] = []
        self._reloading: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # reloads after a shard's return, held till done
        self.loaded = asyncio.Event()  # the first key-value snapshot was read (or there was none yet)
        metrics.symbols.labels("fresh").set_function(
            lambda: sum(1 for s in self.consolidated.values() if not s.stale)
        )
        metrics.symbols.labels("stale").set_function(
            lambda: sum(1 for s in self.consolidated.values() if s.stale)
        )
        metrics.shards.labels("fresh").set_function(lambda: sum(1 for s in self.shards.values() if s.fresh))
        metrics.shards.labels("stale").set_function(
            lambda: sum(1 for s in self.shards.values() if not s.fresh)
        )

    # ------------------------------------------------------------------ the Source interface
    def subscribe(self, subscriber: ChangeSubscriber) -> None:
        self.subscribers.append(subscriber)

    def venues_for(self, symbol: str) -> list[str]:
        st = self.consolidated.get(symbol)
        return list(st.venues) if st is not None else []

    def symbols(self) -> Iterable[tuple[str, dict[str, str]]]:
        for symbol, st in self.consolidated.items():
            yield symbol, dict(st.venues)

    def live_venues(self, symbol: str) -> list[str]:
        st = self.consolidated[symbol]
        if st.stale or st.quote_env is None:
            return []
        return [v["venue"] for v in st.quote_env["quote"].get("venues", []) if v.get("included")]

    def readiness(self) -> tuple[bool, dict[str, list[str]]]:
        """Ready: every shard of the topology heartbeats and each of their symbols has a live venue."""
        live = {s: self.live_venues(s) for s in self.consolidated}
        counts = {sh.count for sh in self.shards.values()}
        complete = len(counts) == 1 and all(
            i in self.shards and self.shards[i].fresh for i in range(next(iter(counts)))
        )
        return complete and self.loaded.is_set() and not self.pending and all(live.values()), live

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch_shards(), name="gateway-staleness"))
        await self.link.start()

    async def stop(self) -> None:
        for task in [*self._tasks, self._reloading, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._tasks.clear()
        await self.link.stop()

    async def _on_up(self, nc: Client) -> None:
        """After every (re)connection: subscribe (once; the client renews it), reload, resnapshot.

        After a reconnection every symbol is resnapshotted: messages may have been lost while NATS
        was away, and the first one after it may be the last of its subject for a while."""
        first = self._sub is None
        if self._sub is None:
            self._sub = await nc.subscribe(
                subjects.everything(self.settings.prefix),
                cb=self._on_msg,
                pending_msgs_limit=self.settings.pending_msgs,
                pending_bytes_limit=self.settings.pending_bytes,
            )
        await self._reload(nc, None, everything=not first)

    def _slow_consumer(self) -> None:
        """NATS dropped messages we read too slowly: the last one of a subject may be among them."""
        nc = self.link.nc
        if nc is not None and (self._reloading is None or self._reloading.done()):
            self._reloading = asyncio.create_task(
                self._reload(nc, None, everything=True), name="gateway-reload"
            )

    async def _reload(self, nc: Client, symbols: set[str] | None, *, everything: bool = False) -> None:
        """Read the key-value snapshot (every symbol, or ``symbols``) and resnapshot the clients of
        each symbol it moved forward (or of every symbol read, with ``everything``)."""
        self.metrics.resyncs.inc()
        touched: set[str] = set()
        try:
            kv = await nc.jetstream().key_value(self.settings.bucket)
            try:
                keys = await kv.keys()
            except NoKeysError:
                keys = []
            for key in keys:
                kind, _, symbol = key.partition(".")
                if kind not in (subjects.QUOTE, subjects.BOOK) or (
                    symbols is not None and symbol not in symbols
                ):
                    continue
                try:
                    entry = await kv.get(key)
                except (NotFoundError, KeyError):
                    continue
                if entry.value and self._apply(kind, symbol, orjson.loads(entry.value), from_snapshot=True):
                    touched.add(symbol)
        except BucketNotFoundError:
            log.info("no key-value bucket yet: waiting for a shard", extra={"bucket": self.settings.bucket})
        finally:
            self.loaded.set()
        if everything:
            touched |= set(self.consolidated) if symbols is None else symbols & set(self.consolidated)
        for symbol in touched & set(self.consolidated):
            self._resnapshot(symbol)

    # ------------------------------------------------------------------ messages
    async def _on_msg(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) < 3:
            return
        kind = parts[1]
        try:
            env = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            log.warning("undecodable message", extra={"subject": msg.subject})
            return
        if kind in (subjects.QUOTE, subjects.BOOK):
            self._received[kind].inc()
            self._apply(kind, parts[2], env, from_snapshot=False)
        elif kind == subjects.STATUS and len(parts) == 4:
            self._received[kind].inc()
            self._status(parts[2], parts[3], env)
        elif kind == subjects.HEARTBEAT:
            self._received[kind].inc()
            self._heartbeat(env)

    def _state(self, symbol: str) -> SymbolState:
        st = self.consolidated.get(symbol)
        if st is None:
            st = self.pending.pop(symbol, None) or SymbolState(symbol)
            self.consolidated[symbol] = st
            self._refresh_staleness(st)
        return st

    def _apply(self, kind: str, symbol: str, env: dict[str, Any], *, from_snapshot: bool) -> bool:
        """Hold ``env`` if it is newer than the state held; tell the hub unless reading a snapshot."""
        if kind == subjects.BOOK and symbol not in self.consolidated:
            st = self.pending.setdefault(symbol, SymbolState(symbol))  # the quote makes it served
        else:
            st = self._state(symbol)
        attr = "quote_env" if kind == subjects.QUOTE else "book_env"
        prev = getattr(st, attr)
        if not _newer(prev, env):
            return False
        follows = _follows(prev, env)
        setattr(st, attr, env)
        # only the payloads of this kind: a quote leaves the rendered books as they are
        for key in [k for k in st.cache if k[0] == kind]:
            del st.cache[key]
        flipped = self._refresh_staleness(st, notify=False)  # the new process's first word
        if "recv_ts" in env:
            self.event_times[symbol] = (env.get("event_ts"), env["recv_ts"])
        if from_snapshot or symbol not in self.consolidated:
            return True  # the caller resnapshots after the whole snapshot is read
        if prev is not None and not follows:
            self.metrics.gaps.labels(kind).inc()
            self._resnapshot(symbol)
            return True
        quote = kind == subjects.QUOTE
        self._notify(SymbolChange(symbol, top=quote or flipped, depth=not quote or flipped))
        return True

    def _status(self, venue: str, symbol: str, env: dict[str, Any]) -> None:
        if symbol not in self.consolidated:
            return
        try:
            transition = Transition(
                SyncState(env["previous"]),
                SyncState(env["state"]),
                Reason(env["reason"]),
                str(env.get("detail", "")),
                self.clock(),
            )
        except (KeyError, ValueError):
            log.warning("unreadable status message", extra={"venue": venue, "symbol": symbol})
            return
        self._notify(SymbolChange(symbol, transitions=[(venue, transition)], depth=False))

    def _heartbeat(self, beat: dict[str, Any]) -> None:
        try:
            index, count, instance = int(beat["index"]), int(beat["count"]), str(beat["instance"])
            owned: dict[str, dict[str, str]] = beat["symbols"]
        except (KeyError, TypeError, ValueError):
            log.warning("unreadable heartbeat")
            return
        now = self.clock()
        shard = self.shards.get(index)
        returned = shard is not None and (shard.instance != instance or not shard.fresh)
        if shard is None or shard.instance != instance:
            if shard is not None:
                self.metrics.gaps.labels("shard").inc()
            shard = self.shards[index] = ShardState(
                index, count, instance, beat.get("started", 0.0), now, beat
            )
        shard.seen, shard.beat, shard.count = now, beat, count
        for gone in [i for i in self.shards if i >= count]:  # the topology shrank: N is the newest N
            del self.shards[gone]
        was_fresh, shard.fresh = shard.fresh, True
        for symbol, venues in owned.items():
            st = self.consolidated.get(symbol) or self.pending.setdefault(symbol, SymbolState(symbol))
            st.shard = index
            st.venues = dict(venues)
            self._refresh_staleness(st)  # back, or (a new instance) held from its predecessor
        if returned or not was_fresh:
            log.info("shard back", extra={"shard": f"{index}/{count}", "instance": instance})
            nc = self.link.nc
            if nc is not None and self.link.up:
                # not ``everything``: a state older than the one held is no news (a new instance is a
                # gap by itself, and messages of the same one lost meanwhile break its sequence)
                task = asyncio.get_running_loop().create_task(
                    self._reload(nc, set(owned)), name="gateway-reload"
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ staleness
    def _refresh_staleness(self, st: SymbolState, *, notify: bool = True) -> bool:
        """Is the symbol's shard silent, or is what is held from an earlier process of it?  True
        when that answer changed (the rendered payloads are dropped, and the hub told if ``notify``)."""
        shard = self.shards.get(st.shard) if st.shard is not None else None
        stale = (
            shard is None
            or not shard.fresh
            or any(
                env is not None and env.get("instance") != shard.instance
                for env in (st.quote_env, st.book_env)
            )
        )
        if stale == st.stale:
            return False
        st.stale = stale
        st.cache.clear()
        if notify and st.symbol in self.consolidated:
            self._notify(SymbolChange(st.symbol, top=True))
        return True

    async def _watch_shards(self) -> None:
        interval = max(0.05, self.settings.stale_after / 4)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for shard in self.shards.values():
                fresh = now - shard.seen <= self.settings.stale_after
                if fresh != shard.fresh:
                    shard.fresh = fresh
                    if not fresh:
                        log.warning(
                            "shard stale: its symbols are excluded",
                            extra={"shard": f"{shard.index}/{shard.count}"},
                        )
            for st in self.consolidated.values():
                self._refresh_staleness(st)

    # ------------------------------------------------------------------ telling the hub
    def _notify(self, change: SymbolChange) -> None:
        for subscriber in self.subscribers:
            try:
                subscriber.on_symbol_changed(change)
            except Exception:
                log.exception("subscriber failed on %s", change.symbol)

    def _resnapshot(self, symbol: str) -> None:
        for resync in self.on_resync:
            try:
                resync(symbol)
            except Exception:
                log.exception("resnapshot failed on %s", symbol)
