"""A real ``nats-server`` with JetStream on 127.0.0.1, started as a subprocess for a test.

The port is chosen by the server (``-p -1``) and read from its log, so no test ever picks a fixed
port or races for a free one; a restart reuses the port it had, as a real NATS restart would.
Without the binary the tests skip, unless ``AGGBOOK_REQUIRE_NATS=1`` (set by ``.ci/run``), under
which they fail instead: in CI the scale-out tests must run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "AGGBOOK_REQUIRE_NATS"
_LISTENING = re.compile(r"Listening for client connections on [\d.]+:(\d+)")


def nats_server_binary() -> str:
    path = shutil.which("nats-server") or (
        "/usr/bin/nats-server" if Path("/usr/bin/nats-server").exists() else None
    )
    if path is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"nats-server is not installed and {REQUIRE_ENV}=1: install Debian's nats-server")
        pytest.skip("nats-server is not installed (Debian package nats-server)")
    return path


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = nats_server_binary()
        self.workdir = workdir
        self.port = -1
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        log = self.workdir / f"nats-{self.starts}.log"
        store = self.workdir / "store"
        store.mkdir(exist_ok=True)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while True:
            text = log.read_text(errors="replace")
            match = _LISTENING.search(text)
            if match and "Server is ready" in text:
                self.port = int(match[1])
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{text}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        self.proc = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()
