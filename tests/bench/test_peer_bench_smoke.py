"""Smoke test of bench/peer_bench.py: a tiny recording through every installed contender.

Never asserts on times or ratios: only that the machine-readable line is there with positive
numbers for the contenders that ran, that every run was checked against the recording's truth, and
that the check refuses a replay that ends anywhere else.  cryptofeed is optional: without it the
line must say ``cryptofeed=nan``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from tests.bench.loader import load_bench

pytestmark = pytest.mark.integration

LINE = re.compile(r"peer_msgs_per_s aggbook=(\S+) cryptofeed=(\S+) ccxt=(\S+) "
                  r"ratio_vs_cryptofeed=(\S+) ratio_vs_ccxt=(\S+)")


def test_peer_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("peer_bench")
    has_cryptofeed = bench.available("cryptofeed")
    results = bench.main(["--frames", "200", "--runs", "1"])

    for name in ("aggbook", bench.BARE, "ccxt", *(("cryptofeed",) if has_cryptofeed else ())):
        assert results[name].checked == 1, f"{name}: its replay was not checked against the truth"
        assert results[name].msgs_per_s > 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[-1]
    overhead = re.fullmatch(r"metrics_overhead aggbook=(\d+) aggbook_without_metrics=(\d+) "
                            r"overhead_pct=(-?[\d.]+)", lines[-2])
    assert overhead, lines[-2]
    match = LINE.fullmatch(last)
    assert match, last
    aggbook, cryptofeed, ccxt, vs_cryptofeed, vs_ccxt = (float(v) for v in match.groups())
    assert aggbook > 0 and ccxt > 0 and vs_ccxt > 0, last
    if has_cryptofeed:
        assert cryptofeed > 0 and vs_cryptofeed > 0, last
    else:
        assert math.isnan(cryptofeed) and math.isnan(vs_cryptofeed), last


def test_peer_bench_cryptofeed_replay_is_checked(tmp_path: Path) -> None:
    """cryptofeed's own replay on a tiny recording (skipped when cryptofeed is not installed)."""
    bench = load_bench("peer_bench")
    if not bench.available("cryptofeed"):
        pytest.skip("cryptofeed is not installed")
    rec = bench.record(frames=50, levels=20, seed=3)
    path = tmp_path / "recording.json"
    path.write_bytes(bench.orjson.dumps(rec))
    result = bench.run_contender("cryptofeed", str(path), rec, runs=1)
    assert result.checked == 1 and result.msgs_per_s > 0


def test_check_refuses_a_replay_that_ends_elsewhere() -> None:
    bench = load_bench("peer_bench")
    truth = {"last_update_id": 100, "best_bid": "10.00", "best_ask": "10.01"}
    good = {"frames": 5, "last_update_id": 100, "best_bid": "10.0", "best_ask": 10.01, "applied": 5}
    bench.check("x", good, truth, 5)  # the same prices written differently are the same prices
    for wrong in ({"last_update_id": 99}, {"best_bid": "9.99"}, {"best_ask": None}, {"frames": 4},
                  {"applied": 4}, {"resyncs": 1}):
        with pytest.raises(RuntimeError, match="does not match the recording's truth"):
            bench.check("x", {**good, **wrong}, truth, 5)
