"""Every venue the package knows, found by reading the ``VENUES`` of each module in ``aggbook.feeds``.

There is no central list: a venue exists because its feed module declares a
:class:`~aggbook.feeds.spec.VenueSpec`, so adding one never edits a shared file.  Discovery
imports each module of the package once (on the first question) and keeps the result;
:func:`refresh` forgets it, for tests that add a venue module at run time.

A module that fails to import is not fatal to the others: it is remembered, logged, and named
in the "unknown venue kind" error, so a missing dependency of one venue reads as such instead
of as a typo in the config.
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from dataclasses import dataclass

from aggbook.feeds.base import VenueFeed
from aggbook.feeds.config import VenueConfig
from aggbook.feeds.metrics import FeedMetrics
from aggbook.feeds.spec import VenueSpec

log = logging.getLogger("aggbook.feeds.registry")

PACKAGE = "aggbook.feeds"


class UnknownVenue(ValueError):
    """A kind no venue module declares."""


@dataclass(frozen=True)
class _Found:
    specs: dict[str, VenueSpec]  # kind -> spec, in module order then declaration order
    broken: dict[str, str]  # module -> why it could not be imported


@functools.cache
def _discover() -> _Found:
    package = importlib.import_module(PACKAGE)
    specs: dict[str, VenueSpec] = {}
    broken: dict[str, str] = {}
    for info in pkgutil.iter_modules(package.__path__, f"{PACKAGE}."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:
            log.warning("venue module %s not importable: %s", info.name, exc)
            broken[info.name] = str(exc)
            continue
        declared = getattr(module, "VENUES", ())
        for spec in declared:
            if not isinstance(spec, VenueSpec):
                raise TypeError(f"{info.name}.VENUES holds {spec!r}, not a VenueSpec")
            if spec.kind in specs:
                raise ValueError(f"venue kind {spec.kind!r} declared twice "
                                 f"({specs[spec.kind].feed.__module__} and {info.name})")
            specs[spec.kind] = spec
    return _Found(specs, broken)


def refresh() -> None:
    """Forget what discovery found; the next question scans the package again."""
    _discover.cache_clear()


def venue_specs() -> dict[str, VenueSpec]:
    """Kind -> spec for every declared venue."""
    return dict(_discover().specs)


def known_kinds() -> list[str]:
    return sorted(_discover().specs)


def venue_spec(kind: str) -> VenueSpec:
    found = _discover()
    try:
        return found.specs[kind]
    except KeyError:
        message = f"unknown venue kind {kind!r}; known: {', '.join(sorted(found.specs))}"
        if found.broken:
            message += "; not importable: " + "; ".join(f"{m} ({why})" for m, why in found.broken.items())
        raise UnknownVenue(message) from None


def feed_class(kind: str) -> type[VenueFeed]:
    return venue_spec(kind).feed


def create_feed(config: VenueConfig, *, metrics: FeedMetrics | None = None) -> VenueFeed:
    return feed_class(config.kind)(config, metrics=metrics)
