"""The whole service under load: simulator, ``aggbook serve``, WebSocket subscribers and HTTP load.

Every part is its own process on 127.0.0.1 (this script starts them with ``--role``): the
simulated venues (``SimulatedExchange``), the service (``aggbook serve`` with a generated TOML
config pointing at them), an HTTP load client and, for comparison, a trivial aiohttp handler.  The
WebSocket subscribers run in this process.  Three scenarios, one after the other, each with fresh
processes:

1. **set rate** (``--rate`` market steps per second per symbol, ``--symbols`` symbols on
   ``--venues``): once every book is live, ``--subscribers`` WebSocket clients subscribe to the
   quotes of every symbol and a window of ``--seconds`` is measured: frames absorbed (the delta of
   ``aggbook_feed_messages_total`` in ``/metrics``), the service's CPU seconds (``utime + stime``
   from ``/proc/<pid>/stat``) per 1,000 of those frames, the latency from the venue writing a frame
   to a subscriber receiving the consolidated update (receive wall clock minus the message's
   ``event_ts``, the venue's event time; Binance writes milliseconds, so figures carry up to 1 ms of
   truncation, never negative), and the p99 of ``aggbook_event_loop_lag_seconds`` over the window
   (the histogram's delta, interpolated within its bucket as Prometheus does; the probe samples
   every 0.25 s).  Then the HTTP load client runs ``--http-seconds`` against
   ``/v1/quotes/{symbol}`` of the service, and the same client against a trivial aiohttp handler
   answering the same bytes from memory, on the same machine in the same run: the ratio is
   service req/s over trivial req/s.
2. **flat out** (``rate=inf``): the same window; its frames/s is what the service absorbs when the
   simulator pushes as fast as it can.
3. **cold start** (``--cold-symbols`` symbols on every venue of ``--venues``): seconds from
   spawning ``aggbook serve`` until every book reports ``aggbook_book_live 1``, next to the bound the
   venues' published budgets set (the slowest venue's ``cold_start_bound_s``, as ``aggbook
   check-config`` prints it: Binance's request weight at ``--binance-depth``, NHEX/BitV's ``req``
   spacing per connection, ...); then, every book live, the p99 of ``aggbook_event_loop_lag_seconds``
   over ``--seconds``, the lag with that many symbols.

Self-checks (the run fails loudly otherwise): every book live when a window starts and ends, no
gap or resync counted during a window, every subscriber got a snapshot of every symbol and a
gap-free ``seq`` per subscription, every update carried ``event_ts`` and ``recv_ts`` with
``event_ts <= recv_ts <= receive time``, every HTTP answer was a 200 naming the symbol asked, and
the service exits 0 on SIGTERM.  Every wait is bounded in time and every loop in count.

Where the latency is.  Each update's venue->subscriber latency is also split at its ``recv_ts``
(when the service applied the venue's latest frame of the symbol): *venue->service* (the venue's
event time to the service applying the frame) and *service->subscriber* (applied to received: the
aggregator's flush, the hub, the socket and the subscriber's wake-up).  The first leg is mostly the
simulator's: all five venues run in one process, a market step stamps each frame's event time as
it is built, and the frames of a step go out only when the step is done (a bare client of the same
simulator, nothing else in between, sees tens of milliseconds at p99 on a loaded machine).  The
second leg is the service's own, and the figure its latency target is about (``service_p99_ms``).

The last line is machine-readable:
``service frames_per_s=<n> cpu_s_per_1k_frames=<x> p50_ms=<x> p99_ms=<x> http_ratio_vs_trivial=<r>
cold_start_200_s=<x> cold_start_bound_s=<x> loop_lag_p99_ms=<x> service_p50_ms=<x> service_p99_ms=<x>
flat_service_p99_ms=<x> loop_lag_200_p99_ms=<x>`` (one line): ``frames_per_s`` and
``flat_service_p99_ms`` from the flat-out scenario, ``cold_start_200_s`` and ``loop_lag_200_p99_ms``
(the event-loop lag over ``--seconds`` once every book of the cold start is live) for
``--cold-symbols`` symbols (200 by default), every other figure from the set-rate scenario;
``p50_ms``/``p99_ms`` venue->subscriber, ``service_*`` the service->subscriber leg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

VENUES = ("binance", "mexc", "btse", "nhex", "bitv")
HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # a child process must announce itself within this many seconds
STOP_TIMEOUT = 15.0

def cold_start_bounds(config_path: str) -> dict[str, float]:
    """Per venue, the earliest second its snapshot pacing lets the last cold-start request out.

    The figure ``aggbook check-config`` prints, from the service's own feeds built on the generated
    config: each venue's published budget (Binance's request weight at the configured depth, NHEX/BitV's
    100 ms ``req`` spacing per connection, the others' snapshot pacing).  Round trips and the
    venue's own answer time are not in it, so a measured cold start sits somewhat above it.
    """
    from aggbook.service.aggregator import default_feed_factory
    from aggbook.service.config import load_config

    config = load_config(config_path)
    return {vc.name: default_feed_factory(vc).cold_start_bound_s() for vc in config.enabled_venues}


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _announce(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _until_stopped(max_seconds: float) -> None:
    """Until SIGTERM/SIGINT, stdin closing (the parent went away) or ``max_seconds``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        with contextlib.suppress(Exception):
            sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)


# ---------------------------------------------------------------------- role: simulator
def symbol_specs(count: int) -> list[Any]:
    from aggbook.simulator.market import DEFAULT_SYMBOLS, extra_symbol

    return [*DEFAULT_SYMBOLS[:count], *(extra_symbol(i) for i in range(max(0, count - len(DEFAULT_SYMBOLS))))]


async def role_simulator(args: argparse.Namespace) -> None:
    from aggbook.simulator.exchange import SimulatedExchange

    specs = symbol_specs(args.symbols)
    sim = SimulatedExchange(args.venues.split(","), symbols=specs, rate=args.rate, seed=args.seed, host=HOST)
    async with sim:
        _announce({"venues": {
            name: {**{k: v for k, v in server.urls().items() if k in ("rest_url", "ws_url")},
                   "symbols": {s.canonical: server.venue_symbol(s) for s in specs}}
            for name, server in sim.venues.items()}})
        await _until_stopped(args.max_seconds)


# ---------------------------------------------------------------------- role: trivial handler
async def role_trivial(args: argparse.Namespace) -> None:
    """The floor: an aiohttp handler answering fixed bytes, no lookup, no middleware."""
    from aiohttp import web

    with open(args.body, "rb") as f:
        body = f.read()

    async def quote(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/quotes/{symbol}", quote)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    _announce({"port": port})
    try:
        await _until_stopped(args.max_seconds)
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------- role: HTTP load client
async def role_http_load(args: argparse.Namespace) -> None:
    """``--http-concurrency`` keep-alive workers GET ``/v1/quotes/{symbol}`` round-robin over the symbols."""
    symbols = args.load_symbols.split(",")
    deadline = math.inf  # set once the session is ready: a slow start-up must not eat the window
    counts = {"ok": 0, "bad": 0}
    budget = args.http_max_requests

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal budget
        i = offset
        # every worker answers at least once, however late the loop let it start
        while budget > 0 and (i == offset or time.monotonic() < deadline):
            budget -= 1
            symbol = symbols[i % len(symbols)]
            i += 1
            async with session.get(f"{args.base_url}/v1/quotes/{symbol}") as resp:
                body = await resp.read()
                if resp.status == 200 and orjson.loads(body).get("symbol") == symbol:
                    counts["ok"] += 1
                else:
                    counts["bad"] += 1

    connector = aiohttp.TCPConnector(limit=args.http_concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.monotonic()
        deadline = start + args.seconds
        await asyncio.gather(*(worker(session, k) for k in range(args.http_concurrency)))
        elapsed = time.monotonic() - start
    _announce({"ok": counts["ok"], "bad": counts["bad"], "seconds": elapsed})


# ---------------------------------------------------------------------- the parent: processes
class Child:
    """A role of this script (or ``aggbook serve``) as a subprocess that announces itself in JSON."""

    def __init__(self, cmd: list[str], log: str, announce: bool = True) -> None:
        # output goes to a file: a pipe nobody reads would block a chatty child once it fills
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if announce else self._log_file,
                                     stderr=self._log_file, text=True)
        self.spawned = time.monotonic()
        self.info: dict[str, Any] = {}
        if announce:
            self.info = self._read_announcement()

    def _read_announcement(self) -> dict[str, Any]:
        result: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not result or not result[0].strip():
            self.stop()
            raise RuntimeError(f"{self.proc.args} did not start:\n{self.stderr_tail()}")
        return json.loads(result[0])

    def stderr_tail(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        with open(self.log) as f:
            return f.read()[-4000:]

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far, from ``/proc/<pid>/stat``."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            data = f.read()
        fields = data[data.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            return -9
        finally:
            for stream in (self.proc.stdin, self.proc.stdout, self._log_file):
                with contextlib.suppress(Exception):
                    stream.close()  # type: ignore[union-attr]


def _role_cmd(role: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--role", role, *extra]


def _aggbook_cmd() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "aggbook")
    if os.path.exists(script):
        return [script]
    found = shutil.which("aggbook")
    return [found] if found else [sys.executable, "-c", "import sys; from aggbook.service.cli import main; "
                                                       "sys.exit(main())"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_config(path: str, venues: dict[str, Any], port: int, binance_depth: int) -> list[str]:
    symbols = list(next(iter(venues.values()))["symbols"])
    lines = ["[service]", f'host = "{HOST}"', f"port = {port}", f"symbols = {json.dumps(symbols)}",
             'log_level = "warning"', ""]
    for name, v in venues.items():
        table = ", ".join(f"{json.dumps(c)} = {json.dumps(s)}" for c, s in v["symbols"].items())
        lines += [f"[venues.{name}]", f"rest_url = {json.dumps(v['rest_url'])}",
                  f"ws_url = {json.dumps(v['ws_url'])}", f"symbols = {{ {table} }}"]
        if name == "binance":
            lines.append(f"depth = {binance_depth}")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return symbols


# ---------------------------------------------------------------------- the parent: metrics
@dataclass
class Scrape:
    at: float
    frames: float
    live: int
    books: int
    gaps: float
    resyncs: float
    lag_buckets: dict[float, float]


LAG_SERIES = "aggbook_event_loop_lag_seconds_bucket"
LAG_PROBE_INTERVAL = 0.25  # the service's lag probe sleeps this long between two observations


async def scrape_lag(session: aiohttp.ClientSession, base: str) -> dict[float, float]:
    """The lag histogram's buckets alone (``/metrics?name[]=``).

    A whole ``/metrics`` is rendered in the service's event loop and holds it up for as long as it
    takes (about a second with a thousand books), and the lag probe records that stall: a window
    opened by a whole scrape measured the scrape.  The lag window is therefore opened and closed by
    these narrow scrapes, the whole ones outside it."""
    async with session.get(f"{base}/metrics", params={"name[]": LAG_SERIES}) as resp:
        assert resp.status == 200, resp.status
        text = await resp.text()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAG_SERIES:
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


async def lag_window(session: aiohttp.ClientSession, base: str, seconds: float) -> float:
    """p99 event-loop lag (ms) over ``seconds``, opened once the probe has recorded whatever stall a
    whole scrape just before caused."""
    await asyncio.sleep(LAG_PROBE_INTERVAL + 0.05)
    before = await scrape_lag(session, base)
    await asyncio.sleep(seconds)
    after = await scrape_lag(session, base)
    return histogram_quantile(0.99, before, after) * 1000


async def scrape(session: aiohttp.ClientSession, base: str) -> Scrape:
    async with session.get(f"{base}/metrics") as resp:
        assert resp.status == 200, resp.status
        text = await resp.text()
    at = time.monotonic()
    s = Scrape(at, 0.0, 0, 0, 0.0, 0.0, {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aggbook_feed_messages_total":
                s.frames += sample.value
            elif sample.name == "aggbook_book_live":
                s.books += 1
                s.live += int(sample.value == 1)
            elif sample.name == "aggbook_book_gaps_total":
                s.gaps += sample.value
            elif sample.name == "aggbook_book_resyncs_total":
                s.resyncs += sample.value
            elif sample.name == "aggbook_event_loop_lag_seconds_bucket":
                s.lag_buckets[float(sample.labels["le"])] = sample.value
    return s


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The q-quantile of the observations between two scrapes of a cumulative histogram."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if math.isinf(bound):
                return lower  # beyond the largest finite bucket: its bound is all we know
            return lower + (bound - lower) * ((rank - below) / (cum - below) if cum > below else 1.0)
        lower, below = bound, cum
    return lower


async def count_live(session: aiohttp.ClientSession, base: str) -> tuple[int, int, float]:
    """(books live, books exported, when): a line scan of ``/metrics``, no exposition parser.

    Polling a cold start of a thousand books with the full parser costs this process a core's
    worth of parsing, on the machine whose cold start is being measured; and the service renders
    only ``aggbook_book_live`` (``name[]``), not the whole exposition (a second of its event loop
    with a thousand books, for every poll).
    """
    async with session.get(f"{base}/metrics", params={"name[]": "aggbook_book_live"}) as resp:
        assert resp.status == 200, resp.status
        text = await resp.text()
    at = time.monotonic()
    live = total = 0
    for line in text.splitlines():
        if line.startswith("aggbook_book_live{"):
            total += 1
            live += line.endswith(" 1.0") or line.endswith(" 1")
    return live, total, at


def poll_interval(live: int, books: int, coarse: float, fine: float = 0.25) -> float:
    """Seconds until the next poll of the live count: ``fine`` once nine books in ten are live."""
    return fine if live * 10 >= books * 9 else coarse


async def wait_live(session: aiohttp.ClientSession, base: str, books: int, timeout: float,
                    proc: Child) -> float:
    """When every book was first seen live (monotonic).

    The service renders ``/metrics`` for every poll, so while most books are still coming the
    interval grows with the book count (0.1 s to 1 s): the measurement must not become the load.
    Once nine books in ten are live it is 0.25 s, so the figure is late by at most 0.25 s (a 1 s
    interval to the end made a cold start of a thousand books look up to 1 s slower than it was).
    """
    coarse = min(1.0, max(0.1, books / 1000))
    deadline = time.monotonic() + timeout
    live = total = 0
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"aggbook serve exited {proc.proc.returncode}:\n{proc.stderr_tail()}")
        with contextlib.suppress(aiohttp.ClientError, AssertionError):
            live, total, at = await count_live(session, base)
            if total == books and live == books:
                return at
        await asyncio.sleep(poll_interval(live, books, coarse))
    raise RuntimeError(f"not every book live within {timeout:.0f}s: {live}/{books} live")


# ---------------------------------------------------------------------- the parent: subscribers
@dataclass
class Subscriber:
    """One ``/v1/ws`` client subscribed to the quotes of every symbol."""

    symbols: list[str]
    snapshots: set[str] = field(default_factory=set)
    seqs: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, while recording
    # the same updates split at the service's ``recv_ts``: venue -> service, service -> subscriber
    to_service: list[float] = field(default_factory=list)
    to_subscriber: list[float] = field(default_factory=list)
    updates: int = 0
    recording: bool = False
    problems: list[str] = field(default_factory=list)

    def on_message(self, msg: dict[str, Any], received: float) -> None:
        kind = msg.get("type")
        if kind not in ("snapshot", "update"):
            if kind == "error":
                self.problems.append(f"error message {msg}")
            return
        sub, seq = msg["sub"], msg["seq"]
        if seq != self.seqs.get(sub, 0) + 1:
            self.problems.append(f"{sub}: seq {seq} after {self.seqs.get(sub, 0)}")
        self.seqs[sub] = seq
        if kind == "snapshot":
            self.snapshots.add(msg["symbol"])
            return
        self.updates += 1
        event_ts, recv_ts = msg.get("event_ts"), msg.get("recv_ts")
        if event_ts is None or recv_ts is None:
            self.problems.append(f"{sub}: update without event_ts/recv_ts")
            return
        if not event_ts <= recv_ts + 1e-6 or not recv_ts <= received + 1e-3:
            self.problems.append(f"{sub}: event_ts {event_ts} recv_ts {recv_ts} received {received}")
        if self.recording:
            self.latencies.append(received - event_ts)
            self.to_service.append(recv_ts - event_ts)
            self.to_subscriber.append(received - recv_ts)

    async def run(self, session: aiohttp.ClientSession, base: str, ready: asyncio.Event) -> None:
        async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/v1/ws", max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"op": "subscribe", "channel": "quotes", "symbols": self.symbols}))
            async for raw in ws:
                if raw.type is not aiohttp.WSMsgType.TEXT:
                    break
                received = time.time()
                self.on_message(orjson.loads(raw.data), received)
                if len(self.snapshots) == len(self.symbols):
                    ready.set()


# ---------------------------------------------------------------------- the parent: scenarios
@dataclass
class Window:
    rate: float
    frames_per_s: float
    cpu_s_per_1k: float
    p50_ms: float
    p99_ms: float
    loop_lag_p99_ms: float
    latencies: int
    sim_cpu_share: float  # simulator CPU seconds per second: near 1.0 means the simulator set the pace
    # (p50, p99) in ms of each leg, split at the service's ``recv_ts``: where the latency is
    to_service_ms: tuple[float, float] = (math.nan, math.nan)  # venue event time -> service applied it
    to_subscriber_ms: tuple[float, float] = (math.nan, math.nan)  # service applied it -> subscriber got it
    checked: dict[str, int] = field(default_factory=dict)  # what the self-checks covered, by check
    http_ratio: float = math.nan
    http_service: float = math.nan
    http_trivial: float = math.nan


def percentiles_ms(values: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``values`` (seconds) in milliseconds, as the window's figures are taken."""
    if not values:
        return math.nan, math.nan
    ordered = sorted(values)
    return (statistics.median(ordered) * 1000,
            ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000)


def describe_window(w: Window) -> str:
    return (f"  rate={w.rate:g}/s per symbol: {w.frames_per_s:,.0f} frames/s absorbed, "
            f"{w.cpu_s_per_1k:.3f} service CPU s per 1k frames, venue->subscriber p50 {w.p50_ms:.2f} ms "
            f"p99 {w.p99_ms:.2f} ms ({w.latencies} updates; venue->service p50/p99 "
            f"{w.to_service_ms[0]:.2f}/{w.to_service_ms[1]:.2f} ms, service->subscriber "
            f"{w.to_subscriber_ms[0]:.2f}/{w.to_subscriber_ms[1]:.2f} ms), loop lag p99 "
            f"{_fmt(w.loop_lag_p99_ms, 2)} ms, simulator busy {w.sim_cpu_share:.0%} of a core")


def _sim_cmd(args: argparse.Namespace, symbols: int, rate: float, max_seconds: float) -> list[str]:
    return _role_cmd("simulator", "--venues", args.venues, "--symbols", str(symbols), "--rate", str(rate),
                     "--seed", str(args.seed), "--max-seconds", str(max_seconds))


def _http_load(args: argparse.Namespace, base: str, symbols: list[str]) -> dict[str, Any]:
    cmd = _role_cmd("http-load", "--base-url", base, "--load-symbols", ",".join(symbols),
                    "--seconds", str(args.http_seconds), "--http-concurrency", str(args.http_concurrency),
                    "--http-max-requests", str(args.http_max_requests))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.http_seconds + START_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"http load client failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["bad"] or result["ok"] <= 0:
        raise RuntimeError(f"http load against {base}: {result['bad']} bad answers, {result['ok']} good")
    return result


@dataclass
class Stack:
    """A simulator and an ``aggbook serve`` pointed at it, each in its own process."""

    sim: Child
    svc: Child
    base: str  # the service's URL
    symbols: list[str]
    books: int  # symbols x venues
    tmp: str  # scratch folder of the run


@contextlib.contextmanager
def simulator_and_service(args: argparse.Namespace, symbol_count: int, rate: float,
                          budget: float) -> Iterator[Stack]:
    """Start both on a generated config; stop both on the way out, and fail the run when the
    service does not exit 0 on SIGTERM (its clean shutdown is part of what is measured)."""
    with tempfile.TemporaryDirectory(prefix="service_bench") as tmp:
        sim = Child(_sim_cmd(args, symbol_count, rate, budget), os.path.join(tmp, "simulator.log"))
        svc: Child | None = None
        try:
            port = _free_port()
            config = os.path.join(tmp, "aggbook.toml")
            symbols = write_config(config, sim.info["venues"], port, args.binance_depth)
            svc = Child([*_aggbook_cmd(), "serve", "--config", config],
                        os.path.join(tmp, "service.log"), announce=False)
            yield Stack(sim, svc, f"http://{HOST}:{port}", symbols,
                        len(symbols) * len(sim.info["venues"]), tmp)
        finally:
            code = svc.stop() if svc is not None else 0
            sim.stop()
        if code != 0:
            raise RuntimeError(f"aggbook serve exited {code} on SIGTERM:\n{svc.stderr_tail() if svc else ''}")


async def measure_window(args: argparse.Namespace, rate: float, with_http: bool) -> Window:
    budget = args.seconds + args.http_seconds * 2 + args.live_timeout + 3 * START_TIMEOUT
    tasks: list[asyncio.Task] = []
    with simulator_and_service(args, args.symbols, rate, budget) as stack:
        sim, svc, base, symbols, books, tmp = (stack.sim, stack.svc, stack.base, stack.symbols,
                                               stack.books, stack.tmp)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_live(session, base, books, args.live_timeout, svc)
                subs = [Subscriber(symbols) for _ in range(args.subscribers)]
                ready = [asyncio.Event() for _ in subs]
                tasks = [asyncio.create_task(s.run(session, base, r))
                         for s, r in zip(subs, ready, strict=True)]
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), START_TIMEOUT)
                for s in subs:
                    s.recording = True
                m0, cpu0, sim0 = await scrape(session, base), svc.cpu_seconds(), sim.cpu_seconds()
                lag_ms = await lag_window(session, base, args.seconds)
                m1, cpu1, sim1 = await scrape(session, base), svc.cpu_seconds(), sim.cpu_seconds()
                for s in subs:
                    s.recording = False
                frames = m1.frames - m0.frames
                problems = [p for s in subs for p in s.problems[:5]]
                if m0.live != books or m1.live != books:
                    problems.append(f"books live {m0.live} then {m1.live} of {books}")
                if m1.gaps != m0.gaps or m1.resyncs != m0.resyncs:
                    problems.append(f"{m1.gaps - m0.gaps} gaps, {m1.resyncs - m0.resyncs} resyncs "
                                    "in the window")
                if frames <= 0:
                    problems.append("no frames absorbed in the window")
                if any(s.snapshots != set(symbols) for s in subs):
                    problems.append("a subscriber is missing snapshots")
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        problems.append(f"subscriber failed: {t.exception()!r}")
                if problems:
                    raise RuntimeError(f"rate={rate}: " + "; ".join(problems))
                latencies = sorted(x for s in subs for x in s.latencies)
                if not latencies:
                    raise RuntimeError(f"rate={rate}: no update reached a subscriber during the window")
                elapsed = m1.at - m0.at
                window = Window(
                    rate=rate, frames_per_s=frames / elapsed,
                    cpu_s_per_1k=(cpu1 - cpu0) / frames * 1000,
                    p50_ms=statistics.median(latencies) * 1000,
                    p99_ms=latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
                    loop_lag_p99_ms=lag_ms,
                    latencies=len(latencies), sim_cpu_share=(sim1 - sim0) / elapsed,
                    to_service_ms=percentiles_ms([x for s in subs for x in s.to_service]),
                    to_subscriber_ms=percentiles_ms([x for s in subs for x in s.to_subscriber]),
                    checked={"books_live": books, "subscribers": len(subs),
                             "updates": sum(s.updates for s in subs),
                             "snapshots": sum(len(s.snapshots) for s in subs)})
                if with_http:
                    async with session.get(f"{base}/v1/quotes/{symbols[0]}") as resp:
                        assert resp.status == 200, resp.status
                        body = await resp.read()
                    with open(os.path.join(tmp, "body.json"), "wb") as f:
                        f.write(body)
                    service = _http_load(args, base, symbols)
                    trivial = Child(_role_cmd("trivial", "--body", os.path.join(tmp, "body.json"),
                                              "--max-seconds", str(budget)), os.path.join(tmp, "trivial.log"))
                    try:
                        floor = _http_load(args, f"http://{HOST}:{trivial.info['port']}", symbols[:1])
                    finally:
                        trivial.stop()
                    window.http_service = service["ok"] / service["seconds"]
                    window.http_trivial = floor["ok"] / floor["seconds"]
                    window.http_ratio = window.http_service / window.http_trivial
                    window.checked["http_answers"] = service["ok"] + floor["ok"]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for t in tasks:
                t.cancel()
    window.checked["clean_exit"] = 1
    return window


async def measure_cold_start(args: argparse.Namespace) -> tuple[float, dict[str, float], float, float]:
    """Seconds until every book is live, each venue's bound on the same generated config, the p99
    event-loop lag (ms) of the service over ``--seconds`` once every book is live (the lag with all
    ``--cold-symbols`` symbols on every venue, at ``--cold-rate``), and the simulator's CPU seconds
    per second during the cold start (near 1.0: the simulator, not the service, set the pace)."""
    budget = args.cold_timeout + args.seconds + 2 * START_TIMEOUT
    with simulator_and_service(args, args.cold_symbols, args.cold_rate, budget) as stack:
        sim0 = stack.sim.cpu_seconds()
        async with aiohttp.ClientSession() as session:
            live_at = await wait_live(session, stack.base, stack.books, args.cold_timeout, stack.svc)
            sim_share = (stack.sim.cpu_seconds() - sim0) / max(1e-9, live_at - stack.svc.spawned)
            lag_ms = await lag_window(session, stack.base, args.seconds)
        seconds = live_at - stack.svc.spawned
        # only now: building the feeds for their bounds imports the service and costs this process
        # about 0.3 s of CPU, which it took from the service it was timing when done at the spawn
        bounds = cold_start_bounds(os.path.join(stack.tmp, "aggbook.toml"))
    return seconds, bounds, lag_ms, sim_share


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venues", default=",".join(VENUES))
    parser.add_argument("--symbols", type=int, default=5, help="symbols per venue in the rate scenarios")
    parser.add_argument("--rate", type=float, default=20.0, help="market steps per second per symbol")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per rate scenario")
    parser.add_argument("--subscribers", type=int, default=4, help="WebSocket clients (quotes, all symbols)")
    parser.add_argument("--http-seconds", type=float, default=5.0)
    parser.add_argument("--http-concurrency", type=int, default=16)
    parser.add_argument("--http-max-requests", type=int, default=1_000_000)
    parser.add_argument("--cold-symbols", type=int, default=200)
    parser.add_argument("--cold-rate", type=float, default=1.0, help="market steps per second per symbol")
    parser.add_argument("--cold-timeout", type=float, default=300.0)
    parser.add_argument("--live-timeout", type=float, default=60.0)
    parser.add_argument("--binance-depth", type=int, default=100, help="Binance REST snapshot limit")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--role", choices=("simulator", "trivial", "http-load"), help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--load-symbols", help=argparse.SUPPRESS)
    return parser


@dataclass
class Report:
    paced: Window
    flat: Window
    cold_start_s: float
    cold_bounds: dict[str, float]  # per venue
    cold_symbols: int
    cold_loop_lag_p99_ms: float = math.nan  # with every cold-start book live
    cold_sim_cpu_share: float = math.nan  # simulator CPU seconds per second during the cold start

    @property
    def cold_bound_s(self) -> float:
        """The slowest venue's bound: no cold start can be live sooner."""
        return max(self.cold_bounds.values())


def main(argv: list[str] | None = None) -> Report | None:
    args = build_parser().parse_args(argv)
    if args.role is not None:
        roles = {"simulator": role_simulator, "trivial": role_trivial, "http-load": role_http_load}
        _run_loop(roles[args.role](args))
        return None
    unknown = set(args.venues.split(",")) - set(VENUES)
    if unknown or args.symbols < 1 or args.cold_symbols < 1 or args.subscribers < 1 or args.seconds <= 0:
        build_parser().error(f"unknown venues {sorted(unknown)}" if unknown else "counts must be >= 1")

    async def run() -> Report:
        # each scenario's figures as soon as it is measured: a later scenario failing loses nothing
        paced = await measure_window(args, args.rate, with_http=True)
        print(describe_window(paced), flush=True)
        flat = await measure_window(args, math.inf, with_http=False)
        print(describe_window(flat), flush=True)
        cold, bounds, lag, sim_share = await measure_cold_start(args)
        return Report(paced, flat, cold, bounds, args.cold_symbols, lag, sim_share)

    load_before = os.getloadavg()
    report = asyncio.run(run())
    load_after = os.getloadavg()
    venues = len(args.venues.split(","))
    print(f"{venues} venues x {args.symbols} symbols, {args.subscribers} WebSocket subscribers, "
          f"{args.seconds:.0f}s windows; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    p = report.paced
    print(f"  HTTP /v1/quotes/{{symbol}}: service {p.http_service:,.0f} req/s, trivial aiohttp handler "
          f"{p.http_trivial:,.0f} req/s ({args.http_concurrency} connections, {args.http_seconds:.0f}s each)")
    print(f"  cold start: {report.cold_symbols} symbols x {venues} venues all live in "
          f"{report.cold_start_s:.2f}s after spawning the service (simulator busy "
          f"{report.cold_sim_cpu_share:.0%} of a core meanwhile); bound by each venue's published "
          f"budget (Binance depth {args.binance_depth}): "
          + ", ".join(f"{v} {b:.2f}s" for v, b in report.cold_bounds.items())
          + f"; then loop lag p99 {_fmt(report.cold_loop_lag_p99_ms, 2)} ms over {args.seconds:.0f}s "
          f"at {args.cold_rate:g} steps/s per symbol")
    print(f"service frames_per_s={report.flat.frames_per_s:.0f} cpu_s_per_1k_frames={p.cpu_s_per_1k:.4f} "
          f"p50_ms={p.p50_ms:.2f} p99_ms={p.p99_ms:.2f} http_ratio_vs_trivial={_fmt(p.http_ratio, 3)} "
          f"cold_start_{report.cold_symbols}_s={report.cold_start_s:.2f} "
          f"cold_start_bound_s={report.cold_bound_s:.2f} loop_lag_p99_ms={_fmt(p.loop_lag_p99_ms, 2)} "
          f"service_p50_ms={p.to_subscriber_ms[0]:.2f} service_p99_ms={p.to_subscriber_ms[1]:.2f} "
          f"flat_service_p99_ms={report.flat.to_subscriber_ms[1]:.2f} "
          f"loop_lag_{report.cold_symbols}_p99_ms={_fmt(report.cold_loop_lag_p99_ms, 2)}")
    return report


if __name__ == "__main__":
    main()
