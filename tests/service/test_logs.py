"""Structured logs: one line per event, extras as fields, tracebacks folded into the line."""

from __future__ import annotations

import asyncio
import logging
import sys

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage

from aggbook.service.logs import ClientErrorFilter, JsonFormatter, TextFormatter
from aggbook.service.runtime import Service
from tests.service.fakes import FakeFeeds, fake_config


def record(exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.getLogger("aggbook.test").makeRecord(
        "aggbook.test",
        logging.WARNING,
        __file__,
        1,
        "venue %s down",
        ("mexc",),
        info,
        extra={"venue": "mexc", "reconnects": 3},
    )


def test_json_lines() -> None:
    line = JsonFormatter().format(record(exc=True))
    assert "\n" not in line
    event = orjson.loads(line)
    assert (
        event["level"] == "warning"
        and event["logger"] == "aggbook.test"
        and event["msg"] == "venue mexc down"
    )
    assert event["venue"] == "mexc" and event["reconnects"] == 3 and "ValueError: boom" in event["exc"]
    assert event["ts"].endswith("Z")


def test_text_lines() -> None:
    line = TextFormatter().format(record(exc=True))
    assert "\n" not in line
    assert " warning aggbook.test venue mexc down venue=mexc reconnects=3 exc=" in line
    assert "ValueError: boom" in line
    assert TextFormatter().format(record()).endswith("venue mexc down venue=mexc reconnects=3")


# ---------------------------------------------------------------------- malformed client requests
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _bad_request_record(client: str = "127.0.0.1") -> logging.LogRecord:
    try:
        raise BadHttpMessage("Invalid method encountered")
    except BadHttpMessage:
        info = sys.exc_info()
    return logging.getLogger("aiohttp.server").makeRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", (client,), info
    )


def test_malformed_requests_are_one_warning_per_client_per_interval() -> None:
    clock = _Clock()
    flt = ClientErrorFilter(interval=60.0, clock=clock)
    first = _bad_request_record()
    assert flt.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    message = first.getMessage()
    assert message == "malformed request from 127.0.0.1: BadHttpMessage: Invalid method encountered"
    assert not any(flt.filter(_bad_request_record()) for _ in range(999))  # held back
    assert flt.filter(_bad_request_record("127.0.0.2"))  # another client has its own budget
    clock.now = 61.0
    again = _bad_request_record()
    assert flt.filter(again) and again.held_back == 999
    assert "exc=" not in TextFormatter().format(again)


def test_server_errors_pass_the_filter_untouched() -> None:
    flt = ClientErrorFilter()
    try:
        raise RuntimeError("handler bug")
    except RuntimeError:
        info = sys.exc_info()
    unhandled = logging.getLogger("aiohttp.server").makeRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", ("127.0.0.1",), info
    )
    assert flt.filter(unhandled) and unhandled.levelno == logging.ERROR and unhandled.exc_info is info


async def test_garbage_over_a_real_socket_is_logged_once_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_log = logging.getLogger("aiohttp.server")
    # a clock that stands still: on a loaded machine the 20 requests may take longer than the
    # interval, and the filter would rightly log the next one again
    flt = ClientErrorFilter(clock=_Clock())
    server_log.addFilter(flt)
    service = Service(fake_config(), feed_factory=FakeFeeds())
    await service.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            for _ in range(20):
                reader, writer = await asyncio.open_connection(service.host, service.port)
                writer.write(b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n")  # a NUL in the path
                await writer.drain()
                answer = await reader.read()  # the 400, then the close
                assert answer.startswith(b"HTTP/1.0 400 ")
                writer.close()
                await writer.wait_closed()
    finally:
        await service.stop()
        server_log.removeFilter(flt)
    records = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    assert records[0].getMessage().startswith("malformed request from 127.0.0.1: InvalidURLError")
    assert "\n" not in records[0].getMessage()  # one line per event
