"""Decoder for Binance Spot SBE market-data frames (schema ``stream_1_0.xml``, id 1, version 0).

Only what the order book needs is decoded: ``DepthDiffStreamEvent`` (template 10003, the
``<symbol>@depth`` stream on ``stream-sbe.binance.com``, every 25 ms).  The layout follows the
schema in ``proto/binance_stream_1_0.xml`` (byte order little-endian):

* ``messageHeader``: ``blockLength`` u16, ``templateId`` u16, ``schemaId`` u16, ``version`` u16;
* the root block, ``blockLength`` bytes: ``eventTime`` i64 (µs), ``firstBookUpdateId`` i64,
  ``lastBookUpdateId`` i64, ``priceExponent`` i8, ``qtyExponent`` i8 (a longer block from a newer
  schema is skipped by its ``blockLength``, as SBE intends);
* groups ``bids`` then ``asks``, each a ``groupSize16Encoding`` (``blockLength`` u16,
  ``numInGroup`` u16) followed by ``numInGroup`` entries of ``blockLength`` bytes:
  ``price`` i64 and ``qty`` i64 mantissas;
* ``symbol``: ``varString8`` (u8 length, UTF-8 bytes).

A price or quantity is ``mantissa x 10^exponent``, written here as exact decimal text (never a
float).  A frame of another schema id or version is refused (the docs: validate both on every
message), as is one that is cut short.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal

SCHEMA_ID = 1
SCHEMA_VERSION = 0
DEPTH_SNAPSHOT_TEMPLATE = 10002
DEPTH_DIFF_TEMPLATE = 10003

_HEADER = struct.Struct("<HHHH")
_DIFF_ROOT = struct.Struct("<qqqbb")
_GROUP16 = struct.Struct("<HH")
_LEVEL = struct.Struct("<qq")


class SbeError(ValueError):
    """A frame that is not a well-formed message of the schema this decoder knows."""


@dataclass(frozen=True, slots=True)
class SbeHeader:
    block_length: int
    template_id: int
    schema_id: int
    version: int


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``DepthDiffStreamEvent``: ``U``/``u`` of the JSON stream, levels as decimal text."""

    event_time_us: int
    first_update_id: int
    last_update_id: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    symbol: str


def decimal_text(mantissa: int, exponent: int) -> str:
    """``mantissa x 10^exponent`` as plain decimal text: (12345, -2) -> "123.45", (5, 2) -> "500"."""
    return format(Decimal(mantissa).scaleb(exponent), "f")


def read_header(frame: bytes) -> SbeHeader:
    """The message header, checked against schema id 1, version 0."""
    if len(frame) < _HEADER.size:
        raise SbeError(f"frame of {len(frame)} bytes is shorter than the SBE header")
    header = SbeHeader(*_HEADER.unpack_from(frame, 0))
    if header.schema_id != SCHEMA_ID or header.version != SCHEMA_VERSION:
        raise SbeError(f"schema {header.schema_id} version {header.version}; this decoder reads "
                       f"schema {SCHEMA_ID} version {SCHEMA_VERSION}")
    return header


def _levels(frame: bytes, offset: int, price_exp: int, qty_exp: int) -> tuple[list[tuple[str, str]], int]:
    block, count = _GROUP16.unpack_from(frame, offset)
    offset += _GROUP16.size
    if block < _LEVEL.size:
        raise SbeError(f"group entry of {block} bytes is shorter than price and qty")
    end = offset + block * count
    if end > len(frame):
        raise SbeError("group runs past the end of the frame")
    levels = []
    for start in range(offset, end, block):
        price, qty = _LEVEL.unpack_from(frame, start)
        levels.append((decimal_text(price, price_exp), decimal_text(qty, qty_exp)))
    return levels, end


def decode_depth_diff(frame: bytes, header: SbeHeader | None = None) -> DepthDiff:
    """Decode a ``DepthDiffStreamEvent`` frame; :class:`SbeError` when it is anything else or broken."""
    header = header or read_header(frame)
    if header.template_id != DEPTH_DIFF_TEMPLATE:
        raise SbeError(f"template {header.template_id} is not DepthDiffStreamEvent ({DEPTH_DIFF_TEMPLATE})")
    if header.block_length < _DIFF_ROOT.size:
        raise SbeError(f"root block of {header.block_length} bytes is shorter than its fields")
    try:
        event_time, first, last, price_exp, qty_exp = _DIFF_ROOT.unpack_from(frame, _HEADER.size)
        offset = _HEADER.size + header.block_length
        bids, offset = _levels(frame, offset, price_exp, qty_exp)
        asks, offset = _levels(frame, offset, price_exp, qty_exp)
        (length,) = struct.unpack_from("<B", frame, offset)
        offset += 1
        if offset + length > len(frame):
            raise SbeError("symbol runs past the end of the frame")
        symbol = frame[offset:offset + length].decode("utf-8")
    except struct.error as exc:
        raise SbeError(f"frame cut short: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SbeError(f"symbol is not UTF-8: {exc}") from exc
    return DepthDiff(event_time, first, last, bids, asks, symbol)
