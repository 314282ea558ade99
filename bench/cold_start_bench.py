"""Cold start of many Binance spot books: seconds until every book is live, against the computed bound.

A simulated Binance spot venue (in-process, 127.0.0.1) serves ``--symbols`` synthetic instruments
and enforces a REST weight budget of ``--weight-limit`` per ``--window`` seconds (the real venue:
6000 per minute), which its ``exchangeInfo`` publishes.  A ``BinanceSpotFeed`` at ``--depth`` is
started on it, and the time from ``feed.start()`` until every book is live is measured; the
market pump is slow (``--rate`` steps per symbol per second) so the run measures snapshot pacing,
not frame handling.  The venue's own counters say what was spent: requests, weight, the most
weight in one window and the requests it refused (429/418).

``cold_start_bound_s`` is the feed's own figure (``VenueFeed.cold_start_bound_s``, the one
``aggbook check-config`` prints): the earliest moment its pacing lets the last snapshot request
out; the measured time adds round trips and the last book's first delta.  The weight per second
sets the pace, so a quick run shrinks the snapshot weight (``--depth 100``: weight 5), not the
window.

The last line is machine-readable: ``cold_start_<n>_s=<x> cold_start_bound_s=<x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from aggbook.feeds.binance import BinanceSpotFeed
from aggbook.feeds.config import VenueConfig
from aggbook.simulator.binance import BinanceSpotVenue
from aggbook.simulator.market import extra_symbol


async def run(args: argparse.Namespace) -> tuple[float, float | None]:
    specs = [extra_symbol(i) for i in range(args.symbols)]
    venue = BinanceSpotVenue(specs, seed=11, rate=args.rate, weight_limit=args.weight_limit,
                             weight_window=args.window)
    await venue.start()
    symbols = {spec.canonical: venue.venue_symbol(spec) for spec in specs}
    config = VenueConfig(name="binance", kind="binance", symbols=symbols, depth=args.depth, **venue.urls())
    feed = BinanceSpotFeed(config)
    started = time.monotonic()
    try:
        await feed.start()
        bound = feed.cold_start_bound_s() if hasattr(feed, "cold_start_bound_s") else None
        last_report = started
        while True:
            syncs = feed.current_syncs()
            live = sum(1 for c in symbols if c in syncs and syncs[c].live)
            now = time.monotonic()
            if live == len(symbols):
                break
            if now - last_report >= 10:
                last_report = now
                print(f"  {now - started:6.1f}s: {live}/{len(symbols)} live", flush=True)
            if now - started > args.timeout:
                raise SystemExit(f"not all books live after {args.timeout}s ({live}/{len(symbols)})")
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        limiter = venue.limiter
        print(f"venue: requests={getattr(limiter, 'requests', '?')} "
              f"weight={getattr(limiter, 'charged', '?')} "
              f"peak_window={getattr(limiter, 'peak', '?')} of {limiter.limit} per {limiter.window:g}s "
              f"refused={getattr(limiter, 'refused', '?')}")
        print(f"feed: pacer rate={feed.pacer.rate:g} weight/s burst={feed.pacer.burst:g} "
              f"weight per snapshot={feed.snapshot_weight(next(iter(symbols))):g} "
              f"penalties={feed.pacer.penalties}")
        return elapsed, bound
    finally:
        await feed.stop()
        await venue.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--depth", type=int, default=None, help="snapshot limit (default: the feed's 1000)")
    parser.add_argument("--weight-limit", type=int, default=6000, help="REQUEST_WEIGHT per window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds")
    parser.add_argument("--rate", type=float, default=1.0, help="market steps per symbol per second")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    elapsed, bound = asyncio.run(run(args))
    bound_text = f"{bound:.1f}" if bound is not None else "n/a"
    print(f"cold_start_{args.symbols}_s={elapsed:.1f} cold_start_bound_s={bound_text}")


if __name__ == "__main__":
    main()
