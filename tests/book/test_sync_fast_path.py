"""The sequencer's fast path for a live book's next delta decides exactly as the full check does.

``BookSync.on_delta`` applies a delta that plainly continues a live book without going through
``_on_live``; every other delta takes ``_on_live``.  Two syncs in the same state get the same delta,
one through ``on_delta`` and one through ``_on_live`` directly: whatever the delta (in order,
overlapping, repeated, old, a gap, BTSE's non-contiguous ids, levels that are not numbers), both
must end in the same state with the same book and the same counters.
"""

from __future__ import annotations

import itertools

import pytest

from aggbook.book.sync import BookSync, Delta, Reason, SequenceRule, Snapshot, SyncState
from aggbook.feeds.binance import BINANCE_SPOT
from aggbook.feeds.registry import venue_specs

ALL_RULES = sorted({rule for spec in venue_specs().values() for rule in spec.rules}, key=lambda r: r.name)
L = 1000

def _sync(rule: SequenceRule, continued: bool) -> BookSync:
    sync = BookSync(rule, venue="v", symbol="S")
    sync.on_snapshot(Snapshot(L, [("99", "1"), ("98", "2")], [("101", "1"), ("102", "2")]))
    assert sync.live
    if continued:  # one delta past the snapshot: the book is confirmed and the fast path applies
        sync.on_delta(Delta(L, L + 1, L, [("97", "1")], None))  # continues L under every rule
        assert sync.live and sync.confirmed
    return sync


def _outcome(sync: BookSync) -> tuple:
    return (sync.state, sync.reason, sync.last_id, sync.confirmed, sync.buffered, sync.counters.applied,
            sync.counters.dropped, dict(sync.counters.resyncs), sync.book.bids(), sync.book.asks())


LEVELS = (
    ([("99.5", "3")], None),  # inside the book, top moves
    ([("99", "0")], [("101", "0"), ("103", "1")]),  # deletions, both tops move
    (None, [("100.5", "1"), ("abc", "1")]),  # a level that is not a number: the whole delta is bad
    ([("100", "nan")], None),
)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.name)
def test_fast_path_decides_as_the_full_check(rule: SequenceRule) -> None:
    # every placement of first, last and prev around the book's last id, before and after the first
    # delta past the snapshot: all the cases each rule's full check tells apart
    for continued, first, span, prev, (bids, asks) in itertools.product(
            (False, True), range(-3, 5), range(-2, 4), (None, *range(-3, 5)), LEVELS):
        fast, full = _sync(rule, continued), _sync(rule, continued)
        cur = fast.last_id
        assert cur is not None
        delta = Delta(cur + first, cur + first + span, None if prev is None else cur + prev, bids, asks)
        fast.on_delta(delta)
        full._on_live(delta)  # noqa: SLF001 - the full check, which the fast path must agree with
        assert _outcome(fast) == _outcome(full), (continued, delta)


def test_bad_level_on_the_fast_path_is_a_counted_resync_not_a_corrupt_book() -> None:
    sync = _sync(BINANCE_SPOT, continued=True)
    before = (sync.book.bids(), sync.book.asks())
    sync.on_delta(Delta(L + 2, L + 2, None, [("96", "1"), ("not a price", "1")], None))
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.DECODE_ERROR
    assert sync.counters.resyncs[Reason.DECODE_ERROR] == 1 and sync.counters.applied == 1
    assert len(sync.book) == 0 and before[0]  # cleared, never half-applied
    assert sync.wants_snapshot(allow_empty_buffer=True)
