"""The shipped Prometheus config, alert rules and Grafana dashboard, checked against a real Prometheus.

A dashboard panel or an alert that names a metric the service does not export, or has a PromQL
mistake, fails silently in production: an empty panel, an alert that can never fire.  So these
tests run ``promtool`` on the shipped files, then start ``aggbook demo`` and a real Prometheus on
loopback whose scrape config is the shipped ``deploy/prometheus/prometheus.yml`` with only the
target (and the intervals, to 1 s) rewritten, wait until it has scraped the demo a few times, and
evaluate every PromQL expression of the dashboard and of the alert rules through the HTTP API.

What "returns data" means here:

* Dashboard expressions are evaluated as written, with Grafana's variables replaced by what the
  dashboard's "All" selection and a one-hour view would give.  Each must return at least one
  series, and at least one of them must have a finite value (a ``histogram_quantile`` over a
  histogram nothing was observed into gives NaN, which would draw nothing).
* Alert expressions are conditions that are false on a healthy demo, so an empty result proves
  nothing.  Each is evaluated as written (it must be valid), then split into its *signals*: the
  operands of a top-level ``and``/``or``/``unless``, each with its top-level comparison against a
  number literal removed (``max by (venue) (aggbook_book_live) == 0`` -> ``max by (venue)
  (aggbook_book_live)``).  Every signal must return data as above, and every alert must compare
  something against a threshold, so no alert escapes the check.  Prometheus itself must also have
  loaded every rule of the shipped file and evaluated it without error.
* Dashboard expressions that use a venue or symbol variable are evaluated a second time with one
  venue and one symbol selected (a pair the demo has live), as a user picking them would: each
  must still return data, and only series of that venue and symbol.  With "All" a misspelt label
  in ``{symbl=~"$symbol"}`` matches everything (``.*`` matches the empty value); with a
  selection it matches nothing.
* Every ``{{label}}`` of a panel's legend must be a label of every series the query returns, and
  every ``$labels.x`` of an alert's labels and annotations a label of what its condition returns,
  so a legend or an alert message cannot come out blank.
* Independently of results (an ``or vector(0)`` would hide a missing metric), every metric name in
  every expression must be one the demo exports (or ``up``), and every metric family the demo
  exports must appear on the dashboard.

The scale-out is part of the stack: the demo also publishes to a real ``nats-server`` and an
``aggbook gateway`` serves it, scraped by the shipped config's ``aggbook-gateway`` job, so the
shard and gateway series are held to the same rules (``nats-server`` as in tests/service/nats).

The Prometheus binaries come from Debian's ``prometheus`` package (``.ci/run`` installs it).
Without them the Prometheus tests are skipped, unless ``AGGBOOK_REQUIRE_PROMETHEUS`` is set, as in CI.

The Dockerfile's HEALTHCHECK command is run against the demo here too, since the demo is up.
The service configs shipped for Kubernetes are checked here as well (``aggbook check-config``, and
the shards' symbol lists disjoint), so a change of config keys cannot leave them behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.service.nats.natsserver import nats_server_binary

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERT_RULES = PROMETHEUS_DIR / "alerts.yml"
ALERT_RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "aggbook.json"
K8S = REPO / "deploy" / "k8s"

JOB = "aggbook"
SHIPPED_TARGET = "aggbook:8080"
GATEWAY_JOB = "aggbook-gateway"
# the gateway job discovers the compose profile's gateway by name; the test scrapes its own
SHIPPED_GATEWAY_SD = """    dns_sd_configs:
      - names: ["aggbook-gateway"]
        type: A
        port: 8080
        refresh_interval: 30s"""
SCRAPES_BEFORE_QUERYING = 3  # rate() needs two samples in its window; one more for margin
START_TIMEOUT = 30.0
# Grafana's built-in variables, as a one-hour view of a 1 s scrape interval would set them.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

T = TypeVar("T")


# ---------------------------------------------------------------------- binaries
def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found (Debian package 'prometheus'; .ci/run installs it)"
    if os.environ.get("AGGBOOK_REQUIRE_PROMETHEUS"):
        pytest.fail(message + " and AGGBOOK_REQUIRE_PROMETHEUS is set")
    pytest.skip(message)


@pytest.fixture(scope="module")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return _binary("prometheus")


def _run_promtool(promtool: str, *args: str) -> None:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_promtool_check_config(promtool: str) -> None:
    # also checks the rule files the config names
    _run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))


def test_promtool_check_rules(promtool: str) -> None:
    _run_promtool(promtool, "check", "rules", str(ALERT_RULES))


def test_alert_rules_unit_tests(promtool: str) -> None:
    """Each alert fires on the series it is meant for and stays quiet on look-alikes."""
    _run_promtool(promtool, "test", "rules", str(ALERT_RULE_TESTS))


# ---------------------------------------------------------------------- PromQL lexing
@dataclass(frozen=True)
class Token:
    kind: str  # ident, num, str, op, braces ({...} label matchers), brackets ([...] ranges)
    text: str
    start: int
    end: int


_SIMPLE_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    |(?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])\d*)*)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(),@])""",
    re.VERBOSE,
)
_CLOSERS = {"{": "}", "[": "]"}


def _skip_enclosed(expr: str, start: int) -> int:
    """End of the ``{...}`` or ``[...]`` opening at ``start``, quoted strings inside included."""
    closer = _CLOSERS[expr[start]]
    i = start + 1
    while i < len(expr):
        ch = expr[i]
        if ch in "\"'`":
            m = _SIMPLE_TOKEN.match(expr, i)
            if m is None or m.lastgroup != "str":
                raise ValueError(f"unterminated string at {i} in {expr!r}")
            i = m.end()
            continue
        if ch == closer:
            return i + 1
        i += 1
    raise ValueError(f"unclosed {expr[start]!r} at {start} in {expr!r}")


def tokenize(expr: str) -> list[Token]:
    """Just enough of PromQL's lexer to find metric names and top-level operators."""
    tokens: list[Token] = []
    i = 0
    while i < len(expr):
        if expr[i] in _CLOSERS:
            end = _skip_enclosed(expr, i)
            tokens.append(Token("braces" if expr[i] == "{" else "brackets", expr[i:end], i, end))
            i = end
            continue
        m = _SIMPLE_TOKEN.match(expr, i)
        if m is None:
            raise ValueError(f"cannot lex {expr[i:]!r} in {expr!r}")
        if m.lastgroup != "ws":
            kind = m.lastgroup or "op"
            if kind == "ident" and m.group().lower() in ("inf", "nan"):
                kind = "num"
            tokens.append(Token(kind, m.group(), m.start(), m.end()))
        i = m.end()
    return tokens


AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"} | LABEL_LISTS
SET_OPERATORS = {"and", "or", "unless"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}


def _matching_paren(tokens: list[Token], open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(tokens)):
        if tokens[i].text == "(":
            depth += 1
        elif tokens[i].text == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _is_open_paren(tokens: list[Token], i: int) -> bool:
    return i < len(tokens) and tokens[i].kind == "op" and tokens[i].text == "("


def metric_names(expr: str) -> set[str]:
    """Names used as metric selectors: identifiers that are not functions, aggregations or keywords."""
    tokens = tokenize(expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "ident":
            word = tok.text.lower()
            if word in LABEL_LISTS and _is_open_paren(tokens, i + 1):
                i = _matching_paren(tokens, i + 1) + 1  # by (venue, le): label names, not metrics
                continue
            if not (_is_open_paren(tokens, i + 1) or word in KEYWORDS or tok.text in AGGREGATIONS):
                names.add(tok.text)
        i += 1
    return names


def _depth_zero(tokens: list[Token]) -> Iterator[tuple[int, Token]]:
    depth = 0
    for i, tok in enumerate(tokens):
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif depth == 0:
            yield i, tok


def _strip_parens(tokens: list[Token]) -> list[Token]:
    while tokens and tokens[0].text == "(" and _matching_paren(tokens, 0) == len(tokens) - 1:
        tokens = tokens[1:-1]
    return tokens


def _text(expr: str, tokens: list[Token]) -> str:
    return expr[tokens[0].start:tokens[-1].end]


def alert_signals(expr: str) -> tuple[list[str], int]:
    """The signals of an alert condition, and how many threshold comparisons were stripped.

    The expression is split at top-level ``and``/``or``/``unless`` (with their ``on(...)``
    modifiers); in each operand a top-level comparison against a number literal is removed,
    leaving the other side.  A comparison of two vectors keeps both sides as signals.
    """
    tokens = tokenize(expr)
    operands: list[list[Token]] = [[]]
    depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if depth == 0 and tok.kind == "ident" and tok.text.lower() in SET_OPERATORS:
            operands.append([])
            i += 1
            modifier = i < len(tokens) and tokens[i].text.lower() in ("on", "ignoring")
            if modifier and _is_open_paren(tokens, i + 1):
                i = _matching_paren(tokens, i + 1) + 1
            continue
        depth += {"(": 1, ")": -1}.get(tok.text, 0) if tok.kind == "op" else 0
        operands[-1].append(tok)
        i += 1

    signals: list[str] = []
    stripped = 0
    for operand in operands:
        operand = _strip_parens(operand)
        cut = next((i for i, tok in _depth_zero(operand) if tok.kind == "op" and tok.text in COMPARISONS),
                   None)
        if cut is None:
            signals.append(_text(expr, operand))
            continue
        left, right = operand[:cut], operand[cut + 1:]
        if right and right[0].text == "bool":
            right = right[1:]
        sides = [side for side in (left, right) if not (len(side) == 1 and side[0].kind == "num")]
        if len(sides) == 1:
            stripped += 1
        signals.extend(_text(expr, _strip_parens(side)) for side in sides)
    return signals, stripped


def test_lexer_finds_metrics_and_strips_thresholds() -> None:
    """The helpers above decide what the live tests check, so they are checked first."""
    expr = ('sum by (venue, le) (rate(aggbook_feed_lag_seconds_bucket{venue=~"a|b", le!="+Inf"}[5m]))'
            ' / on (venue) group_left count(up{job="x"} offset 1m)')
    assert metric_names(expr) == {"aggbook_feed_lag_seconds_bucket", "up"}
    assert metric_names('topk(3, aggbook_x) or vector(0) and nan') == {"aggbook_x"}

    assert alert_signals("max by (job, venue) (aggbook_book_live) == 0") == (
        ["max by (job, venue) (aggbook_book_live)"], 1)
    assert alert_signals("(a > 60) and on (job, venue) (b == 1)") == (["a", "b"], 2)
    assert alert_signals("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 0.1") == (
        ["histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"], 1)
    assert alert_signals('up{job="a>b"} == bool 0') == (['up{job="a>b"}'], 1)
    assert alert_signals("a > b") == (["a", "b"], 0)
    assert alert_signals("absent(up)") == (["absent(up)"], 0)


# ---------------------------------------------------------------------- live stack
def _aggbook() -> Path:
    """The console script installed next to the interpreter running the tests (.venv/bin)."""
    aggbook = Path(sys.executable).with_name("aggbook")
    assert aggbook.exists(), f"{aggbook} missing: install the package (make test does)"
    return aggbook


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_until(probe: Callable[[], T | None], what: str, timeout: float = START_TIMEOUT,
                alive: Callable[[], str | None] = lambda: None) -> T:
    """Poll ``probe`` every 50 ms until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        problem = alive()
        if problem:
            pytest.fail(f"while waiting for {what}: {problem}")
        try:
            result = probe()
        except (OSError, ValueError):
            result = None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def scrape_config_for(shipped: str, target: str, gateway_target: str | None = None) -> str:
    """The shipped config with the target pointed at ``target`` and every interval set to 1 s.

    Text substitution rather than a YAML round trip keeps everything else byte for byte as
    shipped; each substitution must match, so a reshaped file fails here instead of silently
    scraping nothing.
    """
    text, n = re.subn(re.escape(f'"{SHIPPED_TARGET}"'), f'"{target}"', shipped)
    assert n == 1, f"expected the target {SHIPPED_TARGET!r} exactly once in {PROMETHEUS_CONFIG}"
    if gateway_target is not None:
        assert text.count(SHIPPED_GATEWAY_SD) == 1, f"no gateway job discovery in {PROMETHEUS_CONFIG}"
        text = text.replace(SHIPPED_GATEWAY_SD, f'    static_configs:\n      - targets: ["{gateway_target}"]')
    interval = r"(?m)^(\s*(?:scrape_interval|evaluation_interval|scrape_timeout):\s*)\S+"
    text, n = re.subn(interval, r"\g<1>1s", text)
    assert n >= 2, "expected scrape_interval and evaluation_interval in the shipped config"
    return text


@dataclass
class Stack:
    demo_url: str
    gateway_url: str
    prometheus_url: str
    exported: dict[str, str]  # metric family -> type, from the demo's and the gateway's /metrics

    def api(self, path: str, **params: str) -> Any:
        data = urllib.parse.urlencode(params).encode() if params else None
        req = urllib.request.Request(self.prometheus_url + path, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", query=expr)

    def sample_names(self) -> set[str]:
        """Every name a query may use: families, plus a histogram's _bucket, _sum and _count."""
        names = {"up"}
        for family, kind in self.exported.items():
            names.add(family)
            if kind == "histogram":
                names.update(family + suffix for suffix in ("_bucket", "_sum", "_count"))
        return names


def _exported_families(exposition: str) -> dict[str, str]:
    families = {}
    for line in exposition.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m and not m.group(1).endswith("_created"):  # prometheus-client's creation timestamps
            families[m.group(1)] = m.group(2)
    return families


@pytest.fixture(scope="module")
def stack(prometheus_binary: str, promtool: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus-stack")
    aggbook = _aggbook()
    demo_port = _free_port()
    demo_url = f"http://127.0.0.1:{demo_port}"
    demo_log = tmp / "demo.log"
    procs: list[subprocess.Popen] = []
    try:
        # the scale-out too (docs/scale-out.md): the demo publishes to a NATS, a gateway serves it
        nats_log = tmp / "nats.log"
        with nats_log.open("wb") as out:
            nats = subprocess.Popen([nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", "-1",
                                     "-sd", str(tmp / "nats")],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(nats)
        nats_port = int(_wait_until(
            lambda: (m := re.search(r"client connections on [\d.]+:(\d+)", nats_log.read_text())) and m[1],
            "nats-server to listen", alive=lambda: None if nats.poll() is None else _tail(nats_log)))
        nats_url = f"nats://127.0.0.1:{nats_port}"
        with demo_log.open("wb") as out:
            demo = subprocess.Popen([str(aggbook), "demo", "--port", str(demo_port), "--nats", nats_url],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(demo)
        gateway_port = _free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        gateway_log = tmp / "gateway.log"
        with gateway_log.open("wb") as out:
            gateway = subprocess.Popen(
                [str(aggbook), "gateway", "--nats", nats_url, "--port", str(gateway_port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(gateway)

        def demo_alive() -> str | None:
            if demo.poll() is not None:
                return f"aggbook demo exited with {demo.returncode}:\n{_tail(demo_log)}"
            return None

        # ready = every symbol has a live venue: from here on every book metric has its series
        _wait_until(lambda: True if _http_get(demo_url + "/readyz")[0] == 200 else None,
                    "the demo's /readyz", alive=demo_alive)
        exported = _exported_families(_http_get(demo_url + "/metrics")[1].decode())
        _wait_until(lambda: True if _http_get(gateway_url + "/readyz")[0] == 200 else None,
                    "the gateway's /readyz",
                    alive=lambda: None if gateway.poll() is None else _tail(gateway_log))
        exported |= _exported_families(_http_get(gateway_url + "/metrics")[1].decode())

        # the shipped prometheus directory, so the config's relative rule_files resolve as shipped
        config_dir = tmp / "prometheus"
        shutil.copytree(PROMETHEUS_DIR, config_dir)
        config = config_dir / "prometheus.yml"
        config.write_text(scrape_config_for(PROMETHEUS_CONFIG.read_text(), f"127.0.0.1:{demo_port}",
                                            f"127.0.0.1:{gateway_port}"))
        _run_promtool(promtool, "check", "config", str(config))

        prom_port = _free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom_log = tmp / "prometheus.log"
        with prom_log.open("wb") as out:
            prom = subprocess.Popen(
                [prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp)
        procs.append(prom)

        def both_alive() -> str | None:
            if prom.poll() is not None:
                return f"prometheus exited with {prom.returncode}:\n{_tail(prom_log)}"
            return demo_alive()

        stack = Stack(demo_url, gateway_url, prom_url, exported)
        _wait_until(lambda: True if _http_get(prom_url + "/-/ready")[0] == 200 else None,
                    "Prometheus to be ready", alive=both_alive)

        def scraped_enough() -> bool | None:
            jobs = f'job=~"{JOB}|{GATEWAY_JOB}"'
            result = stack.query(f'count_over_time(up{{{jobs}}}[1m]) >= {SCRAPES_BEFORE_QUERYING}'
                                 f' and up{{{jobs}}} == 1')
            return True if result.get("status") == "success" and len(result["data"]["result"]) == 2 else None

        _wait_until(scraped_enough, f"{SCRAPES_BEFORE_QUERYING} successful scrapes of the demo",
                    alive=both_alive)

        def rules_evaluated() -> bool | None:
            groups = stack.api("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return True if rules and all(r["health"] != "unknown" for r in rules) else None

        _wait_until(rules_evaluated, "every alert rule to be evaluated once", alive=both_alive)
        yield stack
    finally:
        for proc in reversed(procs):
            _stop(proc)


# ---------------------------------------------------------------------- expressions
def _series(result: dict) -> list[dict[str, str]]:
    """The label sets of an instant vector result ([] for a scalar)."""
    data = result["data"]
    return [series["metric"] for series in data["result"]] if data["resultType"] == "vector" else []


def _result_problem(result: dict) -> str | None:
    """None when the query succeeded with at least one series holding a finite value."""
    if result.get("status") != "success":
        return f"{result.get('errorType')}: {result.get('error')}"
    data = result["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    else:
        values = [series["value"][1] for series in data["result"]]
    if not values:
        return "no data"
    if not any(math.isfinite(float(v)) for v in values):
        return f"only NaN/Inf ({len(values)} series)"
    return None


def _missing_labels(result: dict, labels: set[str]) -> set[str]:
    """Of ``labels``, those that some series of ``result`` lacks."""
    return {label for metric in _series(result) for label in labels if label not in metric}


def _walk_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


VARIABLE_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")


def _substitute(expr: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]

    return VARIABLE_REF.sub(repl, expr)


def _referenced_variables(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) or m.group(3) for m in VARIABLE_REF.finditer(expr)}


@dataclass(frozen=True)
class DashboardQuery:
    where: str
    written: str  # as in the dashboard
    selector: str  # as written, minus label_values() around a variable's selector
    legend_labels: frozenset[str]  # labels every series must carry: the legend's, a variable's label


def dashboard_queries() -> list[DashboardQuery]:
    """Every query of the dashboard: the query variables' and every panel target's."""
    dash = _dashboard()
    out = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        where = f"variable ${var['name']}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
        assert m, f"{where}: only label_values(selector, label) is supported, got {query!r}"
        out.append(DashboardQuery(where, query, m.group(1), frozenset([m.group(2)])))
    for panel in _walk_panels(dash["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                where = f"panel {panel['title']!r} target {target.get('refId')}"
                legend = frozenset(LEGEND_LABEL.findall(target.get("legendFormat", "")))
                out.append(DashboardQuery(where, target["expr"], target["expr"], legend))
    return out


def dashboard_variables(selection: dict[str, str] | None = None) -> dict[str, str]:
    """Values for the dashboard's variables: "All" for query variables, unless ``selection`` names one."""
    variables = dict(GRAFANA_BUILTINS)
    for var in _dashboard().get("templating", {}).get("list", []):
        if var.get("type") == "query":
            variables[var["name"]] = var.get("allValue") or ".*"
        elif var.get("type") in ("custom", "constant", "textbox", "interval"):
            variables[var["name"]] = var.get("allValue") or str(var.get("query", "")).split(",")[0]
        else:
            variables[var["name"]] = var["name"]  # datasource: never inside an expression
    for name, value in (selection or {}).items():
        assert name in variables, f"the dashboard has no variable ${name}"
        assert re.fullmatch(r"[\w-]+", value), f"{value!r} would need regex escaping"
        variables[name] = value
    return variables


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(where, expression as written, expression as Prometheus gets it) for every query of the dashboard."""
    variables = dashboard_variables()
    return [(q.where, q.written, _substitute(q.selector, variables)) for q in dashboard_queries()]


def test_dashboard_has_the_promised_panels() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    titles = {p["title"] for p in _walk_panels(_dashboard()["panels"])}
    for wanted in ("Book live by venue and symbol", "Messages per second by venue", "Resyncs by reason",
                   "Feed lag percentiles by venue", "Consolidated spread", "Crossed events",
                   "HTTP requests per second", "WebSocket messages per second"):
        assert wanted in titles


def test_dashboard_expressions_return_data(stack: Stack) -> None:
    known = stack.sample_names()
    variables = dashboard_variables()
    problems = []
    for q in dashboard_queries():
        expr = _substitute(q.selector, variables)
        unknown = metric_names(expr) - known
        if unknown:
            problems.append(f"{q.where}: not exported by the service: {sorted(unknown)}\n    {q.written}")
            continue
        result = stack.query(expr)
        problem = _result_problem(result)
        if problem is None and (missing := _missing_labels(result, set(q.legend_labels))):
            problem = f"series without the label(s) {sorted(missing)} that its legend shows"
        if problem:
            problems.append(f"{q.where}: {problem}\n    {expr}")
    assert not problems, "dashboard queries that fail against the demo:\n" + "\n".join(problems)


def test_dashboard_expressions_follow_a_selected_venue_and_symbol(stack: Stack) -> None:
    """With one venue and one symbol picked, each query using them returns data of those only."""
    live = [s["metric"] for s in stack.query("aggbook_book_live == 1")["data"]["result"]]
    assert live, "no live book in the demo"
    pick = min((m["venue"], m["symbol"]) for m in live)
    selection = {"venue": pick[0], "symbol": pick[1]}
    variables = dashboard_variables(selection)
    checked = 0
    problems = []
    for q in dashboard_queries():
        if not _referenced_variables(q.selector) & selection.keys():
            continue
        checked += 1
        expr = _substitute(q.selector, variables)
        result = stack.query(expr)
        problem = _result_problem(result)
        if problem is None:
            others = {f"{label}={metric[label]}" for metric in _series(result)
                      for label, value in selection.items() if metric.get(label, value) != value}
            if others:
                problem = f"series of other selections: {sorted(others)}"
        if problem:
            problems.append(f"{q.where}: {problem}\n    {expr}")
    assert checked >= 10
    assert not problems, (f"dashboard queries that fail with venue={pick[0]} symbol={pick[1]} selected:\n"
                          + "\n".join(problems))


def test_dashboard_shows_every_exported_metric(stack: Stack) -> None:
    used = set().union(*(metric_names(expr) for _, _, expr in dashboard_expressions()))
    missing = []
    for family, kind in stack.exported.items():
        forms = {family}
        if kind == "histogram":
            forms |= {family + suffix for suffix in ("_bucket", "_sum", "_count")}
        if family.startswith("aggbook_") and not forms & used:
            missing.append(family)
    assert not missing, f"metrics the service exports that no dashboard panel shows: {missing}"


def _loaded_rules(stack: Stack) -> list[dict]:
    groups = stack.api("/api/v1/rules")["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_shipped_alert_is_loaded_and_healthy(stack: Stack) -> None:
    shipped = re.findall(r"(?m)^\s*-\s*alert:\s*(\S+)\s*$", ALERT_RULES.read_text())
    rules = _loaded_rules(stack)
    assert sorted(r["name"] for r in rules) == sorted(shipped)
    unhealthy = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    assert all(r["type"] == "alerting" for r in rules)


def test_alert_expressions_are_valid_and_their_signals_return_data(stack: Stack) -> None:
    known = stack.sample_names()
    problems = []
    for rule in _loaded_rules(stack):
        name, expr = rule["name"], rule["query"]
        unknown = metric_names(expr) - known
        if unknown:
            problems.append(f"{name}: not exported by the service: {sorted(unknown)}\n    {expr}")
            continue
        result = stack.query(expr)
        if result.get("status") != "success":
            problems.append(f"{name}: invalid: {result.get('error')}\n    {expr}")
            continue
        signals, thresholds = alert_signals(expr)
        if thresholds == 0:
            problems.append(f"{name}: no comparison against a threshold to strip\n    {expr}")
        # the alert's series are those of its first signal (the left side of and/unless and of
        # a filtering comparison), so that is where its templates find their labels
        templates = [*rule.get("labels", {}).values(), *rule.get("annotations", {}).values()]
        templated = {label for text in templates for label in TEMPLATE_LABEL.findall(text)}
        for i, signal_expr in enumerate(signals):
            result = stack.query(signal_expr)
            problem = _result_problem(result)
            if problem is None and i == 0 and (missing := _missing_labels(result, templated)):
                problem = f"has no label(s) {sorted(missing)} that the alert's templates show"
            if problem:
                problems.append(f"{name}: signal {problem}\n    {signal_expr}")
    assert not problems, "alert expressions that fail against the demo:\n" + "\n".join(problems)


def test_scrape_config_targets_the_demo(stack: Stack) -> None:
    """The generated config scrapes the demo and the gateway under the shipped job names, and only that."""
    targets = stack.api("/api/v1/targets")["data"]["activeTargets"]
    assert sorted((t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets) == [
        (JOB, stack.demo_url + "/metrics", "up"), (GATEWAY_JOB, stack.gateway_url + "/metrics", "up")]


# ---------------------------------------------------------------------- Kubernetes service configs
@pytest.mark.parametrize("config", sorted(K8S.rglob("config.toml")), ids=lambda p: str(p.relative_to(K8S)))
def test_kubernetes_config_passes_check_config(config: Path) -> None:
    proc = subprocess.run([str(_aggbook()), "check-config", str(config)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, f"aggbook check-config {config} failed:\n{proc.stdout}\n{proc.stderr}"


def test_shards_split_the_symbols_without_overlap() -> None:
    shard_configs = sorted((K8S / "sharding").glob("*/config.toml"))
    assert len(shard_configs) >= 2
    owner: dict[str, Path] = {}
    for path in shard_configs:
        for symbol in tomllib.loads(path.read_text())["service"]["symbols"]:
            assert symbol not in owner, f"{symbol} is in both {owner[symbol]} and {path}"
            owner[symbol] = path


# ---------------------------------------------------------------------- the image's HEALTHCHECK
def test_image_healthcheck_command_passes_on_the_demo_and_fails_without_it(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK command, run as Docker would (its port from AGGBOOK_PORT)."""
    from tests.deploy.test_manifests import image_healthcheck

    check = image_healthcheck()
    command = [sys.executable, *check[1:]]  # the image's "python" is the interpreter here
    demo_port = urllib.parse.urlsplit(stack.demo_url).port
    env = {**os.environ, "AGGBOOK_PORT": str(demo_port)}
    up = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert up.returncode == 0, f"HEALTHCHECK fails on a running service:\n{up.stderr}"
    down = subprocess.run(command, env={**env, "AGGBOOK_PORT": str(_free_port())},
                          capture_output=True, text=True, timeout=30)
    assert down.returncode != 0, "HEALTHCHECK passes with nothing listening"
