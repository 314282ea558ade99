"""Ending a component's background tasks on stop."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(tasks: list[asyncio.Task]) -> None:
    """Cancel every task, wait for each to finish, and empty the list.

    All are cancelled before any is awaited, so they wind down together; a task's own cancellation
    is the expected end and is not re-raised.
    """
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()
