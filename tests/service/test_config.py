"""Config validation: a good file gives VenueConfigs with production defaults; every mistake names its key."""

from __future__ import annotations

import math
import socket
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from aggbook.feeds.registry import venue_spec
from aggbook.service.cli import main
from aggbook.service.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "config.example.toml"


def minimal(**venue: object) -> dict:
    return {"service": {"symbols": ["BTC-USDT"]}, "venues": {"binance": {"fee_bps": 10, **venue}}}


def test_minimal_config_uses_production_urls_and_venue_spelling() -> None:
    cfg = parse_config(minimal(), env={})
    (v,) = cfg.venues
    assert (v.name, v.kind) == ("binance", "binance")
    assert (v.rest_url, v.ws_url) == ("https://api.binance.com", "wss://stream.binance.com:9443")
    assert v.symbols == {"BTC-USDT": "BTCUSDT"}
    assert v.fee_bps == Decimal(10)
    assert (cfg.host, cfg.port, cfg.stale_after) == ("127.0.0.1", 8080, 10.0)


@pytest.mark.parametrize(
    "kind,spelled", [("btse", "BTC-USDT"), ("nhex", "btcusdt"), ("bitv", "btcusdt"), ("mexc", "BTCUSDT")]
)
def test_symbol_list_is_spelled_by_venue_convention(kind: str, spelled: str) -> None:
    cfg = parse_config(
        {"service": {"symbols": ["btc-usdt"]}, "venues": {"v": {"kind": kind, "symbols": ["BTC-USDT"]}}},
        env={},
    )
    assert cfg.venues[0].symbols == {"BTC-USDT": spelled}


def test_example_config_is_valid_and_points_at_production() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.symbols == ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
    for v in cfg.venues:
        assert (v.rest_url, v.ws_url) == (venue_spec(v.kind).rest_url, venue_spec(v.kind).ws_url), v.name
    assert [v.name for v in cfg.enabled_venues] == ["binance", "mexc", "btse", "nhex", "bitv"]


def test_environment_overrides_listen_address() -> None:
    cfg = parse_config(minimal(), env={"AGGBOOK_HOST": "0.0.0.0", "AGGBOOK_PORT": "9999"})
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9999)
    with pytest.raises(ConfigError, match="^AGGBOOK_PORT:"):
        parse_config(minimal(), env={"AGGBOOK_PORT": "http"})
    with pytest.raises(ConfigError, match="^AGGBOOK_PORT:"):
        parse_config(minimal(), env={"AGGBOOK_PORT": "70000"})


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda d: d["service"].update(symbols=[]), "service.symbols"),
        (lambda d: d["service"].update(symbols=["BTCUSDT"]), r"service.symbols\[0\]"),
        (lambda d: d["service"].update(symbols=["BTC-USDT", "btc-usdt"]), r"service.symbols\[1\]"),
        (lambda d: d["service"].update(port=-1), "service.port"),
        (lambda d: d["service"].update(port="80"), "service.port"),
        (lambda d: d["service"].update(stale_after=0), "service.stale_after"),
        (lambda d: d["service"].update(log_level="loud"), "service.log_level"),
        (lambda d: d["service"].update(colour="blue"), "service.colour"),
        (lambda d: d.update(extra={}), "extra"),
        (lambda d: d["venues"]["binance"].update(fee_bps="ten"), "venues.binance.fee_bps"),
        (lambda d: d["venues"]["binance"].update(fee_bps=-1), "venues.binance.fee_bps"),
        (lambda d: d["venues"]["binance"].update(kind="nasdaq"), "venues.binance.kind"),
        (lambda d: d["venues"]["binance"].update(ws_url="https://x"), "venues.binance.ws_url"),
        (lambda d: d["venues"]["binance"].update(rest_url="ftp://x"), "venues.binance.rest_url"),
        (lambda d: d["venues"]["binance"].update(depth=0), "venues.binance.depth"),
        (lambda d: d["venues"]["binance"].update(enabled="yes"), "venues.binance.enabled"),
        (
            lambda d: d["venues"]["binance"].update(symbols={"ETH-USDT": "ETHUSDT"}),
            "venues.binance.symbols.ETH-USDT",
        ),
        (lambda d: d["venues"]["binance"].update(symbols="BTCUSDT"), "venues.binance.symbols"),
        (
            lambda d: d["venues"]["binance"].update(options={"no_such_knob": 1}),
            "venues.binance.options.no_such_knob",
        ),
        (lambda d: d["venues"]["binance"].update(options={"backoff_base": math.nan}),
         "venues.binance.options.backoff_base"),
        (lambda d: d["venues"]["binance"].update(options={"connect_timeout": math.inf}),
         "venues.binance.options.connect_timeout"),
        (lambda d: d["venues"]["binance"].update(options={"silence_timeout": -1}),
         "venues.binance.options.silence_timeout"),
        (lambda d: d["venues"]["binance"].update(options={"max_symbols_per_connection": 2.5}),
         "venues.binance.options.max_symbols_per_connection"),
        (lambda d: d["venues"]["binance"].update(options={"stream_speed": 100}),
         "venues.binance.options.stream_speed"),
        (lambda d: d["venues"]["binance"].update(options={"combined": 1}), "venues.binance.options.combined"),
        (lambda d: d["venues"]["binance"].update(typo=1), "venues.binance.typo"),
        (lambda d: d["venues"]["binance"].update(depth=5001), "venues.binance.depth"),
        (lambda d: d["venues"].update(mexc={"depth": 6000}), "venues.mexc.depth"),
        # USD-M futures serves only its fixed limits: 200 is a number spot would take
        (lambda d: d["venues"].update({"binance-futures": {"depth": 200}}), "venues.binance-futures.depth"),
        (lambda d: d["venues"]["binance"].update(enabled=False), "venues"),
        (lambda d: d.update(venues={}), "venues"),
        (lambda d: d.update(websocket={"queue_size": 0}), "websocket.queue_size"),
        (lambda d: d.update(websocket={"heartbeat": 0}), "websocket.heartbeat"),
        (lambda d: d.update(websocket={"max_behind": 0}), "websocket.max_behind"),
        (lambda d: d.update(websocket={"max_conflation": 5}), "websocket.max_conflation"),
        # TOML spells these nan and inf; nan passes every "< lo" check, inf makes timers overflow
        (lambda d: d["service"].update(stale_after=math.nan), "service.stale_after"),
        (lambda d: d["service"].update(stale_after=math.inf), "service.stale_after"),
        (lambda d: d.update(websocket={"heartbeat": math.nan}), "websocket.heartbeat"),
        (lambda d: d.update(websocket={"stall_timeout": math.inf}), "websocket.stall_timeout"),
        (lambda d: d.update(websocket={"publish_interval": math.nan}), "websocket.publish_interval"),
    ],
)
def test_mistakes_name_their_key(mutate, key: str) -> None:
    data = minimal()
    mutate(data)
    with pytest.raises(ConfigError, match=f"^{key}:"):
        parse_config(data, env={})


def test_symbol_without_any_venue_is_rejected() -> None:
    data = {
        "service": {"symbols": ["BTC-USDT", "ETH-USDT"]},
        "venues": {"binance": {"symbols": ["BTC-USDT"]}},
    }
    with pytest.raises(ConfigError, match="^service.symbols: ETH-USDT is not traded"):
        parse_config(data, env={})


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[service\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[service]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_directory_as_config_is_a_message_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--config", str(tmp_path)] if command == "serve" else ["check-config", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("aggbook: invalid config:") and "is a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::1", "::", "localhost", "aggbook-0.svc.local"])
def test_listen_host_accepts_addresses_and_names(host: str) -> None:
    data = minimal()
    data["service"]["host"] = host
    assert parse_config(data, env={}).host == host


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3", "-bad.example", "a..b", "host name", "10.0.0.1:80"])
def test_listen_host_that_is_neither_address_nor_name_is_rejected(host: str) -> None:
    data = minimal()
    data["service"]["host"] = host
    with pytest.raises(ConfigError, match="^service.host: must be an IP address or a host name"):
        parse_config(data, env={})
    with pytest.raises(ConfigError, match="^AGGBOOK_HOST: must be an IP address or a host name"):
        parse_config(minimal(), env={"AGGBOOK_HOST": host})


def test_check_config_resolves_the_listen_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EXAMPLE.read_text().replace('host = "0.0.0.0"', 'host = "aggbook.invalid"', 1))
    assert 'host = "aggbook.invalid"' in config.read_text()
    asked: list[str] = []

    def no_such_name(host: str, *args: object, **kwargs: object) -> list[object]:
        asked.append(host)  # answered here: the test sends no DNS query
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert main(["check-config", str(config)]) == 2
    assert "service.host: 'aggbook.invalid' does not resolve" in capsys.readouterr().err
    assert asked == ["aggbook.invalid"]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "wss://stream.binance.com:9443" in out
    # what a cold start costs, per venue: Binance spot at depth 1000 spends weight 50 a snapshot
    (line,) = [x for x in out.splitlines() if x.strip().startswith("binance:")]
    assert "x weight 50," in line and "cold_start_bound_s=" in line and "(200 symbols: 133.4)" in line
    bad = tmp_path / "bad.toml"
    data = tomllib.loads(EXAMPLE.read_text())
    bad.write_text(
        EXAMPLE.read_text().replace(
            'fee_bps = 10\nsymbols = { "BTC-USDT" = "BTCUSDT"',
            'fee_bps = "x"\nsymbols = { "BTC-USDT" = "BTCUSDT"',
            1,
        )
    )
    assert data["venues"]["binance"]["fee_bps"] == 10
    assert main(["check-config", str(bad)]) == 2
    assert "venues.binance.fee_bps" in capsys.readouterr().err


def test_serve_with_invalid_config_exits_2_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[service]\nsymbols = ["BTC-USDT"]\n[venues.binance]\ndepth = "deep"\n')
    assert main(["serve", "--config", str(bad)]) == 2
    assert "venues.binance.depth" in capsys.readouterr().err
