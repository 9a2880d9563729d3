"""The gateway's side of the waiting lines (each line's own state is :mod:`.line`, pure): tickets
taken from the store a batch per loop turn, attempts that wait with their viewer's socket still
read, positions sent as a line moves, everyone answered at once when the drop closes, and the
stall rule's ticks. docs/burst.md, "The waiting line"; docs/protocol.md for the messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect

from livecommerce.core.errors import StoreError
from livecommerce.realtime.connection import Connection
from livecommerce.realtime.line import Batcher, DropLine, Waiter
from livecommerce.realtime.metrics import GatewayMetrics
from livecommerce.realtime.protocol import Command, ErrorCode, error
from livecommerce.store.inventory import Inventory

log = logging.getLogger("livecommerce.gateway")

LINE_TICK_S = 0.5
"""How often waiting viewers hear their new position (when it moved) and stalls are looked at."""
LATE_TICKS = 3
"""Ticks in a row that may run late (a busy loop) before a stall is declared all the same."""
MAX_BUFFERED = 16
"""Frames kept from a viewer while its attempt waits in line (read to see it disconnect)."""

EdgeReply = Callable[[str, Command], "dict[str, Any] | None"]


def nothing() -> None:
    """A ticket's "answered" for an attempt that holds no ticket."""


class LineDesk:
    """Every drop line of one gateway process (``LIVECOMMERCE_LINE_IN_FLIGHT`` > 0)."""

    def __init__(self, inventory: Inventory, metrics: GatewayMetrics, *, in_flight: int,
                 size: int, stall_s: float, edge_reply: EdgeReply,
                 closed: Callable[[str, str], bool]) -> None:  # fmt: skip
        self.inventory = inventory
        self.metrics = metrics
        self.in_flight = in_flight
        self.size = size
        self.stall_s = stall_s
        self.edge_reply = edge_reply
        """The edge's certain answer to an attempt, or None (the gateway's ``_edge_reply``)."""
        self.closed = closed
        """Whether the edge view knows the drop closed."""
        self.lines: dict[tuple[str, str], DropLine] = {}
        self._tickets = Batcher(self._take_tickets)
        self._answered = Batcher(self._tickets_done)

    async def _take_tickets(self, key: Any, n: int) -> tuple[int, int]:
        return await self.inventory.take_tickets(key[0], key[1], n)

    async def _tickets_done(self, key: Any, n: int) -> None:
        line = self.lines.get(key)
        if line is not None:
            line.counting(n)
        try:
            done = await self.inventory.tickets_done(key[0], key[1], n)
        except (StoreError, RedisError, OSError) as exc:  # the line's stall rule recovers
            log.warning("line of %s/%s: %d answers not counted: %s", key[0], key[1], n, exc)
            return
        line = self.lines.get(key)  # the progress message moves every other process's line
        if line is not None:
            self._admit(line.moved(done, time.monotonic()))

    def _answer_ticket(self, key: tuple[str, str]) -> None:
        """One ticket of this process answered: counted at the store (batched per loop turn)
        and, at once, in this process's line."""
        self._answered.add(key)
        line = self.lines.get(key)
        if line is not None:
            self._admit(line.answered_here(time.monotonic()))

    def line(self, key: tuple[str, str]) -> DropLine:
        line = self.lines.get(key)
        if line is None:
            line = self.lines[key] = DropLine(self.in_flight, self.size)
        return line

    def _ticket_done(self, key: tuple[str, str]) -> Callable[[], None]:
        """Counts one ticket of ``key`` answered, once however often it is called."""
        counted = False

        def done() -> None:
            nonlocal counted
            if not counted:
                counted = True
                self._answer_ticket(key)

        return done

    async def queue_up(self, conn: Connection, key: tuple[str, str],
                        cmd: Command) -> Callable[[], None] | None:  # fmt: skip
        """Take a ticket and wait for the line to reach it. Returns what to call once the store
        has answered (the ticket is then done) to go to the store now; None: answered here
        (``busy``, or the drop's answer became known meanwhile) or the viewer left (nothing
        ran). Every ticket taken is counted done exactly once."""
        try:
            (last, done), i, n = await self._tickets.take(key)
        except (StoreError, RedisError, OSError) as exc:
            log.warning("line of %s/%s: no ticket: %s", key[0], key[1], exc)
            return nothing  # no line without the store; the store itself will answer (or fail)
        ticket = last - n + 1 + i
        line = self.line(key)
        now = time.monotonic()
        self._admit(line.moved(done, now))
        # The drop may have closed while the ticket was taken: its line was flushed before
        # this attempt joined it, which then goes on like the others (edge refusal or store).
        if line.may_go(ticket) or self.closed(*key):
            return self._ticket_done(key)
        if line.full:
            self._answer_ticket(key)
            self.metrics.line_busy.inc()
            self.metrics.count_command(cmd.op, "busy")
            conn.send(error(ErrorCode.BUSY, "too many attempts wait for this drop; try again",
                            request_id=cmd.request_id,
                            retry_after_ms=line.retry_after_ms()).message)  # fmt: skip
            return None
        verdict: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        waiter = Waiter(ticket, now, (conn, cmd, verdict))
        position = line.wait(waiter)
        gauge = self.metrics.line_waiting.labels(*key)
        gauge.inc()
        conn.send(self._queued(cmd, position))
        try:
            reply = await self._wait_in_line(conn, verdict)
        except BaseException:
            line.leave(waiter)  # gone (disconnect, shutdown): nothing was sent to the store
            self._answer_ticket(key)
            raise
        finally:
            gauge.dec()
            self.metrics.line_seconds.observe(time.monotonic() - now)
        if reply is None:
            return self._ticket_done(key)
        self._answer_ticket(key)
        self.metrics.count_command(cmd.op, reply.get("reason") or "refused")
        conn.send(reply)
        return None

    @staticmethod
    def _queued(cmd: Command, position: int) -> dict[str, Any]:
        return {"type": "queued", "id": cmd.request_id, "op": str(cmd.op), "drop": cmd.drop,
                "position": position}  # fmt: skip

    async def _wait_in_line(self, conn: Connection,
                            verdict: asyncio.Future[dict[str, Any] | None]
                            ) -> dict[str, Any] | None:  # fmt: skip
        """The verdict (None = go; else the reply), reading the viewer's frames meanwhile so a
        disconnect is seen at once (frames are kept for the loop, at most MAX_BUFFERED)."""
        while True:
            waits: set[asyncio.Future[Any]] = {verdict}
            if conn.next_receive is None and len(conn.buffered) < MAX_BUFFERED:
                conn.next_receive = asyncio.ensure_future(conn.websocket.receive())
            if conn.next_receive is not None:
                waits.add(conn.next_receive)
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if verdict.done():
                return verdict.result()
            received, conn.next_receive = conn.next_receive, None
            assert received is not None
            message = received.result()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            conn.buffered.append(message)

    def _admit(self, waiters: list[Waiter]) -> None:
        for waiter in waiters:
            verdict = waiter.payload[2]
            if not verdict.done():
                verdict.set_result(None)

    def on_line(self, show: str, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("done"), int):
            return
        line = self.lines.get((show, str(data.get("drop"))))
        if line is not None:
            self._admit(line.moved(data["done"], time.monotonic()))

    def flush(self, show: str, drop: str) -> None:
        """The drop is known closed: everyone waiting is answered by the edge now, or, when it
        cannot (a buyer, whose attempt may be the retry of a success), goes to the store: on
        a closed drop no attempt competes with another for a unit."""
        line = self.lines.get((show, drop))
        if line is None:
            return
        for waiter in line.take_all():  # one pass: a 10k line is flushed in O(n)
            _, cmd, verdict = waiter.payload
            if not verdict.done():
                verdict.set_result(self.edge_reply(show, cmd))

    async def ticks(self, stop: asyncio.Event) -> None:
        due, late = time.monotonic(), 0
        while not stop.is_set():
            now = time.monotonic()
            # A tick that runs late ran on a loop too busy to read its progress messages in
            # time: that nothing moved meanwhile is then not known, so no stall is declared
            # (unless every tick is late: a line must not wait forever for a dead process).
            late = late + 1 if now - due >= LINE_TICK_S else 0
            on_time = late == 0 or late > LATE_TICKS
            for key, line in list(self.lines.items()):
                if not line.waiting:
                    if now - line.moved_at > 60:
                        del self.lines[key]
                    continue
                if on_time:
                    self._admit(line.stalled(now, self.stall_s))
                for waiter, position in line.updates():
                    conn, cmd, _ = waiter.payload
                    conn.send(self._queued(cmd, position))
            due = time.monotonic() + LINE_TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LINE_TICK_S)
