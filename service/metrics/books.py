"""Book and consolidated-view metrics: resyncs and gaps as they happen, state and ages when scraped.

Resyncs, gaps and crossed episodes are events: the aggregator reports them as it sees them.  Values
that depend on the clock (book and BBO ages) or on the current state (book state, crossed, spread,
live venues) are not pushed: a custom collector reads them from the service when Prometheus
scrapes, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from aggbook.book.consolidated import Freshness
from aggbook.book.sync import BookSync, Reason, SyncState, Transition

if TYPE_CHECKING:
    from aggbook.book.consolidated import ConsolidatedBook

# Transitions with these reasons are not resyncs: a book being loaded, rejected (invalid symbol,
# delisted), tried again after its listing re-check (revived), or shut down.
NOT_A_RESYNC = {Reason.START, Reason.SNAPSHOT, Reason.INVALID_SYMBOL, Reason.DELISTED, Reason.REVIVED,
                Reason.STOPPED}
RESYNC_REASONS = [r.value for r in Reason if r not in NOT_A_RESYNC]
STATES = [s.value for s in SyncState]
FRESHNESS = [f.value for f in Freshness]


class MetricsSource(Protocol):
    """What the scrape-time collector reads from the running service."""

    consolidated: dict[str, ConsolidatedBook]

    def configured_books(self) -> Iterable[tuple[str, str]]:
        """(venue, symbol) pairs that are configured, live or not."""
        ...


class _ScrapeCollector:
    """Book state and ages, consolidated crossed/spread/age: computed when scraped."""

    def __init__(self, source: MetricsSource, clock: Callable[[], float]) -> None:
        self.source = source
        self.clock = clock

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        vs = ["venue", "symbol"]
        return {
            "live": GaugeMetricFamily(
                "aggbook_book_live", "1 when the venue's book for the symbol is live", labels=vs
            ),
            "state": GaugeMetricFamily(
                "aggbook_book_state",
                "1 for the book's current sync state, 0 otherwise",
                labels=[*vs, "state"],
            ),
            "delisted": GaugeMetricFamily(
                "aggbook_book_delisted",
                "1 when the venue's symbol list does not have the symbol (its book is invalid, re-checked)",
                labels=vs,
            ),
            "freshness": GaugeMetricFamily(
                "aggbook_book_freshness",
                "1 for a live book's freshness (fresh, quiet: unchanged but its connection alive, stale: "
                "connection silent past the venue's timeout), 0 otherwise; all 0 when not live",
                labels=[*vs, "freshness"],
            ),
            "age": GaugeMetricFamily(
                "aggbook_book_last_update_age_seconds",
                "Seconds since the book last changed (a quiet book's age grows while it stays included)",
                labels=vs,
            ),
            "silence": GaugeMetricFamily(
                "aggbook_book_connection_silence_seconds",
                "Seconds since the live book's connection last proved alive (any frame, heartbeats too)",
                labels=vs,
            ),
            "bbo_age": GaugeMetricFamily(
                "aggbook_consolidated_bbo_age_seconds",
                "Seconds since the oldest book behind the consolidated best bid/ask was last updated",
                labels=["symbol"],
            ),
            "crossed": GaugeMetricFamily(
                "aggbook_consolidated_crossed",
                "1 when the consolidated best bid >= best ask (crossed or locked)",
                labels=["symbol"],
            ),
            "spread": GaugeMetricFamily(
                "aggbook_consolidated_spread", "Consolidated best ask - best bid", labels=["symbol"]
            ),
            "live_venues": GaugeMetricFamily(
                "aggbook_consolidated_live_venues",
                "Venues currently included in the consolidated book",
                labels=["symbol"],
            ),
        }

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        f = self._families()
        now = self.clock()
        consolidated = self.source.consolidated
        for venue, symbol in self.source.configured_books():
            book = consolidated.get(symbol)
            sync = book.syncs.get(venue) if book is not None else None
            state = sync.state.value if sync is not None else SyncState.WAITING.value
            f["live"].add_metric([venue, symbol], 1.0 if state == SyncState.LIVE.value else 0.0)
            delisted = sync is not None and sync.state is SyncState.INVALID and sync.reason is Reason.DELISTED
            f["delisted"].add_metric([venue, symbol], 1.0 if delisted else 0.0)
            for s in STATES:
                f["state"].add_metric([venue, symbol, s], 1.0 if s == state else 0.0)
            fresh = book.freshness(venue, now) if book is not None and sync is not None else None
            for value in FRESHNESS:
                f["freshness"].add_metric([venue, symbol, value], 1.0 if fresh == value else 0.0)
            if sync is not None and sync.updated_at is not None:
                f["age"].add_metric([venue, symbol], max(0.0, now - sync.updated_at))
            silence = sync.silence(now) if sync is not None and sync.live else None
            if silence is not None:
                f["silence"].add_metric([venue, symbol], silence)
        for symbol, book in consolidated.items():
            quote = book.quote(now=now)
            f["live_venues"].add_metric([symbol], float(sum(1 for v in quote.venues if v.included)))
            f["crossed"].add_metric([symbol], 1.0 if (quote.crossed or quote.locked) else 0.0)
            if quote.spread is not None:
                f["spread"].add_metric([symbol], float(Decimal(quote.spread)))
            behind = {lvl.venue for side in (quote.bid, quote.ask) if side is not None for lvl in side.venues}
            ages = [v.age for v in quote.venues if v.venue in behind and v.age is not None]
            if ages:
                f["bbo_age"].add_metric([symbol], max(ages))
        return iter(f.values())


class BookMetrics:
    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float]) -> None:
        self.registry = registry
        self.clock = clock
        vs = ["venue", "symbol"]
        self.gaps = Counter("aggbook_book_gaps_total", "Sequence gaps detected", vs, registry=registry)
        self.resyncs = Counter(
            "aggbook_book_resyncs_total", "Books that lost sync, by reason", [*vs, "reason"],
            registry=registry,
        )
        self.crossed_events = Counter(
            "aggbook_consolidated_crossed_events_total",
            "Times the consolidated book became crossed or locked",
            ["symbol"],
            registry=registry,
        )

    def attach(self, source: MetricsSource) -> None:
        """Register the scrape-time collector and create every labelled series up front."""
        self.registry.register(_ScrapeCollector(source, self.clock))
        for venue, symbol in source.configured_books():
            self.gaps.labels(venue, symbol)
            for reason in RESYNC_REASONS:
                self.resyncs.labels(venue, symbol, reason)
        for symbol in source.consolidated:
            self.crossed_events.labels(symbol)

    def transition(self, sync: BookSync, transition: Transition) -> None:
        if transition.reason in NOT_A_RESYNC:
            return
        self.resyncs.labels(sync.venue, sync.symbol, transition.reason.value).inc()
        if transition.reason is Reason.GAP:
            self.gaps.labels(sync.venue, sync.symbol).inc()

    def crossed_event(self, symbol: str) -> None:
        self.crossed_events.labels(symbol).inc()
