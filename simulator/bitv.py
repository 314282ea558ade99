"""Simulated BitV: the shared Huobi-style mbp venue with BitV's own settings.

What differs from NHEX (comparing BitV's API documentation with NHEX's):

* mbp levels 5, 20 and 150 only (``enable_mbp400`` is ignored); 5 and 20 exist for nine symbols only
  (``FAST_SYMBOLS``, overridable with ``fast_symbols=``): elsewhere ``sub``/``req`` of mbp.5/20 is
  answered ``bad-request`` / ``invalid topic`` while mbp.150 works for every symbol.
* REST depth types step0..step4 with step3 ×500 and step4 ×1000; step5 is ``invalid type``; step0
  defaults to 20 levels like the other types.
* ``GET /v2/market-status`` (``{"code":200,"message":"success","data":{"marketStatus":1}}``; halts set
  with :meth:`BitvVenue.set_market_status`).
* REST responses carry ``X-HB-RateLimit-Requests-Remain`` (requests left in the current 1 s window of
  the client's IP, limit 10) and ``X-HB-RateLimit-Requests-Expire`` (epoch ms when that window ends).
  The limit is reported, not enforced, so tests polling REST are never refused.
* The doc states no missed-pong rule; NHEX's (close after two unanswered pings) is assumed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from aiohttp import web

from aggbook.simulator.gzip_mbp import GzipMbpVenue, now_ms
from aggbook.simulator.market import MarketProfile

FAST_SYMBOLS = frozenset({
    "btcusdt", "ethusdt", "xrpusdt", "eosusdt", "ltcusdt", "etcusdt", "adausdt", "dashusdt", "bsvusdt",
})

NORMAL, HALTED, CANCEL_ONLY = 1, 2, 3
EMERGENCY_MAINTENANCE, SCHEDULED_MAINTENANCE = 2, 3


class BitvVenue(GzipMbpVenue):
    """BitV: every protocol rule lives in :class:`GzipMbpVenue`; only BitV's settings are here."""

    name = "bitv"
    # the thinnest and slowest venue, on a coarse ETH tick
    market_profile = MarketProfile(
        spread=6, level_gap=3, size_scale=0.4, size_slope=0.3, lag=10, drift=1.0, noise=1, quote_interval=4,
        activity=6, rules={"ETH-USDT": ("0.1", "0.001"), "XRP-USDT": ("0.0001", "1")},
    )
    fast_symbols_default = FAST_SYMBOLS
    depth_steps: Mapping[str, int] = {"step0": 1, "step1": 10, "step2": 100, "step3": 500, "step4": 1_000}
    step0_default_depth = 20
    default_max_missed_pongs = 2  # not stated by BitV's doc: NHEX's rule assumed
    rest_rate_limit = 10  # requests per second per IP without a key

    market_status: Mapping[str, object] = {"marketStatus": NORMAL}  # replaced, never mutated

    def set_market_status(self, status: int = NORMAL, *, affected: Iterable[str] | str = "all",
                          reason: int = EMERGENCY_MAINTENANCE, start_ms: int | None = None,
                          end_ms: int | None = None) -> None:
        """What ``/v2/market-status`` reports; halt fields only when ``status`` is not 1 (normal)."""
        data: dict = {"marketStatus": status}
        if status != NORMAL:
            data["haltStartTime"] = now_ms() if start_ms is None else start_ms
            if end_ms is not None:
                data["haltEndTime"] = end_ms
            data["haltReason"] = reason
            data["affectedSymbols"] = affected if isinstance(affected, str) else ",".join(affected)
        self.market_status = data

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/v2/market-status", self._rest_market_status)

    async def _rest_market_status(self, request: web.Request) -> web.Response:
        return self._rest(request, {"code": 200, "message": "success", "data": dict(self.market_status)})

    def rest_headers(self, request: web.Request) -> dict[str, str]:
        ip = request.remote or "?"
        now = time.time()
        start, count = self._rest_window.get(ip, (0.0, 0))
        if now - start >= 1.0:
            start, count = now, 0
        count += 1
        self._rest_window[ip] = (start, count)
        return {
            "X-HB-RateLimit-Requests-Remain": str(max(0, self.rest_rate_limit - count)),
            "X-HB-RateLimit-Requests-Expire": str(int((start + 1.0) * 1000)),
        }
