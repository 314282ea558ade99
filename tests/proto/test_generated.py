"""The committed ``proto/*_pb2.py`` modules are exactly what the pinned protoc generates,
and the MEXC schema carries MEXC's field names and numbers.

A schema edit without regeneration (or a hand edit of a generated module) would let
the simulator and the feed decode with a different schema than the ``.proto`` says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from aggbook.proto import generate, mexc_push_pb2

PROTO_DIR = Path(generate.__file__).resolve().parent


def test_every_proto_has_a_committed_module() -> None:
    protos = generate.proto_files()
    assert [p.name for p in protos] == ["mexc_push.proto"]
    for proto in protos:
        assert (PROTO_DIR / f"{proto.stem}_pb2.py").is_file(), proto.name


def test_regenerated_output_matches_committed(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert written
    for path in written:
        committed = PROTO_DIR / path.name
        assert path.read_bytes() == committed.read_bytes(), (
            f"{committed.name} is stale: run `python proto/generate.py` and commit the result"
        )


def _fields(message: type) -> dict[str, tuple[int, int]]:
    """name -> (number, protobuf type) of a generated message class."""
    return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}


STRING, INT64, INT32, MESSAGE = 9, 3, 5, 11


def test_wrapper_fields_and_oneof_members() -> None:
    fields = _fields(mexc_push_pb2.PushDataV3ApiWrapper)
    assert fields["channel"] == (1, STRING)
    assert fields["symbol"] == (3, STRING)
    assert fields["symbolId"] == (4, STRING)
    assert fields["createTime"] == (5, INT64)
    assert fields["sendTime"] == (6, INT64)
    body = mexc_push_pb2.PushDataV3ApiWrapper.DESCRIPTOR.oneofs_by_name["body"]
    members = {f.name: f.number for f in body.fields}
    assert members == {
        "publicLimitDepths": 303,
        "publicBookTicker": 305,
        "publicBookTickerBatch": 311,
        "publicAggreDepths": 313,
        "publicAggreDeals": 314,
        "publicAggreBookTicker": 315,
    }


def test_body_fields_match_the_spec_tables() -> None:
    assert _fields(mexc_push_pb2.PublicAggreDepthsV3Api) == {
        "asks": (1, MESSAGE), "bids": (2, MESSAGE), "eventType": (3, STRING),
        "fromVersion": (4, STRING), "toVersion": (5, STRING), "lastOrderCreateTime": (6, INT64),
    }
    assert _fields(mexc_push_pb2.PublicLimitDepthsV3Api) == {
        "asks": (1, MESSAGE), "bids": (2, MESSAGE), "eventType": (3, STRING),
        "version": (4, STRING), "lastOrderCreateTime": (5, INT64),
    }
    item = {"price": (1, STRING), "quantity": (2, STRING)}
    assert _fields(mexc_push_pb2.PublicAggreDepthV3ApiItem) == item
    assert _fields(mexc_push_pb2.PublicLimitDepthV3ApiItem) == item
    ticker = {"bidPrice": (1, STRING), "bidQuantity": (2, STRING), "askPrice": (3, STRING),
              "askQuantity": (4, STRING)}
    assert _fields(mexc_push_pb2.PublicBookTickerV3Api) == ticker
    assert _fields(mexc_push_pb2.PublicAggreBookTickerV3Api) == {
        **ticker, "version": (5, STRING), "lastOrderCreateTime": (6, INT64),
    }
    assert _fields(mexc_push_pb2.PublicBookTickerBatchV3Api) == {
        "items": (1, MESSAGE), "version": (2, STRING), "lastOrderCreateTime": (3, INT64),
    }
    assert _fields(mexc_push_pb2.PublicAggreDealsV3Api) == {"deals": (1, MESSAGE), "eventType": (2, STRING)}
    assert _fields(mexc_push_pb2.PublicAggreDealsV3ApiItem) == {
        "price": (1, STRING), "quantity": (2, STRING), "tradeType": (3, INT32), "time": (4, INT64),
        "tradeId": (5, STRING),
    }


def test_member_313_tag_is_two_bytes_ca_13() -> None:
    wrapper = mexc_push_pb2.PushDataV3ApiWrapper(channel="c")
    wrapper.publicAggreDepths.fromVersion = "1"
    data = wrapper.SerializeToString()
    assert data[len(b"\x0a\x01c"):][:2] == b"\xca\x13"


def test_unknown_fields_and_undeclared_members_are_skipped() -> None:
    wrapper = mexc_push_pb2.PushDataV3ApiWrapper(channel="spot@public.kline.v3.api.pb@BTCUSDT@Min1",
                                                 symbol="BTCUSDT")
    kline_body = b"\x0a\x04Min1"  # interval = "Min1"
    member_308 = b"\xa2\x13" + bytes([len(kline_body)]) + kline_body
    field_99 = b"\x98\x06\x01"
    data = wrapper.SerializeToString() + member_308 + field_99
    decoded = mexc_push_pb2.PushDataV3ApiWrapper.FromString(data)
    assert decoded.WhichOneof("body") is None
    assert decoded.symbol == "BTCUSDT"


def test_truncated_frame_does_not_decode() -> None:
    wrapper = mexc_push_pb2.PushDataV3ApiWrapper(channel="c", symbol="BTCUSDT")
    wrapper.publicAggreDepths.bids.add(price="1.00", quantity="2")
    data = wrapper.SerializeToString()
    with pytest.raises(DecodeError):
        mexc_push_pb2.PushDataV3ApiWrapper.FromString(data[:-1])
