"""Smoke test of bench/metrics_bench.py: it runs end to end and both sinks export every frame driven.

Never asserts on times or ratios: only that each sink's scrape matches what was driven and that
the machine-readable line is there with positive numbers.
"""

from __future__ import annotations

import re

import pytest

from tests.bench.loader import load_bench


def test_metrics_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("metrics_bench")
    frames = bench.make_frames(250)
    new, direct = bench.main(["--frames", "250", "--runs", "1"])
    for result in (new, direct):
        assert (result.exported_frames, result.exported_bytes) == (250, sum(f[2] for f in frames))

    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"metrics_calls_per_s new=(\S+) prometheus_direct=(\S+) ratio=(\S+)", last)
    assert match, last
    assert all(float(v) > 0 for v in match.groups()), last
