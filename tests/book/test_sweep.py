"""The sweep walks every level of every included venue with exact arithmetic."""

from __future__ import annotations

from decimal import Context, Decimal

import pytest

from aggbook.book.consolidated import ConsolidatedBook
from aggbook.book.sweep import sweep, sweep_json
from aggbook.book.sync import BookSync, Reason, Snapshot
from aggbook.feeds.mexc import MEXC


def book_with(venues: dict[str, tuple[list, list, str]], clock=lambda: 0.0) -> ConsolidatedBook:
    cb = ConsolidatedBook("BTC-USDT", stale_after=10, clock=clock)
    for name, (bids, asks, fee) in venues.items():
        sync = BookSync(MEXC, venue=name, symbol="BTC-USDT", clock=clock)
        sync.on_snapshot(Snapshot(1, [list(b) for b in bids], [list(a) for a in asks]))
        cb.add_venue(sync, fee)
        sync.attach(cb, cb)
    return cb


@pytest.fixture
def cb() -> ConsolidatedBook:
    return book_with(
        {
            "a": ([("100", "1"), ("99", "2")], [("101", "1"), ("103", "5")], "10"),
            "b": ([("100.5", "0.5"), ("98", "10")], [("101.5", "2"), ("102", "1")], "50"),
        }
    )


def test_buy_walks_asks_across_venues_exactly(cb: ConsolidatedBook) -> None:
    out = sweep_json(sweep(cb, "buy", Decimal("3.5")))
    # 1 @ 101 (a), 2 @ 101.5 (b), 0.5 @ 102 (b)
    assert out["filled"] == "3.5" and out["complete"] is True
    assert out["notional"] == "355"  # 101 + 203 + 51
    assert out["average_price"] == str(Context(prec=34).divide(Decimal(355), Decimal("3.5")))
    assert out["average_price"].startswith("101.4285714285714285714285714285")
    assert (out["best_price"], out["worst_price"], out["levels"]) == ("101", "102", 3)
    alloc = {a["venue"]: a for a in out["allocation"]}
    assert alloc["b"]["qty"] == "2.5" and alloc["b"]["notional"] == "254"
    assert alloc["a"]["qty"] == "1" and alloc["a"]["notional"] == "101"
    assert "fee" not in out and "fee" not in alloc["a"]


def test_sell_walks_bids_and_reports_shortfall(cb: ConsolidatedBook) -> None:
    out = sweep_json(sweep(cb, "sell", Decimal("20")))
    assert out["filled"] == "13.5" and out["unfilled"] == "6.5" and out["complete"] is False
    assert (out["best_price"], out["worst_price"]) == ("100.5", "98")
    assert out["notional"] == str(Decimal("100.5") * Decimal("0.5") + 100 + 198 + 980)


def test_fees_reorder_levels_and_are_exact(cb: ConsolidatedBook) -> None:
    # a's 103 * 1.001 = 103.103 ; b's 101.5 * 1.005 = 102.0075 ; b's 102 * 1.005 = 102.51
    out = sweep_json(sweep(cb, "buy", Decimal("3"), fees=True))
    # order: a 101*1.001=101.101 (1), b 101.5 (2) -> filled 3
    assert out["filled"] == "3" and out["fees_included"] is True
    assert out["fee"] == str(Decimal("101") * Decimal("0.001") + Decimal("203") * Decimal("0.005")).rstrip(
        "0"
    )
    assert Decimal(out["total_cost"]) == Decimal(304) + Decimal(out["fee"])
    assert out["worst_price_with_fees"] == "102.0075"
    alloc = {a["venue"]: a for a in out["allocation"]}
    assert alloc["b"]["fee_bps"] == "50" and alloc["b"]["fee"] == "1.015"
    # with a large enough fee, the cheaper raw price loses
    cb2 = book_with({"cheap": ([], [("100", "1")], "500"), "dear": ([], [("101", "1")], "0")})
    assert sweep_json(sweep(cb2, "buy", Decimal(1), fees=True))["allocation"][0]["venue"] == "dear"
    assert sweep_json(sweep(cb2, "buy", Decimal(1)))["allocation"][0]["venue"] == "cheap"


def test_excluded_venues_are_not_walked(cb: ConsolidatedBook) -> None:
    cb.syncs["b"].fail(Reason.GAP, "test")
    r = sweep(cb, "buy", Decimal(2))
    assert r.included == ["a"] and "b" in r.excluded
    assert sweep_json(r)["allocation"] == [
        {
            "venue": "a",
            "qty": "2",
            "notional": "204",
            "average_price": "102",
            "best_price": "101",
            "worst_price": "103",
            "levels": 2,
        }
    ]
    only_b = sweep(cb, "buy", Decimal(1), venues=["b"])
    assert only_b.filled == 0 and sweep_json(only_b)["average_price"] is None


def test_tiny_and_huge_numbers_stay_exact() -> None:
    cb = book_with({"x": ([], [("0.00000001", "123456789012345678901234567890")], "0")})
    out = sweep_json(sweep(cb, "buy", Decimal("123456789012345678901234567890")))
    assert out["notional"] == "1234567890123456789012.3456789"
    assert out["average_price"] == "0.00000001"


def test_bad_arguments() -> None:
    cb = book_with({})
    with pytest.raises(ValueError):
        sweep(cb, "hold", Decimal(1))
    with pytest.raises(ValueError):
        sweep(cb, "buy", Decimal(0))


def _windowed(venues: dict[str, tuple[list, list, str, int | None]]) -> ConsolidatedBook:
    cb = ConsolidatedBook("BTC-USDT", stale_after=10, clock=lambda: 0.0)
    for name, (bids, asks, fee, depth) in venues.items():
        sync = BookSync(MEXC, venue=name, symbol="BTC-USDT", clock=lambda: 0.0)
        sync.on_snapshot(Snapshot(1, [list(b) for b in bids], [list(a) for a in asks], depth=depth))
        cb.add_venue(sync, fee)
        sync.attach(cb, cb)
    return cb


def test_sweep_stops_at_a_venues_known_depth_and_says_so() -> None:
    # "a" was snapshotted 2 deep: asks known only up to 102; "b" is known to the end
    cb = _windowed({
        "a": ([("100", "1")], [("101", "1"), ("102", "1")], "0", 2),
        "b": ([("99", "1")], [("101.5", "1"), ("103", "9")], "0", None),
    })
    out = sweep_json(sweep(cb, "buy", Decimal("5")))
    # 101 (a), 101.5 (b), 102 (a); b's 103 lies beyond a's window, where a may hold unseen asks
    assert (out["filled"], out["complete"], out["incomplete"]) == ("3", False, True)
    assert out["worst_price"] == "102" and out["complete_to"] == "102"
    assert out["complete_depth"] == {"a": 2, "b": 2}
    within = sweep_json(sweep(cb, "buy", Decimal("2.5")))
    assert (within["complete"], within["incomplete"]) == (True, False)
    # a book exhausted on a side known to the end is short, not incomplete
    sell = sweep_json(sweep(cb, "sell", Decimal("5")))
    assert (sell["filled"], sell["incomplete"], sell["complete_to"]) == ("2", False, None)


def test_sweep_with_fees_cuts_at_the_fee_adjusted_bound() -> None:
    # a: asks known to 102 with a 100 bps fee -> 103.02 adjusted; b's 103 (no fee) is inside that
    cb = _windowed({
        "a": ([("100", "1")], [("101", "1"), ("102", "1")], "100", 2),
        "b": ([("99", "1")], [("103", "1"), ("103.5", "1")], "0", None),
    })
    out = sweep_json(sweep(cb, "buy", Decimal("5"), fees=True))
    assert (out["filled"], out["incomplete"]) == ("3", True)
    assert {a["venue"]: a["qty"] for a in out["allocation"]} == {"a": "2", "b": "1"}


def test_ladder_serves_only_levels_every_venue_knows() -> None:
    cb = _windowed({
        "a": ([("100", "1"), ("99", "1")], [("101", "1"), ("102", "1")], "0", 2),
        "b": ([("100", "2"), ("98", "1")], [("101", "1"), ("103", "9")], "0", None),
    })
    ladder = cb.ladder(depth=10)
    assert [lvl.price for lvl in ladder.bids] == ["100", "99"]  # b's 98 is below a's window
    assert [lvl.price for lvl in ladder.asks] == ["101", "102"]
    assert ladder.complete_to == ("99", "102")  # cut short of 10 levels by a's window
    assert ladder.complete_depth == {"a": (2, 2), "b": (2, 2)}
    shallow = cb.ladder(depth=1)
    assert shallow.complete_to == (None, None) and shallow.complete_depth == {"a": (1, 1), "b": (1, 1)}
