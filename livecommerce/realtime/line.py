"""The waiting line of a drop: a burst waits in arrival order instead of piling onto the store.

Every ``reserve``/``buy_now`` the edge cannot answer takes a **ticket** from the drop's counter in
Redis (``line_ticket.lua``; the tickets of one loop turn are taken in one call), so arrival order
is one order across every gateway process. Every answered attempt (sold, refused, ``busy``, or
gone with its viewer) is counted once in the drop's ``done`` counter (``line_done.lua``), which
publishes how far the line moved to every gateway on the show's channel.

An attempt with ticket ``t`` goes to the store once ``t <= done + window``: at most ``window``
attempts of the drop are at the store at once, over all processes, and an attempt is never sent
before the attempts ``window`` or more tickets ahead of it were answered -- wherever they wait.
Beyond that it waits here (``queued`` with its position, updated as the line moves); past
``size`` waiting in this process it is refused ``busy`` with a ``retry_after_ms``. When the drop
sells out the gateway answers everyone still waiting at once (edge refusals, see edge.py).

A process that dies with tickets would stop the line: when ``done`` has not moved for
``stall_s`` while attempts wait here, the line takes the missing tickets as answered.

:class:`DropLine` is the pure part (clock handed in); :class:`Batcher` gathers the ticket and
done calls of one loop turn. See docs/protocol.md ("The waiting line").
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

UPDATE_BUDGET = 500
"""Position updates sent per drop and tick at most: a 10k line must not cost 10k frames a tick."""
MIN_RETRY_MS = 500
MAX_RETRY_MS = 30_000


@dataclass(eq=False)
class Waiter:
    """One attempt waiting in line (``payload`` is the gateway's: connection, command, future)."""

    ticket: int
    since: float
    payload: Any = None
    told: int = 0
    """The last position the viewer was told (0 = none yet)."""

    def __lt__(self, other: Waiter) -> bool:
        return self.ticket < other.ticket


@dataclass
class DropLine:
    window: int
    size: int
    done: int = 0
    """Tickets answered over every process, as far as this process knows: the reported count,
    plus this process's answers no report can include yet, plus the tickets the stall rule
    took as lost (never more than were answered or lost)."""
    reported: int = 0
    """The highest count of answered tickets the store reported (ticket reply, progress
    message, this process's own done call)."""
    unsent: int = 0
    """This process's answered tickets not yet sent to the store to be counted: no reported
    count includes them yet."""
    skipped: int = 0
    """Tickets taken as answered by the stall rule (lost with a process that died)."""
    waiting: list[Waiter] = field(default_factory=list)
    moved_at: float = 0.0
    _rate: float = 0.0
    """Tickets answered per second (smoothed), for ``retry_after_ms``."""

    def may_go(self, ticket: int) -> bool:
        return ticket <= self.done + self.window

    def position(self, ticket: int) -> int:
        """1 = next to go to the store."""
        return max(1, ticket - self.done - self.window)

    @property
    def full(self) -> bool:
        return len(self.waiting) >= self.size

    def wait(self, waiter: Waiter) -> int:
        bisect.insort(self.waiting, waiter)
        waiter.told = self.position(waiter.ticket)
        return waiter.told

    def leave(self, waiter: Waiter) -> bool:
        try:
            self.waiting.remove(waiter)
        except ValueError:
            return False
        return True

    def moved(self, done: int, now: float) -> list[Waiter]:
        """The store reported ``done`` tickets answered (a progress message, a ticket or done
        reply): who goes now."""
        alive = done > self.reported
        self.reported = max(self.reported, done)
        admitted = self._advance(now)
        if alive:  # the line moves, even while a skip keeps it ahead here: no stall
            self.moved_at = now
        return admitted

    def answered_here(self, now: float) -> list[Waiter]:
        """One of this process's tickets was answered: the line moves here at once, not one
        store round trip (and pub/sub delivery) later. Who goes now."""
        self.unsent += 1
        return self._advance(now)

    def counting(self, n: int) -> None:
        """``n`` of this process's answers are being sent to the store to be counted: from now
        on a reported count may include them."""
        self.unsent = max(0, self.unsent - n)

    def _advance(self, now: float) -> list[Waiter]:
        done = self.reported + self.unsent + self.skipped
        if done > self.done:
            if self.moved_at and now > self.moved_at:
                rate = (done - self.done) / (now - self.moved_at)
                self._rate = rate if not self._rate else 0.8 * self._rate + 0.2 * rate
            self.done = done
            self.moved_at = now
        elif not self.moved_at:
            self.moved_at = now
        return self._admit()

    def stalled(self, now: float, stall_s: float) -> list[Waiter]:
        """Nothing moved for ``stall_s`` with attempts waiting: a process may have died with
        tickets. Take the tickets ahead of the first waiter as answered, for good: the answers
        reported later move the line on from there (not back to another stall)."""
        if not self.waiting or now - self.moved_at < stall_s:
            return []
        lost = self.waiting[0].ticket - 1 - (self.reported + self.unsent + self.skipped)
        self.skipped += max(0, lost)
        self.moved_at = now
        return self._advance(now)

    def _admit(self) -> list[Waiter]:
        n = 0
        while n < len(self.waiting) and self.may_go(self.waiting[n].ticket):
            n += 1
        admitted, self.waiting[:n] = self.waiting[:n], []
        return admitted

    def take_all(self) -> list[Waiter]:
        waiting, self.waiting = self.waiting, []
        return waiting

    def updates(self, budget: int = UPDATE_BUDGET) -> list[tuple[Waiter, int]]:
        """Waiters whose position moved materially (a fifth, at least one place) since told,
        front of the line first, at most ``budget`` of them (each is a frame to send)."""
        out = []
        for waiter in self.waiting:
            position = self.position(waiter.ticket)
            if position <= waiter.told - max(1, waiter.told // 5):
                waiter.told = position
                out.append((waiter, position))
                if len(out) >= budget:
                    break
        return out

    def retry_after_ms(self) -> int:
        """When trying again is likely to find room: the line's length at its recent pace."""
        if self._rate <= 0:
            return MAX_RETRY_MS // 10
        ms = int(len(self.waiting) / self._rate * 1000)
        return max(MIN_RETRY_MS, min(MAX_RETRY_MS, ms))


Call = Callable[[Hashable, int], Awaitable[Any]]


class Batcher:
    """Calls ``call(key, n)`` once per loop turn and key for the ``n`` requests of that turn.

    ``take`` returns the call's result, the caller's index in its batch (0..n-1, in the order of
    the requests) and the batch's size; at most one call per key is in flight (requests meanwhile
    form the next).
    """

    def __init__(self, call: Call) -> None:
        self._call = call
        self._pending: dict[Hashable, list[asyncio.Future[tuple[Any, int, int]]]] = {}
        self._running: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        """The drain tasks: the loop keeps only weak references to tasks, and a collected one
        would leave its batch waiting forever."""

    async def take(self, key: Hashable) -> tuple[Any, int, int]:
        future: asyncio.Future[tuple[Any, int, int]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        self._start(key)
        return await future

    def add(self, key: Hashable) -> None:
        """A request whose result nobody awaits (its failure is logged by ``call``)."""
        future: asyncio.Future[tuple[Any, int, int]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.setdefault(key, []).append(future)
        self._start(key)

    def _start(self, key: Hashable) -> None:
        if key in self._running:
            return
        self._running.add(key)
        task = asyncio.get_running_loop().create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: Hashable) -> None:
        try:
            await asyncio.sleep(0)  # the other requests of this loop turn join the batch
            while batch := self._pending.pop(key, None):
                try:
                    result = await self._call(key, len(batch))
                except Exception as exc:
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for i, future in enumerate(batch):
                    if not future.done():
                        future.set_result((result, i, len(batch)))
        finally:
            self._running.discard(key)
