"""Smoke test of bench/metrics_bench.py: it runs end to end and both sinks export every frame driven.

Never asserts on times or ratios: only that each sink's scrape matches what was driven and that
the machine-readable line is there with positive numbers.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics_bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("metrics_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_metrics_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_bench()
    frames = bench.make_frames(250)
    new, direct = bench.main(["--frames", "250", "--runs", "1"])
    for result in (new, direct):
        assert (result.exported_frames, result.exported_bytes) == (250, sum(f[2] for f in frames))

    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"metrics_calls_per_s new=(\S+) prometheus_direct=(\S+) ratio=(\S+)", last)
    assert match, last
    assert all(float(v) > 0 for v in match.groups()), last
