"""Structured logging: one line per event, as ``key=value`` text or as JSON (``--log-json``).

One line per event keeps logs greppable and lets a collector parse them without
multi-line stitching; a traceback is folded into the same line (escaped in JSON).
Extra fields passed with ``logger.info(..., extra={"venue": "mexc"})`` become keys.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson
from aiohttp.http_exceptions import HttpProcessingError

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_extras(record))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname.lower(), record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in _extras(record).items()]
        line = " ".join(str(p) for p in parts)
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


class ClientErrorFilter(logging.Filter):
    """aiohttp's "Error handling request" for a malformed client request: a WARNING, rarely.

    aiohttp logs every request it cannot parse at ERROR with a traceback (about 750 bytes), so a
    client sending garbage could write the disk full.  A client's mistake is not the service's
    error: it becomes one WARNING line without a traceback per client address per ``interval``,
    carrying how many were held back since the last one.  Server-side failures (``Unhandled
    exception``, anything not an HTTP parse error) pass through untouched.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.max_clients = max_clients
        self._last: dict[str, tuple[float, int]] = {}  # client -> (logged at, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not str(record.msg).startswith("Error handling request"):
            return True
        client = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        now = self.clock()
        logged_at, held = self._last.get(client, (None, 0))
        if logged_at is not None and now - logged_at < self.interval:
            self._last[client] = (logged_at, held + 1)
            return False
        if len(self._last) >= self.max_clients:  # bounded memory under many addresses
            self._last.clear()
        self._last[client] = (now, 0)
        record.msg = "malformed request from %s: %s"
        detail = " ".join(str(getattr(exc, "message", exc)).split())  # aiohttp's text spans lines
        record.args = (client, f"{exc.__class__.__name__}: {detail}")
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = None
        record.exc_text = None
        record.held_back = held
        return True


def setup_logging(level: str = "info", json: bool = False) -> None:
    """Replace the root handlers with one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [f for f in server.filters if not isinstance(f, ClientErrorFilter)]
    server.addFilter(ClientErrorFilter())
