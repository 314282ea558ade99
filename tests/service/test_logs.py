"""Structured logs: one line per event, extras as fields, tracebacks folded into the line."""

from __future__ import annotations

import logging
import sys

import orjson

from aggbook.service.logs import JsonFormatter, TextFormatter


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
