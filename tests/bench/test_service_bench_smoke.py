"""Smoke test of bench/service_bench.py: the three scenarios on a tiny workload, self-checks on.

Never asserts on times, rates or ratios: only that the machine-readable line is there with a
positive number for every figure, and that the self-checks really covered subscribers, updates,
HTTP answers and a clean service exit.  The helpers are checked on fixed inputs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

KEYS = ("frames_per_s", "cpu_s_per_1k_frames", "p50_ms", "p99_ms", "http_ratio_vs_trivial",
        r"cold_start_\d+_s", "cold_start_bound_s", "loop_lag_p99_ms", "service_p50_ms", "service_p99_ms",
        "flat_service_p99_ms", r"loop_lag_\d+_p99_ms")


@pytest.mark.integration
def test_service_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("service_bench")
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
    values = dict(zip(match.groups()[0::2], map(float, match.groups()[1::2]), strict=True))
    bound = values.pop("cold_start_bound_s")  # 4 snapshots leave in the pacers' opening burst: 0
    assert all(v > 0 and not math.isnan(v) for v in values.values()), last
    assert bound == max(report.cold_bounds.values()) >= 0, last
    assert set(report.cold_bounds) == {"binance", "mexc"}, last  # every venue run, each its own bound
    assert match.group(11) == "cold_start_4_s", last
    assert match.group(23) == "loop_lag_4_p99_ms", last


@pytest.mark.parametrize("depth, binance_bound", [(100, 524 / (4284 / 60)), (1000, 9524 / (4284 / 60))])
def test_cold_start_bounds_are_the_services_own(tmp_path: Path, depth: int, binance_bound: float) -> None:
    bench = load_bench("service_bench")
    venues = {name: {"rest_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/ws",
                     "symbols": {f"S{i}-USDT": f"S{i}USDT" for i in range(200)}}
              for name in ("binance", "nhex")}
    config = tmp_path / "aggbook.toml"
    bench.write_config(str(config), venues, 1, depth)
    bounds = bench.cold_start_bounds(str(config))
    assert set(bounds) == {"binance", "nhex"}
    # Binance's documented 6000 weight a minute: 80 % headroom less two exchangeInfo calls (40) leaves
    # 4760 a minute, a tenth of it (476) as the opening burst, 4284 a minute after it; 200 snapshots at
    # depth 100 weigh 1000 (weight 5 each), at depth 1000 10000 (weight 50 each)
    assert bounds["binance"] == pytest.approx(binance_bound, rel=0.01)
    assert bounds["nhex"] > 0


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    bench = load_bench("service_bench")
    before = {0.001: 10.0, 0.01: 10.0, math.inf: 10.0}
    after = {0.001: 60.0, 0.01: 110.0, math.inf: 110.0}  # 50 at <= 1 ms, 50 in (1, 10] ms
    assert bench.histogram_quantile(0.5, before, after) == pytest.approx(0.001)
    assert bench.histogram_quantile(0.99, before, after) == pytest.approx(0.001 + 0.009 * 49 / 50)
    assert math.isnan(bench.histogram_quantile(0.99, after, after))  # nothing observed in between


def test_live_count_is_polled_finely_once_nine_books_in_ten_are_live() -> None:
    bench = load_bench("service_bench")
    assert bench.poll_interval(0, 1000, 1.0) == 1.0
    assert bench.poll_interval(899, 1000, 1.0) == 1.0
    assert bench.poll_interval(900, 1000, 1.0) == 0.25
    assert bench.poll_interval(4, 4, 0.1) == 0.25


def test_latency_legs_are_taken_like_the_window_figures() -> None:
    bench = load_bench("service_bench")
    p50, p99 = bench.percentiles_ms([i / 1000 for i in range(1, 101)])  # 1 ms to 100 ms
    assert p50 == pytest.approx(50.5) and p99 == pytest.approx(100.0)
    assert all(math.isnan(x) for x in bench.percentiles_ms([]))
