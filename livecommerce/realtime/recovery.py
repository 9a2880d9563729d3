"""After the pub/sub link to Redis broke: fill every viewer's gap from the show's event log,
keeping its socket open.

While the link is down nothing reaches this process's viewers, and what was published meanwhile
is lost to pub/sub. When the hub reports the loss, every joined viewer's outbox is *held* (live
frames kept aside) and the show is marked for recovery. The recovery loop then, per show, with a
back-off while Redis is away:

1. subscribes again (:meth:`Hub.resubscribe`: returns once live messages flow, and they are held);
2. reads the log after the earliest position among the show's viewers (``read_since``: the same
   read as a client's resume, which also says when the log cannot cover the gap);
3. releases each outbox with what it missed: the events after its own position, then the live
   frames held meanwhile, each event once, in order (:meth:`Outbox.release`).

A viewer whose gap the log cannot cover (trimmed past it) is closed with 4000 and resumes or gets
a snapshot, as before. A viewer that was joining when the link broke is closed with 4000 too: its
snapshot may predate the loss. So a Redis restart costs viewers nothing but the events' delay --
no reconnect storm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from livecommerce.core.errors import StoreError
from livecommerce.realtime.codec import Frame, parse_event_id
from livecommerce.realtime.hub import Hub
from livecommerce.realtime.outbox import Outbox

log = logging.getLogger("livecommerce.gateway")

RETRY_S = (0.05, 1.0)
"""First and longest pause between recovery passes while Redis is away."""

ReadSince = Callable[
    [str, str], Awaitable[tuple[list[dict[str, Any]], list[dict[str, Any]]] | None]
]
"""(show, last event id) -> (events after it, the show's drops), or None: the log cannot cover."""


class Recovery:
    def __init__(
        self,
        hub: Hub,
        read_since: ReadSince,
        *,
        reconnect: Callable[[list[Outbox]], None],
        filled: Callable[[str, list[dict[str, Any]], list[Outbox]], None],
        spawn: Callable[[Any, str], asyncio.Task[None]],
    ) -> None:
        self.hub = hub
        self.read_since = read_since
        self.reconnect = reconnect
        """Close these viewers with 4000: they resume by reconnecting."""
        self.filled = filled
        """Called with (show, drops, outboxes) once a show's viewers are caught up."""
        self.spawn = spawn
        self.pending: dict[str, set[Outbox]] = {}
        self._losses = 0
        """Links lost so far: a read made before the latest loss does not cover its gap."""
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return bool(self.pending)

    def lost(self) -> None:
        """The link broke: hold every joined viewer of every show here, and start recovering."""
        self._losses += 1
        joining: list[Outbox] = []
        for show, topic in self.hub.topics.items():
            waiting = self.pending.setdefault(show, set())
            for outbox in list(topic.outboxes):
                if outbox in waiting:
                    continue  # lost again while recovering: still held, still waiting
                if outbox.holding:  # joining: its snapshot may predate the loss
                    joining.append(outbox)
                    continue
                outbox.hold()
                waiting.add(outbox)
        if joining:
            self.reconnect(joining)
        if self._task is None or self._task.done():
            self._task = self.spawn(self._run(), "recovery")

    async def _run(self) -> None:
        pause = RETRY_S[0]
        while self.pending:
            for show in list(self.pending):
                try:
                    await self._recover(show)
                except (StoreError, RedisError, OSError, ConnectionError, TimeoutError) as exc:
                    log.debug("recovery of show %s: not yet (%s)", show, exc)
                    continue
                except Exception:  # never leave viewers held: they resume by reconnecting
                    log.exception("recovery of show %s failed; its viewers resume", show)
                    self.reconnect(list(self.pending.pop(show, ())))
                    continue
                pause = RETRY_S[0]
            if self.pending:
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_S[1])

    async def _recover(self, show: str) -> None:
        losses = self._losses
        topic = await self.hub.resubscribe(show)
        outboxes = [o for o in self.pending.get(show, ()) if not o.closed]
        if topic is None or not outboxes:
            for outbox in outboxes:
                outbox.release(outbox.position)
            self.pending.pop(show, None)
            return
        outboxes = [o for o in outboxes if o in topic.outboxes]  # not those that left
        if not outboxes:
            self.pending.pop(show, None)
            return
        positions = [o.position or "0-0" for o in outboxes]
        since = min(positions, key=parse_event_id)
        missed = await self.read_since(show, since)
        if self._losses != losses or self.pending.get(show) is None:
            return  # the link broke again meanwhile (the next pass reads again), or done already
        self.pending.pop(show)
        if missed is None:
            log.warning("show %s: the event log cannot cover the gap; viewers resume", show)
            self.reconnect(outboxes)
            return
        events, drops = missed
        replay = [Frame(event, event_id=event["id"]) for event in events]
        for outbox in outboxes:
            outbox.release(outbox.position, replay)
        log.info("show %s: %d viewer(s) caught up on %d event(s)", show, len(outboxes), len(events))
        self.filled(show, drops, outboxes)
