"""Waiting until a confirmed order is on disk before the buyer is told "confirmed".

With AOF on, ``WAITAOF 1 0 <timeout>`` returns once the server has fsynced every write *this
connection* made. The order scripts run on other connections, so each round first makes a tiny
write on the connection it is sent on (``INCR`` of :attr:`Keyspace.aof_barrier`) and then
WAITAOFs there: that write comes after every order already acknowledged by a script, so its
fsync covers them all. Concurrent confirms share one round: a caller waits for the first round
that *starts* after its own write, so one fsync covers a whole burst of buyers. Servers without
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
        self._task: asyncio.Task[None] | None = None

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
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._next.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rounds())
        return await waiter

    async def _rounds(self) -> None:
        while self._next:
            waiters, self._next = self._next, []
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
