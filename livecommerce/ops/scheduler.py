"""Time-driven work: scheduled openings and closings on time, expired holds back in stock.

Every gateway process runs one :class:`Scheduler`. They may all work on the same drop at once:
each transition and each release happens inside a Lua script whose condition includes the state
it changes, so an "opened" event is emitted once and a hold is released once, whoever gets there
first. Between passes a scheduler sleeps until the next due time (server clock), never longer
than the reap interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livecommerce.core.errors import StoreError
from livecommerce.store.inventory import Inventory

log = logging.getLogger("livecommerce.scheduler")

MIN_SLEEP_S = 0.002


class Scheduler:
    def __init__(self, inventory: Inventory, interval_s: float) -> None:
        self.inventory = inventory
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            delay = self.interval_s
            try:
                await self.inventory.run_due()
                delay = await self._next_delay()
            except StoreError as exc:
                log.warning("scheduler pass failed: %s", exc)
            except Exception:
                # Never let one bad pass stop openings, closings and hold expiry for good.
                log.exception("scheduler pass failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _next_delay(self) -> float:
        due = await self.inventory.next_due_ms()
        if due is None:
            return self.interval_s
        due_in = (due - await self.inventory.server_time_ms()) / 1000.0
        return min(max(due_in, MIN_SLEEP_S), self.interval_s)
