"""Snapshot and update messages are assembled from a per-subscription head and a shared tail.

A change fanned out to many subscribers is serialised once (the tail) and each subscriber only adds
its own head and ``seq``: the bytes must be exactly what serialising the whole message object gives,
for every combination of the optional fields.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggbook.service import ws
from aggbook.service.ws import Subscription, _frame, frame_tail


class Times:
    def __init__(self, times: dict[str, tuple[float | None, float]]) -> None:
        self.event_times = times


def whole(kind: str, sub: Subscription, payload: bytes, ts: float, times: Any, reason: str | None) -> bytes:
    """The message object serialised at once, as the hub wrote it before heads and tails."""
    msg: dict[str, Any] = {"type": kind, "sub": sub.key, "channel": sub.channel, "symbol": sub.symbol,
                           "seq": sub.seq, "ts": round(ts, 6)}
    if times is not None:
        if times[0] is not None:
            msg["event_ts"] = round(times[0], 6)
        msg["recv_ts"] = round(times[1], 6)
    if reason is not None:
        msg["reason"] = reason
    msg["data"] = orjson.Fragment(payload)
    return orjson.dumps(msg)


finite = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(
    kind=st.sampled_from(["snapshot", "update"]),
    channel=st.sampled_from(["quotes", "book"]),
    symbol=st.sampled_from(["BTC-USDT", "ÉTH-\"USD\\T"]),
    seq=st.integers(min_value=0, max_value=2**40),
    ts=finite,
    times=st.none() | st.tuples(st.none() | finite, finite),
    reason=st.none() | st.sampled_from(["subscribe", "conflated", 'odd "reason"']),
)
def test_head_seq_and_tail_are_the_whole_message(
    kind: str, channel: str, symbol: str, seq: int, ts: float, times: Any, reason: str | None
) -> None:
    sub = Subscription(f"{channel}:{symbol}", None, channel, symbol, depth=10)  # type: ignore[arg-type]
    sub.seq = seq
    payload = orjson.dumps({"symbol": symbol, "bid": {"price": "1.5", "size": "2"}, "asks": [["1", "2"]]})
    source = Times({} if times is None else {symbol: times})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ws.time, "time", lambda: ts)
        tail = frame_tail(source, symbol, payload, reason)  # type: ignore[arg-type]
    assert _frame(kind, sub, tail) == whole(kind, sub, payload, ts, times, reason)


def test_one_tail_serves_every_subscriber_with_its_own_head_and_seq() -> None:
    payload = b'{"bid":null}'
    tail = frame_tail(Times({"BTC-USDT": (None, 12.5)}), "BTC-USDT", payload)  # type: ignore[arg-type]
    a = Subscription("quotes:BTC-USDT", None, "quotes", "BTC-USDT")  # type: ignore[arg-type]
    b = Subscription("mine", None, "quotes", "BTC-USDT")  # type: ignore[arg-type]
    a.seq, b.seq = 3, 41
    got = [orjson.loads(_frame("update", s, tail)) for s in (a, b)]
    assert [(m["sub"], m["seq"]) for m in got] == [("quotes:BTC-USDT", 3), ("mine", 41)]
    assert got[0]["recv_ts"] == got[1]["recv_ts"] == 12.5 and "event_ts" not in got[0]
    assert got[0]["data"] == got[1]["data"] == {"bid": None}


class Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 200_000])
async def test_a_frame_written_at_once_is_the_frame_aiohttp_writes(length: int) -> None:
    """A client that keeps up gets its frames written straight to the socket: the same bytes as
    aiohttp's own writer sends for a server's uncompressed text frame."""
    from aiohttp import WSMsgType
    from aiohttp._websocket.writer import WebSocketWriter

    theirs = Transport()
    writer = WebSocketWriter(object(), theirs, use_mask=False)  # type: ignore[arg-type]
    data = b"x" * length
    await writer.send_frame(data, WSMsgType.TEXT)
    assert ws._text_frame_header(length) + data == bytes(theirs.written)
