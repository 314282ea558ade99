"""The interface through which feeds report counters and timings.

Feeds never import prometheus-client: the service passes an implementation of
:class:`FeedMetrics` (``service.metrics``); tests and library use get
:class:`NullMetrics`.  Gaps, resyncs and book states are not reported here:
they are :class:`book.sync.Transition` events that the service observes on every
``BookSync`` it is handed.
"""

from __future__ import annotations

from typing import Protocol


class FeedMetrics(Protocol):
    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        """One frame received (``symbol`` is "" for control frames and heartbeats)."""

    def decode_error(self, venue: str) -> None:
        """A frame that could not be decoded (bad gzip, JSON, protobuf, unknown shape)."""

    def snapshot(self, venue: str, symbol: str, ok: bool) -> None:
        """A snapshot request finished (REST fetch, ``req`` reply, or resubscribe)."""

    def reconnect(self, venue: str) -> None:
        """A connection attempt after the first one (after a drop, or a rollover)."""

    def lag(self, venue: str, seconds: float) -> None:
        """Exchange event time to receive time."""

    def time_to_live(self, venue: str, symbol: str, seconds: float, after: str) -> None:
        """A book became live: ``after`` is "start" or "resync"."""

    def audit(self, venue: str, outcome: str) -> None:
        """A book audit ended: ``outcome`` is one of :data:`feeds.audit.OUTCOMES`."""


class NullMetrics:
    """Discards everything."""

    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        pass

    def decode_error(self, venue: str) -> None:
        pass

    def snapshot(self, venue: str, symbol: str, ok: bool) -> None:
        pass

    def reconnect(self, venue: str) -> None:
        pass

    def lag(self, venue: str, seconds: float) -> None:
        pass

    def time_to_live(self, venue: str, symbol: str, seconds: float, after: str) -> None:
        pass

    def audit(self, venue: str, outcome: str) -> None:
        pass
