"""The feed's one HTTP session: REST GETs that speak the venues' rate-limit answers.

Every venue's REST calls (snapshots, symbol lists) go through :meth:`HttpClient.get_json`, so a
429/418 becomes the same :class:`~aggbook.feeds.errors.RateLimited` everywhere and the snapshot
pacer can close its gate for the time the venue asked; the WebSocket connects share the session.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from aggbook.feeds.errors import RateLimited, SnapshotError


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """``Retry-After`` as seconds; a value that looks like an epoch (s or ms) is turned into a delay."""
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    now = time.time()
    if number > 1e12:  # epoch milliseconds
        return max(0.0, number / 1000 - now)
    if number > 1e9:  # epoch seconds
        return max(0.0, number - now)
    return max(0.0, number)


class HttpClient:
    """An aiohttp session opened by the feed's ``start`` and closed by its ``stop``."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    def open(self, timeout: float) -> aiohttp.ClientSession:
        """A new session whose every request gives up after ``timeout`` seconds."""
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def get_json(self, url: str, params: dict | None = None) -> tuple[int, Any, Any]:
        """GET and decode JSON; 429/418 raise RateLimited (Retry-After).  Returns (status, headers, body)."""
        assert self.session is not None, "the feed is not started"
        async with self.session.get(url, params=params) as resp:
            text = await resp.text()
            if resp.status in (429, 418):
                default = 1.0 if resp.status == 429 else 30.0
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), default)
                raise RateLimited(retry_after, f"HTTP {resp.status}: {text[:200]}")
            try:
                body = orjson.loads(text) if text else None
            except ValueError as exc:
                raise SnapshotError(f"HTTP {resp.status}: not JSON: {text[:200]}") from exc
            return resp.status, resp.headers, body
