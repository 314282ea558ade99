"""The aggbook client: one-shot HTTP getters and WebSocket streams of quotes and merged books.

It talks to a running aggbook over its public API only (docs/api.md) and imports nothing of the
service, the feeds or the simulator, so another service can install aggbook and use this alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote as quote_path

import aiohttp
import orjson

from aggbook.client.errors import ApiError, ProtocolError, Unavailable
from aggbook.client.models import (
    Book,
    Quote,
    Status,
    VenueBook,
    parse_book,
    parse_quote,
    parse_status,
    parse_venue_book,
)
from aggbook.client.streams import Stream


class Client:
    """A client of one aggbook service.

    ``async with Client("http://127.0.0.1:8080") as client:`` opens an HTTP session (or uses the
    ``session`` given, which it then leaves open); leaving the block closes every stream it made.

    Streams reconnect by themselves after a disconnect or a service restart, waiting
    ``reconnect_base`` seconds, doubling up to ``reconnect_cap`` (jittered), and raise
    :class:`~aggbook.client.errors.Unavailable` after ``reconnect_attempts`` failed connections in a
    row (``None``: never give up).  ``heartbeat`` is the WebSocket ping interval that detects a dead
    connection; ``timeout`` bounds each HTTP request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 10.0,
        heartbeat: float = 15.0,
        reconnect_base: float = 0.1,
        reconnect_cap: float = 5.0,
        reconnect_attempts: int | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base
        self.ws_url = "ws" + base.removeprefix("http") + "/v1/ws"
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.reconnect_attempts = reconnect_attempts
        self._session = session
        self._owns_session = session is None
        self._streams: set[Stream[Any]] = set()
        self._closing: set[asyncio.Task[Any]] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client inside 'async with Client(...) as client:'")
        return self._session

    async def __aenter__(self) -> Client:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ streams
    def quotes(self, *symbols: str, fees: bool = False) -> Stream[Quote]:
        """Consolidated quotes of ``symbols`` (all on one connection), first a snapshot of each, then
        every change; with ``fees=True`` fee-adjusted.  ``quote.symbol`` tells them apart."""
        if not symbols:
            raise ValueError("quotes() needs at least one symbol")
        request = {"op": "subscribe", "channel": "quotes", "symbols": list(symbols), "fees": fees}
        return self._stream(request, parse_quote)

    def book(
        self, symbol: str, depth: int | None = None, venues: Iterable[str] | None = None
    ) -> Stream[Book]:
        """The merged ladder of ``symbol`` at ``depth`` (the service's default when None), optionally
        over some ``venues`` only: a snapshot, then the full ladder at every change of its levels."""
        request: dict[str, Any] = {"op": "subscribe", "channel": "book", "symbol": symbol}
        if depth is not None:
            request["depth"] = depth
        if venues is not None:
            request["venues"] = list(venues)
        return self._stream(request, parse_book)

    def _stream(self, request: dict[str, Any], parse: Any) -> Stream[Any]:
        self.session  # noqa: B018 - fail now, not at the first iteration, outside 'async with'
        stream: Stream[Any] = Stream(self, request, parse)
        self._streams.add(stream)
        return stream

    def _forget(self, stream: Stream[Any]) -> None:
        self._streams.discard(stream)

    def _close_later(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        task = asyncio.get_running_loop().create_task(ws.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------ one-shot HTTP
    async def get_quote(self, symbol: str, *, fees: bool = False) -> Quote:
        """``GET /v1/quotes/{symbol}``."""
        return parse_quote(await self._get(f"/v1/quotes/{quote_path(symbol, safe='')}", {"fees": fees}))

    async def get_quotes(self, *, fees: bool = False) -> list[Quote]:
        """``GET /v1/quotes``: every configured symbol."""
        body = await self._get("/v1/quotes", {"fees": fees})
        items = body.get("quotes") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ProtocolError("quotes: expected {\"quotes\": [...]}")
        return [parse_quote(item) for item in items]

    async def get_book(self, symbol: str, depth: int | None = None,
                       venues: Iterable[str] | None = None) -> Book:
        """``GET /v1/books/{symbol}``: the merged ladder."""
        params: dict[str, Any] = {}
        if depth is not None:
            params["depth"] = depth
        if venues is not None:
            params["venues"] = ",".join(venues)
        return parse_book(await self._get(f"/v1/books/{quote_path(symbol, safe='')}", params))

    async def get_venue_book(self, symbol: str, venue: str, depth: int | None = None) -> VenueBook:
        """``GET /v1/books/{symbol}/{venue}``: one venue's own book, in its own decimal text."""
        params = {} if depth is None else {"depth": depth}
        path = f"/v1/books/{quote_path(symbol, safe='')}/{quote_path(venue, safe='')}"
        return parse_venue_book(await self._get(path, params))

    async def get_status(self) -> Status:
        """``GET /v1/status``."""
        return parse_status(await self._get("/v1/status", {}))

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        query = {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in params.items()}
        url = self.base_url + path
        try:
            async with self.session.get(
                url, params=query, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f"GET {url}: {exc or type(exc).__name__}") from exc
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if status != 200:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                raise ApiError(status, str(error.get("code")), str(error.get("message")))
            raise ApiError(status, "http_error", body[:200].decode(errors="replace"))
        if data is None:
            raise ProtocolError(f"GET {url}: the answer is not JSON: {body[:200]!r}")
        return data
