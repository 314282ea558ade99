"""A serving process's publisher: every symbol's quote, merged book and venue states, to NATS.

It hears the aggregator's :class:`~aggbook.service.aggregator.SymbolChange` like the WebSocket hub
and the render cache do, and publishes the same payloads the HTTP API serves (rendered by
``service/renders.py``), wrapped in an envelope with the shard, a per-subject sequence number and
the venue event time (``docs/scale-out.md``).

It must never block or slow the feeds, so a change only *marks* its subjects: the symbol's quote,
its merged book (sent every ``book_interval``), and the newest transition per (venue, symbol).  One
sender task publishes what is marked, rendering each subject's latest state when it gets to it.
While NATS is slow (the client's outgoing buffer is half full) or away, marks accumulate, one per
subject at most: the buffer of what is waiting is bounded by the number of subjects, a state replaced
before it went out is counted in ``aggbook_nats_conflated_total``, and the subscriber sees the
newest state once NATS keeps up again.  After every (re)connection the bucket is re-created if it is
missing and every symbol's quote and book are published again, so the key-value snapshot is whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError

from aggbook.service.nats import subjects
from aggbook.service.nats.connection import NatsLink
from aggbook.service.nats.metrics import PublisherMetrics
from aggbook.service.nats.settings import NatsSettings, Shard
from aggbook.service.tasks import cancel_and_wait

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from aggbook.service.aggregator import Aggregator, SymbolChange
    from aggbook.service.renders import RenderCache

log = logging.getLogger("aggbook.nats")

_YIELD_EVERY = 64  # publications between two yields to the event loop: the feeds come first


def _round(t: float | None) -> float | None:
    return None if t is None else round(t, 6)


async def ensure_bucket(nc: Client, settings: NatsSettings) -> None:
    """The key-value bucket exists (several shards may race to create it: same config, same answer)."""
    js = nc.jetstream()
    try:
        await js.key_value(settings.bucket)
        return
    except BucketNotFoundError:
        pass
    storage = StorageType.FILE if settings.kv_storage == "file" else StorageType.MEMORY
    await js.create_key_value(
        KeyValueConfig(
            bucket=settings.bucket, history=1, storage=storage,
            description="aggbook: the last quote and merged book per symbol",
        )
    )


class NatsPublisher:
    def __init__(
        self,
        aggregator: Aggregator,
        renders: RenderCache,
        settings: NatsSettings,
        registry: CollectorRegistry,
        *,
        shard: Shard | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.renders = renders
        self.settings = settings
        self.shard = shard if shard is not None else Shard()
        self.prefix = settings.prefix
        self.metrics = PublisherMetrics(registry)
        self.metrics.symbols.labels(str(self.shard.index)).set(len(aggregator.consolidated))
        self.metrics.pending.set_function(
            lambda: len(self._quotes) + len(self._books_due) + len(self._statuses)
        )
        self.started = round(time.time(), 6)
        # a new instance id per process: a gateway tells a restarted shard from a gap in its sequence
        self.instance = f"{self.shard.index}-{uuid.uuid4().hex[:12]}"
        self._quotes: dict[str, None] = {}  # symbols whose quote waits to go out, oldest first
        self._books: set[str] = set()  # symbols whose merged book changed since it was last due
        self._books_due: dict[str, None] = {}  # symbols whose merged book waits to go out
        self._statuses: dict[tuple[str, str], dict[str, Any]] = {}  # newest transition per (venue, symbol)
        self._seq: dict[str, int] = {}  # per subject
        self._last_book: dict[str, bytes] = {}  # the ladder last published per symbol
        self._heartbeat_seq = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.link = NatsLink(
            settings.url, name=f"aggbook-shard-{self.shard.index}", metrics=self.metrics.link,
            on_up=self._on_up, pending_bytes=settings.pending_bytes,
        )
        aggregator.subscribe(self)

    # ------------------------------------------------------------------ the aggregator's signal
    def on_symbol_changed(self, change: SymbolChange) -> None:
        """Mark what moved; never render or send here (this runs in the aggregator's flush)."""
        symbol = change.symbol
        if change.top:
            if symbol in self._quotes:
                self.metrics.conflated.labels(subjects.QUOTE).inc()
            else:
                self._quotes[symbol] = None
        self._books.add(symbol)
        for venue, transition in change.transitions:
            if transition.old is transition.new:
                continue  # a snapshot re-entering a state: the hub sends no status for it either
            key = (venue, symbol)
            if key in self._statuses:
                self.metrics.conflated.labels(subjects.STATUS).inc()
            self._statuses[key] = {
                "venue": venue,
                "symbol": symbol,
                "state": transition.new.value,
                "previous": transition.old.value,
                "reason": transition.reason.value,
                "detail": transition.detail,
            }
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Returns at once: NATS may be down, and the shard serves HTTP meanwhile."""
        self._tasks = [
            asyncio.create_task(self._send_forever(), name="nats-sender"),
            asyncio.create_task(self._books_forever(), name="nats-books"),
            asyncio.create_task(self._heartbeats_forever(), name="nats-heartbeat"),
        ]
        await self.link.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        await self.link.stop()

    async def _on_up(self, nc: Client) -> None:
        await ensure_bucket(nc, self.settings)
        self._last_book.clear()  # the bucket may be new and empty: everything goes out again
        for symbol in self.aggregator.consolidated:  # the bucket and late subscribers need all of it
            self._quotes.setdefault(symbol, None)
            self._books_due.setdefault(symbol, None)
        await self._publish_heartbeat(nc)
        self._wake.set()

    # ------------------------------------------------------------------ sending
    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self.link.nc
            if nc is None or not self.link.up:
                continue  # marks wait; ``_on_up`` wakes us after the next (re)connection
            try:
                await self._send_marked(nc)
            except Exception as exc:  # the connection dropped mid-way: what was not sent stays marked
                self.metrics.errors.inc()
                log.warning("nats publish failed: %r", exc)

    async def _send_marked(self, nc: Client) -> None:
        sent = 0
        limit = self.settings.pending_bytes // 2
        while self._statuses or self._quotes or self._books_due:
            if not self.link.up:
                return
            if nc.pending_data_size > limit:  # NATS is slow: let the buffer drain, keep conflating
                await asyncio.sleep(0.005)
                continue
            if self._statuses:
                key = next(iter(self._statuses))
                body = self._statuses.pop(key)
                await self._publish_status(nc, body)
            elif self._quotes:
                symbol = next(iter(self._quotes))
                del self._quotes[symbol]
                try:
                    await self._publish_quote(nc, symbol)
                except Exception:
                    self._quotes.setdefault(symbol, None)
                    raise
            else:
                symbol = next(iter(self._books_due))
                del self._books_due[symbol]
                try:
                    await self._publish_book(nc, symbol)
                except Exception:
                    self._books_due.setdefault(symbol, None)
                    raise
            sent += 1
            if sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _envelope(self, subject: str, symbol: str) -> dict[str, Any]:
        seq = self._seq[subject] = self._seq.get(subject, 0) + 1
        out: dict[str, Any] = {
            "shard": self.shard.label,
            "instance": self.instance,
            "started": self.started,
            "seq": seq,
            "ts": round(time.time(), 6),
            "symbol": symbol,
        }
        times = self.aggregator.event_times.get(symbol)
        if times is not None:
            out["event_ts"] = _round(times[0])
            out["recv_ts"] = _round(times[1])
        return out

    def _kv(self, kind: str, symbol: str) -> str:
        return subjects.kv_subject(self.settings.bucket, subjects.kv_key(kind, symbol))

    async def _publish_status(self, nc: Client, body: dict[str, Any]) -> None:
        venue, symbol = body["venue"], body["symbol"]
        subject = subjects.status(self.prefix, venue, symbol)
        msg = self._envelope(subject, symbol)
        msg.update(body)
        await nc.publish(subject, orjson.dumps(msg))
        self.metrics.published.labels(subjects.STATUS).inc()

    async def _publish_quote(self, nc: Client, symbol: str) -> None:
        subject = subjects.quote(self.prefix, symbol)
        msg = self._envelope(subject, symbol)
        book = self.aggregator.consolidated[symbol]
        mono, wall = self.aggregator.clock(), time.time()
        msg["venues"] = {
            venue: {
                "updated_at": None if sync.updated_at is None else round(wall - (mono - sync.updated_at), 6),
                "last_id": sync.last_id,
            }
            for venue, sync in book.syncs.items()
        }
        msg["quote"] = orjson.Fragment(self.renders.quote_stream(symbol, False))
        msg["quote_fees"] = orjson.Fragment(self.renders.quote_stream(symbol, True))
        payload = orjson.dumps(msg)
        await nc.publish(subject, payload)
        await nc.publish(self._kv(subjects.QUOTE, symbol), payload)
        self.metrics.published.labels(subjects.QUOTE).inc()

    async def _publish_book(self, nc: Client, symbol: str) -> None:
        ladder = self.renders.ladder(symbol, self.settings.book_depth)
        if self._last_book.get(symbol) == ladder:
            return  # changes below the published depth, or a venue's refresh of the same levels
        self._last_book[symbol] = ladder
        subject = subjects.book(self.prefix, symbol)
        msg = self._envelope(subject, symbol)
        msg["book"] = orjson.Fragment(ladder)
        payload = orjson.dumps(msg)
        await nc.publish(subject, payload)
        await nc.publish(self._kv(subjects.BOOK, symbol), payload)
        self.metrics.published.labels(subjects.BOOK).inc()

    # ------------------------------------------------------------------ timers
    async def _books_forever(self) -> None:
        """Merged books go out every ``book_interval`` while they change: a ladder is the costly render."""
        while True:
            await asyncio.sleep(self.settings.book_interval)
            if not self._books:
                continue
            for symbol in self._books:
                if symbol in self._books_due:
                    self.metrics.conflated.labels(subjects.BOOK).inc()
                else:
                    self._books_due[symbol] = None
            self._books.clear()
            self._wake.set()

    async def _heartbeats_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            nc = self.link.nc
            if nc is not None and self.link.up:
                try:
                    await self._publish_heartbeat(nc)
                except Exception as exc:
                    self.metrics.errors.inc()
                    log.warning("nats heartbeat failed: %r", exc)

    def heartbeat(self) -> dict[str, Any]:
        """The shard's heartbeat: who it is, what it owns, and how ready each symbol is."""
        self._heartbeat_seq += 1
        ready, live = self.aggregator.readiness()
        return {
            "shard": self.shard.label,
            "index": self.shard.index,
            "count": self.shard.count,
            "instance": self.instance,
            "started": self.started,
            "seq": self._heartbeat_seq,
            "ts": round(time.time(), 6),
            "interval": self.settings.heartbeat_interval,
            "book_depth": self.settings.book_depth,
            "ready": ready,
            "symbols": {symbol: venues for symbol, venues in self.aggregator.symbols()},
            "live_venues": live,
        }

    async def _publish_heartbeat(self, nc: Client) -> None:
        await nc.publish(subjects.heartbeat(self.prefix, self.shard.index), orjson.dumps(self.heartbeat()))
        self.metrics.published.labels(subjects.HEARTBEAT).inc()
