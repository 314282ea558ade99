"""Smoke test of bench/scale_bench.py: the three scenarios on a tiny workload, self-checks on.

Never asserts on rates, latencies or ratios: only that the machine-readable line is there with
its three figures, that both topologies absorbed frames and delivered messages, and that the
subscriber steps ran.  Needs nats-server, like tests/service/nats.
"""

from __future__ import annotations

import re

import pytest

from tests.bench.loader import load_bench
from tests.service.nats.natsserver import nats_server_binary


@pytest.mark.integration
def test_scale_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    nats_server_binary()  # skips (or fails under AGGBOOK_REQUIRE_NATS=1) without it
    bench = load_bench("scale_bench")
    report = bench.main(["--venues", "binance,mexc", "--symbols", "3", "--seconds", "1", "--subscribers", "2",
                         "--latency-steps", "1,2", "--latency-seconds", "1", "--live-timeout", "30"])
    for run in (report.one, report.two):
        assert run.frames_per_s > 0 and run.ws_messages_per_s > 0
    assert report.one.shards == 1 and report.two.shards == 2
    assert report.steps and report.steps[0].subscribers == 1 and report.steps[0].updates > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(
        r"scale shard_ratio=(\S+) gateway_fanout_ratio=(\S+) gateway_subscribers_p99_10ms=(\d+) "
        r"end_to_end_subscribers_p99_10ms=(\d+)",
        last,
    )
    assert match, last
    assert float(match[1]) > 0 and float(match[2]) > 0
    assert int(match[3]) in (0, *(s.subscribers for s in report.steps))
    assert int(match[4]) in (0, *(s.subscribers for s in report.steps))
    assert all(s.gateway_p99_ms > 0 for s in report.steps)  # every step measured the gateway's part too


def test_latency_histograms_of_several_processes_merge_into_one_p99() -> None:
    bench = load_bench("scale_bench")
    first = bench.histogram([i / 10_000 for i in range(1, 51)])  # 0.1 ms .. 5.0 ms
    second = bench.histogram([0.050] * 49 + [0.0001])  # 49 at 50 ms, one at 0.1 ms
    assert sum(first.values()) == 50 and sum(second.values()) == 50
    p99, p50, count = bench.merged_p99_ms([first, second])
    assert count == 100
    assert p99 == pytest.approx(50.1)  # the 99th of 100 is in the 50 ms bucket: its upper edge
    assert p50 == pytest.approx(5.1)  # 51 at or below 5 ms (50 + the 0.1 ms one)
    assert all(x != x for x in bench.merged_p99_ms([])[:2]) and bench.merged_p99_ms([])[2] == 0
