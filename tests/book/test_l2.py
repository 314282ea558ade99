"""L2 book against a plain-dict reference model, plus bad-input handling."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from aggbook.book.errors import InvalidLevel
from aggbook.book.l2 import ASK_TOP_CHANGED, BID_TOP_CHANGED, L2Book


def spellings(units: int, decimals: int) -> st.SearchStrategy[str]:
    """Several texts for one price: ``"100"``, ``"100.0"``, ``"100.00"``..."""
    value = Decimal(units).scaleb(-decimals)
    plain = format(value.normalize(), "f")
    extra = st.integers(min_value=0, max_value=3)
    return extra.map(lambda n: plain if n == 0 else format(value.quantize(Decimal(1).scaleb(-(
        max(decimals, 0) + n))), "f"))


prices = st.builds(lambda u, d: (u, d), st.integers(1, 400), st.integers(0, 4)).flatmap(
    lambda ud: spellings(ud[0], ud[1])
)
sizes = st.one_of(
    st.sampled_from(["0", "0.0", "0.00000000"]),
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000"), places=8).map(
        lambda d: format(d, "f")
    ),
)
levels = st.lists(st.tuples(prices, sizes), max_size=12)


def ref_apply(ref: dict[Decimal, tuple[str, str]], updates: list[tuple[str, str]]) -> None:
    for p, s in updates:
        if Decimal(s) == 0:
            ref.pop(Decimal(p), None)
        else:
            ref[Decimal(p)] = (p, s)


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = L2Book()
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    @rule(b=levels, a=levels)
    def snapshot(self, b, a):
        self.book.apply_snapshot(b, a)
        self.bids, self.asks = {}, {}
        ref_apply(self.bids, b)
        ref_apply(self.asks, a)

    @rule(b=levels, a=levels)
    def update(self, b, a):
        before = (self.book.best_bid(), self.book.best_ask())
        changed = self.book.apply(b, a)
        ref_apply(self.bids, b)
        ref_apply(self.asks, a)
        if before[0] != self.book.best_bid():
            assert changed & BID_TOP_CHANGED
        if before[1] != self.book.best_ask():
            assert changed & ASK_TOP_CHANGED

    @rule(b=levels, bad=st.sampled_from(["abc", "-1", "NaN", "", "inf", "1e5000x", None, "1_000"]),
          where=st.sampled_from(["price", "size"]))
    def bad_update_leaves_book_untouched(self, b, bad, where):
        before = (self.book.bids(), self.book.asks())
        level = (bad, "1") if where == "price" else ("5", bad)
        if where == "size" and bad == "1_000":
            return  # float() accepts it; a valid size
        with pytest.raises(InvalidLevel):
            self.book.apply([*b, level], None)
        assert (self.book.bids(), self.book.asks()) == before

    @invariant()
    def equals_reference(self):
        exp_bids = [self.bids[k] for k in sorted(self.bids, reverse=True)]
        exp_asks = [self.asks[k] for k in sorted(self.asks)]
        assert self.book.bids() == exp_bids
        assert self.book.asks() == exp_asks
        assert self.book.best_bid() == (exp_bids[0] if exp_bids else None)
        assert self.book.best_ask() == (exp_asks[0] if exp_asks else None)
        n = 3
        assert self.book.bids(n) == exp_bids[:n]


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_exact_text_and_numeric_order():
    book = L2Book()
    book.apply_snapshot([["9.5", "1"], ["10", "2"], ["93180.10", "0.30000000"]], [["93180.20", "1.5"]])
    assert book.best_bid() == ("93180.10", "0.30000000")
    assert [p for p, _ in book.bids()] == ["93180.10", "10", "9.5"]


def test_equal_prices_written_differently_are_one_level():
    book = L2Book()
    book.apply([["100", "1"]], None)
    book.apply([["100.0", "2"]], None)
    assert book.bids() == [("100.0", "2")]
    book.apply([["100.000", "0.000"]], None)
    assert book.bids() == []


def test_rescale_keeps_order_and_values():
    book = L2Book()
    book.apply([["2", "1"], ["1", "1"]], [["3", "1"]])
    book.apply([["2.000000000000000001", "5"]], [["2.5", "1"]])
    assert [p for p, _ in book.bids()] == ["2.000000000000000001", "2", "1"]
    assert [p for p, _ in book.asks()] == ["2.5", "3"]


def test_eighteen_decimal_values_are_exact():
    book = L2Book()
    book.apply(None, [["645.140000000000000000", "26.755973959140651643"]])
    assert book.best_ask() == ("645.140000000000000000", "26.755973959140651643")
    book.apply(None, [["645.14", "0"]])
    assert book.best_ask() is None


def test_remove_absent_level_is_noop():
    book = L2Book()
    assert book.apply([["1", "0"]], [["2", "0"]]) == 0
    assert len(book) == 0


def test_max_depth_trims_worst_levels():
    book = L2Book(max_depth=2)
    book.apply([["1", "1"], ["2", "1"], ["3", "1"]], [["4", "1"], ["6", "1"], ["5", "1"]])
    assert [p for p, _ in book.bids()] == ["3", "2"]
    assert [p for p, _ in book.asks()] == ["4", "5"]


def test_cross_state():
    book = L2Book()
    book.apply([["10", "1"]], [["11", "1"]])
    assert book.cross_state() is None
    book.apply([["11.0", "1"]], None)
    assert book.cross_state() == "locked"
    book.apply([["12", "1"]], None)
    assert book.cross_state() == "crossed"


@pytest.mark.parametrize("level", [["1"], None, ["1", "2", "3"], 5, [None, "1"], [1.5, "1"]])
def test_malformed_levels_raise_project_error(level):
    book = L2Book()
    book.apply([["1", "1"]], None)
    with pytest.raises(InvalidLevel):
        book.apply([level], None)
    assert book.bids() == [("1", "1")]


def test_bad_snapshot_leaves_book_untouched():
    book = L2Book()
    book.apply_snapshot([["1", "1"]], [["2", "1"]])
    with pytest.raises(InvalidLevel):
        book.apply_snapshot([["1.5", "1"], ["x", "1"]], [])
    assert book.bids() == [("1", "1")] and book.asks() == [("2", "1")]


@given(st.lists(st.tuples(prices, sizes), max_size=30))
@settings(max_examples=50, deadline=None)
def test_snapshot_equals_reference(levels_):
    book = L2Book()
    book.apply_snapshot(levels_, [])
    ref: dict[Decimal, tuple[str, str]] = {}
    ref_apply(ref, levels_)
    assert book.bids() == [ref[k] for k in sorted(ref, reverse=True)]


@given(st.decimals(min_value=Decimal("1e-12"), max_value=Decimal("1e12"), places=12, allow_nan=False,
                   allow_infinity=False),
       st.sampled_from(["plain", "padded", "exponent"]))
@settings(max_examples=300, deadline=None)
def test_price_keys_order_like_decimal_whatever_the_spelling(value, spelling):
    """The fast plain-decimal parse and the exponent path agree with Decimal on order and equality."""
    text = {"plain": f"{value:f}", "padded": f"{value:f}" + ("0" if "." in f"{value:f}" else ".00"),
            "exponent": f"{value:E}"}[spelling]
    if Decimal(text) <= 0:
        return
    book = L2Book()
    book.apply([["1", "1"], [text, "2"], ["1000", "1"]], None)
    prices = [Decimal(p) for p, _ in book.bids()]
    assert prices == sorted({Decimal("1"), Decimal(text), Decimal("1000")}, reverse=True)
    assert (text, "2") in book.bids() or Decimal(text) in (Decimal("1"), Decimal("1000"))


@pytest.mark.parametrize("price", ["１２", "٣", "0", "0.000", ".", "1e", "+1", " 1", "1 "])
def test_non_ascii_zero_and_odd_prices_are_rejected(price):
    book = L2Book()
    with pytest.raises(InvalidLevel):
        book.apply([[price, "1"]], None)
    assert book.bids() == []
