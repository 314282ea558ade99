"""The ``[nats]`` config table and the shard split: which symbols this process owns.

A shard is ``K/N`` with ``0 <= K < N``: it owns the symbols whose stable hash (the first 8 bytes of
the SHA-256 of the canonical symbol's UTF-8 text, big-endian) is ``K`` modulo ``N``.  Every venue of
a symbol stays in the symbol's shard, so a shard merges its symbols' books exactly like a single
process would.  SHA-256, not Python's ``hash``: the split must be the same in every process, on
every machine, in every release.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aggbook.service.config import ServiceConfig

_SHARD = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")  # a NATS subject token and a key-value key part


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: owns every symbol :func:`shard_of` maps to ``index``."""

    index: int = 0
    count: int = 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, symbol: str) -> bool:
        return shard_of(symbol, self.count) == self.index


def shard_of(symbol: str, count: int) -> int:
    """The shard index of a canonical symbol among ``count`` shards (stable across processes)."""
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big") % count


def parse_shard(value: Any, key: str) -> Shard:
    from aggbook.service.config import ConfigError

    match = _SHARD.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(key, f'must look like "K/N" (shard K of N, 0 <= K < N), got {value!r}')
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ConfigError(key, f"shard index must be 0 to N-1 and N at least 1, got {value!r}")
    return Shard(index, count)


def apply_shard(config: ServiceConfig, shard: Shard) -> ServiceConfig:
    """The config narrowed to the shard's symbols; a venue trading none of them is left out."""
    symbols = [s for s in config.symbols if shard.owns(s)]
    venues = []
    for vc in config.venues:
        kept = {c: spelled for c, spelled in vc.symbols.items() if c in symbols}
        if kept:
            venues.append(dataclasses.replace(vc, symbols=kept))
    return dataclasses.replace(config, symbols=symbols, venues=venues, shard=shard)


@dataclass(frozen=True)
class NatsSettings:
    """Publishing to NATS (the ``[nats]`` table); off while ``url`` is empty."""

    url: str = ""  # nats://host:4222 (several separated by commas); empty: no publishing
    prefix: str = "aggbook"  # first token of every subject
    bucket: str = "aggbook"  # the JetStream key-value bucket holding the last quote and book per symbol
    book_depth: int = 50  # levels per side of the published merged book (a gateway's max depth)
    book_interval: float = 0.25  # seconds between two publications of a symbol's merged book
    heartbeat_interval: float = 1.0  # seconds between two heartbeats of the shard
    pending_bytes: int = 8 * 1024 * 1024  # the client's outgoing buffer; past it subjects are conflated
    kv_storage: str = "memory"  # "memory" or "file": the bucket is a cache every shard refills

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        if not self.enabled:
            return "nats: off"
        return "nats: " + ", ".join(f"{k}={v}" for k, v in vars(self).items())


def parse_nats(table: Mapping[str, Any], max_depth: int) -> NatsSettings:
    """Validate the ``[nats]`` table (unknown keys are errors, like everywhere in the config)."""
    from aggbook.service.config import ConfigError, _check_keys, _float, _int, _str

    _check_keys(table, set(NatsSettings.__dataclass_fields__), "nats")
    d = NatsSettings()
    url = table.get("url", "")
    if url != "":
        for part in _str(url, "nats.url").split(","):
            if not part.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ConfigError("nats.url", f"must be nats://host:port (comma-separated), got {url!r}")
    for name in ("prefix", "bucket"):
        value = _str(table.get(name, getattr(d, name)), f"nats.{name}")
        if not _TOKEN.match(value):
            raise ConfigError(f"nats.{name}", f"letters, digits, '-' and '_' only, got {value!r}")
    storage = table.get("kv_storage", d.kv_storage)
    if storage not in ("memory", "file"):
        raise ConfigError("nats.kv_storage", f'must be "memory" or "file", got {storage!r}')
    return NatsSettings(
        url=url,
        prefix=table.get("prefix", d.prefix),
        bucket=table.get("bucket", d.bucket),
        book_depth=_int(
            table.get("book_depth", min(d.book_depth, max_depth)), "nats.book_depth", 1, max_depth
        ),
        book_interval=_float(
            table.get("book_interval", d.book_interval), "nats.book_interval", 0, strict=True
        ),
        heartbeat_interval=_float(
            table.get("heartbeat_interval", d.heartbeat_interval), "nats.heartbeat_interval", 0, strict=True
        ),
        pending_bytes=_int(table.get("pending_bytes", d.pending_bytes), "nats.pending_bytes", 65_536),
        kv_storage=storage,
    )
