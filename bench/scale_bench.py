"""Scale-out over NATS on this machine: one process against two shards and a gateway.

Every part is its own process on 127.0.0.1: a ``nats-server -js``, the simulated venues (the
``simulator`` role of ``service_bench.py``), ``aggbook serve`` processes, an ``aggbook gateway`` and
the WebSocket subscribers of scenarios 1 and 2 (``--subscriber-procs`` processes of this script,
each with its share of the clients: the load generator must not be what limits delivery).  Three
scenarios, each with fresh processes:

1. **one process** (``rate=inf``, the simulator as fast as it can): a single ``aggbook serve`` with
   ``--symbols`` symbols on ``--venues``, ``--subscribers`` WebSocket clients on it, each subscribed
   to the quotes of every symbol and the book of every symbol at depth 10.  Over a window of
   ``--seconds``: frames absorbed (delta of ``aggbook_feed_messages_total``) and WebSocket messages
   delivered to the clients.
2. **two shards and a gateway** (same load): ``serve --shard 0/2`` and ``serve --shard 1/2``
   publishing to NATS, the same clients on an ``aggbook gateway``.  Frames are summed over both
   shards; messages are those the gateway delivered.
3. **subscribers per gateway** (the simulator at ``--latency-rate`` steps per second per symbol):
   two shards and a gateway; subscribers (quotes of every symbol, spread over
   ``--subscriber-procs`` processes that report latency histograms of 0.1 ms buckets) are added in
   steps (``--latency-steps``) and, at each step, the delivery latency of every update is measured
   over ``--latency-seconds`` twice: *end to end*, receive wall clock minus the update's ``recv_ts``
   (when the owning shard applied the venue frame), which spans the shard's publisher, NATS, the
   gateway and its WebSocket queue; and *the gateway's own part*, receive wall clock minus the
   update's ``ts`` (when the gateway made the message, once for all its subscribers), which spans
   the fan-out to every subscriber, their sockets and their wake-up.  The figure is the largest
   count whose gateway p99 stays within 10 ms, the capacity of a gateway; the end-to-end figure is
   printed next to it.  The upstream part (shard, NATS, the gateway reading NATS) does not grow with
   the subscribers, but it crosses three processes, and on a machine with fewer cores than busy
   processes each wake-up may wait for a core: there it alone can pass 10 ms at p99 with a single
   subscriber, which said nothing about how many subscribers a gateway serves.

**What bounds a window.**  For every process the window records the CPU it got (*cores*, CPU seconds
per second, from ``/proc/<pid>/task/*/schedstat``) and its *demand*: the time it was on a CPU or
runnable and waiting for one, per second.  A demand near 1.0 means the process always had work: it
was saturated and set the pace; the process with the highest demand is printed as the busiest.
On a machine with fewer cores than processes (or shared with other work) every process gets a
slice of the cores, so raw frames/s and messages/s measure the scheduler as much as aggbook.  The
ratios are therefore taken **per core**: each aggbook process's rate over the CPU it used, i.e.
what it would do with a core of its own, which is what the scale-out buys on a machine with a core
per shard and per gateway:

* ``shard_ratio``: frames/s two shards would absorb with a core each over the single process's
  frames per CPU second.  The simulator's rate is the same for every book, so the shard with the
  most books per unit of capacity sets the pace (``books * min_k(capacity_k / books_k)``): an uneven
  split of the symbols caps it (the 6 default symbols split 4+2, which caps it at 1.5; the default
  4 split 2+2);
* ``gateway_fanout_ratio``: WebSocket messages per CPU second of the gateway over those of the
  single process (which also runs the feeds).

A process that was not saturated (demand well below 1.0) did its work in smaller batches than it
would at full load, so its per-core figure is a lower bound of its capacity.  The raw ratios are
printed too.

Self-checks (the run fails otherwise): every book live on every shard before a window, every
subscriber got a snapshot of every subscription and a gap-free ``seq``, every update carried
``recv_ts``, and every aggbook process exits 0 on SIGTERM.

The last line is machine-readable:
``scale shard_ratio=<r> gateway_fanout_ratio=<r> gateway_subscribers_p99_10ms=<n>
end_to_end_subscribers_p99_10ms=<n>``, the two per-core ratios above and the figures of scenario 3
(0 when even the first step passes 10 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import service_bench as sb  # noqa: E402 - the sibling script: its roles, child processes, scrapes

HOST = sb.HOST
BOOK_DEPTH = 10


# ---------------------------------------------------------------------- processes
def nats_server_binary() -> str:
    path = shutil.which("nats-server") or "/usr/bin/nats-server"
    if not os.path.exists(path):
        raise SystemExit("nats-server not found: install the Debian package nats-server")
    return path


class NatsProcess:
    """``nats-server -js`` on a port of its own choosing, read from its log."""

    def __init__(self, tmp: str) -> None:
        self.log = os.path.join(tmp, "nats.log")
        self.child = sb.Child(
            [nats_server_binary(), "-js", "-a", HOST, "-p", "-1", "-sd", os.path.join(tmp, "nats")],
            self.log,
            announce=False,
        )
        deadline = time.monotonic() + sb.START_TIMEOUT
        while True:
            with open(self.log) as f:
                text = f.read()
            match = re.search(r"client connections on [\d.]+:(\d+)", text)
            if match and "Server is ready" in text:
                self.url = f"nats://{HOST}:{match[1]}"
                return
            if self.child.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{text[-4000:]}")
            time.sleep(0.02)


def write_shard_config(path: str, venues: dict[str, Any], port: int, nats_url: str | None) -> list[str]:
    symbols = sb.write_config(path, venues, port, binance_depth=100)
    if nats_url is not None:
        with open(path, "a") as f:
            f.write(
                f'\n[nats]\nurl = "{nats_url}"\nbook_depth = {BOOK_DEPTH}\nbook_interval = 0.1\n'
                "heartbeat_interval = 0.5\n"
            )
    return symbols


@dataclass
class Topology:
    sim: sb.Child
    shards: list[tuple[sb.Child, str, int]]  # (process, base URL, books it owns)
    gateway: tuple[sb.Child, str] | None
    symbols: list[str]

    @property
    def front(self) -> str:
        """Where the clients connect: the gateway, or the single process."""
        return self.gateway[1] if self.gateway is not None else self.shards[0][1]


def _shard_books(symbols: list[str], venues: int, index: int, count: int) -> int:
    from aggbook.service.nats.settings import shard_of

    return sum(venues for s in symbols if shard_of(s, count) == index)


@contextlib.asynccontextmanager
async def topology(
    args: argparse.Namespace, tmp: str, shards: int, rate: float, nats_url: str | None
) -> AsyncIterator[Topology]:
    budget = 600.0
    sim = sb.Child(
        sb._role_cmd(
            "simulator",
            "--venues",
            args.venues,
            "--symbols",
            str(args.symbols),
            "--rate",
            str(rate),
            "--seed",
            str(args.seed),
            "--max-seconds",
            str(budget),
        ),
        os.path.join(tmp, f"simulator-{shards}.log"),
    )
    procs: list[sb.Child] = []
    try:
        venues = sim.info["venues"]
        started: list[tuple[sb.Child, str, int]] = []
        for k in range(shards):
            port = sb._free_port()
            config = os.path.join(tmp, f"shard-{shards}-{k}.toml")
            symbols = write_shard_config(config, venues, port, nats_url)
            cmd = [*sb._aggbook_cmd(), "serve", "--config", config]
            if shards > 1:
                cmd += ["--shard", f"{k}/{shards}"]
            child = sb.Child(cmd, os.path.join(tmp, f"shard-{shards}-{k}.log"), announce=False)
            procs.append(child)
            books = (
                _shard_books(symbols, len(venues), k, shards) if shards > 1 else len(symbols) * len(venues)
            )
            started.append((child, f"http://{HOST}:{port}", books))
        gateway = None
        if nats_url is not None and shards > 1:
            port = sb._free_port()
            child = sb.Child(
                [
                    *sb._aggbook_cmd(),
                    "gateway",
                    "--nats",
                    nats_url,
                    "--port",
                    str(port),
                    "--max-depth",
                    str(BOOK_DEPTH),
                    "--log-level",
                    "warning",
                ],
                os.path.join(tmp, f"gateway-{shards}.log"),
                announce=False,
            )
            procs.append(child)
            gateway = (child, f"http://{HOST}:{port}")
        async with aiohttp.ClientSession() as session:
            for child, base, books in started:
                await sb.wait_live(session, base, books, args.live_timeout, child)
            if gateway is not None:
                await wait_ready(session, gateway[1], gateway[0], args.live_timeout)
        yield Topology(sim, started, gateway, symbols)
    finally:
        codes = [(p.proc.args, p.stop()) for p in reversed(procs)]
        sim.stop()
    bad = [(cmd, code) for cmd, code in codes if code != 0]
    if bad:
        raise RuntimeError(f"aggbook processes did not exit 0 on SIGTERM: {bad}")


async def wait_ready(session: aiohttp.ClientSession, base: str, proc: sb.Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"gateway exited {proc.proc.returncode}:\n{proc.stderr_tail()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the gateway at {base} was not ready within {timeout:.0f}s")


# ---------------------------------------------------------------------- subscribers
@dataclass
class Client:
    """One ``/v1/ws`` client: quotes of every symbol (and books, if asked)."""

    symbols: list[str]
    books: bool
    subs: int = 0
    snapshots: set[str] = field(default_factory=set)
    seqs: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    latencies: list[float] = field(default_factory=list)  # shard applied the frame -> received
    gateway_latencies: list[float] = field(default_factory=list)  # the gateway made the message -> received
    recording: bool = False
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.subs = len(self.symbols) * (2 if self.books else 1)

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
        self.messages += 1
        if kind == "snapshot":
            self.snapshots.add(sub)
            return
        recv_ts = msg.get("recv_ts")
        if recv_ts is None:
            self.problems.append(f"{sub}: update without recv_ts")
        elif self.recording and msg["channel"] == "quotes":
            self.latencies.append(received - recv_ts)
            self.gateway_latencies.append(received - msg["ts"])

    async def run(self, session: aiohttp.ClientSession, base: str, ready: asyncio.Event) -> None:
        async with session.ws_connect(f"{base.replace('http', 'ws', 1)}/v1/ws", max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"op": "subscribe", "channel": "quotes", "symbols": self.symbols}))
            if self.books:
                for s in self.symbols:
                    await ws.send_str(
                        json.dumps({"op": "subscribe", "channel": "book", "symbol": s, "depth": BOOK_DEPTH})
                    )
            async for raw in ws:
                if raw.type is not aiohttp.WSMsgType.TEXT:
                    break
                self.on_message(orjson.loads(raw.data), time.time())
                if len(self.snapshots) == self.subs:
                    ready.set()


async def start_clients(
    session: aiohttp.ClientSession,
    base: str,
    symbols: list[str],
    n: int,
    books: bool,
    tasks: list[asyncio.Task],
) -> list[Client]:
    clients = []
    for _ in range(n):
        client, ready = Client(symbols, books), asyncio.Event()
        tasks.append(asyncio.create_task(client.run(session, base, ready)))
        clients.append(client)
        await asyncio.wait_for(ready.wait(), sb.START_TIMEOUT)
    return clients


HISTOGRAM_STEP_MS = 0.1  # resolution of the latency histograms subscriber processes report


def histogram(latencies: list[float]) -> dict[str, int]:
    """Latencies (seconds) as counts per bucket of ``HISTOGRAM_STEP_MS`` (keyed by bucket index, as
    JSON keys are): what a subscriber process reports, summed over processes by :func:`merged_p99_ms`."""
    counts: dict[str, int] = {}
    for x in latencies:
        key = str(max(0, int(x * 1000 / HISTOGRAM_STEP_MS)))
        counts[key] = counts.get(key, 0) + 1
    return counts


def merged_p99_ms(histograms: list[dict[str, int]]) -> tuple[float, float, int]:
    """(p99, p50, count) over several processes' histograms, in ms (a bucket's upper edge)."""
    total: dict[int, int] = {}
    for h in histograms:
        for key, n in h.items():
            total[int(key)] = total.get(int(key), 0) + n
    count = sum(total.values())
    if not count:
        return math.nan, math.nan, 0
    out = []
    for q in (0.99, 0.5):
        rank, seen = min(count, int(q * count) + 1), 0
        for bucket in sorted(total):
            seen += total[bucket]
            if seen >= rank:
                out.append((bucket + 1) * HISTOGRAM_STEP_MS)
                break
    return out[0], out[1], count


async def role_subscribers(args: argparse.Namespace) -> None:
    """A subscriber process: ``--clients`` clients of ``--base``, then one JSON line per stdin line:
    messages received so far and the self-checks' problems.  Several of these carry the load of
    scenarios 1 and 2, so the clients are never what limits the delivery measured.

    Scenario 3 also sends ``add <n>`` (n more clients), ``record`` (start recording latencies
    afresh) and ``report`` (stop, and answer with the latency histograms as well)."""
    symbols = args.symbol_list.split(",")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: list[asyncio.Task] = []
    async with aiohttp.ClientSession() as session:
        clients = await start_clients(session, args.base, symbols, args.clients, args.books, tasks)
        print(json.dumps({"ready": True}), flush=True)
        while line := (await reader.readline()).decode().split():
            answer: dict[str, Any] = {"messages": sum(c.messages for c in clients),
                                      "problems": [p for c in clients for p in c.problems][:5]}
            if line[0] == "add":
                clients += await start_clients(session, args.base, symbols, int(line[1]), args.books, tasks)
            elif line[0] == "record":
                for c in clients:
                    c.latencies.clear()
                    c.gateway_latencies.clear()
                    c.recording = True
            elif line[0] == "report":
                for c in clients:
                    c.recording = False
                answer["latency"] = histogram([x for c in clients for x in c.latencies])
                answer["gateway"] = histogram([x for c in clients for x in c.gateway_latencies])
            print(json.dumps(answer), flush=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SubscriberProcess:
    """A :func:`role_subscribers` child, asked for its count at the start and end of a window."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, base: str, symbols: list[str], clients: int, books: bool) -> SubscriberProcess:
        cmd = [sys.executable, os.path.abspath(__file__), "--role", "subscribers", "--base", base,
               "--symbol-list", ",".join(symbols), "--clients", str(clients)]
        proc = await asyncio.create_subprocess_exec(
            *cmd, *(["--books"] if books else []), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self = cls(proc)
        line = await self._line()
        if not line.get("ready"):
            raise RuntimeError(f"subscriber process did not start: {line}")
        return self

    async def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), sb.START_TIMEOUT)
        if not raw:
            raise RuntimeError(f"subscriber process exited {await self.proc.wait()}")
        return dict(json.loads(raw))

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        answer = await self._line()
        if answer["problems"]:
            raise RuntimeError(f"subscriber self-checks failed: {answer['problems']}")
        return answer

    async def count(self) -> int:
        return int((await self.ask("count"))["messages"])

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), sb.STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# ---------------------------------------------------------------------- scenarios
def sched_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of every thread of ``pid`` so far.

    From ``/proc/<pid>/task/*/schedstat``.  Their sum over a window, per second of the window, is the
    process's *demand*: 1.0 means it was runnable all the time, i.e. it had always work to do and was
    bounded by the CPU it got, not by its input.  On a shared machine the CPU a process gets may be
    far below its demand; the demand still tells who was saturated.
    """
    run = wait = 0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError), open(
                f"/proc/{pid}/task/{tid}/schedstat"
            ) as f:
                fields = f.read().split()
            run += int(fields[0])
            wait += int(fields[1])
    return run / 1e9, wait / 1e9


@dataclass
class Load:
    """One process over a window, per second of the window."""

    cores: float  # CPU seconds it got
    demand: float  # seconds it was runnable (on a CPU or waiting for one): 1.0 = saturated


@dataclass
class Throughput:
    shards: int
    frames_per_s: float  # summed over the shards
    ws_messages_per_s: float  # delivered by the front (the single process, or the gateway)
    shard_frames_per_s: list[float]
    shard_books: list[int]
    loads: dict[str, Load]  # simulator, shard<K>, gateway, nats, subscribers

    def per_core(self, name: str, rate: float) -> float:
        """``rate`` per CPU second of process ``name``: what it would do with a core of its own."""
        cores = self.loads[name].cores
        return rate / cores if cores > 0 else math.nan

    @property
    def frames_capacity(self) -> float:
        """Frames/s the shards would absorb with a core each, at the simulator's even rate per book.

        Every book gets the same rate, so the shard with the most books per unit of capacity sets the
        pace for all: ``books * min_k(capacity_k / books_k)``; with an uneven split of the symbols
        the total stays below the sum of the capacities."""
        caps = [self.per_core(f"shard{k}", f) for k, f in enumerate(self.shard_frames_per_s)]
        return sum(self.shard_books) * min(c / b for c, b in zip(caps, self.shard_books, strict=True))

    @property
    def front(self) -> str:
        return "gateway" if "gateway" in self.loads else "shard0"

    @property
    def ws_capacity(self) -> float:
        """WebSocket messages/s the front would deliver with a core of its own."""
        return self.per_core(self.front, self.ws_messages_per_s)

    @property
    def busiest(self) -> str:
        return max(self.loads, key=lambda n: self.loads[n].demand)

    def describe(self) -> str:
        loads = " ".join(f"{n}={ld.cores:.2f}/{ld.demand:.2f}" for n, ld in self.loads.items())
        return f"cores/demand {loads}; busiest {self.busiest}"


async def measure_throughput(
    args: argparse.Namespace, tmp: str, shards: int, nats: NatsProcess | None
) -> Throughput:
    nats_url = None if nats is None else nats.url
    async with topology(args, tmp, shards, math.inf, nats_url) as topo, aiohttp.ClientSession() as session:
        pids = {"simulator": topo.sim.proc.pid}
        pids |= {f"shard{k}": p.proc.pid for k, (p, _, _) in enumerate(topo.shards)}
        if topo.gateway is not None:
            pids["gateway"] = topo.gateway[0].proc.pid
        if nats is not None:
            pids["nats"] = nats.child.proc.pid
        subs: list[SubscriberProcess] = []
        try:
            n = args.subscriber_procs
            for k in range(n):
                share = args.subscribers // n + (1 if k < args.subscribers % n else 0)
                if share:
                    subs.append(await SubscriberProcess.start(topo.front, topo.symbols, share, True))
            pids |= {f"subscribers{k}": p.proc.pid for k, p in enumerate(subs)}
            await asyncio.sleep(1.0)  # past the snapshots: the window sees the steady state
            # the clock is read outside the schedstat reads, so that the interval the CPU figures are
            # divided by is never shorter than the one they were taken over (a demand stays <= 1.0
            # however long this process waits for a CPU between the two)
            s0 = time.monotonic()
            sched0 = {n: sched_seconds(pid) for n, pid in pids.items()}
            before = [await sb.scrape(session, base) for _, base, _ in topo.shards]
            sent_before = sum([await p.count() for p in subs])
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            sent = sum([await p.count() for p in subs]) - sent_before
            after = [await sb.scrape(session, base) for _, base, _ in topo.shards]
            elapsed = time.monotonic() - t0
            sched1 = {n: sched_seconds(pid) for n, pid in pids.items()}
            sched_elapsed = time.monotonic() - s0
        finally:
            await asyncio.gather(*(p.stop() for p in subs), return_exceptions=True)
        books = [b for _, _, b in topo.shards]
    loads = {
        n: Load(
            (sched1[n][0] - sched0[n][0]) / sched_elapsed,
            (sched1[n][0] + sched1[n][1] - sched0[n][0] - sched0[n][1]) / sched_elapsed,
        )
        for n in pids
    }
    per_shard = [(a.frames - b.frames) / elapsed for a, b in zip(after, before, strict=True)]
    return Throughput(shards, sum(per_shard), sent / elapsed, per_shard, books, loads)


@dataclass
class Step:
    subscribers: int
    p99_ms: float  # end to end: the owning shard applying the frame -> the subscriber receiving it
    updates: int
    gateway_p99_ms: float = math.nan  # the gateway's own part: it making the message -> received


async def measure_gateway_subscribers(args: argparse.Namespace, tmp: str, nats_url: str) -> list[Step]:
    steps = [int(n) for n in args.latency_steps.split(",")]
    results: list[Step] = []
    async with topology(args, tmp, 2, args.latency_rate, nats_url) as topo:
        assert topo.gateway is not None
        # the clients are spread over processes, as in scenarios 1 and 2: a single process receiving
        # every update of every client would add its own queue to the latency it measures
        procs: list[SubscriberProcess] = []
        try:
            procs = [await SubscriberProcess.start(topo.gateway[1], topo.symbols, 0, False)
                     for _ in range(max(1, args.subscriber_procs))]
            counts = [0] * len(procs)
            for n in steps:
                added = [0] * len(procs)
                for _ in range(n - sum(counts)):  # each new client to the process with the fewest
                    k = counts.index(min(counts))
                    counts[k] += 1
                    added[k] += 1
                await asyncio.gather(*(p.ask(f"add {a}") for p, a in zip(procs, added, strict=True) if a))
                await asyncio.sleep(0.5)  # the new clients' snapshots are out of the way
                await asyncio.gather(*(p.ask("record") for p in procs))
                await asyncio.sleep(args.latency_seconds)
                reports = await asyncio.gather(*(p.ask("report") for p in procs))
                p99, p50, updates = merged_p99_ms([r["latency"] for r in reports])
                gateway_p99, gateway_p50, _ = merged_p99_ms([r["gateway"] for r in reports])
                step = Step(n, p99, updates, gateway_p99)
                results.append(step)
                print(
                    f"  gateway with {n} subscribers ({len(procs)} processes): end to end p99 {p99:.1f} ms, "
                    f"p50 {p50:.1f} ms; the gateway's own part p99 {gateway_p99:.1f} ms, p50 "
                    f"{gateway_p50:.1f} ms; over {updates} updates",
                    flush=True,
                )
                if not step.gateway_p99_ms <= 10.0:
                    break
        finally:
            await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
    return results


# ---------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venues", default="binance,mexc,btse")
    # 4: the default symbols split 2+2 over two shards (6 split 4+2, which caps two shards at 1.5x)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window of scenarios 1 and 2")
    parser.add_argument("--subscribers", type=int, default=48, help="clients in scenarios 1 and 2")
    parser.add_argument("--latency-rate", type=float, default=20.0, help="steps/s per symbol in scenario 3")
    parser.add_argument("--latency-steps", default="1,2,5,10,25,50,100,200,400,800")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--live-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--subscriber-procs", type=int, default=3,
                        help="processes the clients of scenarios 1 and 2 are spread over")
    parser.add_argument("--no-latency", action="store_true", help="scenarios 1 and 2 only")
    parser.add_argument("--role", choices=("subscribers",), help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--symbol-list", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--books", action="store_true", help=argparse.SUPPRESS)
    return parser


@dataclass
class Report:
    one: Throughput
    two: Throughput
    steps: list[Step]
    subscribers_p99_10ms: int  # by the gateway's own delivery latency
    end_to_end_subscribers_p99_10ms: int  # by the latency from the owning shard


def main(argv: list[str] | None = None) -> Report | None:
    args = build_parser().parse_args(argv)
    if args.role == "subscribers":
        sb._run_loop(role_subscribers(args))
        return None

    async def run() -> Report:
        with tempfile.TemporaryDirectory(prefix="scale_bench") as tmp:
            nats = NatsProcess(tmp)
            try:
                one = await measure_throughput(args, tmp, 1, None)
                print(
                    f"  1 process: {one.frames_per_s:,.0f} frames/s absorbed, "
                    f"{one.ws_messages_per_s:,.0f} WebSocket messages/s delivered; per core of it "
                    f"{one.frames_capacity:,.0f} frames/s, {one.ws_capacity:,.0f} messages/s; "
                    f"{one.describe()}",
                    flush=True,
                )
                two = await measure_throughput(args, tmp, 2, nats)
                print(
                    f"  2 shards ({'+'.join(str(b // len(args.venues.split(','))) for b in two.shard_books)}"
                    f" symbols) + gateway: {two.frames_per_s:,.0f} frames/s absorbed, "
                    f"{two.ws_messages_per_s:,.0f} WebSocket messages/s delivered by the gateway; per core "
                    f"of each {two.frames_capacity:,.0f} frames/s, {two.ws_capacity:,.0f} messages/s; "
                    f"{two.describe()}",
                    flush=True,
                )
                steps = [] if args.no_latency else await measure_gateway_subscribers(args, tmp, nats.url)
            finally:
                nats.child.stop()
        passing = [s.subscribers for s in steps if s.gateway_p99_ms <= 10.0]
        end_to_end = [s.subscribers for s in steps if s.p99_ms <= 10.0]
        return Report(one, two, steps, max(passing, default=0), max(end_to_end, default=0))

    load_before = os.getloadavg()
    try:
        import uvloop

        report = uvloop.run(run())
    except ImportError:
        report = asyncio.run(run())
    load_after = os.getloadavg()
    one, two = report.one, report.two
    print(
        f"{len(args.venues.split(','))} venues x {args.symbols} symbols, {args.subscribers} subscribers "
        f"in {args.subscriber_procs} processes "
        f"(quotes and depth-{BOOK_DEPTH} books of every symbol), {args.seconds:.0f}s windows, "
        f"{os.cpu_count()} cores; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"raw (as run here, every process sharing the cores): frames/s ratio "
        f"{two.frames_per_s / one.frames_per_s:.3f}, messages/s ratio "
        f"{two.ws_messages_per_s / one.ws_messages_per_s:.3f}; busiest: {one.busiest} (1 process), "
        f"{two.busiest} (2 shards)"
    )
    shard_ratio = two.frames_capacity / one.frames_capacity
    fanout_ratio = two.ws_capacity / one.ws_capacity
    print(
        f"scale shard_ratio={shard_ratio:.3f} gateway_fanout_ratio={fanout_ratio:.3f} "
        f"gateway_subscribers_p99_10ms={report.subscribers_p99_10ms} "
        f"end_to_end_subscribers_p99_10ms={report.end_to_end_subscribers_p99_10ms}"
    )
    return report


if __name__ == "__main__":
    main()
