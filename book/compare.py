"""Two books of one venue and symbol compared level for level, over the depth both of them know.

A book audit (``feeds/audit.py``) loads a fresh venue snapshot into a scratch :class:`L2Book` and
asks whether the live book equals it.  Neither book need hold the venue's whole side: each knows
its side down to its window's edge (:meth:`L2Book.window`), so only the price range both know is
compared; a level outside it is unknown to one of them and proves nothing.  Prices and sizes
compare as numbers (``"100.0"`` equals ``"100"``), as the venue's own text may differ between its
stream and its snapshot.
"""

from __future__ import annotations

from decimal import Decimal

from aggbook.book.l2 import L2Book, Level

_Levels = list[tuple[Decimal, Decimal]]


def _numbers(levels: list[Level]) -> _Levels:
    return [(Decimal(p), Decimal(s)) for p, s in levels]


def _common(levels: _Levels, edges: list[str | None], bids: bool) -> _Levels:
    """The levels inside both windows: down to the nearer of the two edges (None: no edge)."""
    known = [Decimal(e) for e in edges if e is not None]
    if not known:
        return levels
    if bids:
        floor = max(known)
        return [lv for lv in levels if lv[0] >= floor]
    ceiling = min(known)
    return [lv for lv in levels if lv[0] <= ceiling]


def first_difference(book: L2Book, other: L2Book) -> str | None:
    """None when the two books agree over the range both know; else where they first part."""
    (bid_edge, ask_edge), (other_bid_edge, other_ask_edge) = book.window(), other.window()
    for name, mine, theirs, side_edges in (
        ("bid", book.bids(), other.bids(), [bid_edge, other_bid_edge]),
        ("ask", book.asks(), other.asks(), [ask_edge, other_ask_edge]),
    ):
        a = _common(_numbers(mine), side_edges, name == "bid")
        b = _common(_numbers(theirs), side_edges, name == "bid")
        if a == b:
            continue
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        have = f"{a[at][1]} at {a[at][0]}" if at < len(a) else "nothing"
        want = f"{b[at][1]} at {b[at][0]}" if at < len(b) else "nothing"
        return f"{name} level {at + 1}: the book has {have}, the snapshot {want}"
    return None
