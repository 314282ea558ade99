"""A :class:`feeds.metrics.FeedMetrics` that keeps what it is told, shared by the feed tests."""

from __future__ import annotations

from collections import Counter


class RecordingMetrics:
    """Counts and timings as the feed reported them, for assertions."""

    def __init__(self) -> None:
        self.messages = 0
        self.nbytes = 0
        self.decode_errors = 0
        self.reconnects = 0
        self.snapshots: Counter[tuple[str, bool]] = Counter()  # (symbol, ok) -> fetches
        self.lags: list[float] = []
        self.ttl: list[tuple[str, float, str]] = []  # (symbol, seconds, "start" | "resync")
        self.audits: Counter[str] = Counter()  # outcome -> audits

    def message(self, venue: str, symbol: str, nbytes: int) -> None:
        self.messages += 1
        self.nbytes += nbytes

    def decode_error(self, venue: str) -> None:
        self.decode_errors += 1

    def snapshot(self, venue: str, symbol: str, ok: bool) -> None:
        self.snapshots[(symbol, ok)] += 1

    def reconnect(self, venue: str) -> None:
        self.reconnects += 1

    def lag(self, venue: str, seconds: float) -> None:
        self.lags.append(seconds)

    def time_to_live(self, venue: str, symbol: str, seconds: float, after: str) -> None:
        self.ttl.append((symbol, seconds, after))

    def audit(self, venue: str, outcome: str) -> None:
        self.audits[outcome] += 1

    # ------------------------------------------------------------------ queries
    def snapshot_count(self, ok: bool, symbol: str | None = None) -> int:
        return sum(n for (sym, good), n in self.snapshots.items() if good is ok and symbol in (None, sym))

    def failures(self, symbol: str) -> int:
        return self.snapshot_count(False, symbol)

    def resync_ttl(self, symbol: str | None = None) -> list[float]:
        return [s for sym, s, after in self.ttl if after == "resync" and symbol in (None, sym)]
