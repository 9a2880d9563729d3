"""The audit: checks every stock and order invariant on a consistent snapshot of Redis.

Each show is read in one MULTI/EXEC transaction (all of a show's keys share one hash tag), so
the snapshot is one instant between two scripts. The invariants, per drop::

    remaining + held + sold == quantity + restocked         (no unit made or lost)
    remaining >= 0, held >= 0, sold >= 0                      (no oversell)
    held == sum of the active holds (holds zset <-> hold records in state "held")
    held[v] == the viewer's active holds, bought[v] summed == sold
    held[v] + bought[v] <= limit                              (per-viewer limit)
    sold == sum of the orders index, one index entry per order number issued
    a confirmed hold's order is in the orders index with the hold's quantity

and per show, on the orders stream (the outbox)::

    every entry's order id appears once, in an entry whose order is in its drop's orders
    index with the same quantity (no order without its decrement);
    entries-added (XINFO STREAM; counts trimmed entries too) == orders across the show's drops;
    entries are only ever removed from the front (the relay trims acknowledged orders);
    while nothing was trimmed, every indexed order has its entry (exactly once).

``livecommerce audit [--show S] [--json]`` runs it and exits 1 when anything is violated.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from livecommerce.core.errors import StoreError
from livecommerce.store.audit_checks import Checker
from livecommerce.store.audit_snapshot import (
    AuditReport,
    DropSnapshot,
    ShowSnapshot,
    text,
    text_map,
)
from livecommerce.store.keys import Keyspace

log = logging.getLogger("livecommerce.audit")

_SNAPSHOT_ATTEMPTS = 5


# -- snapshot ---------------------------------------------------------------------------------


async def _snapshot(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, only: str | None
) -> ShowSnapshot:
    """Every key of the show's drops (or of one drop) read in one MULTI/EXEC."""
    for _ in range(_SNAPSHOT_ATTEMPTS):
        drop_ids = [text(d) for d in await redis.zrange(keyspace.drops(show), 0, -1)]
        wanted = [only] if only is not None else drop_ids
        pipe = redis.pipeline(transaction=True)
        pipe.zrange(keyspace.drops(show), 0, -1)
        pipe.hgetall(keyspace.seq(show))
        pipe.xrange(keyspace.orders(show))
        pipe.xinfo_stream(keyspace.orders(show))
        for drop in wanted:
            k = keyspace.drop(show, drop)
            pipe.hgetall(k.drop)
            pipe.zrange(k.holds, 0, -1, withscores=True)
            pipe.hgetall(k.holdrec)
            pipe.hgetall(k.held)
            pipe.hgetall(k.bought)
            pipe.hgetall(k.orders_index)
        results = await pipe.execute(raise_on_error=False)
        ids_now, seq, entries, info, *per_drop = results
        if isinstance(ids_now, Exception) or [text(d) for d in ids_now] != drop_ids:
            continue  # a drop was created between the two reads: take the snapshot again
        for r in (seq, entries, *per_drop):
            if isinstance(r, Exception):
                raise StoreError(f"audit snapshot of show {show}: {r}") from r
        stream: list[tuple[str, dict[str, str]]] | None = None
        stream_info: dict[str, Any] | None = None
        if isinstance(info, ResponseError):
            if entries:  # pragma: no cover - XINFO failed on an existing stream
                raise StoreError(f"audit: XINFO STREAM failed: {info}") from info
        elif isinstance(info, Exception):  # pragma: no cover
            raise StoreError(f"audit: XINFO STREAM failed: {info}") from info
        else:
            stream = [(text(eid), text_map(fields)) for eid, fields in entries]
            stream_info = {text(k): v for k, v in info.items()}
        drops: dict[str, DropSnapshot] = {}
        for i, drop in enumerate(wanted):
            rec, holds, holdrec, held, bought, orders_index = per_drop[i * 6 : i * 6 + 6]
            drops[drop] = DropSnapshot(
                id=drop,
                record=text_map(rec),
                holds={text(m): float(score) for m, score in holds},
                holdrec=text_map(holdrec),
                held=text_map(held),
                bought=text_map(bought),
                orders_index=text_map(orders_index),
            )
        return ShowSnapshot(show, drop_ids, drops, text_map(seq), stream, stream_info)
    raise StoreError(f"audit: show {show} kept changing its drops; try again")


# -- checks -----------------------------------------------------------------------------------


async def audit_drop(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, drop: str
) -> AuditReport:
    """Check one drop's invariants (and its entries in the show's orders stream)."""
    report = AuditReport(shows=1)
    try:
        snap = await _snapshot(redis, keyspace, show, drop)
    except RedisError as exc:
        raise StoreError(f"audit: {exc}") from exc
    checker = Checker(show, report)
    if drop not in snap.drop_ids:
        checker.fail(f"drop {drop}", "is not one of the show's drops")
    checker.drop(snap.drops[drop], snap.seq)
    checker.stream(snap, whole_show=False)
    return report


async def audit_show(redis: aioredis.Redis, keyspace: Keyspace, show: str) -> AuditReport:
    """Check every drop of one show and the show's orders stream, on one snapshot."""
    report = AuditReport(shows=1)
    try:
        snap = await _snapshot(redis, keyspace, show, None)
    except RedisError as exc:
        raise StoreError(f"audit: {exc}") from exc
    checker = Checker(show, report)
    for drop in snap.drop_ids:
        checker.drop(snap.drops[drop], snap.seq)
    checker.stream(snap, whole_show=True)
    return report


async def audit(redis: aioredis.Redis, keyspace: Keyspace, show: str | None = None) -> AuditReport:
    """Check every show under the key prefix (or just ``show``). Each show is one snapshot."""
    if show is None:
        try:
            shows = [text(s) for s in await redis.zrange(keyspace.shows, 0, -1)]
        except RedisError as exc:
            raise StoreError(f"audit: {exc}") from exc
    else:
        shows = [show]
    report = AuditReport()
    for one in shows:
        report.merge(await audit_show(redis, keyspace, one))
    return report
