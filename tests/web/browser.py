"""The system's Chromium driven by Playwright, and the demo set-up the page is opened against.

Playwright's own browser builds are never downloaded (`playwright install` is never run): the
Debian ``chromium`` package's binary is launched with flags that keep it off the network. Without
it (or without Playwright) the browser tests skip, unless ``AGGBOOK_REQUIRE_CHROMIUM`` is set, as
in CI (``.ci/run``), where they must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest

from aggbook.service.config import WebSocketSettings
from aggbook.service.demo import demo_config, demo_exchange
from aggbook.service.runtime import Service
from aggbook.simulator.exchange import SimulatedExchange

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
T = TypeVar("T")
FAST_RECONNECT = {"backoff_base": 0.05, "backoff_cap": 0.3}


def chromium_path() -> str:
    """The Chromium to drive, or a skip (a failure when ``AGGBOOK_REQUIRE_CHROMIUM`` is set).

    ``AGGBOOK_CHROMIUM`` names another binary; by default the ``chromium`` on PATH."""
    path = os.environ.get("AGGBOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = None
    if not os.access(path, os.X_OK):
        missing = f"no chromium at {path} (Debian package 'chromium'; .ci/run installs it)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (the test extra: pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("AGGBOOK_REQUIRE_CHROMIUM"):
            pytest.fail(missing + " and AGGBOOK_REQUIRE_CHROMIUM is set")
        pytest.skip(missing)
    return path


@dataclass
class Demo:
    """The simulated venues and the service on them, running in their own thread and event loop.

    The browser driver gets the test's loop to itself: with the markets, the feeds and the service
    on the same loop, a busy machine starves Playwright's connection to the browser. Everything of
    the demo is touched only from its own loop: ``call`` runs a coroutine there, ``run`` a function.
    """

    sim: SimulatedExchange
    svc: Service
    loop: asyncio.AbstractEventLoop
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.svc.url

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async def inside() -> T:
            return fn(*args)

        return await self.call(inside())

    async def pause(self) -> None:
        await self.run(self.sim.pause)

    async def resume(self) -> None:
        await self.run(self.sim.resume)

    async def get(self, path: str) -> Any:
        async with self.http.get(path) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())
            return await resp.json()

    async def sim_control(self, venue: str, path: str, body: dict) -> None:
        """A request to one venue's ``/_sim/`` control API, over HTTP as a person would send it."""
        url = f"{self.sim.venues[venue].base_url}/_sim/{path}"
        async with self.http.post(url, json=body) as resp:
            assert resp.status == 200, (url, await resp.text())


@contextlib.asynccontextmanager
async def running_demo(rate: float = 40.0, stale_after: float = 600.0) -> AsyncIterator[Demo]:
    """The demo on free ports of 127.0.0.1, in a thread of its own, every symbol ready.

    ``stale_after`` is long: a test pauses the markets to compare the page with the API, and a venue
    going stale meanwhile would change the answer under it.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="demo", daemon=True)
    thread.start()

    async def start() -> tuple[SimulatedExchange, Service]:
        sim = demo_exchange(rate=rate)
        await sim.start()
        svc = Service(demo_config(sim, port=0, stale_after=stale_after, websocket=WebSocketSettings(),
                                  options=FAST_RECONNECT))
        try:
            await svc.start()
        except BaseException:
            await sim.stop()
            raise
        return sim, svc

    async def stop(sim: SimulatedExchange, svc: Service) -> None:
        try:
            await svc.stop()
        finally:
            await sim.stop()

    try:
        sim, svc = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(start(), loop))
        try:
            async with aiohttp.ClientSession(base_url=svc.url) as http:
                demo = Demo(sim, svc, loop, http)

                async def ready() -> bool:
                    async with http.get("/readyz") as resp:
                        await resp.read()
                        return resp.status == 200

                await until(ready, what="the demo ready")
                yield demo
        finally:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(stop(sim, svc), loop))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        loop.close()


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll an async condition every 20 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Problems:
    """Every console error and uncaught exception of a page: a test fails on any of them."""

    items: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", lambda msg: msg.type == "error" and self.items.append(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self.items.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: self.items.append(f"request failed: {req.url} {req.failure}"))

    def expect(self, text: str) -> None:
        """One problem a test caused on purpose (Chrome logs every 4xx answer): there, and now forgiven."""
        matching = [item for item in self.items if text in item]
        assert len(matching) == 1, (text, self.items)
        self.items.remove(matching[0])

    def check(self) -> None:
        assert not self.items, "the page reported problems:\n" + "\n".join(self.items)


@contextlib.asynccontextmanager
async def opened_page(
    url: str, *, width: int = 1280, height: int = 1000
) -> AsyncIterator[tuple[Any, Problems]]:
    """A fresh headless Chromium showing ``url``; fails on any console or page error seen meanwhile."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            problems = Problems()
            problems.watch(page)
            await page.goto(url)
            yield page, problems
            problems.check()  # before the service goes away: its end is not the page's fault
        finally:
            await browser.close()
