"""Two books compared over the depth both know (book/compare.py), against a plain model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aggbook.book.compare import first_difference
from aggbook.book.l2 import L2Book


def book(bids: list[tuple[str, str]], asks: list[tuple[str, str]], *, max_depth: int | None = None,
         depth: int | None = None) -> L2Book:
    b = L2Book(max_depth=max_depth)
    b.apply_snapshot(bids, asks, depth)
    return b


def test_equal_numbers_written_differently_are_equal() -> None:
    a = book([("100", "1.50"), ("99", "2")], [("101", "3")])
    b = book([("100.0", "1.5"), ("99.00", "2.0")], [("101.000", "3")])
    assert first_difference(a, b) is None


def test_a_missing_deep_level_under_an_equal_top_is_found() -> None:
    a = book([("100", "1"), ("98", "2")], [("101", "1")])
    b = book([("100", "1"), ("99", "5"), ("98", "2")], [("101", "1")])
    assert first_difference(a, b) == "bid level 2: the book has 2 at 98, the snapshot 5 at 99"
    assert first_difference(b, a) == "bid level 2: the book has 5 at 99, the snapshot 2 at 98"


def test_a_wrong_size_and_an_extra_level_are_found_on_the_ask_side() -> None:
    a = book([("100", "1")], [("101", "1"), ("102", "7")])
    assert first_difference(a, book([("100", "1")], [("101", "1"), ("102", "6")])) is not None
    assert "nothing" in (first_difference(a, book([("100", "1")], [("101", "1")])) or "")


def test_only_the_depth_both_know_is_compared() -> None:
    # a top-5 window holding fewer than 5 levels knows the venue's whole side; a snapshot asked for 2
    # levels that got 2 knows only down to its second price: beyond it, the other's level proves nothing
    whole = book([("100", "1"), ("99", "1"), ("90", "4")], [("101", "1"), ("102", "1")], max_depth=5)
    cut = book([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")], depth=2)
    assert first_difference(whole, cut) is None
    assert first_difference(cut, whole) is None
    wrong = book([("100", "1"), ("99", "2")], [("101", "1"), ("102", "1")], depth=2)
    assert first_difference(whole, wrong) is not None


prices = st.integers(min_value=1, max_value=400)
sizes = st.integers(min_value=1, max_value=50)
sides = st.dictionaries(prices, sizes, max_size=30)


def levels(side: dict[int, int], *, bids: bool, zeros: int = 0) -> list[tuple[str, str]]:
    """The side as text, ``zeros`` trailing zeros on every number (the same numbers, other text)."""
    pad = "." + "0" * zeros if zeros else ""
    return [(f"{p}{pad}", f"{s}{pad}") for p, s in sorted(side.items(), reverse=bids)]


@given(sides, sides, st.integers(min_value=0, max_value=3), st.one_of(st.none(), st.integers(1, 40)))
def test_a_book_equals_the_same_levels_in_other_text_and_differs_from_any_change(
    bid_side: dict[int, int], ask_side: dict[int, int], zeros: int, max_depth: int | None,
) -> None:
    asks = {p + 1000: s for p, s in ask_side.items()}  # never crossed
    a = book(levels(bid_side, bids=True), levels(asks, bids=False), max_depth=max_depth)
    b = book(levels(bid_side, bids=True, zeros=zeros), levels(asks, bids=False, zeros=zeros),
             max_depth=max_depth)
    assert first_difference(a, b) is None
    if bid_side:  # the best bid's size changed: inside every window, so always found
        best = max(bid_side)
        changed = {**bid_side, best: bid_side[best] + 1}
        c = book(levels(changed, bids=True), levels(asks, bids=False), max_depth=max_depth)
        assert first_difference(a, c) is not None
