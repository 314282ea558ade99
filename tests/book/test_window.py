"""The book's known depth (its window) against reference models of the two kinds of venue stream.

A snapshot window: the venue's diffs cover its whole book, the snapshot only the best ``D`` levels.
A top-N window: the venue's stream is its best ``N`` levels, with or without deletes for levels that
leave it.  In both, the client must hold exactly the truth inside its window and nothing beyond.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from aggbook.book.l2 import L2Book
from aggbook.book.sync import BookSync, Reason, Snapshot, SyncState
from aggbook.feeds.mexc import MEXC

Side = dict[int, int]  # price in cents -> size


def price_text(cents: int, style: int) -> str:
    """The same price written as venues do, with varying decimals (exercises the book's rescale)."""
    value = Decimal(cents).scaleb(-2)
    return (str(value.normalize()) if value != value.to_integral() else str(int(value)),
            f"{value:.2f}", f"{value:.4f}")[style]


def best(side: Side, n: int, is_bid: bool) -> list[int]:
    return sorted(side, reverse=is_bid)[:n]


def levels(side: Side, prices: list[int], style: int = 1) -> list[list[str]]:
    return [[price_text(p, style), str(side[p])] for p in prices]


def held(book: L2Book) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
    return book.as_decimal()


def as_decimal(side: Side) -> dict[Decimal, Decimal]:
    return {Decimal(p).scaleb(-2): Decimal(s) for p, s in side.items()}


def window_of(book: L2Book) -> tuple[Decimal | None, Decimal | None]:
    return tuple(None if w is None else Decimal(w) for w in book.window())  # type: ignore[return-value]


sides = st.dictionaries(st.integers(1, 60), st.integers(1, 5), max_size=30)
ops = st.lists(
    st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 5), st.integers(0, 2)), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(bids=sides, asks=sides, depth=st.integers(1, 25), ops=ops)
def test_snapshot_window_holds_exactly_the_truth_inside_it(bids: Side, asks: Side, depth: int, ops) -> None:
    truth = {True: dict(bids), False: dict(asks)}
    book = L2Book()
    book.apply_snapshot(levels(bids, best(bids, depth, True)), levels(asks, best(asks, depth, False)), depth)
    # the reference: a side is complete to its snapshot's worst price when the snapshot was full
    bound = {
        is_bid: (Decimal(best(side, depth, is_bid)[-1]).scaleb(-2) if len(side) >= depth else None)
        for is_bid, side in truth.items()
    }

    def inside(is_bid: bool) -> dict[Decimal, Decimal]:
        edge = bound[is_bid]
        return {p: s for p, s in as_decimal(truth[is_bid]).items()
                if edge is None or (p >= edge if is_bid else p <= edge)}

    for is_bid, cents, size, style in ops:
        if size:
            truth[is_bid][cents] = size
        else:
            truth[is_bid].pop(cents, None)
        level = [[price_text(cents, style), str(size)]]
        book.apply(level if is_bid else None, None if is_bid else level)
        assert held(book) == (inside(True), inside(False))
        assert window_of(book) == (bound[True], bound[False])
        assert book.depth == (len(inside(True)), len(inside(False)))
        assert book.exhausted() == any(bound[s] is not None and not inside(s) for s in (True, False))


@settings(max_examples=300, deadline=None)
@given(bids=sides, asks=sides, n=st.integers(1, 10), ops=ops, exit_deletes=st.booleans())
def test_top_n_window_is_the_venues_top_n(bids: Side, asks: Side, n: int, ops, exit_deletes: bool) -> None:
    truth = {True: dict(bids), False: dict(asks)}
    book = L2Book(max_depth=n)
    book.apply_snapshot(levels(bids, best(bids, n, True)), levels(asks, best(asks, n, False)))
    for is_bid, cents, size, style in ops:
        side = truth[is_bid]
        before = {p: side[p] for p in best(side, n, is_bid)}
        if size:
            side[cents] = size
        else:
            side.pop(cents, None)
        after = {p: side[p] for p in best(side, n, is_bid)}
        # what a top-N stream sends: every level of the window that changed or entered it, and the
        # ones that left it as size 0 (unless the venue leaves those out)
        changes = [[price_text(p, style), str(s)] for p, s in after.items() if before.get(p) != s]
        changes += [[price_text(p, style), "0"] for p in before if p not in after
                    and (exit_deletes or p not in side)]
        book.apply(changes if is_bid else None, None if is_bid else changes)
        top = {True: {p: truth[True][p] for p in best(truth[True], n, True)},
               False: {p: truth[False][p] for p in best(truth[False], n, False)}}
        assert held(book) == (as_decimal(top[True]), as_decimal(top[False]))
        expected = tuple(
            Decimal(best(truth[s], n, s)[-1]).scaleb(-2) if len(truth[s]) >= n else None
            for s in (True, False)
        )
        assert window_of(book) == expected
        assert not book.exhausted()


def test_edge_level_removed_keeps_the_range_and_loses_one_level() -> None:
    book = L2Book()
    book.apply_snapshot([["100", "1"], ["99", "1"], ["98", "1"]], [["101", "1"], ["102", "1"]], depth=3)
    assert book.window() == ("98", None)  # asks: fewer than asked for, the whole side
    book.apply([["98", "0"]], None)
    assert book.window() == ("98", None) and book.depth == (2, 2)
    book.apply([["98", "4"], ["97", "1"]], [["150", "1"]])  # 98 comes back, 97 is beyond: unknown
    assert book.bids() == [("100", "1"), ("99", "1"), ("98", "4")]
    assert book.asks()[-1] == ("150", "1")


def test_window_survives_a_rescale() -> None:
    book = L2Book()
    book.apply_snapshot([["100", "1"], ["99", "1"]], [], depth=2)
    book.apply([["99.005", "1"], ["98.995", "1"]], None)
    assert book.bids() == [("100", "1"), ("99.005", "1"), ("99", "1")]
    assert book.window() == ("99", None)


def test_an_emptied_window_resyncs_with_its_reason() -> None:
    sync = BookSync(MEXC, venue="mexc", symbol="BTC-USDT")
    sync.on_snapshot(Snapshot(10, [["100", "1"], ["99", "1"]], [["101", "1"], ["102", "1"]], depth=2))
    assert sync.live and sync.book.window() == ("99", "102")
    from aggbook.book.sync import Delta
    sync.on_delta(Delta(11, 11, None, [["100", "0"], ["99", "0"], ["98", "5"]], None))
    assert sync.state is SyncState.RESYNCING and sync.reason is Reason.DEPTH_EXHAUSTED
    assert sync.counters.resyncs[Reason.DEPTH_EXHAUSTED] == 1
