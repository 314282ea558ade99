"""One record per venue: everything the service, the config and the simulator need to know about it.

A venue's feed module ends with ``VENUES = (VenueSpec(...), ...)``; :mod:`aggbook.feeds.registry`
finds those tuples, so adding a venue touches that venue's own modules only.  The record is plain
data: the production URLs, how the venue spells a symbol, the sequencing rules its feed uses, the
feed class, and the simulator class as a lazy ``"module:Class"`` reference, because the service
(``aggbook serve``) must run without ever importing :mod:`aggbook.simulator`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from aggbook.book.sync import SequenceRule

if TYPE_CHECKING:
    from aggbook.feeds.base import VenueFeed
    from aggbook.simulator.venue import VenueServer

_KIND = re.compile(r"^[a-z][a-z0-9-]*$")
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True, slots=True)
class SymbolSpelling:
    """How a venue writes a canonical ``BASE-QUOTE`` symbol when the config gives no explicit mapping.

    ``SymbolSpelling()`` is ``BTCUSDT``; ``separator="-"`` gives ``BTC-USDT``; ``lower=True``
    gives ``btcusdt``; ``suffix="_PERP"`` gives ``BTCUSDT_PERP``.
    Venues whose spelling is not one of these take an explicit mapping in the
    config (``symbols = { "BTC-USDT" = "XBT/USDT" }``).
    """

    separator: str = ""
    lower: bool = False
    suffix: str = ""

    def spell(self, canonical: str) -> str:
        base, quote = canonical.split("-", 1)
        text = f"{base}{self.separator}{quote}{self.suffix}"
        return text.lower() if self.lower else text


def resolve(reference: str) -> object:
    """Import ``"package.module:Name"`` and return ``Name``; the import happens only now."""
    module_name, _, attr = reference.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"{module_name} has no {attr!r} (referenced as {reference!r})") from None


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """The facts about one venue ``kind`` that live outside its feed's protocol code.

    ``rules`` lists every :class:`~aggbook.book.sync.SequenceRule` the feed may pick from in
    ``rule_for`` (NHEX and BitV use two, by mbp level count), so tests can run the sequencing
    state machine over each of them.  ``simulator`` names the simulated venue class without
    importing it.  ``demo_fee_bps`` puts the venue into ``aggbook demo`` with that taker fee;
    ``None`` leaves it out.
    """

    kind: str
    title: str  # human name for listings: "Binance spot"
    feed: type[VenueFeed]
    rest_url: str  # production REST base URL (the feed appends the venue's paths)
    ws_url: str  # production WebSocket base URL
    rules: tuple[SequenceRule, ...]
    simulator: str  # "aggbook.simulator.<module>:<Class>", imported only by demo, simulate and tests
    spelling: SymbolSpelling = SymbolSpelling()
    demo_fee_bps: Decimal | None = None

    def __post_init__(self) -> None:
        if not _KIND.match(self.kind):
            raise ValueError(f"venue kind {self.kind!r}: lower-case letters, digits and '-' only")
        if not self.rules or not all(isinstance(r, SequenceRule) for r in self.rules):
            raise ValueError(f"venue {self.kind}: rules must be a non-empty tuple of SequenceRule")
        if not _REFERENCE.match(self.simulator):
            raise ValueError(f"venue {self.kind}: simulator must look like 'package.module:Class', "
                             f"got {self.simulator!r}")
        if not self.rest_url.startswith(("http://", "https://")):
            raise ValueError(f"venue {self.kind}: rest_url must be http(s), got {self.rest_url!r}")
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError(f"venue {self.kind}: ws_url must be ws(s), got {self.ws_url!r}")

    def symbol(self, canonical: str) -> str:
        """The venue's usual spelling of ``canonical`` (``BTC-USDT``)."""
        return self.spelling.spell(canonical)

    def simulator_class(self) -> type[VenueServer]:
        """The simulated venue class, imported on first use (never by ``aggbook serve``)."""
        return resolve(self.simulator)  # type: ignore[return-value]
