"""Long-lived objects frozen out of the collector's passes: when, how often, and what stays collectable."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from aggbook.service.aggregator import Aggregator
from aggbook.service.gcfreeze import freeze_when_settled
from aggbook.service.metrics import ServiceMetrics
from tests.conftest import wait_for
from tests.service.fakes import FakeFeeds, fake_config, load_all


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Freezing is process-wide: give the rest of the suite its objects back."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def stages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.stage for r in caplog.records if r.getMessage() == "long-lived objects frozen"]  # type: ignore[attr-defined]


class Node:
    """A tracked object that can be part of a cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref, Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), a


async def test_frozen_once_started_and_again_once_settled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "aggbook.service")
    settled = False
    task = asyncio.create_task(freeze_when_settled(lambda: settled, timeout=60, poll=0.01))
    await wait_for(lambda: stages(caplog) == ["started"], what="the first freeze")
    first = gc.get_freeze_count()
    assert first > 0
    made_since = [[] for _ in range(1000)]  # tracked objects born between the two freezes
    await asyncio.sleep(0.05)
    assert not task.done() and stages(caplog) == ["started"]  # nothing until the cold start is over
    settled = True
    await asyncio.wait_for(task, 10)
    assert stages(caplog) == ["started", "settled"]
    assert gc.get_freeze_count() >= first + len(made_since)


async def test_a_cold_start_that_never_settles_is_frozen_at_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "aggbook.service")
    await asyncio.wait_for(freeze_when_settled(lambda: False, timeout=0.1, poll=0.01), 10)
    assert stages(caplog) == ["started", "settled"]


async def test_cycles_made_after_the_freeze_are_still_collected(caplog: pytest.LogCaptureFixture) -> None:
    before, held = cycle()  # alive at the freeze: frozen with everything else
    await freeze_when_settled(lambda: True, timeout=1, poll=0.01)
    after = cycle()[0]  # made later, garbage at once
    del held
    gc.collect()
    assert after() is None  # collected as before
    assert before() is not None  # the documented price: frozen, so never collected
    gc.unfreeze()
    gc.collect()
    assert before() is None


def test_every_book_live_needs_every_configured_book_published_and_live() -> None:
    feeds = FakeFeeds()
    agg = Aggregator(fake_config(), feed_factory=feeds, metrics=ServiceMetrics())
    assert not agg.every_book_live()  # nothing published yet
    for feed in feeds.feeds.values():
        feed.publish_new("BTC-USDT")
    feeds["alpha"].publish_new("ETH-USDT")
    feeds["alpha"].load("BTC-USDT", [("1", "1")], [("2", "1")])
    feeds["beta"].load("BTC-USDT", [("1", "1")], [("2", "1")])
    feeds["alpha"].load("ETH-USDT", [("1", "1")], [("2", "1")])
    assert not agg.every_book_live()  # beta's ETH-USDT book never published
    feeds["beta"].publish_new("ETH-USDT")
    assert not agg.every_book_live()  # published, not live
    load_all(feeds)
    assert agg.every_book_live()
    feeds["alpha"].gap("ETH-USDT")
    assert not agg.every_book_live()


async def test_collector_passes_are_timed_while_the_probe_runs() -> None:
    metrics = ServiceMetrics()

    def full_passes() -> float:
        return metrics.registry.get_sample_value("aggbook_gc_pause_seconds_count", {"generation": "2"}) or 0.0

    probe = asyncio.create_task(metrics.loop.run(interval=0.01))
    await asyncio.sleep(0.02)  # the probe has hooked the collector
    gc.collect()
    assert full_passes() == 1
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert metrics.loop._on_gc not in gc.callbacks  # process-wide hook: gone with the probe
    gc.collect()
    assert full_passes() == 1
