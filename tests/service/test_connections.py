"""Hostile HTTP clients over real sockets: silent and slow-header connections are closed by the
idle deadline, connections past the caps get 503 while the health probes still answer, and the
counts show in the metrics.  Every assertion is on what the sockets saw and on counters, never on
how long something took (the timeouts below only bound a wait that must end)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from aggbook.service.config import HttpSettings
from aggbook.service.connections import CLOSED, OVER_CAP, ConnectionGuard
from aggbook.service.runtime import Service
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, fake_config, load_all
from tests.service.test_api import value

pytestmark = pytest.mark.integration



@pytest.fixture
async def serve() -> AsyncIterator[Callable[[HttpSettings], asyncio.Future[Service]]]:
    services: list[Service] = []

    async def start(http: HttpSettings) -> Service:
        feeds = FakeFeeds()
        svc = Service(dataclasses.replace(fake_config(), http=http), feed_factory=feeds)
        await svc.start()
        load_all(feeds)
        services.append(svc)
        return svc

    yield start  # type: ignore[misc]
    for svc in services:
        await svc.stop()


async def request(svc: Service, path: str, *, host: str = "127.0.0.1",
                  keep: list | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a new connection from ``host``; the connection stays open in ``keep``."""
    reader, writer = await asyncio.open_connection(svc.host, svc.port, local_addr=(host, 0))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: aggbook\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    if keep is not None:
        keep.append(writer)
    else:
        writer.close()
    return status, body


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection (a bounded wait, not a timing)."""
    return await asyncio.wait_for(reader.read(), 20)


async def test_a_silent_connection_is_closed_by_the_idle_deadline(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=0.5))
    reader, writer = await asyncio.open_connection(svc.host, svc.port)
    await wait_for(lambda: svc.connections.total == 1, what="connection counted")
    assert await closed_by_server(reader) == b""  # closed without a word: it never asked anything
    await wait_for(lambda: svc.connections.total == 0, what="connection released")
    writer.close()


async def test_a_head_sent_a_byte_at_a_time_is_closed_before_it_completes(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=0.5))
    reader, writer = await asyncio.open_connection(svc.host, svc.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: aggbook\r\nX-Padding: " + b"x" * 400 + b"\r\n\r\n"
    sent = 0
    with pytest.raises(ConnectionError):  # the server cuts the loop short
        for byte in head:
            if reader.at_eof():
                raise ConnectionResetError("closed by the server")
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.01)
    assert sent < len(head)  # the head never completed
    try:
        answer = await closed_by_server(reader)
    except ConnectionResetError:  # a byte of ours that arrived after the server closed drew a reset
        answer = b""
    assert b"200" not in answer
    assert 'route="/healthz"' not in svc.metrics.render().decode()  # the service never answered it
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_response(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=0.5))
    reader, writer = await asyncio.open_connection(svc.host, svc.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: aggbook\r\n\r\n")
    await writer.drain()
    answer = await closed_by_server(reader)
    assert answer.startswith(b"HTTP/1.1 200 ")  # answered, kept alive, then closed when idle
    writer.close()


async def test_past_the_cap_only_the_health_probes_answer(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=30.0, max_connections=3, max_connections_per_client=3))
    held: list[asyncio.StreamWriter] = []
    for _ in range(3):
        assert (await request(svc, "/v1/quotes/BTC-USDT", keep=held))[0] == 200
    status, body = await request(svc, "/v1/quotes/BTC-USDT")
    assert status == 503 and orjson.loads(body)["error"]["code"] == "too_many_connections"
    assert (await request(svc, "/healthz"))[0] == 200
    assert (await request(svc, "/readyz"))[0] == 200
    assert svc.connections.refused[OVER_CAP] == 3
    for writer in held:
        writer.close()
    await wait_for(lambda: svc.connections.total == 0, what="held connections released")
    assert (await request(svc, "/v1/quotes/BTC-USDT"))[0] == 200  # below the cap again: served
    text = svc.metrics.render().decode()
    assert value(text, "aggbook_http_connections_refused_total", how=OVER_CAP) == 3
    assert value(text, "aggbook_http_connections_refused_total", how=CLOSED) == 0


async def test_the_per_client_cap_leaves_other_clients_alone(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=30.0, max_connections=100, max_connections_per_client=2))
    held: list[asyncio.StreamWriter] = []
    for _ in range(2):
        assert (await request(svc, "/v1/status", keep=held))[0] == 200
    assert (await request(svc, "/v1/status"))[0] == 503  # a third from 127.0.0.1
    assert (await request(svc, "/v1/status", host="127.0.0.2"))[0] == 200  # another address
    for writer in held:
        writer.close()


async def test_past_the_probes_allowance_a_connection_is_closed_unanswered(serve) -> None:
    svc = await serve(HttpSettings(idle_timeout=30.0, max_connections=2, max_connections_per_client=2))
    hard = svc.connections.hard_limit
    writers = []
    for _ in range(hard):
        _reader, writer = await asyncio.open_connection(svc.host, svc.port)
        writers.append(writer)
    await wait_for(lambda: svc.connections.total == hard, what="connections up to the hard limit")
    reader, writer = await asyncio.open_connection(svc.host, svc.port)
    assert await closed_by_server(reader) == b""
    await wait_for(lambda: svc.connections.refused[CLOSED] == 1, what="counted as closed")
    assert svc.connections.total == hard
    for w in [*writers, writer]:
        w.close()


def test_the_caps_leave_the_reserved_descriptors_free() -> None:
    guard = ConnectionGuard(HttpSettings(max_connections=2048, reserved_descriptors=256), fd_limit=1024)
    assert guard.hard_limit <= 1024 - 256
    assert 0 < guard.max_connections < guard.hard_limit
    roomy = ConnectionGuard(HttpSettings(max_connections=100), fd_limit=1_000_000)
    assert roomy.max_connections == 100
