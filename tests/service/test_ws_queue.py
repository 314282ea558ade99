"""Per-client queue: bounded, conflating, gap-free sequence numbers, close code 4008 when hopeless.

The socket is replaced by one whose sends block until the test opens a gate, which
makes "slow client" exact instead of a race with kernel buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from aggbook.service.config import WebSocketSettings
from aggbook.service.ws import CLOSE_SLOW_CONSUMER, Client, Hub
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, attach_client, running_hub


class GatedSocket:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.frames: list[dict] = []
        self.closed = False
        self.close_code: int | None = None

    async def send_frame(self, data: bytes, opcode: object) -> None:
        await self.gate.wait()
        self.frames.append(orjson.loads(data))

    async def close(self, *, code: int, message: bytes, drain: bool = True) -> bool:
        self.closed = True
        self.close_code = code
        return True


@pytest.fixture
async def hub_and_feeds(request) -> AsyncIterator[tuple[Hub, FakeFeeds]]:
    settings = WebSocketSettings(**getattr(request, "param", {"queue_size": 8}))
    async with running_hub(settings) as hub_feeds:
        yield hub_feeds


def attach(hub: Hub) -> tuple[Client, GatedSocket]:
    sock = GatedSocket()
    return attach_client(hub, sock), sock


async def churn(feeds: FakeFeeds, n: int, start: int = 0) -> None:
    """``n`` top-of-book changes, each published before the next (one flush per loop turn)."""
    for i in range(start, start + n):
        feeds["alpha"].delta("BTC-USDT", bids=[(f"100.{i + 1:03d}", "1")])
        await asyncio.sleep(0)
        await asyncio.sleep(0)


async def test_slow_client_is_bounded_and_conflated_fast_client_gets_everything(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    slow, slow_sock = attach(hub)
    fast, fast_sock = attach(hub)
    fast_sock.gate.set()
    for client in (slow, fast):
        client.handle_text('{"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]}')
        client.handle_text('{"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 5}')
    await churn(feeds, 300)
    assert slow.max_queued <= 8 + 2  # queue_size + one marker per subscription
    assert slow.total_conflations > 0 and slow.dropped > 0
    assert fast.dropped == 0 and fast.total_conflations == 0
    await wait_for(lambda: not fast.queue, what="fast client drained")
    fast_updates = [f for f in fast_sock.frames if f["type"] == "update" and f["sub"] == "quotes:BTC-USDT"]
    assert len(fast_updates) == 300  # every change reached the fast client

    slow_sock.gate.set()
    await wait_for(lambda: not slow.queue, what="slow client drained")
    by_sub: dict[str, list[dict]] = {}
    for f in slow_sock.frames:
        if f["type"] in ("snapshot", "update"):
            by_sub.setdefault(f["sub"], []).append(f)
    for sub, frames in by_sub.items():
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), sub
        assert any(f["type"] == "snapshot" and f.get("reason") == "conflated" for f in frames), sub
    # the conflated snapshot carries the latest state, not a stale one
    assert by_sub["quotes:BTC-USDT"][-1]["data"]["bid"]["price"] == "100.3"
    assert len(by_sub["quotes:BTC-USDT"]) < 300
    assert slow.sent + slow.dropped >= 300


@pytest.mark.parametrize("hub_and_feeds", [{"queue_size": 4, "max_behind": 20}], indirect=True)
async def test_client_that_never_catches_up_is_closed_with_4008(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    slow, sock = attach(hub)
    other, other_sock = attach(hub)
    other_sock.gate.set()
    for client in (slow, other):
        client.handle_text('{"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"]}')
    for i in range(50):
        feeds["alpha"].delta("BTC-USDT", bids=[(f"100.{i + 1:03d}", "1")])
        feeds["alpha"].delta("ETH-USDT", bids=[(f"10.{i + 1:03d}", "1")])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await wait_for(lambda: sock.closed, what="slow client closed")
    assert sock.close_code == CLOSE_SLOW_CONSUMER == 4008
    assert not slow.queue and slow.closing
    assert not other.closing and other.dropped == 0


async def test_hard_cap_bounds_control_messages_too(hub_and_feeds) -> None:
    hub, _ = hub_and_feeds
    client, sock = attach(hub)
    for _ in range(10_000):  # a client spamming pings while never reading
        client.handle_text('{"op": "ping"}')
    assert client.max_queued <= client.hard_cap + 1
    await wait_for(lambda: sock.closed, what="spammer closed")
    assert sock.close_code == 4008


async def test_status_messages_conflate_per_venue(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    client, sock = attach(hub)
    client.handle_text('{"op": "subscribe", "channel": "quotes", "symbols": ["ETH-USDT"]}')
    for i in range(20):  # alpha flaps: resyncing, live, resyncing, ...
        feeds["alpha"].gap("ETH-USDT")
        feeds["alpha"].load("ETH-USDT", [("10", "1")], [("11", "1")], last=10_000 * (i + 1))
        await asyncio.sleep(0)
    statuses = [item for item in client.queue if item[0] == 2]
    assert len(statuses) <= 8
    sock.gate.set()
    await wait_for(lambda: not client.queue, what="drained")
    last_status = [f for f in sock.frames if f["type"] == "status"][-1]
    assert last_status["state"] == "live"


@pytest.mark.parametrize("hub_and_feeds", [{"stall_timeout": 0.2}], indirect=True)
async def test_socket_that_accepts_nothing_is_closed_after_stall_timeout(hub_and_feeds) -> None:
    hub, _ = hub_and_feeds
    hub.start()
    stuck, sock = attach(hub)
    fine, fine_sock = attach(hub)
    fine_sock.gate.set()
    for client in (stuck, fine):
        client.handle_text('{"op": "ping", "id": 1}')  # the stuck writer now waits inside its send
    await wait_for(lambda: sock.closed, what="stalled client closed")
    assert sock.close_code == 4008
    assert not fine.closing and fine_sock.frames == [
        {"type": "pong", "id": 1, "ts": fine_sock.frames[0]["ts"]}
    ]


class CountingTransport:
    """A transport that keeps up (or, with ``backlog``, says it holds that many unsent bytes)."""

    def __init__(self, log: list[tuple[str, list[dict]]], limit: int = 64 * 1024) -> None:
        self.log = log
        self.limit = limit
        self.backlog = 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.limit // 4, self.limit

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        frames = []
        while data:  # unmasked server text frames with short (< 126) or 16-bit lengths
            length, head = (data[1], 2) if data[1] < 126 else (int.from_bytes(data[2:4], "big"), 4)
            frames.append(orjson.loads(data[head:head + length]))
            data = data[head + length:]
        self.log.append(("transport", frames))


class LoggingSocket(GatedSocket):
    def __init__(self, log: list[tuple[str, list[dict]]]) -> None:
        super().__init__()
        self.log = log
        self.gate.set()

    async def send_frame(self, data: bytes, opcode: object) -> None:
        self.log.append(("socket", [orjson.loads(data)]))


def attach_with_transport(hub: Hub, log: list, limit: int = 64 * 1024) -> tuple[Client, CountingTransport]:
    transport = CountingTransport(log, limit)
    client = Client(LoggingSocket(log), hub, "test", transport=transport)  # type: ignore[arg-type]
    hub.clients.add(client)
    client.writer = asyncio.create_task(client.run_writer())
    return client, transport


def updates(log: list[tuple[str, list[dict]]]) -> list[tuple[str, list[tuple[str, int]]]]:
    return [(where, [(f["symbol"], f["seq"]) for f in frames if f.get("type") == "update"])
            for where, frames in log if any(f.get("type") == "update" for f in frames)]


async def test_what_a_keeping_up_client_gets_in_one_iteration_is_one_write_in_order(hub_and_feeds) -> None:
    hub, feeds = hub_and_feeds
    log: list[tuple[str, list[dict]]] = []
    client, _ = attach_with_transport(hub, log)
    client.handle_text('{"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"]}')
    await wait_for(lambda: sum(1 for _, fs in log for f in fs if f.get("type") == "snapshot") == 2)
    log.clear()
    feeds["alpha"].delta("BTC-USDT", bids=[("100.5", "1")])  # both in one iteration: one flush of
    feeds["alpha"].delta("ETH-USDT", bids=[("10.5", "1")])  # the aggregator, one write to the socket
    await wait_for(lambda: bool(log))
    await asyncio.sleep(0.01)
    assert updates(log) == [("transport", [("BTC-USDT", 2), ("ETH-USDT", 2)])]


async def test_frames_written_at_once_go_before_a_frame_the_writer_sends_later(hub_and_feeds) -> None:
    """A frame that finds the transport at its mark is queued behind those already written at once
    in the same iteration; the writer task hands those to the transport before it sends."""
    hub, feeds = hub_and_feeds
    log: list[tuple[str, list[dict]]] = []
    client, transport = attach_with_transport(hub, log, limit=300)  # room for about one update
    client.handle_text('{"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT", "ETH-USDT"]}')
    await wait_for(lambda: sum(1 for _, fs in log for f in fs if f.get("type") == "snapshot") == 2)
    log.clear()
    feeds["alpha"].delta("BTC-USDT", bids=[("100.5", "1")])
    feeds["alpha"].delta("ETH-USDT", bids=[("10.5", "1")])
    await wait_for(lambda: len(updates(log)) == 2)
    assert updates(log) == [("transport", [("BTC-USDT", 2)]), ("socket", [("ETH-USDT", 2)])]
    assert client.sent >= 4 and not client.out
