"""The scale-out as it is deployed: ``aggbook serve --shard`` and ``aggbook gateway`` as processes,
a shard killed with SIGKILL (no goodbye) and started again, a gateway killed, clients watching."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from aggbook.service.demo import DEMO_FEES_BPS, DEMO_SYMBOLS, DEMO_VENUES, demo_exchange
from aggbook.service.nats.settings import shard_of
from aggbook.simulator.exchange import SimulatedExchange
from tests.conftest import wait_for
from tests.service.nats.cluster import DEPTH, SYMBOLS, Watcher, equal_to_truth, eventually
from tests.service.nats.natsserver import NatsServer

pytestmark = pytest.mark.integration
SCRIPT = Path(sys.executable).parent / "aggbook"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_toml(sim: SimulatedExchange, nats_url: str) -> str:
    lines = [
        "[service]",
        "symbols = [" + ", ".join(f'"{s}"' for s in SYMBOLS) + "]",
        'host = "127.0.0.1"',
        "",
        "[nats]",
        f'url = "{nats_url}"',
        f"book_depth = {DEPTH}",
        "book_interval = 0.05",
        "heartbeat_interval = 0.1",
        "",
    ]
    for name in DEMO_VENUES:
        server = sim.venues[name]
        urls = server.urls()
        lines += [
            f"[venues.{name}]",
            f'rest_url = "{urls["rest_url"]}"',
            f'ws_url = "{urls["ws_url"]}"',
            f"fee_bps = {DEMO_FEES_BPS[name]}",
            "symbols = { "
            + ", ".join(f'"{s.canonical}" = "{server.venue_symbol(s)}"' for s in DEMO_SYMBOLS)
            + " }",
            "[venues." + name + ".options]",
            "backoff_base = 0.05",
            "backoff_cap = 0.3",
            "",
        ]
    return "\n".join(lines)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., subprocess.Popen]]:
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict | None = None) -> subprocess.Popen:
        log = (tmp_path / f"proc-{len(procs)}.log").open("wb")  # a file: a pipe nobody reads would fill
        cmd = (
            [str(SCRIPT), *args] if SCRIPT.exists() else [sys.executable, "-m", "aggbook.service.cli", *args]
        )
        procs.append(
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        )
        log.close()
        return procs[-1]

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            await asyncio.to_thread(p.wait)


async def test_a_killed_shard_process_is_excluded_and_recovers_and_clients_stay(
    nats_server: NatsServer, spawn, tmp_path: Path
) -> None:
    sim = demo_exchange(rate=40.0)
    await sim.start()
    try:
        cfg = tmp_path / "shard.toml"
        cfg.write_text(shard_toml(sim, nats_server.url))
        ports = [free_port(), free_port()]
        shards = {
            k: spawn("serve", "--config", str(cfg), "--shard", f"{k}/2", env={"AGGBOOK_PORT": str(ports[k])})
            for k in (0, 1)
        }
        gw_port = free_port()
        gateway = spawn(
            "gateway",
            "--nats",
            nats_server.url,
            "--port",
            str(gw_port),
            "--max-depth",
            str(DEPTH),
            "--stale-after",
            "0.6",
        )
        base = f"http://127.0.0.1:{gw_port}"
        async with aiohttp.ClientSession() as http:

            async def every_venue_live() -> bool:
                try:
                    async with http.get(base + "/v1/status") as resp:
                        report = await resp.json()
                except aiohttp.ClientError:
                    return False
                return report["ready"] and all(
                    len(report["symbols"].get(s, {}).get("live_venues", [])) == len(DEMO_VENUES)
                    for s in SYMBOLS
                )

            await eventually(every_venue_live, timeout=30, what="the gateway ready with every venue live")
            watcher = Watcher(http, base)
            await watcher.start()
            await wait_for(
                lambda: all(watcher.book(s) and watcher.quote(s) for s in SYMBOLS), what="subscribed"
            )
            gone = [s for s in SYMBOLS if shard_of(s, 2) == 1]
            shards[1].send_signal(signal.SIGKILL)
            await asyncio.to_thread(shards[1].wait)
            await wait_for(
                lambda: all(watcher.quote(s)["bid"] is None for s in gone),
                timeout=10,
                what="killed shard excluded",
            )
            shards[1] = spawn(
                "serve", "--config", str(cfg), "--shard", "1/2", env={"AGGBOOK_PORT": str(ports[1])}
            )
            await eventually(every_venue_live, timeout=30, what="the gateway ready again")
            sim.pause()
            await wait_for(lambda: equal_to_truth(watcher, sim), timeout=20, what="books equal the truth")
            assert not watcher.errors and watcher.closed is None
            assert all(watcher.conflated().get(f"quotes:{s}", 0) >= 1 for s in gone)
            await watcher.stop()
        gateway.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway.wait, 15) == 0
        for proc in shards.values():
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        await sim.stop()
