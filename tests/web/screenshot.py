"""Take the README's picture of the web page: the demo with data flowing, in the system's Chromium.

    .venv/bin/python -m tests.web.screenshot docs/web-page.png

The markets run for a while so the spread chart has a history, one venue is sent through a slow
resync (a gap, then a late snapshot) so the venue table and the events show one, and the sweep
calculator has an answer.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from tests.web.browser import opened_page, running_demo, until


async def take(out: Path, seconds: float, width: int) -> None:
    async with running_demo(rate=20.0) as demo, opened_page(f"{demo.url}/", width=width) as (page, _):
        await page.wait_for_selector("body[data-connection='open']")
        await asyncio.sleep(seconds)  # history for the chart: a picture, not a test
        venue = "bitv"
        venue_symbol = demo.sim.venues[venue].resolve_symbol("BTC-USDT")
        await demo.sim_control(venue, "faults", {"fault": "slow_snapshot", "symbol": venue_symbol,
                                                 "params": {"delay": 5.0}})
        await demo.sim_control(venue, "faults", {"fault": "gap", "symbol": venue_symbol})
        await page.wait_for_selector(f"#venue-rows tr[data-venue='{venue}'][data-state='resyncing']")
        await page.fill("#sweep-qty", "0.5")
        await page.click("#sweep-go")
        await page.wait_for_selector("#sweep-result[data-state='done']")

        async def drawn() -> bool:
            return bool(await page.evaluate("() => aggbook.stats().renders > 0"))

        await until(drawn, what="a frame drawn")
        await page.screenshot(path=str(out), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/web-page.png"))
    parser.add_argument("--seconds", type=float, default=40.0, help="market history before the picture")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    asyncio.run(take(args.out, args.seconds, args.width))
    print(args.out)


if __name__ == "__main__":
    main()
