"""``aggbook``: serve, check-config, demo, simulate.

Every long-running command runs on uvloop when it is installed, logs one line per
event (JSON with ``--log-json``), and stops cleanly on SIGTERM or SIGINT: clients
get a close frame, feeds close their sockets, and the process exits 0.  A bad
config exits 2 before anything starts; a start-up failure (port taken) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aggbook.service.config import ConfigError, ServiceConfig, load_config, resolve_host
from aggbook.service.gcfreeze import freeze_when_settled
from aggbook.service.logs import setup_logging
from aggbook.service.tasks import cancel_and_wait

log = logging.getLogger("aggbook.cli")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


# uvloop before 0.23 leaves a cancelled ``create_connection(sock=...)``'s socket owning a descriptor
# libuv already closed; its later close hits whatever connection reused the number (EBADF, then an
# abort of the process during a loaded cold start, where connects time out).  Fixed in uvloop 0.23.
UVLOOP_FIXED = (0, 23)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed and has the fix above; otherwise asyncio's own loop, said once."""
    try:
        import uvloop
    except ImportError:
        return None
    if _version(uvloop.__version__) < UVLOOP_FIXED:
        log.warning("uvloop %s can close a live connection after a cancelled connect; running on "
                    "asyncio's event loop (install uvloop>=%s to use uvloop)", uvloop.__version__,
                    ".".join(map(str, UVLOOP_FIXED)))
        return None
    return uvloop.new_event_loop


def _run(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(stop_event)`` on uvloop if available; SIGTERM/SIGINT set the event."""

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, stop.set)
        log.info("event loop", extra={"loop": type(loop).__module__})
        return await main(stop)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(wrapper())


async def _serve_until(
    stop: asyncio.Event,
    start: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
    on_started: Callable[[], None],
    settled: Callable[[], bool] | None = None,
) -> int:
    """Start, serve until ``stop``, shut down.  With ``settled`` (the process's own choice, never a
    library's), long-lived objects are frozen out of the collector's full passes once started and
    again once ``settled()`` holds: see :mod:`aggbook.service.gcfreeze`."""
    try:
        await start()
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        log.error("start failed: %s", exc)
        with contextlib.suppress(Exception):
            await shutdown()
        return EXIT_FAILED
    on_started()
    freezer = None
    if settled is not None:
        freezer = asyncio.create_task(freeze_when_settled(settled), name="gc-freeze")
    await stop.wait()
    log.info("shutting down")
    if freezer is not None:
        await cancel_and_wait([freezer])
    await shutdown()
    return EXIT_OK


def _print(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------- commands
def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, shard=args.shard)
    except ConfigError as exc:
        print(f"aggbook: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level, args.log_json or config.log_json)
    return _run(lambda stop: _serve(config, stop))


async def _serve(config: ServiceConfig, stop: asyncio.Event) -> int:
    from aggbook.service.runtime import Service

    try:
        svc = Service(config)
    except (ValueError, ImportError) as exc:  # a feed rejected its config (unknown option, kind)
        log.error("invalid config: %s", exc)
        return EXIT_CONFIG
    return await _serve_until(stop, svc.start, svc.stop, lambda: log.info("serving", extra={"url": svc.url}),
                              svc.aggregator.every_book_live if config.gc_freeze else None)


def cmd_gateway(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_json)
    return _run(lambda stop: _gateway(args, stop))


async def _gateway(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from aggbook.service.nats.gateway import Gateway, GatewayConfig
    from aggbook.service.nats.view import ViewSettings

    if not 1 <= args.default_depth <= args.max_depth:
        log.error("--default-depth must be between 1 and --max-depth (%d)", args.max_depth)
        return EXIT_CONFIG
    config = GatewayConfig(
        ViewSettings(args.nats, prefix=args.prefix, bucket=args.bucket, stale_after=args.stale_after),
        host=args.host, port=args.port, default_depth=args.default_depth, max_depth=args.max_depth,
    )
    gw = Gateway(config)
    return await _serve_until(stop, gw.start, gw.stop, lambda: log.info("serving", extra={"url": gw.url}),
                              lambda: True)  # a gateway's long-lived objects all exist once it has started


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, shard=args.shard)
        from aggbook.service.aggregator import default_feed_factory

        feeds = [default_feed_factory(vc) for vc in config.enabled_venues]  # they check their own options
        unresolved = resolve_host(config.host)
        if unresolved:
            raise ConfigError("service.host", unresolved)
    except (ConfigError, ValueError, ImportError) as exc:
        print(f"aggbook: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _print(config.describe())
    _print(cold_start_lines(feeds))
    _print("config OK")
    return EXIT_OK


def cold_start_lines(feeds: list[Any]) -> str:
    """What a cold start costs per venue: the snapshot pacing and the earliest moment every book can be live.

    The pacing shown is the one the feed starts with (a venue that publishes its budget, such as
    Binance's ``exchangeInfo``, may adjust it at start-up); the bound ignores round trips, so it is
    the floor a start can reach, and a user sees what adding symbols or depth will cost.
    """
    lines = ["cold start (snapshot pacing; the earliest all books can be live):"]
    for feed in feeds:
        rate, burst = feed.snapshot_pacing()
        weight = max((feed.snapshot_weight(c) for c in feed.config.symbols), default=feed.snapshot_weight(""))
        count = len(feed.config.symbols)
        lines.append(
            f"  {feed.venue}: {count} symbols x weight {weight:g}, {rate:g} weight/s, burst {burst:g}: "
            f"cold_start_bound_s={feed.cold_start_bound_s():.1f} "
            f"(200 symbols: {feed.cold_start_bound_s(200):.1f})"
        )
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_json)
    return _run(lambda stop: _demo(args, stop))


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from aggbook.service.demo import banner, demo_config, demo_exchange
    from aggbook.service.runtime import Service

    sim = demo_exchange(rate=args.rate, fault_rate=args.fault_rate, seed=args.seed)
    holder: dict[str, Service] = {}

    async def start() -> None:
        await sim.start()
        config = demo_config(sim, args.host, args.port)
        if args.nats:  # publish for gateways, as a shard of one (docs/scale-out.md)
            import dataclasses

            from aggbook.service.nats.settings import NatsSettings

            config = dataclasses.replace(config, nats=NatsSettings(url=args.nats))
        svc = Service(config)
        holder["svc"] = svc
        await svc.start()

    async def shutdown() -> None:
        if "svc" in holder:
            await holder["svc"].stop()
        await sim.stop()

    return await _serve_until(stop, start, shutdown, lambda: _print(banner(holder["svc"].url, sim)))


def cmd_simulate(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_json)
    return _run(lambda stop: _simulate(args, stop))


async def _simulate(args: argparse.Namespace, stop: asyncio.Event) -> int:
    from aggbook.feeds.registry import venue_specs
    from aggbook.simulator.exchange import SimulatedExchange
    from aggbook.simulator.market import DEFAULT_SYMBOLS

    known = list(venue_specs())
    names = [n.strip() for n in args.venues.split(",") if n.strip()] if args.venues else known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"aggbook: unknown venue(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return EXIT_CONFIG
    from aggbook.simulator.faults import Fault

    kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()] if args.fault_kinds else None
    bad_kinds = [k for k in kinds or [] if k not in {f.value for f in Fault}]
    if bad_kinds:
        print(f"aggbook: unknown fault kind(s): {', '.join(bad_kinds)}; known: "
              f"{', '.join(f.value for f in Fault)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        ports = simulate_ports(names, known, args.base_port, args.port or [])
    except ValueError as exc:
        print(f"aggbook: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    specs = DEFAULT_SYMBOLS[: args.symbols]
    sim = SimulatedExchange(
        names, symbols=specs, rate=args.rate, fault_rate=args.fault_rate, fault_kinds=kinds, seed=args.seed,
        host=args.host, ports=ports,
    )

    def started() -> None:
        lines = ["simulated venues:"]
        for name, server in sim.venues.items():
            urls = server.urls()
            lines.append(f"  {name:<16} rest_url = {urls['rest_url']}")
            lines.append(f"  {'':<16} ws_url   = {urls['ws_url']}")
            lines.append(f"  {'':<16} control  = {server.base_url}/_sim/")
        lines += ["", "# config for aggbook serve:", _sim_toml(sim, specs), "", "Ctrl-C to stop."]
        _print("\n".join(lines))

    return await _serve_until(stop, sim.start, sim.stop, started)


def simulate_ports(
    names: list[str], known: list[str], base_port: int | None, pairs: list[str]
) -> dict[str, int]:
    """Each started venue's port: ``--port venue=N``, else ``--base-port`` plus the venue's place.

    The place is the venue's index among *all* known venue kinds sorted by name (binance 0,
    binance-coinm 1, binance-futures 2, bitv 3, btse 4, mexc 5, nhex 6), not among the ones started,
    so a venue keeps its port whatever ``--venues`` selects and can be restarted at the same URL.
    A venue given no port (or 0) takes any free port.  ``ValueError`` names what is wrong.
    """
    order = sorted(known)
    ports: dict[str, int] = {}
    if base_port is not None:
        if not 1 <= base_port <= 65535 - (len(order) - 1):
            raise ValueError(f"--base-port {base_port}: must be 1 to {65535 - (len(order) - 1)} "
                             f"(room for {len(order)} venues)")
        ports = {name: base_port + order.index(name) for name in names}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--port {pair!r}: expected venue=PORT, e.g. binance=9100")
        if name not in names:
            raise ValueError(f"--port {pair!r}: {name!r} is not a started venue ({', '.join(names)})")
        port = int(value)
        if port > 65535:
            raise ValueError(f"--port {pair!r}: a port is 0 to 65535")
        ports[name] = port
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in taken:
            raise ValueError(f"port {port} given to both {taken[port]} and {name}")
        taken[port] = name
    return ports


def _sim_toml(sim: Any, specs: Any) -> str:
    lines = ["[service]", "symbols = [" + ", ".join(f'"{s.canonical}"' for s in specs) + "]", ""]
    for name, server in sim.venues.items():
        urls = server.urls()
        lines += [
            f"[venues.{name}]",
            f'rest_url = "{urls["rest_url"]}"',
            f'ws_url = "{urls["ws_url"]}"',
            "symbols = { " + ", ".join(f'"{s.canonical}" = "{server.venue_symbol(s)}"' for s in specs) + " }",
            "",
        ]
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aggbook", description="Order-book aggregation service")
    sub = parser.add_subparsers(dest="command", required=True)

    def logging_flags(p: argparse.ArgumentParser, default_level: str | None = "info") -> None:
        p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
        p.add_argument("--log-level", default=default_level, choices=["debug", "info", "warning", "error"])

    p = sub.add_parser("serve", help="run the service from a TOML config")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--shard", help='serve shard K of N of the symbols, "K/N" (replaces service.shard)')
    logging_flags(p, default_level=None)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("gateway", help="serve the HTTP API and WebSocket of every shard, from NATS")
    p.add_argument("--nats", required=True, help="NATS URL(s), nats://host:4222 (comma-separated)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0 = any free port)")
    p.add_argument("--prefix", default="aggbook", help="subject prefix ([nats] prefix of the shards)")
    p.add_argument("--bucket", default="aggbook", help="key-value bucket ([nats] bucket of the shards)")
    p.add_argument("--stale-after", type=float, default=3.0,
                   help="seconds without a shard's heartbeat before its symbols are excluded")
    p.add_argument("--max-depth", type=int, default=50, help="the shards' [nats] book_depth")
    p.add_argument("--default-depth", type=int, default=10)
    logging_flags(p)
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("check-config", help="validate a config and print what would run")
    p.add_argument("file")
    p.add_argument("--shard", help='check shard K of N, "K/N" (replaces service.shard)')
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("demo", help="run the simulated venues and the service against them")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (0 = any free port)")
    p.add_argument("--rate", type=float, default=20.0, help="market events per second per symbol")
    p.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a random gap/duplicate/reorder"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--nats", default="", help="also publish to this NATS URL, for `aggbook gateway`")
    logging_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="run the simulated venues only and print their URLs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=None,
                   help="venue i listens on BASE_PORT + i, i its place among all venue kinds sorted by "
                        "name, started or not (binance +0, binance-coinm +1, ...); default: any free port")
    p.add_argument("--port", action="append", metavar="VENUE=PORT",
                   help="one venue's port (repeatable, overrides --base-port): restart it at the same URL")
    p.add_argument("--venues", default="", help="comma-separated (default: all)")
    p.add_argument("--symbols", type=int, default=5, help="how many of the default symbols")
    p.add_argument("--rate", type=float, default=20.0,
                   help="market events per second per symbol ('inf' = as fast as the machine can)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="chance of a random fault per frame, 0-1")
    p.add_argument("--fault-kinds", default="",
                   help="comma-separated faults random mode may fire (default: gap,duplicate,reorder)")
    p.add_argument("--seed", type=int, default=1)
    logging_flags(p)
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
