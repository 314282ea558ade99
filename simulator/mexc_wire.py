"""MEXC's protobuf push frames written byte by byte, without the project's generated module.

The simulated MEXC must not encode with ``aggbook.proto`` (what the feed decodes with): a wrong field
number there would then be written and read the same wrong way and no test would notice.  So the
field numbers below are copied from MEXC's official ``websocket-proto`` schema
(``PushDataV3ApiWrapper.proto`` and the body messages, as tabulated in the venue notes), and the
frames are written with the protobuf wire format's four rules: varint keys ``field << 3 | wire
type``, varints, 64-bit two's complement for negative ints, and length-delimited strings and
messages.  Only proto3 non-default values are written, as a protobuf encoder would.
"""

from __future__ import annotations

from collections.abc import Iterable

# PushDataV3ApiWrapper
CHANNEL = 1
SYMBOL = 3
SYMBOL_ID = 4
CREATE_TIME = 5
SEND_TIME = 6
# its oneof ``body`` members
PUBLIC_LIMIT_DEPTHS = 303
PUBLIC_SPOT_KLINE = 308
PUBLIC_BOOK_TICKER_BATCH = 311
PUBLIC_AGGRE_DEPTHS = 313
PUBLIC_AGGRE_DEALS = 314
PUBLIC_AGGRE_BOOK_TICKER = 315

_VARINT, _LEN = 0, 2


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 is written as its 64-bit two's complement (ten bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | _LEN) + varint(len(payload)) + payload


def string(field: int, text: str | None) -> bytes:
    """A string field; proto3 leaves out the empty string."""
    return length_delimited(field, text.encode()) if text else b""


def int64(field: int, value: int | None) -> bytes:
    """An int64/int32 field; proto3 leaves out zero."""
    return varint(field << 3 | _VARINT) + varint(value) if value else b""


def optional_string(field: int, text: str | None) -> bytes:
    """A proto3 ``optional`` string: written whenever set, even empty."""
    return b"" if text is None else length_delimited(field, text.encode())


def optional_int64(field: int, value: int | None) -> bytes:
    return b"" if value is None else varint(field << 3 | _VARINT) + varint(value)


# ---------------------------------------------------------------------- bodies
def level(price: str, quantity: str) -> bytes:
    """``PublicAggreDepthV3ApiItem`` / ``PublicLimitDepthV3ApiItem``: price 1, quantity 2."""
    return string(1, price) + string(2, quantity)


def _levels(field: int, levels: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(length_delimited(field, level(p, q)) for p, q in levels)


def aggre_depths(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]], event_type: str,
                 from_version: str, to_version: str, last_order_create_time: int | None = None) -> bytes:
    """``PublicAggreDepthsV3Api``: asks 1, bids 2, eventType 3, fromVersion 4, toVersion 5,
    lastOrderCreateTime 6."""
    return (_levels(1, asks) + _levels(2, bids) + string(3, event_type) + string(4, from_version)
            + string(5, to_version) + int64(6, last_order_create_time))


def limit_depths(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]], event_type: str,
                 version: str, last_order_create_time: int | None = None) -> bytes:
    """``PublicLimitDepthsV3Api``: asks 1, bids 2, eventType 3, version 4, lastOrderCreateTime 5."""
    return (_levels(1, asks) + _levels(2, bids) + string(3, event_type) + string(4, version)
            + int64(5, last_order_create_time))


def book_ticker(bid: str, bid_qty: str, ask: str, ask_qty: str) -> bytes:
    """``PublicBookTickerV3Api`` and the first four of ``PublicAggreBookTickerV3Api``: 1..4."""
    return string(1, bid) + string(2, bid_qty) + string(3, ask) + string(4, ask_qty)


def aggre_book_ticker(bid: str, bid_qty: str, ask: str, ask_qty: str, version: str | None = None,
                      last_order_create_time: int | None = None) -> bytes:
    """``PublicAggreBookTickerV3Api``: the four prices 1..4, version 5, lastOrderCreateTime 6."""
    return book_ticker(bid, bid_qty, ask, ask_qty) + string(5, version) + int64(6, last_order_create_time)


def book_ticker_batch(items: Iterable[bytes], version: str | None = None,
                      last_order_create_time: int | None = None) -> bytes:
    """``PublicBookTickerBatchV3Api``: items 1, version 2, lastOrderCreateTime 3."""
    return (b"".join(length_delimited(1, item) for item in items) + string(2, version)
            + int64(3, last_order_create_time))


def aggre_deal(price: str, quantity: str, trade_type: int, time_ms: int,
               trade_id: str | None = None) -> bytes:
    """``PublicAggreDealsV3ApiItem``: price 1, quantity 2, tradeType 3, time 4, tradeId 5."""
    return (string(1, price) + string(2, quantity) + int64(3, trade_type) + int64(4, time_ms)
            + string(5, trade_id))


def aggre_deals(deals: Iterable[bytes], event_type: str) -> bytes:
    """``PublicAggreDealsV3Api``: deals 1, eventType 2."""
    return b"".join(length_delimited(1, d) for d in deals) + string(2, event_type)


def wrapper(channel: str, member: int, body: bytes, *, symbol: str | None = None,
            symbol_id: str | None = None, create_time: int | None = None,
            send_time: int | None = None) -> bytes:
    """``PushDataV3ApiWrapper``: channel 1, symbol 3, symbolId 4, createTime 5, sendTime 6, the body
    in its oneof member (a set oneof member is written even when the body is empty)."""
    return (string(CHANNEL, channel) + length_delimited(member, body) + optional_string(SYMBOL, symbol)
            + optional_string(SYMBOL_ID, symbol_id) + optional_int64(CREATE_TIME, create_time)
            + optional_int64(SEND_TIME, send_time))


# ---------------------------------------------------------------------- checking
def well_formed(data: bytes) -> bool:
    """Does ``data`` split into whole top-level fields?  (A truncated frame does not.)"""
    i, n = 0, len(data)
    while i < n:
        key, i = _read_varint(data, i)
        if i < 0:
            return False
        wire = key & 7
        if key >> 3 == 0:
            return False
        if wire == 0:
            _, i = _read_varint(data, i)
            if i < 0:
                return False
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _read_varint(data, i)
            if i < 0:
                return False
            i += size
        else:
            return False
        if i > n:
            return False
    return True


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    """(value, next index), or (0, -1) when the varint runs off the end."""
    value = shift = 0
    while i < len(data):
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return 0, -1
