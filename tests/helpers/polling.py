"""Waiting for a condition in a test: poll it with a bound, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, *, step: float = 0.005
) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds (a bound, not a timing)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within:.0f} s")
        await asyncio.sleep(step)
