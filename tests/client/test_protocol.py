"""The client against a scripted WebSocket server: what a correct service never sends."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest

from aggbook.client import Client, ErrorReply, ProtocolError, Quote
from tests.client.setups import FAST, FakeServer, FakeSession, Script, quote_data, quote_sub

Start = Callable[[Script], Awaitable[FakeServer]]


async def take(client: Client, n: int) -> list[Quote]:
    out: list[Quote] = []

    async def run() -> None:
        async for q in client.quotes("BTC-USDT"):
            out.append(q)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), 10)
    return out


async def test_a_skipped_seq_resubscribes_and_the_fresh_snapshot_says_why(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data("100"), reason="subscribe")
        await s.state("update", "quotes:BTC-USDT", 2, quote_data("101"))
        await s.state("update", "quotes:BTC-USDT", 4, quote_data("103"))  # seq 3 never came
        await s.state("update", "quotes:BTC-USDT", 5, quote_data("104"))  # already in flight: ignored
        unsub = await s.recv()
        assert unsub["op"] == "unsubscribe" and unsub["subs"] == ["quotes:BTC-USDT"]
        await s.ack(unsub, ["quotes:BTC-USDT"])
        again = await s.recv()
        assert (again["op"], again["channel"], again["symbols"]) == ("subscribe", "quotes", ["BTC-USDT"])
        await s.ack(again, [quote_sub()])
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data("105"), reason="subscribe")
        await s.state("update", "quotes:BTC-USDT", 2, quote_data("106"))
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        got = await take(client, 4)
    assert [str(q.bid.price) for q in got if q.bid] == ["100", "101", "105", "106"]
    fresh = got[2].delivery
    assert fresh is not None and (fresh.kind, fresh.seq) == ("snapshot", 1)
    assert fresh.resync == "gap: expected seq 3, got 4 (update)"
    assert got[3].delivery is not None and got[3].delivery.resync is None
    assert len(server.sessions) == 1  # repaired on the same connection
    await asyncio.wait_for(server.sessions[0].closed.wait(), 10)
    # the frame in flight after the gap was ignored: one repair, not two
    assert [m["op"] for m in server.sessions[0].received] == ["subscribe", "unsubscribe", "subscribe"]


async def test_a_conflated_snapshot_continues_the_sequence(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data("100"), reason="subscribe")
        await s.state("snapshot", "quotes:BTC-USDT", 2, quote_data("107"), reason="conflated")
        await s.state("update", "quotes:BTC-USDT", 3, quote_data("108"))
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        stream = client.quotes("BTC-USDT")
        got = []
        async for q in stream:
            got.append(q)
            if len(got) == 3:
                break
    assert [(q.delivery.kind, q.delivery.reason, q.delivery.seq) for q in got if q.delivery] == [
        ("snapshot", "subscribe", 1), ("snapshot", "conflated", 2), ("update", None, 3)]
    assert (stream.gaps, stream.conflated) == (0, 1)
    assert len(server.sessions) == 1 and [m["op"] for m in server.sessions[0].received] == ["subscribe"]


async def test_an_update_before_any_snapshot_is_a_gap(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        await s.state("update", "quotes:BTC-USDT", 1, quote_data("100"))
        unsub = await s.recv()
        await s.ack(unsub, ["quotes:BTC-USDT"])
        again = await s.recv()
        await s.ack(again, [quote_sub()])
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data("101"), reason="subscribe")
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        (q,) = await take(client, 1)
    assert q.delivery is not None and q.delivery.resync == "gap: expected seq 1, got 1 (update)"


async def test_a_dropped_connection_reconnects_and_resubscribes(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        first = len(server.sessions) == 1
        bid = "100" if first else "200"
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data(bid), reason="subscribe")
        if first:
            await s.ws.close(code=4008, message=b"slow consumer")
        else:
            await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        got = await take(client, 2)
    assert [str(q.bid.price) for q in got if q.bid] == ["100", "200"] and len(server.sessions) == 2
    assert got[1].delivery is not None
    assert got[1].delivery.resync == "reconnect: connection closed (code 4008)"


@pytest.mark.parametrize(
    "frame, match",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"type": "surprise"}', "unknown message type 'surprise'"),
        ('{"type": "update", "sub": "quotes:ETH-USDT", "seq": 1, "data": {}}', "never acknowledged"),
        ('{"type": "snapshot", "sub": "quotes:BTC-USDT", "channel": "quotes", "seq": 1, "ts": 1,'
         ' "reason": "subscribe", "data": {"symbol": "BTC-USDT"}}', "missing field"),
        ('{"type": "snapshot", "sub": "quotes:BTC-USDT", "channel": "quotes", "seq": 1, "ts": 1,'
         ' "reason": "because", "data": {}}', "unknown reason"),
    ],
)
async def test_a_bad_frame_raises_protocol_error(fake_server: Start, frame: str, match: str) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        await s.send(frame)
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        with pytest.raises(ProtocolError, match=match):
            await take(client, 1)


async def test_a_float_price_is_a_protocol_error(fake_server: Start) -> None:
    data = quote_data()
    data["bid"]["price"] = 100.5

    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        await s.state("snapshot", "quotes:BTC-USDT", 1, data, reason="subscribe")
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        with pytest.raises(ProtocolError, match=r"quote.bid.price: expected decimal text, got 100.5"):
            await take(client, 1)


async def test_an_error_reply_raises_error_reply(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.send({"type": "error", "code": "too_many_subscriptions", "message": "at most 1",
                      "id": sub["id"]})
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client:
        with pytest.raises(ErrorReply) as err:
            await take(client, 1)
    reply = err.value
    assert (reply.code, reply.message, reply.request_id) == ("too_many_subscriptions", "at most 1", 1)


def test_importing_the_client_loads_nothing_of_the_service() -> None:
    code = (
        "import sys, aggbook.client; "
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['aggbook', 'service'], ['aggbook', 'simulator'], ['aggbook', 'feeds'], ['aggbook', 'book'])); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_cancelled_anext_keeps_the_stream_and_starts_afresh(fake_server: Start) -> None:
    async def script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub()])
        bid = str(len(server.sessions))  # which connection this is
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data(bid), reason="subscribe")
        await s.until_closed()

    server = await fake_server(script)
    async with Client(server.url, **FAST) as client, client.quotes("BTC-USDT") as stream:
        first = await anext(stream)
        pending = asyncio.create_task(anext(stream))  # nothing more comes on this connection
        await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        second = await asyncio.wait_for(anext(stream), 10)
    assert first.bid is not None and second.bid is not None
    assert (str(first.bid.price), str(second.bid.price)) == ("1", "2")
    assert second.delivery is not None and second.delivery.resync == "reconnect: iteration cancelled"
    assert stream.reconnects == 1


def book_data(price: str) -> dict:
    return {"symbol": "BTC-USDT", "depth": 2, "venues": ["alpha"], "excluded": {"beta": "stale"},
            "bids": [{"price": price, "size": "1.5", "venues": {"alpha": "1.5"}}], "asks": []}


async def test_a_gap_in_one_subscription_leaves_the_others_alone(fake_server: Start) -> None:
    book_sub = {"sub": "book:BTC-USDT:2:alpha", "channel": "book", "symbol": "BTC-USDT", "depth": 2,
                "venues": ["alpha"]}
    eth_sub = {"sub": "quotes:ETH-USDT", "channel": "quotes", "symbol": "ETH-USDT", "fees": True}

    async def book_script(s: FakeSession) -> None:
        sub = await s.recv()
        assert (sub["channel"], sub["depth"], sub["venues"]) == ("book", 2, ["alpha"])
        await s.ack(sub, [book_sub])
        await s.state("snapshot", book_sub["sub"], 1, book_data("100"), reason="subscribe", channel="book")
        await s.state("update", book_sub["sub"], 3, book_data("101"), channel="book")
        unsub, again = await s.recv(), await s.recv()
        assert unsub["subs"] == [book_sub["sub"]]
        assert again == {"op": "subscribe", "channel": "book", "symbol": "BTC-USDT", "depth": 2,
                         "venues": ["alpha"], "id": again["id"]}
        await s.ack(unsub, [book_sub["sub"]])
        await s.ack(again, [book_sub])
        await s.state("snapshot", book_sub["sub"], 1, book_data("102"), reason="subscribe", channel="book")
        await s.until_closed()

    server = await fake_server(book_script)
    async with Client(server.url, **FAST) as client:
        books = []
        async for book in client.book("BTC-USDT", depth=2, venues=["alpha"]):
            books.append(book)
            if len(books) == 2:
                break
    assert [str(b.bids[0].price) for b in books] == ["100", "102"] and books[0].excluded == {"beta": "stale"}
    assert books[1].delivery is not None and books[1].delivery.resync == "gap: expected seq 2, got 3 (update)"

    async def quotes_script(s: FakeSession) -> None:
        sub = await s.recv()
        await s.ack(sub, [quote_sub(), eth_sub])
        await s.state("snapshot", "quotes:BTC-USDT", 1, quote_data("100"), reason="subscribe")
        await s.state("snapshot", "quotes:ETH-USDT", 1, quote_data("10", "ETH-USDT"), reason="subscribe")
        await s.state("update", "quotes:ETH-USDT", 5, quote_data("11", "ETH-USDT"))  # gap on ETH only
        await s.state("update", "quotes:BTC-USDT", 2, quote_data("101"))  # BTC goes on
        unsub, again = await s.recv(), await s.recv()
        assert unsub["subs"] == ["quotes:ETH-USDT"]
        assert (again["symbols"], again["fees"]) == (["ETH-USDT"], True)
        await s.ack(unsub, ["quotes:ETH-USDT"])
        await s.ack(again, [eth_sub])
        await s.state("snapshot", "quotes:ETH-USDT", 1, quote_data("12", "ETH-USDT"), reason="subscribe")
        await s.until_closed()

    server = await fake_server(quotes_script)
    async with Client(server.url, **FAST) as client:
        got = []
        async for q in client.quotes("BTC-USDT", "ETH-USDT", fees=True):
            got.append(q)
            if len(got) == 4:
                break
    assert [(q.symbol, str(q.bid.price)) for q in got if q.bid] == [
        ("BTC-USDT", "100"), ("ETH-USDT", "10"), ("BTC-USDT", "101"), ("ETH-USDT", "12")]
    assert got[2].delivery is not None and got[2].delivery.resync is None
    assert got[3].delivery is not None and got[3].delivery.resync == "gap: expected seq 2, got 5 (update)"
