"""Fixtures shared by the simulator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp client: the conformance tests talk to the venues without the project's feed code."""
    async with aiohttp.ClientSession() as client:
        yield client
