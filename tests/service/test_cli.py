"""The ``aggbook`` command as a user runs it: a real process, real signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import create_feed
from aggbook.service.cli import simulate_ports
from aggbook.simulator.exchange import SimulatedExchange
from aggbook.simulator.market import DEFAULT_SYMBOLS
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "aggbook"
# generous: each test starts a fresh interpreter that imports the package (the demo also starts every
# simulated venue); on a loaded 2-core machine an interpreter took over 20 s to import the tests alone.
# A wait ends as soon as its condition holds.
WAIT = 60.0


def command(*args: str) -> list[str]:
    """The installed console script when there is one, else the module."""
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "aggbook.service.cli", *args]


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []

    async def read_until(self, pattern: str, timeout: float = WAIT, *, stderr: bool = False) -> re.Match:
        stream = self.proc.stderr if stderr else self.proc.stdout

        async def scan() -> re.Match:
            while True:
                line = await stream.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError(f"process ended before {pattern!r}: {self.stdout}")
                text = line.decode()
                self.stdout.append(text)
                m = re.search(pattern, text)
                if m:
                    return m

        return await asyncio.wait_for(scan(), timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stderr(self) -> str:
        return (await self.proc.stderr.read()).decode()  # type: ignore[union-attr]


@pytest.fixture
async def spawn() -> AsyncIterator:
    procs: list[Proc] = []

    async def start(*args: str, env: dict | None = None) -> Proc:
        p = await asyncio.create_subprocess_exec(
            *command(*args),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        procs.append(Proc(p))
        return procs[-1]

    yield start
    for p in procs:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()


async def wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    async def poll() -> None:
        while True:
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), WAIT)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_demo_serves_and_shuts_down_cleanly(spawn, sig: int) -> None:
    proc = await spawn("demo", "--port", "0", "--log-json")
    base = (await proc.read_until(r"aggbook is running on (http://127\.0\.0\.1:\d+)")).group(1)
    await proc.read_until("Ctrl-C to stop")
    banner = "".join(proc.stdout)
    assert f"{base}/v1/quotes" in banner and "ws://127.0.0.1:" in banner and "binance" in banner
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, base)
        async with http.get(f"{base}/v1/quotes/BTC-USDT") as resp:
            assert resp.status == 200 and len((await resp.json())["venues"]) == 5
        control = re.search(r"fault injection and truth: (http://127\.0\.0\.1:\d+/_sim/)", banner)
        assert control is not None
        async with http.get(control.group(1)) as resp:
            assert resp.status == 200
        ws = await http.ws_connect(f"{base}/v1/ws")
        await ws.send_json({"op": "subscribe", "channel": "quotes", "symbols": ["BTC-USDT"]})
        assert (await ws.receive_json(timeout=WAIT))["type"] == "ack"
        assert await proc.stop(sig) == 0
        while True:  # whatever was in flight, then the close frame
            msg = await ws.receive(timeout=WAIT)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    logs = (await proc.stderr()).splitlines()
    events = [orjson.loads(line) for line in logs]  # every line is one JSON object
    assert any(e["msg"] == "shutting down" for e in events)
    assert events[-1]["msg"] == "stopped" and {"ts", "level", "logger"} <= set(events[-1])
    assert any(e.get("loop") == "uvloop" for e in events) or not _has_uvloop()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def test_serve_reads_the_config_and_env_overrides_the_port(spawn, tmp_path: Path) -> None:
    specs = DEFAULT_SYMBOLS[:2]
    async with SimulatedExchange(["binance", "nhex"], symbols=specs) as sim:
        lines = ["[service]", 'symbols = ["BTC-USDT", "ETH-USDT"]', "port = 1", ""]
        for name, server in sim.venues.items():
            urls = server.urls()
            lines += [
                f"[venues.{name}]",
                f'rest_url = "{urls["rest_url"]}"',
                f'ws_url = "{urls["ws_url"]}"',
                "fee_bps = 7.5",
                "",
            ]
        cfg = tmp_path / "aggbook.toml"
        cfg.write_text("\n".join(lines))
        with socket.socket() as s:  # a free port for AGGBOOK_PORT to override the file's port 1
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = await spawn(
            "serve", "--config", str(cfg), env={"AGGBOOK_PORT": str(port), "AGGBOOK_HOST": "127.0.0.1"}
        )
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base)
            async with http.get(f"{base}/v1/quotes/ETH-USDT") as resp:
                venues = (await resp.json())["venues"]
            assert [(v["venue"], v["fee_bps"]) for v in venues] == [("binance", "7.5"), ("nhex", "7.5")]
        assert await proc.stop() == 0
        assert "listening" in await proc.stderr()


async def every_book_live(http: aiohttp.ClientSession, base: str, books: int) -> None:
    async def poll() -> None:
        while True:
            async with http.get(f"{base}/metrics", params={"name[]": "aggbook_book_live"}) as resp:
                text = await resp.text()
            if len(re.findall(r"^aggbook_book_live\{.*\} 1\.0$", text, re.M)) == books:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), WAIT)


@pytest.mark.parametrize("gc_freeze", [True, False])
async def test_serve_freezes_long_lived_objects_once_every_book_is_live(
    spawn, tmp_path: Path, gc_freeze: bool
) -> None:
    async with SimulatedExchange(["binance", "nhex"], symbols=DEFAULT_SYMBOLS[:2]) as sim:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        lines = ["[service]", 'symbols = ["BTC-USDT", "ETH-USDT"]', f"port = {port}",
                 f"gc_freeze = {str(gc_freeze).lower()}", ""]
        for name, server in sim.venues.items():
            urls = server.urls()
            lines += [f"[venues.{name}]", f'rest_url = "{urls["rest_url"]}"',
                      f'ws_url = "{urls["ws_url"]}"', ""]
        cfg = tmp_path / "aggbook.toml"
        cfg.write_text("\n".join(lines))
        proc = await spawn("serve", "--config", str(cfg), "--log-json")
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, base)
            await every_book_live(http, base, books=4)
            if gc_freeze:
                await proc.read_until(r'"stage":\s*"settled"', stderr=True)
            async with http.get(f"{base}/metrics", params={"name[]": "aggbook_gc_frozen_objects"}) as resp:
                found = re.search(r"^aggbook_gc_frozen_objects (\S+)$", await resp.text(), re.M)
                frozen = float(found.group(1))  # type: ignore[union-attr]
        assert await proc.stop() == 0
    logged = [orjson.loads(line) for line in proc.stdout + (await proc.stderr()).splitlines()
              if line.startswith("{")]
    stages = [e["stage"] for e in logged if e["msg"] == "long-lived objects frozen"]
    if gc_freeze:
        assert stages == ["started", "settled"] and frozen > 10_000  # modules, functions, metrics, books
    else:
        assert stages == [] and frozen == 0


async def test_start_failure_exits_1(spawn) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = await spawn("demo", "--port", str(busy.getsockname()[1]))
        assert await asyncio.wait_for(proc.proc.wait(), WAIT) == 1
        assert "start failed" in await proc.stderr()


async def test_simulate_prints_venue_urls(spawn) -> None:
    proc = await spawn("simulate", "--venues", "binance,btse", "--symbols", "2", "--fault-rate", "0.01",
                       "--fault-kinds", "gap,malformed")
    rest = (await proc.read_until(r"binance\s+rest_url = (http://\S+)")).group(1)
    await proc.read_until("Ctrl-C to stop")
    out = "".join(proc.stdout)
    control = re.findall(r"control\s+= (http://\S+/_sim/)", out)
    assert control[0] == f"{rest}/_sim/" and len(control) == 2
    async with aiohttp.ClientSession() as http, http.get(control[0]) as resp:
        assert resp.status == 200
    assert re.search(r"btse\s+rest_url = http://127\.0\.0\.1:\d+/spot", out)
    assert re.search(r"ws_url\s+= ws://127\.0\.0\.1:\d+/ws/oss/spot", out)
    assert "[venues.btse]" in out and '"ETH-USDT" = "ETH-USDT"' in out
    async with aiohttp.ClientSession() as http, http.get(f"{rest}/api/v3/depth?symbol=BTCUSDT") as resp:
        assert resp.status == 200 and (await resp.json())["bids"]
    assert await proc.stop() == 0


async def test_simulate_rejects_unknown_fault_kinds(spawn) -> None:
    proc = await spawn("simulate", "--fault-rate", "0.1", "--fault-kinds", "gap,meteor")
    assert await asyncio.wait_for(proc.proc.wait(), WAIT) == 2
    assert "unknown fault kind(s): meteor" in await proc.stderr()


def test_simulate_ports_follow_the_documented_order() -> None:
    known = ["nhex", "binance", "mexc", "binance-futures", "btse", "bitv"]  # registry order does not matter
    assert simulate_ports(["mexc", "binance"], known, 9000, []) == {"mexc": 9004, "binance": 9000}
    assert simulate_ports(["btse", "nhex"], known, 9000, ["nhex=9200"]) == {"btse": 9003, "nhex": 9200}
    assert simulate_ports(["btse"], known, None, ["btse=9300"]) == {"btse": 9300}
    assert simulate_ports(["btse"], known, None, []) == {}
    for base, pairs, error in (
        (None, ["btse"], "expected venue=PORT"),
        (None, ["btse=x"], "expected venue=PORT"),
        (None, ["mexc=9000"], "'mexc' is not a started venue"),
        (None, ["btse=70000"], "a port is 0 to 65535"),
        (9000, ["btse=9000"], "port 9000 given to both"),
        (65533, [], "room for 6 venues"),
        (0, [], "--base-port 0"),
    ):
        with pytest.raises(ValueError, match=error):
            simulate_ports(["binance", "btse"], known, base, pairs)


def _free_ports(count: int) -> int:
    """A base port whose ``count`` consecutive ports are free right now (bound and released)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no run of free ports")


async def test_simulate_base_port_places_each_venue(spawn) -> None:
    base = _free_ports(7)
    proc = await spawn("simulate", "--venues", "btse,binance", "--symbols", "1", "--base-port", str(base))
    await proc.read_until("Ctrl-C to stop")
    out = "".join(proc.stdout)
    assert f"binance          rest_url = http://127.0.0.1:{base}\n" in out
    assert f"btse             rest_url = http://127.0.0.1:{base + 4}/spot" in out  # after binance-coinm
    assert await proc.stop() == 0
    proc = await spawn("simulate", "--venues", "btse", "--port", "mexc=1")
    assert await asyncio.wait_for(proc.proc.wait(), WAIT) == 2
    assert "'mexc' is not a started venue" in await proc.stderr()


async def test_simulated_venue_restarts_at_the_same_url_and_a_feed_reconnects(spawn) -> None:
    """Start a venue on a fixed port, stop it under a connected feed, start it again: the feed is
    live again at the same URL, after a reconnect."""
    port = _free_ports(1)
    args = ("simulate", "--venues", "binance", "--symbols", "1", "--port", f"binance={port}")
    proc = await spawn(*args)
    rest = (await proc.read_until(r"binance\s+rest_url = (http://\S+)")).group(1)
    ws = (await proc.read_until(r"ws_url\s+= (ws://\S+)")).group(1)
    assert rest == f"http://127.0.0.1:{port}"
    feed = create_feed(VenueConfig(name="binance", kind="binance", symbols={"BTC-USDT": "BTCUSDT"},
                                   rest_url=rest, ws_url=ws,
                                   options={"backoff_base": 0.05, "backoff_cap": 0.3}))
    live = lambda: any(s.live for s in feed.current_syncs().values())  # noqa: E731
    await feed.start()
    try:
        await wait_for(live, WAIT, "the feed live on the first run")
        assert feed.reconnects == 0
        assert await proc.stop() == 0
        await wait_for(lambda: not live(), WAIT, "the feed noticing the venue gone")
        again = await spawn(*args)
        await again.read_until("Ctrl-C to stop")
        assert f"rest_url = {rest}\n" in "".join(again.stdout)
        await wait_for(lambda: live() and feed.reconnects >= 1, WAIT, "the feed live again after a reconnect")
        assert await again.stop() == 0
    finally:
        await feed.stop()


@pytest.mark.parametrize(("version", "uses_uvloop"), [("0.22.1", False), ("0.19.0", False), ("0.23.0", True),
                                                      ("0.23.1.dev0", True), ("1.0.0", True)])
def test_uvloop_is_used_only_where_a_cancelled_connect_is_safe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: str, uses_uvloop: bool,
) -> None:
    import uvloop

    from aggbook.service import cli

    monkeypatch.setattr(uvloop, "__version__", version)
    with caplog.at_level(logging.WARNING, logger="aggbook.cli"):
        factory = cli._loop_factory()
    assert (factory is uvloop.new_event_loop) is uses_uvloop
    assert (factory is None) is not uses_uvloop
    assert any("asyncio's event loop" in r.getMessage() for r in caplog.records) is not uses_uvloop
