"""``XACK`` batching for the relay: the acknowledgements asked for in one event-loop turn go out
together, one ``XACK`` per stream, pipelined.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis


class Acks:
    """``XACK`` batching: the acknowledgements asked for in one event-loop turn go out together.

    One ``XACK`` per stream with every id of the batch, pipelined: one round trip where one per
    order was. At most one batch is in flight; acknowledgements asked for meanwhile form the
    next one. :meth:`ack` returns once the entry is acknowledged and raises what Redis raised
    for its stream's ``XACK`` (the other streams' XACKs of the batch are not affected).
    """

    def __init__(self, redis: aioredis.Redis, group: str) -> None:
        self.redis = redis
        self.group = group
        self._batch: dict[str, list[tuple[str, asyncio.Future[None]]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def ack(self, stream: str, entry_id: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.setdefault(stream, []).append((entry_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="relay-xack")
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other acknowledgements of this loop turn join
        while self._batch:
            batch, self._batch = self._batch, {}
            results: list[Any]
            try:
                if len(batch) == 1:
                    [(stream, items)] = batch.items()
                    results = [await self.redis.xack(stream, self.group, *(i for i, _ in items))]
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    for stream, items in batch.items():
                        pipe.xack(stream, self.group, *(i for i, _ in items))
                    results = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # every waiter hears of it; the entries stay pending
                results = [exc] * len(batch)
            for items, result in zip(batch.values(), results, strict=True):
                for _, future in items:
                    if future.done():
                        continue
                    if isinstance(result, asyncio.CancelledError):
                        future.cancel()
                    elif isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(None)
            if isinstance(results[0], asyncio.CancelledError):
                raise results[0]
