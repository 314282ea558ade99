"""``python -m aggbook.client URL quotes SYMBOL...`` / ``book SYMBOL`` / ``quote SYMBOL`` / ``status``.

Prints one line per state received (streams) or the answer (one-shot), so the client can be tried
against a running service (``aggbook demo`` prints its URL) without writing any code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from aggbook.client.api import Client
from aggbook.client.errors import AggbookError
from aggbook.client.models import Book, Delivery, Quote, QuoteSide


def _side(side: QuoteSide | None) -> str:
    if side is None:
        return "-"
    return f"{side.price} x {side.size} ({','.join(v.venue for v in side.venues)})"


def _delivery(d: Delivery | None) -> str:
    if d is None:
        return ""
    out = f" seq={d.seq}"
    if d.kind == "snapshot":
        out += f" snapshot({d.reason})"
    if d.resync:
        out += f" after {d.resync}"
    return out


def quote_line(q: Quote) -> str:
    flags = " CROSSED" if q.crossed else " LOCKED" if q.locked else ""
    return f"{q.symbol}{_delivery(q.delivery)} bid {_side(q.bid)} ask {_side(q.ask)} spread {q.spread}{flags}"


def book_line(b: Book) -> str:
    bid = f"{b.bids[0].price} x {b.bids[0].size}" if b.bids else "-"
    ask = f"{b.asks[0].price} x {b.asks[0].size}" if b.asks else "-"
    return (f"{b.symbol}{_delivery(b.delivery)} {len(b.bids)} bids / {len(b.asks)} asks, top {bid} | {ask}, "
            f"venues {','.join(b.venues)}" + (f", excluded {b.excluded}" if b.excluded else ""))


async def run(args: argparse.Namespace) -> None:
    async with Client(args.url) as client:
        if args.command == "status":
            status = await client.get_status()
            print(f"ready={status.ready} " + " ".join(f"{s}={','.join(v) or '-'}"
                                                       for s, v in status.live_venues.items()))
            return
        if args.command == "quote":
            print(quote_line(await client.get_quote(args.symbols[0], fees=args.fees)))
            return
        if args.command == "quotes":
            async with client.quotes(*args.symbols, fees=args.fees) as quotes:
                count = 0
                async for q in quotes:
                    print(quote_line(q), flush=True)
                    count += 1
                    if args.count and count >= args.count:
                        break
            return
        async with client.book(args.symbols[0], depth=args.depth) as books:
            count = 0
            async for b in books:
                print(book_line(b), flush=True)
                count += 1
                if args.count and count >= args.count:
                    break


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aggbook.client",
        description="Print consolidated quotes or merged books of a running aggbook as they change, "
        "or one quote or the status. Reconnects by itself; gaps and reconnects are logged on stderr.",
    )
    parser.add_argument("url", help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("command", choices=["quotes", "book", "quote", "status"])
    parser.add_argument("symbols", nargs="*", help="symbols (quotes), one symbol (book, quote)")
    parser.add_argument("--depth", type=int, default=None, help="book depth (the service's default)")
    parser.add_argument("--fees", action="store_true", help="fee-adjusted quotes")
    parser.add_argument("--count", type=int, default=0, help="stop after this many states (0: never)")
    args = parser.parse_args(argv)
    if args.command in ("quotes", "book", "quote") and not args.symbols:
        parser.error(f"{args.command} needs a symbol")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s %(why)s",
                                           defaults={"why": ""}))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except AggbookError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
