"""The end-to-end audit: orders confirmed == orders in the outbox == orders the sink received.

Three independent records of the same orders:

* **confirmed** -- every drop's ``B:drop:<d>:orders`` index, written by the sale script;
* **in stream** -- the ``order_id`` of every entry left in the shows' orders streams;
* **received** -- what the reference sink accepted (after de-duplication by ``webhook-id``).

The audit passes when every confirmed order was received exactly once after de-duplication,
nothing unknown was received, and every confirmed order is either still in its stream or gone
from it only because it was acknowledged (trimming removes acknowledged entries only, so an
order missing from the stream must have been received). Dead-lettered orders are reported
separately; a clean run has none. The load-test kit calls :func:`audit` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.deadletters import text
from livecommerce.fulfillment.webhooks import order_id_of
from livecommerce.store.keys import Keyspace


@dataclass(frozen=True)
class AuditReport:
    confirmed: int
    in_stream: int
    received: int
    dead_lettered: int
    duplicates_rejected: int
    missing: list[str] = field(default_factory=list)
    """Confirmed but not received (nor dead-lettered)."""
    unexpected: list[str] = field(default_factory=list)
    """Received (or streamed) but never confirmed."""
    lost_from_stream: list[str] = field(default_factory=list)
    """Confirmed, gone from the stream, and not received: should be impossible."""

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and not self.unexpected
            and not self.lost_from_stream
            and self.dead_lettered == 0
            and self.confirmed == self.received
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "confirmed": self.confirmed,
            "in_stream": self.in_stream,
            "received": self.received,
            "dead_lettered": self.dead_lettered,
            "duplicates_rejected": self.duplicates_rejected,
            "missing": self.missing[:20],
            "unexpected": self.unexpected[:20],
            "lost_from_stream": self.lost_from_stream[:20],
        }


async def confirmed_orders(redis: aioredis.Redis, keyspace: Keyspace) -> set[str]:
    out: set[str] = set()
    for show_raw in await redis.zrange(keyspace.shows, 0, -1):
        show = text(show_raw)
        for drop_raw in await redis.zrange(keyspace.drops(show), 0, -1):
            index = keyspace.drop(show, text(drop_raw)).orders_index
            out.update(text(k) for k in await redis.hkeys(index))
    return out


async def streamed_orders(redis: aioredis.Redis, keyspace: Keyspace) -> set[str]:
    out: set[str] = set()
    for show_raw in await redis.zrange(keyspace.shows, 0, -1):
        stream = keyspace.orders(text(show_raw))
        start = "-"
        while True:
            rows: Any = await redis.xrange(stream, min=start, max="+", count=1000)
            for _entry_id, fields in rows:
                value = fields.get(b"order_id", fields.get("order_id"))
                if value is not None:
                    out.add(text(value))
            if len(rows) < 1000:
                break
            start = "(" + text(rows[-1][0])
    return out


async def audit(redis: aioredis.Redis, keyspace: Keyspace) -> AuditReport:
    """Compare the three records; see the module docstring for what ``ok`` means."""
    confirmed = await confirmed_orders(redis, keyspace)
    streamed = await streamed_orders(redis, keyspace)
    received = {order_id_of(text(k)) for k in await redis.hkeys(keyspace.sink_received)}
    dead: set[str] = set()
    start = "-"
    while True:
        page = await deadletters.list_letters(redis, keyspace, count=500, start=start)
        dead.update(letter.order_id for letter in page)
        if len(page) < 500:
            break
        start = "(" + page[-1].id
    dup_raw = await redis.hget(keyspace.sink_stats, "duplicates")
    return AuditReport(
        confirmed=len(confirmed),
        in_stream=len(streamed),
        received=len(received),
        dead_lettered=len(dead),
        duplicates_rejected=int(dup_raw or 0),
        missing=sorted(confirmed - received - dead),
        unexpected=sorted((received | streamed) - confirmed),
        lost_from_stream=sorted(confirmed - streamed - received - dead),
    )
