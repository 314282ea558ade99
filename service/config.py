"""The service configuration: a TOML file turned into checked settings and one VenueConfig per venue.

Everything is validated when the file is loaded, so a mistake stops the process at
start with a message naming the key (``venues.binance.fee_bps: ...``) instead of
surfacing minutes later inside a feed.  Unknown keys are errors too: a misspelt
setting would otherwise be silently ignored.

Only the listen address may come from the environment (``AGGBOOK_HOST``,
``AGGBOOK_PORT``), because that is what differs between a laptop, a container and
a host; everything else lives in the file so that one file describes what runs.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggbook.feeds.config import VenueConfig
from aggbook.feeds.registry import UnknownVenue, venue_spec
from aggbook.feeds.spec import VenueSpec

if TYPE_CHECKING:
    from aggbook.service.nats.settings import NatsSettings, Shard

CANONICAL = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")
HOST_ENV = "AGGBOOK_HOST"
PORT_ENV = "AGGBOOK_PORT"


class ConfigError(ValueError):
    """A configuration mistake; the message starts with the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class WebSocketSettings:
    """Limits that keep one slow or greedy WebSocket client from costing anyone else."""

    max_subscriptions: int = 100  # per client
    queue_size: int = 500  # messages queued per client before conflation starts
    queue_bytes: int = 1_048_576  # or bytes queued per client before conflation starts
    max_behind: int = 5000  # updates dropped without the client ever catching up before close code 4008
    stall_timeout: float = 30.0  # a send blocked this long closes the client with 4008
    heartbeat: float = 15.0  # seconds between server heartbeats (and WebSocket pings)
    publish_interval: float = 0.0  # minimum seconds between two updates of one subscription
    max_message_size: int = 65_536  # largest client frame accepted
    # Cost fairness across clients: see service/ws.py (heavy book subscriptions) for why.
    max_distinct_subscriptions: int = 5000  # distinct (channel, symbol, depth, venues, fees), all clients
    heavy_depth: int = 50  # book subscriptions deeper than this are "heavy"
    heavy_interval: float = 0.25  # a heavy subscription is updated at most this often
    render_budget: float = 0.005  # seconds of heavy rendering per event-loop iteration, at most


@dataclass(frozen=True)
class HttpSettings:
    """Limits on the HTTP listener (the ``[http]`` table); see ``service/connections.py`` for why."""

    idle_timeout: float = 15.0  # seconds to send a complete request head after connect or a response
    max_connections: int = 2048  # connections served normally, all clients together
    max_connections_per_client: int = 256  # per client address
    reserved_descriptors: int = 256  # kept free for venue sockets, files and the health probes


@dataclass
class ServiceConfig:
    """Everything ``aggbook serve`` needs."""

    venues: list[VenueConfig]
    symbols: list[str]
    host: str = "127.0.0.1"
    port: int = 8080
    stale_after: float = 10.0
    default_depth: int = 10
    max_depth: int = 1000
    log_level: str = "info"
    log_json: bool = False
    gc_freeze: bool = True  # freeze long-lived objects after the cold start (service/gcfreeze.py)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    source: str = "<built-in>"
    nats: NatsSettings | None = None  # the [nats] table; None or no url: no publishing
    shard: Shard | None = None  # this process owns only the shard's symbols (service.shard, --shard)

    @property
    def enabled_venues(self) -> list[VenueConfig]:
        return [v for v in self.venues if v.enabled]

    def venues_for(self, symbol: str) -> list[VenueConfig]:
        return [v for v in self.enabled_venues if symbol in v.symbols]

    def describe(self) -> str:
        """Human-readable summary of what would run (``aggbook check-config``)."""
        lines = [
            f"config: {self.source}",
            f"listen: http://{self.host}:{self.port}",
            f"symbols: {', '.join(self.symbols)}",
            f"stale_after: {self.stale_after}s  depth: default {self.default_depth}, max {self.max_depth}",
            "websocket: " + ", ".join(f"{k}={v}" for k, v in vars(self.websocket).items()),
            "http: " + ", ".join(f"{k}={v}" for k, v in vars(self.http).items()),
        ]
        if self.shard is not None:
            owned = ", ".join(self.symbols) or "(none)"
            lines.append(f"shard: {self.shard.label} owns {len(self.symbols)} symbols: {owned}")
        if self.nats is not None:
            lines.append(self.nats.describe())
        lines.append("venues:")
        for v in self.venues:
            state = "enabled" if v.enabled else "disabled"
            lines.append(
                f"  {v.name} (kind {v.kind}: {_title(v.kind)}, {state}) fee {v.fee_bps} bps, "
                f"depth {v.depth or 'default'}"
            )
            lines.append(f"    rest {v.rest_url}")
            lines.append(f"    ws   {v.ws_url}")
            for canonical, spelled in v.symbols.items():
                lines.append(f"    {canonical} -> {spelled}")
            if v.options:
                lines.append(
                    "    options: " + ", ".join(f"{k}={val}" for k, val in sorted(v.options.items()))
                )
        return "\n".join(lines)


def _title(kind: str) -> str:
    try:
        return venue_spec(kind).title
    except UnknownVenue:
        return "unknown venue"


# ---------------------------------------------------------------------- small checked readers
def _check_keys(table: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(where, f"unknown setting; expected one of: {', '.join(sorted(allowed))}")


def _table(data: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix}{key}", "must be a table")
    return value


def _int(value: Any, key: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(key, f"must be {bound}, got {value}")
    return value


def _float(value: Any, key: str, lo: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if not math.isfinite(value):  # TOML has nan and inf; every comparison with nan is false
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    if value < lo or (strict and value == lo):
        raise ConfigError(key, f"must be {'>' if strict else '>='} {lo}, got {value}")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return value


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host(value: Any, key: str) -> str:
    """An IP address literal or a DNS name: ``256.1.1.1`` is neither (an all-numeric name is no name)."""
    text = _str(value, key)
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(key, f"must be an IP address or a host name, got {text!r}")
    return text


def _url(value: Any, key: str, schemes: tuple[str, ...]) -> str:
    text = _str(value, key)
    if not text.startswith(schemes):
        raise ConfigError(key, f"must start with {' or '.join(schemes)}, got {text!r}")
    return text


def _canonical(value: Any, key: str) -> str:
    text = _str(value, key).upper()
    if not CANONICAL.match(text):
        raise ConfigError(key, f"canonical symbols look like BASE-QUOTE (e.g. BTC-USDT), got {value!r}")
    return text


# ---------------------------------------------------------------------- sections
_SERVICE_KEYS = {
    "host",
    "port",
    "symbols",
    "stale_after",
    "default_depth",
    "max_depth",
    "log_level",
    "log_json",
    "gc_freeze",
    "shard",
}
_VENUE_KEYS = {"kind", "enabled", "rest_url", "ws_url", "symbols", "depth", "fee_bps", "options"}
_LOG_LEVELS = {"debug", "info", "warning", "error"}


def _websocket(table: Mapping[str, Any]) -> WebSocketSettings:
    p = "websocket."
    _check_keys(table, set(WebSocketSettings.__dataclass_fields__), "websocket")
    d = WebSocketSettings()
    return WebSocketSettings(
        max_subscriptions=_int(
            table.get("max_subscriptions", d.max_subscriptions), p + "max_subscriptions", 1
        ),
        queue_size=_int(table.get("queue_size", d.queue_size), p + "queue_size", 2),
        queue_bytes=_int(table.get("queue_bytes", d.queue_bytes), p + "queue_bytes", 1024),
        max_behind=_int(table.get("max_behind", d.max_behind), p + "max_behind", 1),
        stall_timeout=_float(
            table.get("stall_timeout", d.stall_timeout), p + "stall_timeout", 0, strict=True
        ),
        heartbeat=_float(table.get("heartbeat", d.heartbeat), p + "heartbeat", 0, strict=True),
        publish_interval=_float(table.get("publish_interval", d.publish_interval), p + "publish_interval", 0),
        max_message_size=_int(table.get("max_message_size", d.max_message_size), p + "max_message_size", 256),
        max_distinct_subscriptions=_int(
            table.get("max_distinct_subscriptions", d.max_distinct_subscriptions),
            p + "max_distinct_subscriptions", 1,
        ),
        heavy_depth=_int(table.get("heavy_depth", d.heavy_depth), p + "heavy_depth", 1),
        heavy_interval=_float(table.get("heavy_interval", d.heavy_interval), p + "heavy_interval", 0),
        render_budget=_float(table.get("render_budget", d.render_budget), p + "render_budget", 0),
    )


def _http(table: Mapping[str, Any]) -> HttpSettings:
    p = "http."
    _check_keys(table, set(HttpSettings.__dataclass_fields__), "http")
    d = HttpSettings()
    max_connections = _int(table.get("max_connections", d.max_connections), p + "max_connections", 1)
    return HttpSettings(
        idle_timeout=_float(table.get("idle_timeout", d.idle_timeout), p + "idle_timeout", 0, strict=True),
        max_connections=max_connections,
        max_connections_per_client=_int(
            table.get("max_connections_per_client", min(d.max_connections_per_client, max_connections)),
            p + "max_connections_per_client", 1, max_connections,
        ),
        reserved_descriptors=_int(
            table.get("reserved_descriptors", d.reserved_descriptors), p + "reserved_descriptors", 0
        ),
    )


def _fee(value: Any, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a number of basis points, got {value!r}")
    try:
        fee = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(key, f"must be a number of basis points, got {value!r}") from None
    if not fee.is_finite() or fee < 0 or fee >= 10_000:
        raise ConfigError(key, f"must be between 0 and 10000 basis points, got {value!r}")
    return fee


def _venue_symbols(value: Any, key: str, spec: VenueSpec, service_symbols: list[str]) -> dict[str, str]:
    """A list (or nothing: the service's symbols) is spelt the venue's usual way; a table is taken as is."""
    if value is None:
        return {s: spec.symbol(s) for s in service_symbols}
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            canonical = _canonical(item, f"{key}[{i}]")
            out[canonical] = spec.symbol(canonical)
    elif isinstance(value, Mapping):
        out = {_canonical(c, f"{key}.{c}"): _str(v, f"{key}.{c}") for c, v in value.items()}
    else:
        raise ConfigError(key, 'must be a list of canonical symbols or a table canonical = "VENUESYMBOL"')
    for canonical in out:
        if canonical not in service_symbols:
            raise ConfigError(f"{key}.{canonical}", "not listed in service.symbols")
    if not out:
        raise ConfigError(key, "lists no symbols")
    return out


def _options(value: Any, key: str, spec: VenueSpec) -> dict:
    """Venue knobs, checked against the names and types the venue's feed class declares."""
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table")
    options = dict(value)
    known = spec.feed.option_names()
    for name, option in options.items():
        if name not in known:
            raise ConfigError(f"{key}.{name}", f"unknown option; known: {', '.join(sorted(known))}")
        problem = spec.feed.option_problem(name, option)
        if problem:
            raise ConfigError(f"{key}.{name}", problem)
    return options


def _venue(name: str, table: Any, service_symbols: list[str]) -> VenueConfig:
    p = f"venues.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(p, "must be a table")
    _check_keys(table, _VENUE_KEYS, p)
    kind = _str(table.get("kind", name), f"{p}.kind")
    try:
        spec = venue_spec(kind)
    except UnknownVenue as exc:
        raise ConfigError(f"{p}.kind", str(exc)) from None
    rest_url = (
        _url(table["rest_url"], f"{p}.rest_url", ("http://", "https://")) if "rest_url" in table else ""
    )
    ws_url = _url(table["ws_url"], f"{p}.ws_url", ("ws://", "wss://")) if "ws_url" in table else ""
    depth = _int(table["depth"], f"{p}.depth", 1, 10_000) if "depth" in table else None
    if depth is not None and (problem := spec.feed.depth_problem(depth)) is not None:
        raise ConfigError(f"{p}.depth", problem)
    return VenueConfig(
        name=name,
        kind=kind,
        symbols=_venue_symbols(table.get("symbols"), f"{p}.symbols", spec, service_symbols),
        rest_url=rest_url,
        ws_url=ws_url,
        enabled=_bool(table.get("enabled", True), f"{p}.enabled"),
        depth=depth,
        fee_bps=_fee(table.get("fee_bps", 0), f"{p}.fee_bps"),
        options=_options(table.get("options", {}), f"{p}.options", spec),
    )


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "<built-in>",
    shard: str | None = None,
) -> ServiceConfig:
    """Validate a decoded TOML document; raises :class:`ConfigError` naming the first bad key.

    ``shard`` (``--shard K/N``) takes the place of ``service.shard``."""
    env = os.environ if env is None else env
    _check_keys(data, {"service", "websocket", "http", "venues", "nats"}, "")
    svc = _table(data, "service")
    _check_keys(svc, _SERVICE_KEYS, "service")
    raw_symbols = svc.get("symbols")
    if not isinstance(raw_symbols, list) or not raw_symbols:
        raise ConfigError("service.symbols", 'must be a non-empty list of canonical symbols like "BTC-USDT"')
    symbols: list[str] = []
    for i, item in enumerate(raw_symbols):
        canonical = _canonical(item, f"service.symbols[{i}]")
        if canonical in symbols:
            raise ConfigError(f"service.symbols[{i}]", f"{canonical} listed twice")
        symbols.append(canonical)

    venues_table = _table(data, "venues")
    if not venues_table:
        raise ConfigError("venues", "no venues configured; add a [venues.NAME] table")
    venues = [_venue(name, table, symbols) for name, table in venues_table.items()]
    enabled = [v for v in venues if v.enabled]
    if not enabled:
        raise ConfigError("venues", "every venue is disabled")
    for symbol in symbols:
        if not any(symbol in v.symbols for v in enabled):
            raise ConfigError("service.symbols", f"{symbol} is not traded by any enabled venue")

    host = _host(svc.get("host", "127.0.0.1"), "service.host")
    port = _int(svc.get("port", 8080), "service.port", 0, 65535)
    if env.get(HOST_ENV):
        host = _host(env[HOST_ENV], HOST_ENV)
    if env.get(PORT_ENV):
        try:
            port = int(env[PORT_ENV])
        except ValueError:
            raise ConfigError(PORT_ENV, f"must be an integer port, got {env[PORT_ENV]!r}") from None
        port = _int(port, PORT_ENV, 0, 65535)
    max_depth = _int(svc.get("max_depth", 1000), "service.max_depth", 1, 100_000)
    default_depth = _int(svc.get("default_depth", 10), "service.default_depth", 1, max_depth)
    level = _str(svc.get("log_level", "info"), "service.log_level").lower()
    if level not in _LOG_LEVELS:
        raise ConfigError("service.log_level", f"must be one of {', '.join(sorted(_LOG_LEVELS))}")
    from aggbook.service.nats.settings import apply_shard, parse_nats, parse_shard

    config = ServiceConfig(
        venues=venues,
        symbols=symbols,
        host=host,
        port=port,
        stale_after=_float(svc.get("stale_after", 10.0), "service.stale_after", 0, strict=True),
        default_depth=default_depth,
        max_depth=max_depth,
        log_level=level,
        log_json=_bool(svc.get("log_json", False), "service.log_json"),
        gc_freeze=_bool(svc.get("gc_freeze", True), "service.gc_freeze"),
        websocket=_websocket(_table(data, "websocket")),
        http=_http(_table(data, "http")),
        source=source,
        nats=parse_nats(_table(data, "nats"), max_depth) if "nats" in data else None,
    )
    if shard is not None:
        config = apply_shard(config, parse_shard(shard, "--shard"))
    elif "shard" in svc:
        config = apply_shard(config, parse_shard(svc["shard"], "service.shard"))
    return config


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, shard: str | None = None
) -> ServiceConfig:
    """Read and validate a TOML file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(str(path), "permission denied: the file cannot be read") from None
    except OSError as exc:  # a FIFO that never opens, an I/O error: still a config problem, not a crash
        raise ConfigError(str(path), f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not valid TOML: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_config(data, env, source=str(path), shard=shard)


def resolve_host(host: str) -> str | None:
    """Why ``host`` cannot be listened on, or ``None``: a literal address, or a name that resolves.

    Only ``check-config`` asks (a lookup may block on DNS); ``serve`` reports a bind failure itself.
    """
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        return f"{host!r} does not resolve: {exc}"
    return None
