"""Smoke test of bench/service_bench.py: the three scenarios on a tiny workload, self-checks on.

Never asserts on times, rates or ratios: only that the machine-readable line is there with a
positive number for every figure, and that the self-checks really covered subscribers, updates,
HTTP answers and a clean service exit.  The helpers are checked on fixed inputs.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "service_bench.py"
KEYS = ("frames_per_s", "cpu_s_per_1k_frames", "p50_ms", "p99_ms", "http_ratio_vs_trivial",
        r"cold_start_\d+_s", "cold_start_bound_s", "loop_lag_p99_ms")


def _load_bench():
    spec = importlib.util.spec_from_file_location("service_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_service_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_bench()
    report = bench.main(["--venues", "binance,mexc", "--symbols", "2", "--rate", "20", "--seconds", "2",
                         "--subscribers", "2", "--http-seconds", "0.5", "--http-concurrency", "2",
                         "--http-max-requests", "2000", "--cold-symbols", "4", "--cold-timeout", "60",
                         "--live-timeout", "30"])

    paced, flat = report.paced, report.flat
    for window in (paced, flat):
        assert window.checked["books_live"] == 4 and window.checked["subscribers"] == 2
        assert window.checked["snapshots"] == 4 and window.checked["updates"] > 0
        assert window.checked["clean_exit"] == 1
    assert paced.checked["http_answers"] > 0
    assert report.cold_symbols == 4

    last = capsys.readouterr().out.strip().splitlines()[-1]
    pattern = "service " + " ".join(f"({key})=(\\S+)" for key in KEYS)
    match = re.fullmatch(pattern, last)
    assert match, last
    values = [float(v) for v in match.groups()[1::2]]
    assert all(v > 0 and not math.isnan(v) for v in values), last
    assert match.group(11) == "cold_start_4_s", last


def test_cold_start_bound_from_the_binance_budget() -> None:
    bench = _load_bench()
    # 4800 weight a minute = 80 a second: 200 snapshots at depth 100 (weight 5) take 12.5 s,
    # at depth 1000 (weight 50) 125 s
    assert bench.cold_start_bound(200, 100) == pytest.approx(12.5)
    assert bench.cold_start_bound(200, 1000) == pytest.approx(125.0)
    assert bench.cold_start_bound(1, 5000) == pytest.approx(250 / 80)


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    bench = _load_bench()
    before = {0.001: 10.0, 0.01: 10.0, math.inf: 10.0}
    after = {0.001: 60.0, 0.01: 110.0, math.inf: 110.0}  # 50 at <= 1 ms, 50 in (1, 10] ms
    assert bench.histogram_quantile(0.5, before, after) == pytest.approx(0.001)
    assert bench.histogram_quantile(0.99, before, after) == pytest.approx(0.001 + 0.009 * 49 / 50)
    assert math.isnan(bench.histogram_quantile(0.99, after, after))  # nothing observed in between
