"""The simulated MEXC writes its protobuf frames without the project's generated module.

``simulator/mexc_wire.py`` encodes from MEXC's official schema by hand; the feed decodes with
``aggbook.proto.mexc_push_pb2``.  So the two are independent: these tests decode the simulator's
frames with the project's module and find every value where it was written, and show that a schema
with one wrong field or member number (built here from the project's own descriptor, one number
changed) does not: such a mistake in ``proto/`` cannot hide behind the simulator any more.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from aggbook.proto import mexc_push_pb2 as pb
from aggbook.simulator import mexc_wire as wire
from aggbook.simulator.market import DEFAULT_SYMBOLS
from aggbook.simulator.mexc import MexcVenue, parse_channel

CHANNEL = "spot@public.aggre.depth.v3.api.pb@100ms@BTCUSDT"


def _frame() -> bytes:
    body = wire.aggre_depths([("93180.11", "0.5")], [("93180.10", "1.25"), ("93179", "0")],
                             "spot@public.aggre.depth.v3.api.pb@100ms", "1001", "1003", 1736411507001)
    return wire.wrapper(CHANNEL, wire.PUBLIC_AGGRE_DEPTHS, body, symbol="BTCUSDT", symbol_id="c9a1",
                        send_time=1736411507002)


def _depth_values(message_class: type, data: bytes) -> tuple:
    w = message_class.FromString(data)
    d = w.publicAggreDepths
    return (w.channel, w.WhichOneof("body"), w.symbol, w.symbolId, w.sendTime,
            [(x.price, x.quantity) for x in d.asks], [(x.price, x.quantity) for x in d.bids],
            d.eventType, d.fromVersion, d.toVersion, d.lastOrderCreateTime)


EXPECTED = (CHANNEL, "publicAggreDepths", "BTCUSDT", "c9a1", 1736411507002, [("93180.11", "0.5")],
            [("93180.10", "1.25"), ("93179", "0")], "spot@public.aggre.depth.v3.api.pb@100ms", "1001", "1003",
            1736411507001)


def test_the_project_schema_decodes_the_hand_written_frame() -> None:
    assert _depth_values(pb.PushDataV3ApiWrapper, _frame()) == EXPECTED


def _mutated_wrapper(message: str, numbers: dict[str, int]) -> type:
    """The project's schema with fields of ``message`` renumbered, in a descriptor pool of its own."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    proto.name = f"mutated_{message}_{'_'.join(numbers)}.proto"
    target = next(m for m in proto.message_type if m.name == message)
    for field in target.field:
        if field.name in numbers:
            field.number = numbers.pop(field.name)
    assert not numbers, f"no such field(s) in {message}: {numbers}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    wrapper = pool.FindMessageTypeByName(f"{proto.package}.PushDataV3ApiWrapper")
    return message_factory.GetMessageClass(wrapper)


MUTATIONS = [
    ("PushDataV3ApiWrapper", {"publicAggreDepths": 302}),  # the legacy member instead of 313
    ("PushDataV3ApiWrapper", {"symbol": 4, "symbolId": 3}),
    ("PushDataV3ApiWrapper", {"sendTime": 7}),
    ("PublicAggreDepthsV3Api", {"fromVersion": 5, "toVersion": 4}),
    ("PublicAggreDepthsV3Api", {"asks": 2, "bids": 1}),
    ("PublicAggreDepthsV3Api", {"eventType": 7}),
    ("PublicAggreDepthV3ApiItem", {"quantity": 3}),
]


@pytest.mark.parametrize(("message", "numbers"), MUTATIONS,
                         ids=[f"{m}:{','.join(f'{k}={v}' for k, v in n.items())}" for m, n in MUTATIONS])
def test_a_wrong_number_in_the_schema_misreads_the_simulator(message: str, numbers: dict[str, int]) -> None:
    mutated = _mutated_wrapper(message, dict(numbers))
    assert _depth_values(mutated, _frame()) != EXPECTED


async def test_the_simulator_frames_come_from_the_hand_encoder() -> None:
    """The simulator's diff frame decodes with the project's schema to what it was built from."""
    venue = MexcVenue([DEFAULT_SYMBOLS[0]], seed=3, autostart_pump=False)
    channel = parse_channel(CHANNEL, venue.markets)
    assert channel is not None
    data = venue._diff_frame(channel, 5, 7, [], 1736411507002, crossed=False)  # noqa: SLF001
    w = pb.PushDataV3ApiWrapper.FromString(data)
    assert (w.WhichOneof("body"), w.publicAggreDepths.fromVersion, w.publicAggreDepths.toVersion) == \
        ("publicAggreDepths", "5", "7")
    assert w.symbol == "BTCUSDT" and w.sendTime == 1736411507002


def test_the_simulator_does_not_import_the_generated_module() -> None:
    import aggbook.simulator.mexc as sim

    for path in (Path(sim.__file__), Path(wire.__file__)):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m and ("proto" in m.split(".") or "google" in m.split(".")) for m in imported), path
