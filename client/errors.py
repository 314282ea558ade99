"""What a client of aggbook can be told went wrong, one type per thing a caller handles differently."""

from __future__ import annotations

from typing import Any


class AggbookError(Exception):
    """Base of every error this client raises."""


class ProtocolError(AggbookError):
    """The service sent something the protocol does not allow: a frame that is not JSON, an unknown
    message type, a field of the wrong shape, data for a subscription never acknowledged.

    The connection it came on is closed; iterating again after this is not useful (the same service
    would do it again), so the stream ends with this exception."""


class ErrorReply(ProtocolError):
    """The service refused a WebSocket request (``{"type": "error", ...}``): an unknown symbol or
    venue, a depth out of range, too many subscriptions.  ``code`` is the documented error code."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


class ApiError(AggbookError):
    """An HTTP request was answered with an error (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unavailable(AggbookError):
    """The service could not be reached: connection refused, reset or timed out (HTTP), or a stream
    gave up reconnecting after ``reconnect_attempts`` tries."""
