"""Binance spot over the SBE depth streams: the decoder against bytes written from the schema, and
the feed against the simulated venue's SBE endpoint, gap included."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from aggbook.book.sync import Reason
from aggbook.feeds.base import FrameError
from aggbook.feeds.binance import BinanceSpotFeed
from aggbook.feeds.binance_sbe import SbeError, decimal_text, decode_depth_diff, read_header
from aggbook.feeds.config import VenueConfig
from aggbook.simulator.binance import BinanceSpotVenue
from aggbook.simulator.faults import Fault
from tests.conftest import book_matches, wait_for
from tests.feeds.test_binance import FAST_OPTIONS, FAST_VENUE, SPECS, SYM, Recorder

# DepthDiffStreamEvent for BNBUSDT, written byte by byte from stream_1_0.xml (little-endian):
FRAME = bytes.fromhex(
    "1a00"  # blockLength 26
    "1327"  # templateId 10003
    "0100"  # schemaId 1
    "0000"  # version 0
    "40e2010000000000"  # eventTime 123456 µs
    "9d00000000000000"  # firstBookUpdateId 157
    "a000000000000000"  # lastBookUpdateId 160
    "fe"  # priceExponent -2
    "fd"  # qtyExponent -3
    "1000" "0200"  # bids: blockLength 16, 2 entries
    "3930000000000000" "e803000000000000"  # 12345 x 10^-2, 1000 x 10^-3
    "0100000000000000" "0000000000000000"  # 0.01, 0 (remove)
    "1000" "0000"  # asks: none
    "07" "424e4255534454"  # symbol "BNBUSDT"
)


def test_decode_hand_written_depth_diff() -> None:
    header = read_header(FRAME)
    assert (header.block_length, header.template_id, header.schema_id, header.version) == (26, 10003, 1, 0)
    event = decode_depth_diff(FRAME)
    assert (event.event_time_us, event.first_update_id, event.last_update_id) == (123456, 157, 160)
    assert event.bids == [("123.45", "1.000"), ("0.01", "0.000")]
    assert event.asks == [] and event.symbol == "BNBUSDT"


def test_decimal_text_is_exact() -> None:
    assert decimal_text(12345, -2) == "123.45"
    assert decimal_text(5, 2) == "500"
    assert decimal_text(-7, -3) == "-0.007"
    assert decimal_text(9223372036854775807, -8) == "92233720368.54775807"  # the overflow cap


def test_a_longer_root_block_is_skipped_by_its_length() -> None:
    """A newer schema may append root fields: blockLength says where the groups start."""
    longer = struct.pack("<H", 30) + FRAME[2:34] + b"\x00\x00\x00\x00" + FRAME[34:]
    assert decode_depth_diff(longer).bids == [("123.45", "1.000"), ("0.01", "0.000")]


@pytest.mark.parametrize(("frame", "error"), [
    (FRAME[:6], "shorter than the SBE header"),
    (FRAME[:4] + b"\x02\x00" + FRAME[6:], "schema 2 version 0"),
    (FRAME[:6] + b"\x01\x00" + FRAME[8:], "schema 1 version 1"),
    (FRAME[:2] + struct.pack("<H", 10002) + FRAME[4:], "not DepthDiffStreamEvent"),
    (FRAME[:50], "past the end"),
    (FRAME[:-3], "past the end"),
    (struct.pack("<H", 20) + FRAME[2:], "shorter than its fields"),
])
def test_broken_or_foreign_frames_are_refused(frame: bytes, error: str) -> None:
    with pytest.raises(SbeError, match=error):
        decode_depth_diff(frame)


def config(venue: BinanceSpotVenue | None = None, **options: object) -> VenueConfig:
    urls = venue.urls() if venue is not None else {}
    sbe_url = {"sbe_ws_url": urls["ws_url"] + "/sbe"} if venue is not None else {}
    symbols = {s.canonical: f"{s.base}{s.quote}" for s in SPECS}
    return VenueConfig(name="binance", kind="binance", symbols=symbols,
                       options={**FAST_OPTIONS, "transport": "sbe", **sbe_url, **options}, **urls)


def test_sbe_needs_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BINANCE_SBE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key"):
        BinanceSpotFeed(config())
    monkeypatch.setenv("BINANCE_SBE_API_KEY", "from-env")
    feed = BinanceSpotFeed(config())
    assert feed.api_key == "from-env" and not feed.bbo_check
    with pytest.raises(ValueError, match="transport"):
        BinanceSpotFeed(config(transport="fix"))


async def test_binary_frame_on_the_json_transport_is_a_frame_error() -> None:
    feed = BinanceSpotFeed(VenueConfig(name="b", kind="binance", symbols={SYM: "BTCUSDT"}))
    conn = feed.new_connection([SYM], publish_when_live=False)
    with pytest.raises(FrameError, match="binary"):
        await feed.handle(conn, aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, FRAME, None))
    sbe = BinanceSpotFeed(VenueConfig(name="b", kind="binance", symbols={SYM: "BTCUSDT"},
                                      options={"transport": "sbe", "api_key": "k"}))
    conn = sbe.new_connection([SYM], publish_when_live=False)
    with pytest.raises(FrameError, match="bad SBE frame"):
        await sbe.handle(conn, aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, FRAME[:20], None))


@contextlib.asynccontextmanager
async def sbe_feed(**options: object) -> AsyncIterator[tuple[BinanceSpotVenue, BinanceSpotFeed, Recorder]]:
    venue = BinanceSpotVenue(SPECS, seed=7, rate=50.0, **FAST_VENUE)
    await venue.start()
    feed = BinanceSpotFeed(config(venue, api_key="test-key", **options))
    recorder = Recorder()
    feed.on_sync(recorder)
    try:
        await feed.start()
        yield venue, feed, recorder
    finally:
        await feed.stop()
        await venue.stop()


def all_equal(venue: BinanceSpotVenue, feed: BinanceSpotFeed) -> bool:
    syncs = feed.current_syncs()
    return all(c in syncs and syncs[c].live and book_matches(syncs[c], venue.truth(c))
               for c in feed.config.symbols)


@pytest.mark.parametrize("combined", [True, False], ids=["combined", "raw"])
async def test_sbe_books_equal_truth_and_a_gap_resyncs(combined: bool) -> None:
    async with sbe_feed(combined=combined) as (venue, feed, recorder):
        await wait_for(lambda: all(s.live for s in feed.current_syncs().values())
                       and len(feed.current_syncs()) == 2, 10, "books live over SBE")
        await wait_for(lambda: feed.current_syncs()[SYM].counters.applied >= 10, 10, "SBE deltas applied")
        (conn,) = venue.connections.values()
        assert conn.path.startswith("/sbe/") and "btcusdt@depth" in conn.subscriptions
        assert conn.state["sbe"] and "btcusdt@bookTicker" not in conn.subscriptions
        venue.inject(Fault.GAP, SYM)
        await wait_for(lambda: recorder.resyncs(SYM)[Reason.GAP] >= 1, 5, "gap resync counted")
        venue.pause()
        await wait_for(lambda: all_equal(venue, feed), 10, "books equal to the truth")
        assert feed.reconnects == 0


async def test_sbe_endpoint_refuses_a_handshake_without_api_key() -> None:
    venue = BinanceSpotVenue(SPECS, seed=7, autostart_pump=False)
    await venue.start()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
                await session.ws_connect(venue.urls()["ws_url"] + "/sbe/ws/btcusdt@depth")
            assert raised.value.status == 401
    finally:
        await venue.stop()
