"""Named faults a test (or the demo's random mode) can inject into a simulated venue.

A fault is armed with :meth:`FaultInjector.inject`, optionally scoped to one
symbol and/or one connection id, for ``count`` occurrences.  Venue code asks
:meth:`FaultInjector.take` at the decision point where the fault can happen
("about to send a delta on connection 3 for BTCUSDT: should I drop it?").
Random mode arms faults by itself with a seeded RNG, so a run is reproducible.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class Fault(StrEnum):
    GAP = "gap"  # a delta is never sent
    DUPLICATE = "duplicate"  # a delta is sent twice
    REORDER = "reorder"  # two consecutive deltas swap places
    STALE_SNAPSHOT = "stale_snapshot"  # snapshot older than the first buffered delta
    SNAPSHOT_429 = "snapshot_429"  # snapshot answered 429 with Retry-After
    SNAPSHOT_418 = "snapshot_418"  # snapshot answered 418 (ban) with Retry-After
    SLOW_SNAPSHOT = "slow_snapshot"  # snapshot delayed (params: delay seconds)
    DISCONNECT = "disconnect"  # abrupt TCP close mid-stream
    SILENT = "silent"  # connection stays open, sends no frame at all: no data, heartbeats or pongs
    SERVER_CLOSE = "server_close"  # orderly server-initiated close (24 h rollover)
    MALFORMED = "malformed"  # truncated JSON / bad gzip / bad protobuf frame
    UNKNOWN_SYMBOL = "unknown_symbol"  # the venue answers as if the symbol did not exist
    BUFFER_FULL = "buffer_full"  # BTSE error 1007 (messages lost)
    CROSSED = "crossed"  # a delta that crosses the book (venue-side bug)
    # a level change that moves the top of book is left out of its delta while the sequence ids stay
    # contiguous (venue-side bug): only a top-of-book cross-check can see it.  The truth keeps it.
    SILENT_LOSS = "silent_loss"


@dataclass
class ArmedFault:
    fault: Fault
    symbol: str | None
    conn_id: int | None
    remaining: int
    params: dict


class FaultInjector:
    """Holds armed faults and counts the ones that fired."""

    def __init__(self, seed: int | None = None, rate: float = 0.0, allowed: set[Fault] | None = None) -> None:
        self._armed: list[ArmedFault] = []
        self._rng = random.Random(seed)
        self.rate = rate
        self.allowed = allowed if allowed is not None else {Fault.GAP, Fault.DUPLICATE, Fault.REORDER}
        self.fired: Counter[str] = Counter()
        self.random_params: dict[Fault, dict] = {}  # params of faults fired at random (venue defaults)

    def configure_random(
        self,
        rate: float,
        allowed: Iterable[Fault | str] | None = None,
        seed: int | None = None,
        params: Mapping[Fault | str, Mapping[str, object]] | None = None,
    ) -> None:
        """Switch random mode on (``rate > 0``) or off, optionally with new fault kinds and seed.

        Reseeding makes a run reproducible from the moment of the call, which is what the demo's
        ``/_sim/faults/random`` and a test that wants "the same random faults again" need.
        ``params`` gives faults fired at random their parameters (a 418's ``retry_after``, a slow
        snapshot's ``delay``) instead of the venue's defaults, e.g. to keep a soak's bans short.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        kinds = {Fault(f) for f in allowed} if allowed is not None else self.allowed  # may raise: first
        chosen = {Fault(f): dict(p) for f, p in params.items()} if params is not None else None
        self.rate = rate
        self.allowed = kinds
        if chosen is not None:
            self.random_params = chosen
        if seed is not None:
            self._rng = random.Random(seed)

    def inject(
        self,
        fault: Fault | str,
        symbol: str | None = None,
        conn_id: int | None = None,
        count: int = 1,
        **params: object,
    ) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")  # 0 would still fire once
        self._armed.append(ArmedFault(Fault(fault), symbol, conn_id, count, dict(params)))

    def clear(self) -> None:
        self._armed.clear()

    def pending(self, fault: Fault | str | None = None) -> int:
        return sum(a.remaining for a in self._armed if fault is None or a.fault == Fault(fault))

    def may_fire(self, fault: Fault) -> bool:
        """Could ``fault`` fire now (armed, or allowed in random mode)?  For faults that need a
        suitable moment: the venue looks for one only then, and asks :meth:`take` only when it has."""
        return self.pending(fault) > 0 or (self.rate > 0 and fault in self.allowed)

    def take(self, fault: Fault, symbol: str | None = None, conn_id: int | None = None) -> dict | None:
        """Consume one armed occurrence matching the decision point; return its params or None.

        In random mode a matching fault also fires with probability ``rate``.
        """
        for armed in self._armed:
            if armed.fault != fault:
                continue
            if armed.symbol is not None and symbol is not None and armed.symbol.upper() != symbol.upper():
                continue
            if armed.conn_id is not None and conn_id is not None and armed.conn_id != conn_id:
                continue
            armed.remaining -= 1
            if armed.remaining <= 0:
                self._armed.remove(armed)
            self.fired[fault.value] += 1
            return armed.params
        if self.rate > 0 and fault in self.allowed and self._rng.random() < self.rate:
            self.fired[fault.value] += 1
            return dict(self.random_params.get(fault, {}))
        return None
