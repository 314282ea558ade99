"""The installed shape: one ``aggbook`` package, and ``aggbook serve`` never loads the simulator.

Both are properties of what a user installs, so they are checked on the real artefacts: the
wheel pip builds from this tree, and a ``serve`` process run outside the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = {"book", "client", "feeds", "proto", "service", "simulator"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # pip builds a local directory in place (build/, *.egg-info): build a copy, not the checkout
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("aggbook-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"aggbook"}, f"site-packages would get {sorted(top - dist_info)}"
    subpackages = {n.split("/")[1] for n in names if n.startswith("aggbook/") and n.count("/") >= 2}
    assert "aggbook/service/metrics/__init__.py" in names  # nested packages are listed too
    assert subpackages == SUBPACKAGES
    assert "aggbook/__init__.py" in names
    assert "aggbook/proto/mexc_push.proto" in names  # package data travels with its package
    for page_file in ("index.html", "app.js", "style.css", "favicon.svg"):  # the web page at /
        assert f"aggbook/service/web/{page_file}" in names
    assert not any(n.startswith(("aggbook/tests/", "aggbook/bench/", "aggbook/deploy/")) for n in names)


def test_the_wheels_entry_point_is_the_packaged_cli(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (entry,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry).decode()
    assert "aggbook = aggbook.service.cli:main" in text


def test_serve_never_imports_the_simulator(tmp_path: Path) -> None:
    """A real ``serve`` run to a clean SIGTERM with ``aggbook.simulator`` made unimportable."""
    config = tmp_path / "config.toml"
    # Nothing listens on port 9 of 127.0.0.1: the feeds retry while the service runs.
    config.write_text(textwrap.dedent("""
        [service]
        port = 0
        symbols = ["BTC-USDT"]
        [venues.binance]
        rest_url = "http://127.0.0.1:9"
        ws_url = "ws://127.0.0.1:9"
        [venues.nhex]
        rest_url = "http://127.0.0.1:9"
        ws_url = "ws://127.0.0.1:9"
    """))
    script = textwrap.dedent(f"""
        import importlib.abc, os, signal, sys, threading

        class NoSimulator(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "aggbook.simulator" or name.startswith("aggbook.simulator."):
                    raise ImportError("serve imported " + name)
                return None

        sys.meta_path.insert(0, NoSimulator())
        from aggbook.service import cli

        threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        code = cli.main(["serve", "--config", {str(config)!r}])
        loaded = sorted(m for m in sys.modules if m.startswith("aggbook."))
        print("LOADED", " ".join(loaded))
        sys.exit(code)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "serve imported" not in proc.stderr
    loaded = proc.stdout.split("LOADED", 1)[1].split()
    assert "aggbook.feeds.binance" in loaded and "aggbook.service.app" in loaded  # it really served
    assert not [m for m in loaded if m.startswith("aggbook.simulator")]
