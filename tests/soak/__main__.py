"""``make soak``: the service soak for as long as asked, figures on the last line.

    python -m tests.soak --seconds 600 --seed 1 --fault-rate 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.soak.harness import MEMORY_BOUND_MB, soak


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--subscribers", type=int, default=8)
    args = parser.parse_args()
    report = asyncio.run(soak(args.seconds, seed=args.seed, fault_rate=args.fault_rate,
                              subscribers=args.subscribers, settle_timeout=120.0,
                              quiet_before_check=40.0))
    for problem in [*report.mismatches, *report.subscriber_problems, *report.http_errors][:50]:
        print("problem:", problem)
    print(f"faults fired by kind: {dict(report.faults_fired)}")
    print(report.line())
    healthy = (not report.mismatches and not report.subscriber_problems and not report.http_errors
               and report.peak_rss_mb < MEMORY_BOUND_MB)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
