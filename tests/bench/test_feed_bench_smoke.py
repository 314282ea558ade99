"""Smoke test of bench/feed_bench.py: it runs end to end on a tiny recording and really applies deltas.

Never asserts on times or ratios: only that the machine-readable line is there with positive
numbers for every venue and that each venue's replay applied every recorded frame.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "feed_bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("feed_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_feed_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_bench()
    results = bench.main(["--frames", "40", "--runs", "1"])

    assert [r.venue for r in results] == list(bench.VENUES)
    for r in results:
        assert r.frames == 40
        assert r.applied == r.frames, f"{r.venue}: replay applied {r.applied}/{r.frames}"
        assert r.levels > 0

    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"feed_frames_per_s (?P<rates>.+) ratio_vs_plain (?P<ratios>.+)", last)
    assert match, last
    for group in ("rates", "ratios"):
        values = dict(item.split("=") for item in match[group].split())
        assert set(values) == set(bench.VENUES), last
        assert all(float(v) > 0 for v in values.values()), last
