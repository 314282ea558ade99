"""What can go wrong in a feed, as exceptions with one meaning each.

Venue modules raise them from their hooks and the shared lifecycle reacts to the kind, not the
message: a :class:`FeedError` ends the connection, a :class:`FrameError` resyncs the connection's
books, a :class:`RateLimited` closes the snapshot gate for everyone, a :class:`SnapshotError` is
retried with backoff and an :class:`InvalidSymbol` stops that book until the venue's symbol list
says it is listed (:mod:`~aggbook.feeds.listing`).
"""

from __future__ import annotations

import aiohttp


class FeedError(Exception):
    """The connection cannot continue (protocol violation, silence, venue closing): reconnect."""


class FrameError(Exception):
    """A frame could not be decoded.  Counted; the books on the connection resync."""


class RateLimited(Exception):
    """The venue answered 429/418: wait ``retry_after`` seconds before any further request."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(detail or f"rate limited, retry after {retry_after}s")
        self.retry_after = retry_after


class SnapshotError(Exception):
    """A snapshot could not be obtained this time (HTTP error, error reply, timeout)."""


class InvalidSymbol(Exception):
    """The venue says the symbol does not exist: stop that book and re-check the listing with backoff."""


# snapshot failures that are the venue's or the network's doing, logged without a traceback
EXPECTED_SNAPSHOT_FAILURES = (SnapshotError, aiohttp.ClientError, TimeoutError, ValueError, OSError)
