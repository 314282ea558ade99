"""The service soak: five simulated venues under random faults of every kind, WebSocket subscribers
coming and going, HTTP load, and afterwards a full check of what every client and book ends with.

Run briefly by ``tests/soak/test_service_soak.py`` (seeded, part of ``make test``) and for as long
as wanted by ``make soak`` (``python -m tests.soak``), which prints its figures on one line:
``soak seconds=<n> faults_fired=<n> resyncs=<n> books_checked=<n> mismatches=<n> peak_rss_mb=<n>``.

Everything talks over real sockets on 127.0.0.1; every loop is bounded by the run's duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from aggbook.book.sync import SyncState
from aggbook.service.demo import DEMO_SYMBOLS, demo_config, demo_exchange
from aggbook.service.runtime import Service
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.faults import Fault
from tests.conftest import book_matches, describe_mismatch
from tests.feeds.fleet import truth_seen_by_feed

SYMBOLS = [s.canonical for s in DEMO_SYMBOLS]
# quick recovery, so a short run spends its time in faults rather than in backoff; audits often enough
# that a change a venue left out (SILENT_LOSS) and the market moved past is repaired within the settle
FEED_OPTIONS = {"backoff_base": 0.05, "backoff_cap": 0.5, "audit_interval": 3.0}
# bans and slow answers short enough that a run spends its time in faults, not in waiting them out
# (honouring the venues' own long Retry-After is tested per venue in tests/feeds)
RANDOM_FAULT_PARAMS = {Fault.SNAPSHOT_418: {"retry_after": 2}, Fault.SNAPSHOT_429: {"retry_after": 1},
                       Fault.SLOW_SNAPSHOT: {"delay": 1.0}}
MEMORY_BOUND_MB = 1024  # the peak RSS of the whole test process (simulator, service and clients)


@dataclass
class SoakReport:
    seconds: float
    faults_fired: Counter[str]
    resyncs: int
    books_checked: int
    mismatches: list[str]
    subscriber_problems: list[str]
    http_requests: int
    http_errors: list[str]
    ws_sessions: int
    peak_rss_mb: float

    def line(self) -> str:
        return (f"soak seconds={self.seconds:.0f} faults_fired={sum(self.faults_fired.values())} "
                f"resyncs={self.resyncs} books_checked={self.books_checked} "
                f"mismatches={len(self.mismatches)} subscriber_problems={len(self.subscriber_problems)} "
                f"http_requests={self.http_requests} http_errors={len(self.http_errors)} "
                f"ws_sessions={self.ws_sessions} peak_rss_mb={self.peak_rss_mb:.0f}")


@dataclass
class Subscriber:
    """A client that stays for the whole run and checks every message's sequence as it arrives."""

    ws: aiohttp.ClientWebSocketResponse
    last: dict[str, dict] = field(default_factory=dict)  # sub -> last snapshot/update
    problems: list[str] = field(default_factory=list)
    messages: int = 0

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(msg.data)
            if data["type"] not in ("snapshot", "update"):
                continue
            self.messages += 1
            sub = data["sub"]
            prev = self.last.get(sub)
            expected = 1 if prev is None else prev["seq"] + 1
            if data["seq"] != expected:
                self.problems.append(f"{sub}: seq {data['seq']} after {expected - 1}")
            elif prev is None and data["type"] != "snapshot":
                self.problems.append(f"{sub}: first message is an {data['type']}")
            self.last[sub] = data


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _http_load(base: str, stop: asyncio.Event, rng: random.Random, errors: list[str]) -> int:
    paths = ["/v1/quotes", "/v1/status", "/readyz", "/metrics"]
    for symbol in SYMBOLS:
        paths += [f"/v1/quotes/{symbol}?fees=true", f"/v1/books/{symbol}?depth=20",
                  f"/v1/sweep/{symbol}?side=buy&qty=0.5"]
    done = 0
    async with aiohttp.ClientSession(base_url=base) as http:
        while not stop.is_set():
            path = rng.choice(paths)
            try:
                async with http.get(path) as resp:
                    await resp.read()
                    # 503 from /readyz is an answer ("a symbol has no live venue"), not a failure
                    if resp.status >= 500 and not (path == "/readyz" and resp.status == 503):
                        errors.append(f"{path}: {resp.status}")
            except aiohttp.ClientError as exc:
                errors.append(f"{path}: {exc!r}")
            done += 1
            await asyncio.sleep(0.005)
    return done


async def _ws_churn(base: str, stop: asyncio.Event, rng: random.Random, problems: list[str]) -> int:
    """Clients that subscribe, read a little and leave (some without unsubscribing)."""
    sessions = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            sessions += 1
            try:
                async with http.ws_connect(f"{base}/v1/ws") as ws:
                    symbol = rng.choice(SYMBOLS)
                    await ws.send_json({"op": "subscribe", "channel": "book", "symbol": symbol,
                                        "depth": rng.choice([5, 20, 100])})
                    await ws.send_json({"op": "subscribe", "channel": "quotes", "symbols": [symbol]})
                    for _ in range(rng.randint(1, 30)):
                        msg = await asyncio.wait_for(ws.receive(), 10)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        if orjson.loads(msg.data)["type"] == "error":
                            problems.append(f"churn client got an error: {msg.data[:200]!r}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"churn client: {exc!r}")
            await asyncio.sleep(rng.uniform(0, 0.2))
    return sessions


def _book_mismatches(svc: Service, sim: SimulatedExchange) -> tuple[int, list[str]]:
    checked, bad = 0, []
    for symbol, book in svc.aggregator.consolidated.items():
        for venue, sync in book.syncs.items():
            checked += 1
            server = sim.venues[venue]
            try:
                truth = truth_seen_by_feed(server, symbol)
            except KeyError:
                bad.append(f"{venue} {symbol}: the venue sent nothing on an open connection")
                continue
            if not sync.live:
                bad.append(f"{venue} {symbol}: {sync.state.value} ({sync.reason.value})")
            elif not book_matches(sync, truth, sync.book.max_depth):
                bad.append(f"{venue} {symbol}: not equal to the truth at {truth.seq}: "
                           + describe_mismatch(sync, truth, sync.book.max_depth) + "\n"
                           + _whereabouts(svc, sim, venue, symbol, sync))
    return checked, bad


def _whereabouts(svc: Service, sim: SimulatedExchange, venue: str, symbol: str, sync: object) -> str:
    """Which of the feed's connections holds the served book, and what the venue sent on each of its own."""
    feed = svc.aggregator.feeds[venue]
    mine = [f"{cid}:{c.state}{'*' if c.syncs.get(symbol) is sync else ''}"
            f"({c.syncs[symbol].state.value}@{c.syncs[symbol].last_id})"
            for cid, c in getattr(feed, "connections", {}).items() if symbol in c.syncs]
    server = sim.venues[venue]
    theirs = []
    for cid, conn in sorted(server.connections.items()):
        try:
            seq: object = server.truth_sent(cid, symbol).seq
        except KeyError:
            seq = "-"
        theirs.append(f"{cid}:{conn.path}{'(closed)' if conn.closed else ''}@{seq}")
    return f"feed connections (* serves the book): {mine}; venue connections: {theirs}"


async def _settle(deadline: float, check: Callable[[], list[str]]) -> list[str]:
    """Poll ``check`` (returning problems) until it returns none or the deadline passes."""
    problems = check()
    while problems and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        problems = check()
    return problems


async def soak(seconds: float, *, seed: int = 1, fault_rate: float = 0.01, rate: float = 40.0,
               subscribers: int = 4, settle_timeout: float = 60.0,
               kinds: list[Fault] | None = None, quiet_before_check: float = 0.0) -> SoakReport:
    """Run the soak for ``seconds`` of faults, then let it settle and check everything.

    ``kinds`` defaults to every fault.  A SILENT socket is only noticed after the feed's silence
    timeout (30 s on Binance), so a run that includes it passes ``quiet_before_check`` longer than
    that: the market keeps moving without faults for that long before it is paused and checked.
    """
    rng = random.Random(seed)
    sim = demo_exchange(rate=rate, seed=seed)
    await sim.start()
    svc = Service(demo_config(sim, port=0, options=FEED_OPTIONS))
    await svc.start()
    stop = asyncio.Event()
    http_errors: list[str] = []
    churn_problems: list[str] = []
    readers: list[Subscriber] = []
    tasks: list[asyncio.Task] = []
    session = aiohttp.ClientSession()
    try:
        await _settle(time.monotonic() + settle_timeout,
                      lambda: [] if svc.aggregator.readiness()[0] else ["not ready"])
        for _ in range(subscribers):
            reader = Subscriber(await session.ws_connect(f"{svc.url}/v1/ws", heartbeat=5))
            await reader.ws.send_json({"op": "subscribe", "channel": "quotes", "symbols": SYMBOLS})
            for symbol in SYMBOLS:
                await reader.ws.send_json({"op": "subscribe", "channel": "book", "symbol": symbol,
                                           "depth": 10})
            readers.append(reader)
            tasks.append(asyncio.create_task(reader.run()))
        http_task = asyncio.create_task(_http_load(svc.url, stop, rng, http_errors))
        churn_task = asyncio.create_task(_ws_churn(svc.url, stop, rng, churn_problems))
        for venue in sim.venues.values():
            venue.faults.configure_random(fault_rate, kinds if kinds is not None else list(Fault),
                                          params=RANDOM_FAULT_PARAMS)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        for venue in sim.venues.values():
            venue.faults.configure_random(0.0)
        fired = sum((Counter(v.faults.fired) for v in sim.venues.values()), Counter())
        stop.set()
        http_requests = await http_task
        ws_sessions = await churn_task
        await asyncio.sleep(quiet_before_check)

        # every book live again, then (market paused) equal to what its venue last sent it
        deadline = time.monotonic() + settle_timeout
        await _settle(deadline, lambda: [s for s, b in svc.aggregator.consolidated.items()
                                         if any(x.state is not SyncState.LIVE for x in b.syncs.values())])
        sim.pause()
        checked, mismatches = 0, []

        def books() -> list[str]:
            nonlocal checked
            checked, bad = _book_mismatches(svc, sim)
            return bad

        mismatches = await _settle(time.monotonic() + settle_timeout, books)

        # every subscriber's last quote equals the service's own
        async def quotes_now() -> dict[str, dict]:
            async with session.get(f"{svc.url}/v1/quotes") as resp:
                body = await resp.json()
            return {q["symbol"]: q for q in body["quotes"]}

        def strip(quote: dict) -> dict:
            return {"bid": quote.get("bid"), "ask": quote.get("ask"),
                    "venues": sorted(v["venue"] for v in quote.get("venues", []) if v.get("included"))}

        subscriber_problems = [p for r in readers for p in r.problems] + churn_problems
        pending = ["not compared yet"]
        quotes_deadline = time.monotonic() + settle_timeout
        while pending and time.monotonic() < quotes_deadline:
            served = await quotes_now()
            pending = [f"subscriber {i} {symbol}" for i, r in enumerate(readers) for symbol in SYMBOLS
                       if strip(r.last.get(f"quotes:{symbol}", {}).get("data", {})) != strip(served[symbol])]
            if pending:
                await asyncio.sleep(0.05)
        subscriber_problems += [f"{p}: last quote differs from the service's" for p in pending]
        resyncs = sum(sum(h.resyncs.values()) for h in svc.aggregator.history.values())
        return SoakReport(
            seconds=time.monotonic() - started,
            faults_fired=fired,
            resyncs=resyncs,
            books_checked=checked,
            mismatches=mismatches,
            subscriber_problems=subscriber_problems,
            http_requests=http_requests,
            http_errors=http_errors,
            ws_sessions=ws_sessions,
            peak_rss_mb=_peak_rss_mb(),
        )
    finally:
        stop.set()
        for reader in readers:
            await reader.ws.close()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await session.close()
        await svc.stop()
        await sim.stop()
