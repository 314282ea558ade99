"""The L2 book's inner structure against a plain-dict reference model.

Each side is a dict of levels, a heapq heap of keys with lazy deletion (a deleted
price's key stays until it surfaces at the top, the heap is rebuilt when mostly
stale) and a SortedList of keys brought up to date by depth queries from the
prices noted as added or removed since.  These tests drive a narrow
price range so prices are deleted, re-added (one key twice in the heap), repeated
within a message and trimmed, and check after every step that the best prices,
``cross_state()``, every depth query and the ``max_depth`` window agree with the
reference, and that the heap's own invariants hold.
"""

from __future__ import annotations

import heapq
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aggbook.book import l2
from aggbook.book.errors import InvalidLevel
from aggbook.book.l2 import ASK_TOP_CHANGED, BID_TOP_CHANGED, L2Book

# few distinct prices, several spellings of each: repeats, deletes and re-adds are common
prices = st.builds(lambda u, d: Decimal(u).scaleb(-d), st.integers(1, 60), st.integers(0, 2)).flatmap(
    lambda v: st.sampled_from([format(v, "f"), format(v.quantize(Decimal("0.001")), "f")])
)
sizes = st.one_of(st.sampled_from(["0", "0.000"]), st.sampled_from(["1", "2.5", "0.001", "30"]))
levels = st.lists(st.tuples(prices, sizes), max_size=10)
bad_levels = st.sampled_from(
    [("x", "1"), ("5", "-1"), ("5", "nan"), ("5", "inf"), ("5",), ("5", None), ["5", "1", "2"], ("0", "1")]
)
queries = st.sampled_from([None, 0, 1, 2, 3, 5, 40, -1])

Ref = dict[Decimal, tuple[str, str]]


def ref_apply(ref: Ref, updates: list[tuple[str, str]]) -> None:
    for p, s in updates:
        if Decimal(s) == 0:
            ref.pop(Decimal(p), None)
        else:
            ref[Decimal(p)] = (p, s)


def ref_sorted(ref: Ref, *, bids: bool) -> list[tuple[str, str]]:
    return [ref[k] for k in sorted(ref, reverse=bids)]


def ref_trim(ref: Ref, depth: int | None, *, bids: bool) -> None:
    if depth is not None:
        for k in sorted(ref, reverse=bids)[depth:]:
            del ref[k]


class StructureMachine(RuleBasedStateMachine):
    """Snapshots, deltas, depth queries and ``max_depth`` changes in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.slack = (l2._HEAP_SLACK, l2._PENDING_SLACK)
        self.bids: Ref = {}
        self.asks: Ref = {}
        self.book = L2Book()
        self.depth: int | None = None  # the window the book trims to on its next write
        self.trimmed = [0, 0]  # levels removed per side by explicit trims since the last write

    @initialize(depth=st.sampled_from([None, 1, 3, 8]), slack=st.sampled_from([0, 2, 64]),
                pending_slack=st.sampled_from([0, 3, 64]))
    def setup(self, depth: int | None, slack: int, pending_slack: int) -> None:
        # small slacks make the heap rebuild itself and the order be dropped often enough to be exercised
        l2._HEAP_SLACK = slack
        l2._PENDING_SLACK = pending_slack
        self.book = L2Book(max_depth=depth)
        self.depth = depth

    def teardown(self) -> None:
        l2._HEAP_SLACK, l2._PENDING_SLACK = self.slack

    def _trim_reference(self) -> None:
        ref_trim(self.bids, self.depth, bids=True)
        ref_trim(self.asks, self.depth, bids=False)

    @rule(b=levels, a=levels)
    def snapshot(self, b: list[tuple[str, str]], a: list[tuple[str, str]]) -> None:
        self.book.apply_snapshot(b, a)
        self.trimmed = [0, 0]
        self.bids, self.asks = {}, {}
        ref_apply(self.bids, b)
        ref_apply(self.asks, a)
        self._trim_reference()

    @rule(b=levels, a=levels)
    def update(self, b: list[tuple[str, str]], a: list[tuple[str, str]]) -> None:
        before = (self.book.best_bid(), self.book.best_ask())
        changed = self.book.apply(b, a)
        # a side's heap is settled (and rebuilt if mostly stale) only when the message writes to it
        self.trimmed = [0 if b else self.trimmed[0], 0 if a else self.trimmed[1]]
        ref_apply(self.bids, b)
        ref_apply(self.asks, a)
        self._trim_reference()
        assert bool(changed & BID_TOP_CHANGED) == (before[0] is not self.book.best_bid())
        assert bool(changed & ASK_TOP_CHANGED) == (before[1] is not self.book.best_ask())

    @rule(b=levels, a=levels, bad=bad_levels, on_asks=st.booleans(), at=st.integers(0, 10))
    def bad_update_changes_nothing(self, b: list, a: list, bad: tuple, on_asks: bool, at: int) -> None:
        """A bad level anywhere, after valid ones on either side, leaves the book as it was.

        The one-pass write logs what it changed and takes it back, levels, heap and best levels
        included, whichever side and position the bad level is at.
        """
        before = (self.book.bids(), self.book.asks(), self.book.best_bid(), self.book.best_ask())
        side = a if on_asks else b
        side = [*side[:at], bad, *side[at:]]
        with pytest.raises(InvalidLevel):
            self.book.apply(b if on_asks else side, side if on_asks else a)
        after = (self.book.bids(), self.book.asks(), self.book.best_bid(), self.book.best_ask())
        assert after == before
        assert after[2] is before[2] and after[3] is before[3]  # the same objects: no top change to report

    @precondition(lambda self: self.bids and self.asks)
    @rule(bad_side=st.sampled_from(["bids", "asks"]))
    def delete_both_bests_then_fail(self, bad_side: str) -> None:
        """The one-pass write settles a side (pops its deleted best off the heap) before the other
        side fails: the rollback must put the best back where the heap finds it."""
        best_bid = self.bids[max(self.bids)][0]
        best_ask = self.asks[min(self.asks)][0]
        bids = [(best_bid, "0")] + ([("x", "1")] if bad_side == "bids" else [])
        asks = [(best_ask, "0")] + ([("x", "1")] if bad_side == "asks" else [])
        before = (self.book.bids(), self.book.asks(), self.book.best_bid(), self.book.best_ask())
        with pytest.raises(InvalidLevel):
            self.book.apply(bids, asks)
        assert (self.book.bids(), self.book.asks(), self.book.best_bid(), self.book.best_ask()) == before

    @rule(n=queries)
    def query_and_scribble(self, n: int | None) -> None:
        """A depth query brings the order up to date; scribbling on the answer must not reach the book."""
        got = self.book.bids(n)
        got.append(("scribble", "1"))
        got = self.book.asks(n)
        got.clear()

    @precondition(lambda self: self.depth is not None)
    @rule(depth=st.sampled_from([1, 2, 5]))
    def change_max_depth(self, depth: int) -> None:
        """Feeds set ``max_depth`` on a live book: it takes effect at the next write."""
        self.book.max_depth = depth
        self.depth = depth

    @rule(depth=st.sampled_from([1, 2, 5]))
    def trim(self, depth: int) -> None:
        """An explicit trim, outside any write, must invalidate cached depth by itself."""
        self.book.trim(depth)
        self.trimmed[0] += max(0, len(self.bids) - depth)
        self.trimmed[1] += max(0, len(self.asks) - depth)
        ref_trim(self.bids, depth, bids=True)
        ref_trim(self.asks, depth, bids=False)

    @rule()
    def clear(self) -> None:
        self.book.clear()
        self.trimmed = [0, 0]
        self.bids, self.asks = {}, {}

    @invariant()
    def depth_queries_equal_reference(self) -> None:
        exp_bids = ref_sorted(self.bids, bids=True)
        exp_asks = ref_sorted(self.asks, bids=False)
        for n in (1, 3, None, 2, 0, -1, 100):  # the first brings the order up to date
            assert self.book.bids(n) == exp_bids[:n], n
            assert self.book.asks(n) == exp_asks[:n], n
        assert self.book.depth == (len(exp_bids), len(exp_asks))
        assert len(self.book) == len(exp_bids) + len(exp_asks)

    @invariant()
    def best_prices_equal_reference(self) -> None:
        best_bid = max(self.bids, default=None)
        best_ask = min(self.asks, default=None)
        assert self.book.best_bid() == (None if best_bid is None else self.bids[best_bid])
        assert self.book.best_ask() == (None if best_ask is None else self.asks[best_ask])
        expected = None
        if best_bid is not None and best_ask is not None:
            expected = "crossed" if best_bid > best_ask else "locked" if best_bid == best_ask else None
        assert self.book.cross_state() == expected

    @invariant()
    def heaps_hold_every_live_key_with_a_live_top(self) -> None:
        for side, trimmed in zip((self.book._bids, self.book._asks), self.trimmed, strict=True):
            heap, levels = side.heap, side.levels
            assert all(heap[i] <= heap[c] for i in range(len(heap))
                       for c in (2 * i + 1, 2 * i + 2) if c < len(heap))
            assert set(levels) <= set(heap)
            if levels:
                assert heap[0] in levels and heap[0] == min(levels)
            else:
                assert heap == []
            # rebuilt at a write once stale keys exceed the live ones plus slack; trims come after
            window = (len(levels) if self.depth is None else self.depth + 20) + trimmed
            assert len(heap) <= 2 * window + l2._HEAP_SLACK

    @invariant()
    def order_plus_pending_changes_is_the_live_keys(self) -> None:
        for side in (self.book._bids, self.book._asks):
            if side.ordered is not None:
                assert list(side.ordered) == sorted(side.ordered)
                # every key the order is missing or holds in excess was noted as changed
                assert set(side.ordered) ^ set(side.levels) <= set(side.pending)
            assert len(side.pending) <= len(side.levels) + l2._PENDING_SLACK + (self.depth or 0) + 20


TestStructureMachine = StructureMachine.TestCase
TestStructureMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


def test_a_depth_query_applies_the_changes_noted_since_the_last_one() -> None:
    book = L2Book()
    book.apply([["10", "1"], ["9", "1"], ["8", "1"]], [["11", "1"]])
    assert book.bids(2) == [("10", "1"), ("9", "1")]
    assert book._bids.ordered is not None and book._bids.pending == []
    book.apply([["9", "2"]], None)  # a size change: the order does not move, nothing is noted
    assert book._bids.pending == []
    book.apply([["7", "1"], ["7", "0"]], None)  # appeared and vanished in one message: noted twice
    assert book.bids() == [("10", "1"), ("9", "2"), ("8", "1")]
    book.apply([["9.0", "4"]], None)  # below the best: the top does not move, the depth does
    assert book.bids(2) == [("10", "1"), ("9.0", "4")]
    book.apply([["9", "0"]], None)
    book.apply([["9", "3"]], None)  # removed and re-added between queries: one level, in place
    assert book.bids(2) == [("10", "1"), ("9", "3")]
    book.apply([["10", "0"]], None)
    assert book.bids() == [("9", "3"), ("8", "1")]
    assert book.asks() == [("11", "1")]


def test_deleted_then_readded_price_is_one_level() -> None:
    """The re-added key is pushed again; its stale copy must never resurrect the old level."""
    book = L2Book()
    book.apply([["5", "1"], ["4", "1"]], None)
    book.apply([["5", "0"]], None)
    book.apply([["5.0", "2"]], None)
    book.apply([["5", "0"]], None)
    assert book.best_bid() == ("4", "1")
    assert book.bids() == [("4", "1")]
    assert sorted(book._bids.heap).count(-5) <= 2


def test_a_side_never_queried_for_depth_drops_its_order_instead_of_noting_forever() -> None:
    book = L2Book()
    book.apply_snapshot([[str(p), "1"] for p in range(1, 201)], [])
    assert len(book.bids(150)) == 150  # a long slice keeps the order
    assert book._bids.ordered is not None
    for p in range(1000, 1400):  # 800 order changes, more than the side's levels plus slack
        book.apply([[str(p), "1"]], None)
        book.apply([[str(p), "0"]], None)
    assert book._bids.ordered is None and len(book._bids.pending) <= 200 + l2._PENDING_SLACK
    assert [p for p, _ in book.bids(2)] == ["200", "199"]  # a short query: from the heap
    assert book._bids.ordered is None
    assert [p for p, _ in book.bids(150)] == [str(p) for p in range(200, 50, -1)]  # rebuilt in one go
    assert book._bids.ordered is not None and book._bids.pending == []


def test_a_whole_side_read_sorts_a_copy_and_keeps_no_order() -> None:
    """An audit reads every book whole in turn: no order is kept for it, so later writes note nothing."""
    book = L2Book()
    book.apply_snapshot([[str(p), "1"] for p in range(1, 201)], [[str(p), "2"] for p in range(201, 301)])
    assert [p for p, _ in book.bids()] == [str(p) for p in range(200, 0, -1)]
    assert [p for p, _ in book.asks(100)] == [str(p) for p in range(201, 301)]  # n >= the side: whole
    assert book._bids.ordered is None and book._asks.ordered is None
    book.apply([["150", "0"], ["150.5", "3"]], None)
    assert book._bids.ordered is None
    assert [p for p, _ in book.bids()][49:52] == ["151", "150.5", "149"]
    assert book.bids(150)[-1] == ("51", "1")  # a long slice builds the order, whole reads then use it
    assert book._bids.ordered is not None
    book.apply([["151", "0"]], None)
    assert [p for p, _ in book.bids()][48:51] == ["152", "150.5", "149"]


def test_max_depth_window_refills_from_below() -> None:
    book = L2Book(max_depth=2)
    book.apply([["3", "1"], ["2", "1"], ["1", "1"]], None)
    assert book.bids() == [("3", "1"), ("2", "1")]
    book.apply([["3", "0"]], None)  # the venue's window moves: it sends the level that enters
    assert book.bids() == [("2", "1")]
    book.apply([["1", "5"]], None)
    assert book.bids() == [("2", "1"), ("1", "5")]


def test_heap_is_rebuilt_when_mostly_stale() -> None:
    book = L2Book()
    book.apply([[str(p), "1"] for p in range(1, 101)], None)
    for p in range(1, 100):  # delete all but the best: every key but one goes stale, never surfacing
        book.apply([[str(p), "0"]], None)
    assert book.bids() == [("100", "1")]
    assert len(book._bids.heap) <= 2 * 1 + l2._HEAP_SLACK
    assert heapq.nsmallest(1, book._bids.heap) == [-100]


def test_short_query_on_a_deep_book_comes_from_the_heap_and_leaves_the_order_alone() -> None:
    book = L2Book()
    book.apply_snapshot([[str(p), "1"] for p in range(1, 201)], [])
    book.apply([["150", "0"], ["200", "0"]], None)  # stale keys sit in the heap
    heap = list(book._bids.heap)
    assert [p for p, _ in book.bids(3)] == ["199", "198", "197"]
    assert book._bids.heap == heap and book._bids.ordered is None
    assert [p for p, _ in book.bids()] == [str(p) for p in range(199, 0, -1) if p != 150]


def test_short_query_lists_a_readded_price_once() -> None:
    """A price deleted below the top and re-added has two heap keys; a short query shows it once."""
    book = L2Book()
    book.apply_snapshot([[str(p), "1"] for p in range(1, 101)], [])
    book.apply([["99", "0"]], None)  # below the best: its key stays in the heap
    book.apply([["99.0", "3"]], None)  # pushed again
    assert book.bids(3) == [("100", "1"), ("99.0", "3"), ("98", "1")]
