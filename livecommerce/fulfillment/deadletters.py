"""Dead letters: orders the relay gave up on, kept with their last error, listed and replayed.

A dead letter is an entry of the global ``P:deadletters`` stream holding the order's outbox
fields unchanged plus ``dl_*`` fields saying where it came from and why it failed. Replaying
appends the order fields to its show's orders stream again (a new stream entry, the same
``order_id`` and hence the same ``webhook-id``) and removes the dead letter: the relay then
delivers it like any other order, and a receiver that did get it before de-duplicates it.

Writing a dead letter and acknowledging the source entry touch two hash slots, so they are two
steps: a crash in between leaves the order pending *and* dead-lettered, and it may be delivered
once more (same ``webhook-id``). Nothing is lost in either order of failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import NotFoundError, StoreError
from livecommerce.store.keys import Keyspace

DL_FIELDS = ("dl_stream", "dl_entry", "dl_error", "dl_attempts", "dl_at")
"""Fields a dead letter adds to the order's own fields."""
MAX_ERROR = 500


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    """Entry id in the dead-letters stream."""
    stream: str
    """The orders stream the order came from."""
    entry: str
    """Its entry id there."""
    error: str
    attempts: int
    at_ms: int
    order: dict[str, str]
    """The outbox fields of the order, unchanged."""

    @property
    def order_id(self) -> str:
        return self.order.get("order_id", "")

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "stream": self.stream,
            "entry": self.entry,
            "error": self.error,
            "attempts": self.attempts,
            "at_ms": self.at_ms,
            "order": self.order,
        }

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> DeadLetter:
        d = {text(k): text(v) for k, v in fields.items()}
        order = {k: v for k, v in d.items() if k not in DL_FIELDS}
        return cls(
            id=text(entry_id),
            stream=d.get("dl_stream", ""),
            entry=d.get("dl_entry", ""),
            error=d.get("dl_error", ""),
            attempts=int(d.get("dl_attempts", "0") or 0),
            at_ms=int(d.get("dl_at", "0") or 0),
            order=order,
        )


async def add(
    redis: aioredis.Redis,
    keyspace: Keyspace,
    *,
    stream: str,
    entry_id: str,
    fields: Mapping[bytes | str, bytes | str],
    error: str,
    attempts: int,
) -> str:
    """Append one dead letter (the caller acknowledges the source entry afterwards)."""
    record: dict[str, str] = {
        text(k): text(v) for k, v in fields.items() if text(k) not in DL_FIELDS
    }
    record.update(
        dl_stream=stream,
        dl_entry=entry_id,
        dl_error=error[:MAX_ERROR],
        dl_attempts=str(attempts),
        dl_at=str(int(time.time() * 1000)),
    )
    try:
        new_id = await redis.xadd(keyspace.dead_letters, record)  # type: ignore[arg-type]
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    return text(new_id)


async def list_letters(
    redis: aioredis.Redis, keyspace: Keyspace, *, count: int = 100, start: str = "-"
) -> list[DeadLetter]:
    """Dead letters, oldest first, from ``start`` (an entry id, inclusive)."""
    try:
        rows: Any = await redis.xrange(keyspace.dead_letters, min=start, max="+", count=count)
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    return [DeadLetter.parse(entry_id, fields) for entry_id, fields in rows]


async def count(redis: aioredis.Redis, keyspace: Keyspace) -> int:
    try:
        return int(await redis.xlen(keyspace.dead_letters))
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc


async def replay(
    redis: aioredis.Redis, keyspace: Keyspace, ids: Sequence[str] | None = None
) -> list[DeadLetter]:
    """Put dead letters back into their orders streams (all of them when ``ids`` is None).

    Each order is appended first and its dead letter deleted second, so a crash in between can
    only make it be delivered twice (same ``webhook-id``), never lose it.
    """
    if ids is None:
        letters: list[DeadLetter] = []
        start = "-"
        while True:
            page = await list_letters(redis, keyspace, count=500, start=start)
            letters.extend(page)
            if len(page) < 500:
                break
            start = "(" + page[-1].id
    else:
        letters = []
        for ident in ids:
            page = await list_letters(redis, keyspace, count=1, start=ident)
            if not page or page[0].id != ident:
                raise NotFoundError("dead letter", ident)
            letters.append(page[0])
    try:
        for letter in letters:
            show = letter.order.get("show", "")
            target = letter.stream or keyspace.orders(show)
            # A replay is marked (``replay_of``) and counted in the show's counters in the same
            # MULTI, so the audit tells it from a second sale of the same order.
            pipe = redis.pipeline(transaction=True)
            pipe.xadd(target, {**letter.order, "replay_of": letter.id})  # type: ignore[dict-item]
            pipe.hincrby(keyspace.seq(show), "replays", 1)
            await pipe.execute()
            await redis.xdel(keyspace.dead_letters, letter.id)
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    return letters
