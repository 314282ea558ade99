"""Smoke test of bench/feed_bench.py: it runs end to end on a tiny recording and really applies deltas.

Never asserts on times or ratios: only that the machine-readable line is there with positive
numbers for every venue and that each venue's replay applied every recorded frame.
"""

from __future__ import annotations

import re

import pytest

from tests.bench.loader import load_bench

pytestmark = pytest.mark.integration


def test_feed_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("feed_bench")
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
