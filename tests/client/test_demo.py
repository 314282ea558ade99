"""The client against the demo set-up: HTTP getters, quote and book streams, a service restart."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from aggbook.client import ApiError, Book, Client, ErrorReply, Quote, Unavailable
from tests.client.setups import FAST, Demo, wait_ready
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


async def test_one_shot_getters_are_typed_and_exact(demo: Demo) -> None:
    async with Client(demo.svc.url, **FAST) as client:
        await wait_ready(client)
        status = await client.get_status()
        assert status.ready and set(status.live_venues) == {"BTC-USDT", "ETH-USDT", "SOL-USDT"}
        quote = await client.get_quote("btc-usdt")
        assert isinstance(quote, Quote) and quote.symbol == "BTC-USDT" and quote.delivery is None
        assert quote.bid is not None and quote.ask is not None and isinstance(quote.bid.price, Decimal)
        assert quote.spread == quote.ask.price - quote.bid.price
        assert all(v.age_seconds is not None and v.last_id is not None for v in quote.venues if v.included)
        fee = await client.get_quote("BTC-USDT", fees=True)
        assert fee.fees and fee.bid is not None and fee.bid.fee_adjusted
        assert [q.symbol for q in await client.get_quotes()] == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
        book = await client.get_book("BTC-USDT", depth=5, venues=["binance", "mexc"])
        assert isinstance(book, Book) and book.depth == 5 and set(book.venues) <= {"binance", "mexc"}
        assert all(level.size == sum(level.venues.values()) for level in book.bids + book.asks)
        assert [lvl.price for lvl in book.bids] == sorted((lvl.price for lvl in book.bids), reverse=True)
        own = await client.get_venue_book("BTC-USDT", "nhex", depth=3)
        assert own.venue == "nhex" and own.state == "live" and len(own.bids) == 3
        with pytest.raises(ApiError) as err:
            await client.get_quote("XRP-USDT")
        assert (err.value.status, err.value.code) == (404, "unknown_symbol")
        with pytest.raises(ApiError) as err:
            await client.get_book("BTC-USDT", depth=0)
        assert (err.value.status, err.value.code) == (400, "bad_request")


async def test_quote_and_book_streams_snapshot_then_gap_free_updates(demo: Demo) -> None:
    async with Client(demo.svc.url, **FAST) as client:
        await wait_ready(client)
        quotes: list[Quote] = []
        async with client.quotes("BTC-USDT", "ETH-USDT") as stream:
            async for q in stream:
                quotes.append(q)
                if len(quotes) >= 12 and {x.symbol for x in quotes} == {"BTC-USDT", "ETH-USDT"}:
                    break
        by_symbol: dict[str, list[int]] = {}
        for q in quotes:
            assert q.delivery is not None and q.delivery.resync is None
            by_symbol.setdefault(q.symbol, []).append(q.delivery.seq)
        for seqs in by_symbol.values():
            assert seqs == list(range(1, len(seqs) + 1))
        first = {q.symbol: q for q in reversed(quotes)}
        assert all(q.delivery is not None and q.delivery.kind == "snapshot" for q in first.values())
        assert stream.gaps == 0 and stream.reconnects == 0

        books: list[Book] = []
        async for b in client.book("SOL-USDT", depth=3):
            books.append(b)
            if len(books) == 5:
                break
        assert [b.delivery.seq for b in books if b.delivery] == [1, 2, 3, 4, 5]
        assert all(len(b.bids) <= 3 and b.symbol == "SOL-USDT" for b in books)
        # leaving the loop closed its connection: the service has no WebSocket client left
        await wait_for(lambda: not demo.svc.hub.clients, what="the stream's connection closed")


async def test_stream_keeps_yielding_across_a_service_restart_on_the_same_port(demo: Demo) -> None:
    async with Client(demo.svc.url, **FAST) as client:
        await wait_ready(client)
        got: list[Quote] = []

        async def consume() -> None:
            async for q in client.quotes("BTC-USDT"):
                got.append(q)

        task = asyncio.create_task(consume())
        try:
            await wait_for(lambda: len(got) >= 3, what="quotes before the restart")
            before = len(got)
            await demo.restart()
            await wait_for(lambda: any(q.delivery and q.delivery.resync for q in got[before:]),
                           timeout=20.0, what="a snapshot after reconnecting")
            resumed = next(i for i, q in enumerate(got) if i >= before and q.delivery and q.delivery.resync)
            await wait_for(lambda: len(got) >= resumed + 3, timeout=20.0, what="updates after reconnecting")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        fresh = got[resumed].delivery
        assert fresh is not None and fresh.kind == "snapshot" and fresh.seq == 1
        assert fresh.resync is not None and fresh.resync.startswith("reconnect")
        assert [q.delivery.seq for q in got[resumed:resumed + 3] if q.delivery] == [1, 2, 3]
        assert all(q.delivery and q.delivery.resync is None for q in got[resumed + 1:])


async def test_a_refused_subscription_raises_the_services_error(demo: Demo) -> None:
    async with Client(demo.svc.url, **FAST) as client:
        with pytest.raises(ErrorReply) as err:
            async for _ in client.quotes("XRP-USDT"):
                pytest.fail("no quote of an unknown symbol")
        assert err.value.code == "unknown_symbol" and "XRP-USDT" in err.value.message
        with pytest.raises(ErrorReply) as err:
            async for _ in client.book("BTC-USDT", depth=100_000):
                pytest.fail("no book beyond max_depth")
        assert err.value.code == "bad_request"


async def test_nothing_listening_is_unavailable() -> None:
    with socket.socket() as bound:  # bound and not listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        await _unavailable(url)


async def _unavailable(url: str) -> None:
    async with Client(url, reconnect_base=0.01, reconnect_cap=0.02, reconnect_attempts=2) as client:
        with pytest.raises(Unavailable):
            await client.get_status()
        with pytest.raises(Unavailable, match="gave up after 3 failed connections"):
            async for _ in client.quotes("BTC-USDT"):
                pass


async def test_command_line_prints_quotes(demo: Demo) -> None:
    async with Client(demo.svc.url) as client:
        await wait_ready(client)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aggbook.client", demo.svc.url, "quotes", "BTC-USDT", "--count", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3 and lines[0].startswith("BTC-USDT seq=1 snapshot(subscribe) bid ")
    assert lines[2].startswith("BTC-USDT seq=3 ")


async def test_the_documented_example_runs(demo: Demo, tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "client.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert "http://127.0.0.1:8080" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("http://127.0.0.1:8080", demo.svc.url))
    async with Client(demo.svc.url) as client:
        await wait_ready(client)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "ready: True" and lines[1].startswith("best bid ")
    assert sum(1 for line in lines if line.startswith(("BTC-USDT ", "ETH-USDT "))) == 5
    assert sum(1 for line in lines if line.startswith("bid ")) == 3


async def test_venue_wire_text_stays_in_its_own_book_and_leaves_merged_answers_clean(demo: Demo) -> None:
    """Through the real feeds: Binance spot pads to 8 decimals (NHEX's mbp.150 writes short numbers, as
    its documents' example does), every merged answer is canonical text."""
    async with Client(demo.svc.url) as client:
        await wait_ready(client)
        own = await client.get_venue_book("BTC-USDT", "binance", depth=5)
        assert own.bids and all(len(format(lvl.price, "f").partition(".")[2]) == 8 for lvl in own.bids)
        book = await client.get_book("BTC-USDT", depth=50, venues=["binance"])
        quote = await client.get_quote("BTC-USDT")
        async with client.book("BTC-USDT", depth=50) as stream:
            streamed = await anext(stream)
    numbers = [lvl.price for lvl in book.bids + book.asks + streamed.bids + streamed.asks]
    numbers += [size for lvl in book.bids + streamed.bids for size in lvl.venues.values()]
    padded = next(v for v in quote.venues if v.venue == "binance")
    assert padded.bid is not None
    numbers += [padded.bid.price, padded.bid.size]
    for number in numbers:
        text = format(number, "f")  # a Decimal's own text: str() would write 1E-8 for 0.00000001
        assert "E" not in text and not (("." in text) and text.endswith("0")), text
    assert {lvl.price for lvl in book.bids} & {lvl.price for lvl in own.bids}  # the same numbers
