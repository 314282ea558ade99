"""What the HTTP handlers and the WebSocket hub read: a *source* of symbols and their payloads.

Two implementations exist.  In ``aggbook serve`` the source is the local
:class:`~aggbook.service.aggregator.Aggregator` with its :class:`~aggbook.service.renders.RenderCache`;
in ``aggbook gateway`` it is the NATS view of every shard (``aggbook.service.nats.view``).  The
quote, book, symbol and WebSocket code paths are the same in both, so a gateway serves the same API
and protocol without a second copy of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aggbook.service.aggregator import ChangeSubscriber


class Source(Protocol):
    """Symbols, their venues, readiness and the change signal (``SymbolChange`` per changed symbol)."""

    clock: Callable[[], float]
    # symbol -> (the venue's event time or None, wall-clock time the state was applied), epoch seconds
    event_times: dict[str, tuple[float | None, float]]

    @property
    def consolidated(self) -> Mapping[str, Any]:
        """Keyed by every symbol served (the values are the source's own per-symbol state)."""
        ...

    def subscribe(self, subscriber: ChangeSubscriber) -> None: ...

    def venues_for(self, symbol: str) -> list[str]: ...

    def symbols(self) -> Iterable[tuple[str, dict[str, str]]]: ...

    def readiness(self) -> tuple[bool, dict[str, list[str]]]: ...


class Payloads(Protocol):
    """Rendered JSON payloads of quotes and merged books (``RenderCache`` is the local one)."""

    venue_filters: bool  # can a merged book of a subset of the venues be served?

    def quote_stream(self, symbol: str, fees: bool) -> bytes: ...

    def quote_http(self, symbol: str, fees: bool, now: float | None = None) -> bytes: ...

    def quotes_http(self, symbols: Iterable[str], fees: bool, now: float) -> bytes: ...

    def ladder(self, symbol: str, depth: int, venues: Iterable[str] | None = None) -> bytes: ...
