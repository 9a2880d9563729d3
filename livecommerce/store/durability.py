"""Waiting until a confirmed order is on disk before the buyer is told "confirmed".

With AOF on, ``WAITAOF 1 0 <timeout>`` returns once the server has fsynced every write *this
connection* made. The order scripts run on other connections, so each round first makes a tiny
write on the connection it is sent on (``INCR`` of :attr:`Keyspace.aof_barrier`) and then
WAITAOFs there: that write comes after every order already acknowledged by a script, so its
fsync covers them all. Concurrent confirms share one round: a caller waits for the first round
that *starts* after its own write, so one fsync covers a whole burst of buyers. Rounds overlap
(up to :data:`MAX_ROUNDS`, each on its own connection): a caller arriving while a round is out
starts the next one at once instead of waiting for that round to come back, which on a busy
event loop is a whole turn of the loop later. Servers without
WAITAOF (Redis < 7.2) or with AOF off are detected at start and reported by :attr:`mode`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger("livecommerce.durability")

Mode = Literal["waitaof", "aof-no-wait", "none"]
MAX_ROUNDS = 4
"""WAITAOF rounds out at once (each holds one pooled connection for about one fsync)."""


class AofBarrier:
    def __init__(
        self,
        redis: aioredis.Redis,
        barrier_key: str,
        *,
        enabled: bool = True,
        timeout_ms: int = 2000,
    ):
        self.redis = redis
        self.barrier_key = barrier_key
        self.enabled = enabled
        self.timeout_ms = timeout_ms
        self.mode: Mode = "none"
        self._next: list[asyncio.Future[bool]] = []
        """The callers waiting for the next round (each its own future: one that gives up
        cancels nothing shared)."""
        self._rounds: set[asyncio.Task[None]] = set()
        self._starting = False

    async def detect(self) -> Mode:
        """Find out what this server can promise (called once at start)."""
        try:
            info = await self.redis.info("persistence")
            aof = int(info.get("aof_enabled", 0)) == 1
        except RedisError:
            aof = False
        if not aof:
            self.mode = "none"
            log.warning("Redis has AOF off: a confirmed order survives only what RDB/replicas keep")
        else:
            try:
                await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "WAITAOF", 0, 0, 1
                )
                self.mode = "waitaof" if self.enabled else "aof-no-wait"
            except ResponseError:
                self.mode = "aof-no-wait"
        return self.mode

    async def wait(self) -> bool | None:
        """Return once every earlier write is fsynced (True), or on timeout (False).

        None when nothing was waited for (WAITAOF off or unsupported, or AOF off): the order is
        written, but this call cannot say it is on disk.
        """
        if self.mode != "waitaof":
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._next.append(waiter)
        self._start_soon(loop)
        return await waiter

    def _start_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a round at the end of this loop turn (the callers of the turn share it), unless
        one is already starting or :data:`MAX_ROUNDS` are out (the last one back starts it)."""
        if not self._starting and len(self._rounds) < MAX_ROUNDS:
            self._starting = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._starting = False
        waiters = [w for w in self._next if not w.done()]  # gave up: no round for them
        self._next = []
        if waiters:
            task = asyncio.create_task(self._round(waiters))
            self._rounds.add(task)
            task.add_done_callback(self._round_done)

    def _round_done(self, task: asyncio.Task[None]) -> None:
        self._rounds.discard(task)
        if self._next:
            self._start_soon(asyncio.get_running_loop())

    async def _round(self, waiters: list[asyncio.Future[bool]]) -> None:
        try:
            # A pipeline runs on one connection: the INCR is this connection's last write.
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(self.barrier_key)
            pipe.execute_command("WAITAOF", 1, 0, self.timeout_ms)
            _, reply = await pipe.execute()
            ok = int(reply[0]) >= 1
        except RedisError as exc:
            log.warning("WAITAOF failed: %s", exc)
            ok = False
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(ok)
