"""Level-update throughput of the project's L2 book against two baselines, in one run.

The stream is "recorded-style": a deep book (a 1000-level snapshot per side, like a
futures ``limit=1000`` snapshot), then messages of 10-20 absolute level updates with
about 20% deletions, prices and sizes as the decimal strings a venue sends.  Each
contender does what a feed handler must do per message: turn the strings into its
key/value types, set or delete every level, then read the best bid and ask (the
consolidated book needs them after every message).

* ``aggbook``: ``book.l2.L2Book.apply`` (exact text kept, numeric ordering).
* ``order_book``: the C-extension ``order_book.OrderBook`` with float keys and values,
  used as cryptofeed's handlers use it; best bid and ask by ``index(0)`` on each side.
* ``dict``: plain dicts with float keys, best price by ``max``/``min`` over the keys.

The contenders take turns round by round (``--runs`` rounds), each keeping its fastest run,
so that a busy spell on a shared machine does not land on one contender only.

The last line is machine-readable:
``levels_per_s=<n> ratio_vs_order_book=<r> ratio_vs_dict=<r>``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from decimal import Decimal

from sortedcontainers import SortedList

from aggbook.book.l2 import L2Book

Message = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def make_stream(messages: int, depth: int, seed: int) -> tuple[Message, list[Message]]:
    """A snapshot and a list of diff messages that keep the book near ``depth`` levels."""
    rng = random.Random(seed)
    tick = Decimal("0.01")
    mid = 9318010  # in ticks
    bids = SortedList(mid - 1 - i for i in range(depth))
    asks = SortedList(mid + 1 + i for i in range(depth))

    def px(t: int) -> str:
        return str(Decimal(t) * tick)

    def qty() -> str:
        return f"{rng.randint(1, 500000) / 100000:.5f}"

    snapshot = ([(px(t), qty()) for t in reversed(bids)], [(px(t), qty()) for t in asks])
    stream: list[Message] = []
    for _ in range(messages):
        msg_b: list[tuple[str, str]] = []
        msg_a: list[tuple[str, str]] = []
        for _ in range(rng.randint(10, 20)):
            is_bid = rng.random() < 0.5
            side, out = (bids, msg_b) if is_bid else (asks, msg_a)
            if rng.random() < 0.2 and len(side) > depth // 2:  # deletion of an existing level
                # deletions cluster near the top, as fills and cancels do
                i = rng.randrange(min(40, len(side)))
                t = side[-1 - i] if is_bid else side[i]
                side.remove(t)
                out.append((px(t), "0.00000"))
            else:
                near = int(abs(rng.gauss(0, 25)))
                if is_bid:
                    t = bids[-1] - near + 2 if rng.random() < 0.3 else bids[-1] - near
                    t = min(t, asks[0] - 1)
                else:
                    t = asks[0] + near - 2 if rng.random() < 0.3 else asks[0] + near
                    t = max(t, bids[-1] + 1)
                if t not in side:
                    side.add(t)
                out.append((px(t), qty()))
        stream.append((msg_b, msg_a))
    return snapshot, stream


def run_aggbook(snapshot: Message, stream: list[Message]) -> float:
    book = L2Book()
    book.apply_snapshot(*snapshot)
    apply, best_bid, best_ask = book.apply, book.best_bid, book.best_ask
    start = time.perf_counter()
    for bids, asks in stream:
        apply(bids, asks)
        best_bid()
        best_ask()
    return time.perf_counter() - start


def run_order_book(snapshot: Message, stream: list[Message]) -> float | None:
    try:
        from order_book import OrderBook
    except ImportError:
        return None
    ob = OrderBook()
    for p, q in snapshot[0]:
        ob.bids[float(p)] = float(q)
    for p, q in snapshot[1]:
        ob.asks[float(p)] = float(q)
    ob_bids, ob_asks = ob.bids, ob.asks
    start = time.perf_counter()
    for bids, asks in stream:
        for side, levels in ((ob_bids, bids), (ob_asks, asks)):
            for p, q in levels:
                price = float(p)
                size = float(q)
                if size == 0:
                    if price in side:
                        del side[price]
                else:
                    side[price] = size
        if len(ob_bids):
            ob_bids.index(0)
        if len(ob_asks):
            ob_asks.index(0)
    return time.perf_counter() - start


def run_dict(snapshot: Message, stream: list[Message]) -> float:
    d_bids = {float(p): float(q) for p, q in snapshot[0]}
    d_asks = {float(p): float(q) for p, q in snapshot[1]}
    start = time.perf_counter()
    for bids, asks in stream:
        for side, levels in ((d_bids, bids), (d_asks, asks)):
            for p, q in levels:
                price = float(p)
                size = float(q)
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        max(d_bids)
        min(d_asks)
    return time.perf_counter() - start


def fastest(runs: int, contenders: dict[str, Callable[[], float | None]]) -> dict[str, float | None]:
    """Each contender's fastest run, the contenders taking turns round by round.

    On a shared machine the load changes from second to second: running all of one contender's
    repeats before the next one's would hand one of them the quiet spell.
    """
    best: dict[str, float | None] = dict.fromkeys(contenders, None)
    for _ in range(runs):
        for name, run in contenders.items():
            gc.collect()
            t = run()
            if t is not None:
                prev = best[name]
                best[name] = t if prev is None else min(prev, t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=150_000, help="diff messages (x ~15 levels each)")
    parser.add_argument("--depth", type=int, default=1000, help="levels per side in the snapshot")
    parser.add_argument("--runs", type=int, default=3, help="rounds; each contender keeps its fastest")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    snapshot, stream = make_stream(args.messages, args.depth, args.seed)
    levels = sum(len(b) + len(a) for b, a in stream)
    deletions = sum(1 for b, a in stream for _, q in b + a if Decimal(q) == 0)
    print(f"stream: {args.messages} messages, {levels} level updates ({deletions / levels:.0%} deletions), "
          f"snapshot depth {args.depth} per side")

    best = fastest(args.runs, {
        "aggbook": lambda: run_aggbook(snapshot, stream),
        "order_book": lambda: run_order_book(snapshot, stream),
        "dict": lambda: run_dict(snapshot, stream),
    })
    t_agg, t_ob, t_dict = best["aggbook"], best["order_book"], best["dict"]
    assert t_agg is not None and t_dict is not None
    rate = levels / t_agg
    print(f"aggbook L2Book     {rate:>14,.0f} levels/s")
    if t_ob is not None:
        print(f"order_book (C ext) {levels / t_ob:>14,.0f} levels/s")
    else:
        print("order_book (C ext) not installed (pip install '.[bench]')")
    print(f"plain dict         {levels / t_dict:>14,.0f} levels/s")
    ratio_ob = (t_ob / t_agg) if t_ob is not None else float("nan")
    ratio_dict = t_dict / t_agg
    print(f"levels_per_s={rate:.0f} ratio_vs_order_book={ratio_ob:.2f} ratio_vs_dict={ratio_dict:.2f}")


if __name__ == "__main__":
    main()
