"""One WebSocket and the books synchronised over it.

Its own module because every part of the lifecycle holds connections (the supervisor opens and
closes them, the snapshot scheduler asks on them, the publisher marks them live, venue modules
keep their protocol state in them) while none of those parts owns the others.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp

from aggbook.book.sync import BookSync, Liveness, Snapshot

_conn_ids = itertools.count(1)

# a venue's per-connection protocol state (pending requests, routing tables, its own pacers)
S = TypeVar("S")


@dataclass
class Connection(Generic[S]):
    """One WebSocket and the books synchronised over it.

    ``venue_state`` is the venue module's own typed state for this socket (a slotted dataclass made
    by ``VenueFeed.new_connection_state``): it lives and dies with the socket, so a reconnect never
    inherits a stale request table or pacer.
    """

    symbols: list[str]
    syncs: dict[str, BookSync]
    venue_state: S
    publish_when_live: bool = False  # a rollover replacement: its books replace the old ones once live
    id: int = field(default_factory=lambda: next(_conn_ids))
    ws: aiohttp.ClientWebSocketResponse | None = None
    state: str = "connecting"
    since: float = field(default_factory=time.time)
    opened_at: float = field(default_factory=time.monotonic)
    # when the socket last proved alive (any frame, pings and pongs included); its books share it
    liveness: Liveness = field(default_factory=lambda: Liveness(timeout=10.0))
    rollover: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task] = field(default_factory=set)
    snapshot_attempts: dict[str, int] = field(default_factory=dict)  # canonical -> failed in a row
    # canonical -> a REST snapshot that came before any diff of its book: it waits for the first
    # diff, which shows whether the stream continues it (``VenueFeed.deliver_snapshot``)
    parked: dict[str, Snapshot] = field(default_factory=dict)
    frame_bytes: int = 0  # size of the frame being handled (for the message metric)
    frame_counted: bool = False  # the frame was counted against a symbol already
    went_live: bool = False
    silenced: bool = False  # the silence watch ended the read: no frame for the venue's silence_timeout
    task: asyncio.Task | None = None

    @property
    def last_rx(self) -> float:
        return self.liveness.heard_at

    @property
    def open(self) -> bool:
        return self.state == "open" and self.ws is not None and not self.ws.closed

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
        """A task that ends with the connection (cancelled when it closes)."""
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
