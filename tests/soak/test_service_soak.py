"""A short, seeded service soak (the long one: ``make soak``): see ``tests/soak/harness.py``."""

from __future__ import annotations

import os

import pytest

from aggbook.simulator.faults import Fault
from tests.soak.harness import MEMORY_BOUND_MB, soak

pytestmark = pytest.mark.integration


async def test_service_soak_ends_with_every_book_and_client_equal_to_the_truth() -> None:
    seconds = float(os.environ.get("AGGBOOK_SOAK_SECONDS", "20"))
    # SILENT waits out a 30 s silence timeout before it is noticed: the long run (make soak) has it,
    # the per-venue feed tests cover it, and this short one leaves it out
    kinds = [k for k in Fault if k is not Fault.SILENT]
    report = await soak(seconds, seed=int(os.environ.get("AGGBOOK_SOAK_SEED", "7")), kinds=kinds)
    print("\n" + report.line())
    assert sum(report.faults_fired.values()) > 0 and report.resyncs > 0  # the run did see faults
    assert report.books_checked == 15  # three symbols on five venues
    problems = [*report.mismatches, *report.subscriber_problems, *report.http_errors]
    for problem in problems[:30]:
        print("problem:", problem)  # whole: an assertion's message is cut short
    assert problems == [], problems[:30]
    assert report.http_requests > 0 and report.ws_sessions > 0
    assert report.peak_rss_mb < MEMORY_BOUND_MB
