"""Render once, serve many: each consolidated quote and merged-book payload is rendered once per
change of its symbol and the same bytes answer every HTTP request and WebSocket subscriber that asks
for it until the next change.

The cache hears the aggregator's :class:`~aggbook.service.aggregator.SymbolChange` like the hub does
(it subscribes first, so a change has emptied the symbol's entries before the hub renders for it) and
keys a symbol's entries by what a payload depends on besides the books: the channel, ``fees`` for a
quote, ``depth`` and the set of ``venues`` for a ladder.

Two things change without a book changing, and a cached payload must never show them wrong:

* **staleness**: a venue whose connection has been silent past its venue's timeout leaves the
  consolidated view on the clock alone (the aggregator only notices on a timer).  Each entry keeps
  the venue eligibility it was rendered with, and every lookup recomputes eligibility now (one
  pass over the symbol's venues) and renders afresh when it differs;
* **ages**: the HTTP quote carries each venue's ``age_seconds``, which grows with the clock, and its
  ``freshness`` (a live book unchanged for ``stale_after`` turns ``quiet`` on the clock alone).  The
  cached HTTP quote is therefore only the time-independent part: the JSON split where the ages and
  freshness go, both read from the venues' books and formatted at every request.  WebSocket quotes
  and ladders contain neither and are cached whole.

A served payload is thus byte for byte what rendering from scratch would produce at the same clock
reading, given the books as of the aggregator's last delivered change: a frame applied in the
current event-loop iteration shows from the next iteration on, as on the WebSocket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from aggbook.book.consolidated import ConsolidatedBook, ConsolidatedQuote
from aggbook.service.views import age_seconds, ladder_json, quote_json

if TYPE_CHECKING:
    from aggbook.service.aggregator import Aggregator, SymbolChange

Eligibility = dict[str, str | None]  # venue -> None when included, else why it is excluded
_HOLE = b"\x00"  # where an age goes in a rendered HTTP quote: orjson escapes NUL everywhere else


@dataclass(slots=True)
class _QuoteEntry:
    """One quote (with or without fees) and its two renderings, each made on first use."""

    quote: ConsolidatedQuote
    eligibility: Eligibility
    stream: bytes | None = None  # the WebSocket form: no ages
    segments: list[bytes] | None = None  # the HTTP form cut at each venue's age_seconds value


@dataclass(slots=True)
class _LadderEntry:
    eligibility: Eligibility
    payload: bytes


def _eligibility_of(quote: ConsolidatedQuote) -> Eligibility:
    return {v.venue: None if v.included else v.excluded_reason for v in quote.venues}


class RenderCache:
    """Rendered payloads per symbol, emptied by every change of the symbol.

    ``renders`` counts payloads rendered and ``hits`` lookups answered from the cache.  Entries per
    symbol are capped at ``max_entries`` (the oldest goes first): between two changes a symbol holds
    at most one entry per distinct question asked, and HTTP clients choose depth and venues freely.
    """

    venue_filters = True  # every venue's book is here: any subset can be merged

    def __init__(self, aggregator: Aggregator, *, max_entries: int = 64) -> None:
        self.books: dict[str, ConsolidatedBook] = aggregator.consolidated
        self.max_entries = max_entries
        self._entries: dict[str, dict[tuple, _QuoteEntry | _LadderEntry]] = {s: {} for s in self.books}
        self.renders = 0
        self.hits = 0
        aggregator.subscribe(self)

    # ------------------------------------------------------------------ the aggregator's signal
    def on_symbol_changed(self, change: SymbolChange) -> None:
        """Forget the symbol's payloads; the quote the aggregator just computed seeds the next one."""
        entries = self._entries.setdefault(change.symbol, {})
        entries.clear()
        if change.quote is not None:  # computed without fees, at the flush that delivers this change
            entries[("quotes", False)] = _QuoteEntry(change.quote, _eligibility_of(change.quote))

    # ------------------------------------------------------------------ lookups
    def quote_stream(self, symbol: str, fees: bool) -> bytes:
        """The WebSocket quote payload (no ages)."""
        entry = self._quote(symbol, fees, self.books[symbol].clock())
        if entry.stream is None:
            self.renders += 1
            entry.stream = orjson.dumps(quote_json(entry.quote, fees=fees, ages=False))
        else:
            self.hits += 1
        return entry.stream

    def quote_http(self, symbol: str, fees: bool, now: float | None = None) -> bytes:
        """The ``/v1/quotes/{symbol}`` body: the cached time-independent part, ages filled in for ``now``."""
        book = self.books[symbol]
        now = book.clock() if now is None else now
        entry = self._quote(symbol, fees, now)
        segments = entry.segments
        if segments is None:
            self.renders += 1
            body = quote_json(entry.quote, fees=fees)
            for item in body["venues"]:
                item["age_seconds"] = orjson.Fragment(_HOLE)
                item["freshness"] = orjson.Fragment(_HOLE)
            segments = entry.segments = orjson.dumps(body).split(_HOLE)
        else:
            self.hits += 1
        out = [segments[0]]
        syncs = book.syncs
        tails = iter(segments[1:])
        for venue, age_tail, fresh_tail in zip(entry.quote.venues, tails, tails, strict=True):
            updated_at = syncs[venue.venue].updated_at
            # the age and freshness ConsolidatedBook.quote() gives a venue, read now: both move with
            # the clock alone (a book unchanged for stale_after turns quiet without any change)
            out.append(orjson.dumps(age_seconds(None if updated_at is None else max(0.0, now - updated_at))))
            out.append(age_tail)
            fresh = book.freshness(venue.venue, now)
            out.append(orjson.dumps(None if fresh is None else fresh.value))
            out.append(fresh_tail)
        return b"".join(out)

    def quotes_http(self, symbols: Iterable[str], fees: bool, now: float) -> bytes:
        """The ``/v1/quotes`` body: every symbol's quote at the same clock reading."""
        return b'{"quotes":[' + b",".join(self.quote_http(s, fees, now) for s in symbols) + b"]}"

    def ladder(self, symbol: str, depth: int, venues: Iterable[str] | None = None) -> bytes:
        """The merged-book payload, the same for ``/v1/books/{symbol}`` and the WebSocket ``book`` channel."""
        book = self.books[symbol]
        wanted = None if venues is None else tuple(sorted(set(venues)))  # order and repeats change nothing
        key = ("book", depth, wanted)
        now = book.clock()
        eligibility = book.eligible(now, wanted)
        entries = self._entries[symbol]
        entry = entries.get(key)
        if isinstance(entry, _LadderEntry) and entry.eligibility == eligibility:
            self.hits += 1
            return entry.payload
        self.renders += 1
        payload = orjson.dumps(ladder_json(book.ladder(depth, wanted, now=now), depth))
        self._store(entries, key, _LadderEntry(eligibility, payload))
        return payload

    # ------------------------------------------------------------------ internals
    def _quote(self, symbol: str, fees: bool, now: float) -> _QuoteEntry:
        """The cached quote if the venues' eligibility is still the one it was computed with."""
        book = self.books[symbol]
        key = ("quotes", fees)
        entries = self._entries[symbol]
        entry = entries.get(key)
        eligibility = book.eligible(now)
        if isinstance(entry, _QuoteEntry) and entry.eligibility == eligibility:
            return entry
        quote = book.quote(fees=fees, now=now)
        entry = _QuoteEntry(quote, _eligibility_of(quote))
        self._store(entries, key, entry)
        return entry

    def _store(self, entries: dict[tuple, _QuoteEntry | _LadderEntry], key: tuple,
               entry: _QuoteEntry | _LadderEntry) -> None:
        entries.pop(key, None)
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = entry
