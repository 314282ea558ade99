"""``shard = "K/N"``: a deterministic split of the symbols, every venue of a symbol in one shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggbook.service.cli import main
from aggbook.service.config import ConfigError, load_config, parse_config
from aggbook.service.nats.settings import NatsSettings, Shard, apply_shard, shard_of
from tests.service.fakes import fake_config

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "config.example.toml"


def test_the_split_is_stable_covering_and_keeps_venues_with_their_symbols() -> None:
    symbols = [f"S{i}-USDT" for i in range(40)]
    owners = {s: shard_of(s, 3) for s in symbols}
    assert set(owners.values()) == {0, 1, 2}
    # a fixed value: the split must never change between releases (shards and gateways mix versions)
    assert [shard_of(s, 2) for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT")] == [0, 0, 1]
    config = fake_config()
    parts = [apply_shard(config, Shard(k, 2)) for k in range(2)]
    assert sorted(s for p in parts for s in p.symbols) == sorted(config.symbols)
    for part in parts:
        for vc in part.venues:
            assert set(vc.symbols) <= set(part.symbols)


def _doc(**service: object) -> dict:
    return {
        "service": {"symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"], **service},
        "venues": {"binance": {}, "mexc": {"symbols": ["SOL-USDT"]}},
    }


def test_shard_key_and_override() -> None:
    config = parse_config(_doc(shard="1/2"), env={})
    assert config.symbols == ["SOL-USDT"] and config.shard == Shard(1, 2)
    assert {v.name: list(v.symbols) for v in config.venues} == {"binance": ["SOL-USDT"], "mexc": ["SOL-USDT"]}
    config = parse_config(_doc(shard="1/2"), env={}, shard="0/2")  # --shard wins
    assert config.symbols == ["BTC-USDT", "ETH-USDT"] and [v.name for v in config.venues] == ["binance"]
    for bad in ("2/2", "1", "a/b", "0/0", 3):
        with pytest.raises(ConfigError, match="service.shard"):
            parse_config(_doc(shard=bad), env={})


def test_nats_table_is_checked() -> None:
    doc = _doc()
    doc["nats"] = {"url": "nats://127.0.0.1:4222", "book_depth": 20}
    config = parse_config(doc, env={})
    assert config.nats == NatsSettings(url="nats://127.0.0.1:4222", book_depth=20)
    for key, value, match in (
        ("url", "http://x", "nats.url"),
        ("book_depth", 5000, "nats.book_depth"),
        ("bucket", "a.b", "nats.bucket"),
        ("colour", 1, "nats.colour"),
    ):
        doc["nats"] = {key: value}
        with pytest.raises(ConfigError, match=match):
            parse_config(doc, env={})


def test_check_config_prints_the_shards_symbols(capsys, tmp_path: Path) -> None:
    assert main(["check-config", str(EXAMPLE), "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "shard: 1/2 owns 1 symbols: SOL-USDT" in out
    assert "BTC-USDT ->" not in out and "SOL-USDT ->" in out
    assert load_config(EXAMPLE, shard="0/2").symbols == ["BTC-USDT", "ETH-USDT"]


def test_a_gateway_follows_the_newest_topology_size() -> None:
    from prometheus_client import CollectorRegistry

    from aggbook.service.nats.metrics import GatewayMetrics
    from aggbook.service.nats.view import NatsView, ViewSettings

    view = NatsView(ViewSettings("nats://127.0.0.1:1"), GatewayMetrics(CollectorRegistry()))

    def beat(index: int, count: int, instance: str, symbols: dict) -> None:
        view._heartbeat(
            {"index": index, "count": count, "instance": instance, "started": 1.0, "symbols": symbols}
        )

    for k in range(3):
        beat(k, 3, f"a{k}", {f"S{k}-USDT": {"binance": f"S{k}USDT"}})
    assert sorted(view.shards) == [0, 1, 2] and sorted(view.pending) == ["S0-USDT", "S1-USDT", "S2-USDT"]
    beat(0, 2, "b0", {"S0-USDT": {"binance": "S0USDT"}, "S2-USDT": {"binance": "S2USDT"}})
    assert sorted(view.shards) == [0, 1]  # shard 2 of 3 is gone for good, not stale forever
    assert view.pending["S2-USDT"].shard == 0
    beat(1, 2, "b1", {"S1-USDT": {"binance": "S1USDT"}})
    assert {sh.count for sh in view.shards.values()} == {2}
