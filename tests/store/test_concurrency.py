"""Several OS processes, each with hundreds of asyncio tasks, hammer one show: far more attempts
than stock, request ids reused across tasks and processes, confirms, cancels, holds left to
expire (1 s TTL), late confirms racing the reapers, a restock, and concurrent reapers in every
process. Afterwards the audit must find nothing, and what the workers were told must agree
with what Redis holds.

This file is also the worker: ``python tests/store/test_concurrency.py URL PREFIX WORKER TASKS``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import DropSpec, Outcome
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOW = "bigshow"
DROPS = {"d1": 120, "d2": 40}
LIMIT = 4
VIEWERS = 300
PROCESSES = 4
TASKS = 250
ATTEMPTS_PER_TASK = 4
RESTOCK = 30


def _settings() -> config.Settings:
    return config.load({"LIVECOMMERCE_HOLD_TTL": "1", "LIVECOMMERCE_REAP_INTERVAL": "0.05"})


# -- the worker (runs in a child process) -------------------------------------------------------


def _signature(out: Outcome) -> str:
    """What a reserve/buy_now answered, in a form every replay must reproduce."""
    if out.hold is not None:
        return "hold:" + out.hold.id
    if out.order is not None:
        return "order:" + out.order.id
    return "refused:" + str(out.reason)


async def _worker(url: str, prefix: str, worker: int, tasks: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    inv = Inventory(client, Keyspace(prefix), _settings())
    await inv.load()
    rng = random.Random(worker)
    signatures: list[tuple[str, str, str]] = []
    orders: dict[str, int] = {}
    outcomes: Counter[str] = Counter()
    buyers_done = asyncio.Event()

    def ack(out: Outcome) -> None:
        if out.order is not None:
            orders[out.order.id] = out.order.quantity
            if inv.durability.mode == "waitaof":
                assert out.durable, "an order was acknowledged before WAITAOF"

    async def buyer(task: int) -> None:
        r = random.Random(worker * 100_000 + task)
        for _ in range(ATTEMPTS_PER_TASK):
            viewer = f"v{r.randrange(VIEWERS)}"
            request_id = f"req{r.randrange(5)}"  # few ids per viewer: duplicates everywhere
            # A request id names one request: what it asks for follows from (viewer, id), so
            # every duplicate, in any process, is the very same request.
            asked = random.Random(f"{viewer}/{request_id}")
            drop = asked.choice(("d1", "d1", "d2"))
            quantity = asked.choice((1, 1, 2, 3))
            if asked.random() < 0.25:
                out = await inv.buy_now(SHOW, drop, viewer, quantity, request_id, f"p{task}")
            else:
                out = await inv.reserve(SHOW, drop, viewer, quantity, request_id)
            signatures.append((viewer, request_id, _signature(out)))
            outcomes["replay" if out.replay else str(out.reason or "ok")] += 1
            ack(out)
            if out.hold is None or out.replay:
                continue
            then = r.random()
            if then < 0.45:
                ack(await inv.confirm(SHOW, out.hold.id, viewer, f"pay-{worker}-{task}"))
            elif then < 0.6:
                await inv.cancel(SHOW, out.hold.id, viewer)
            elif then < 0.8:  # confirm late: maybe before the expiry, maybe after
                await asyncio.sleep(r.uniform(0.1, 1.5))
                late = await inv.confirm(SHOW, out.hold.id, viewer, f"late-{worker}-{task}")
                outcomes["late_" + str(late.reason or "ok")] += 1
                ack(late)
            # else: left to expire
            await asyncio.sleep(r.uniform(0, 0.05))

    async def reaper() -> int:
        released = 0
        while not buyers_done.is_set():
            released += await inv.run_due()
            await asyncio.sleep(rng.uniform(0.01, 0.08))
        return released

    async def restocker() -> None:
        await asyncio.sleep(0.5)
        await inv.restock(SHOW, "d1", RESTOCK)

    reapers = [asyncio.create_task(reaper()) for _ in range(2)]
    jobs = [buyer(t) for t in range(tasks)]
    if worker == 0:
        jobs.append(restocker())
    await asyncio.gather(*jobs)
    buyers_done.set()
    released = sum(await asyncio.gather(*reapers))
    await client.aclose()
    return {
        "worker": worker,
        "signatures": signatures,
        "orders": orders,
        "outcomes": dict(outcomes),
        "released": released,
    }


# -- the test -----------------------------------------------------------------------------------


WORKER = str(Path(__file__).resolve())


async def _run_workers(url: str, prefix: str) -> list[dict[str, Any]]:
    pipe = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, WORKER, url, prefix, str(w), str(TASKS), stdout=pipe, stderr=pipe
        )
        for w in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out))
    return results


@pytest.mark.slow
async def test_processes_hammering_one_show_keep_every_invariant(
    redis: aioredis.Redis, redis_url: str, keyspace: Keyspace
) -> None:
    inv = Inventory(redis, keyspace, _settings())
    await inv.load()
    await inv.create_show(SHOW, title="Big show")
    for drop, quantity in DROPS.items():
        spec = DropSpec(id=drop, sku=drop, title=drop, quantity=quantity, limit=LIMIT,
                        prices={"EUR": 990})  # fmt: skip
        await inv.create_drop(SHOW, spec)

    results = await _run_workers(redis_url, keyspace.prefix)

    # Let every hold still standing expire, then reap what the workers' reapers left.
    deadline = time.monotonic() + 20
    for drop in DROPS:
        last = await redis.zrange(keyspace.drop(SHOW, drop).holds, -1, -1, withscores=True)
        while last and await inv.server_time_ms() <= int(last[0][1]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    while await inv.run_due():
        pass

    report = await audit(redis, keyspace)
    assert report.ok, report.summary()

    attempts = sum(len(r["signatures"]) for r in results)
    stock = sum(DROPS.values()) + RESTOCK
    assert attempts == PROCESSES * TASKS * ATTEMPTS_PER_TASK and attempts > 10 * stock
    views = {d: await inv.get_drop(SHOW, d) for d in DROPS}
    sold = 0
    for view in views.values():
        assert view is not None
        assert view["held"] == 0 and view["sold"] <= view["quantity"]
        assert view["remaining"] + view["sold"] == view["quantity"]
        sold += view["sold"]
    assert views["d1"]["quantity"] == DROPS["d1"] + RESTOCK  # type: ignore[index]
    assert report.units_sold == sold <= stock and report.holds == 0

    # Every order in the outbox was acknowledged to some worker, and vice versa.
    acked: dict[str, int] = {}
    for r in results:
        acked.update(r["orders"])
    entries = await redis.xrange(keyspace.orders(SHOW))
    in_stream = {f[b"order_id"].decode(): int(f[b"quantity"]) for _, f in entries}
    assert len(entries) == len(in_stream) == report.orders
    assert in_stream == acked
    assert sum(in_stream.values()) == sold

    # Idempotency across tasks and processes: one answer per (viewer, request id).
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in results:
        for viewer, request_id, signature in r["signatures"]:
            answers[(viewer, request_id)].add(signature)
    assert all(len(s) == 1 for s in answers.values()), {
        k: s for k, s in answers.items() if len(s) > 1
    }
    outcomes: Counter[str] = Counter()
    for r in results:
        outcomes.update(r["outcomes"])
    # The run exercised what it claims to: replays, refusals, expiries and late confirms.
    assert outcomes["replay"] > 0 and outcomes["sold_out"] + outcomes["insufficient_stock"] > 0
    assert outcomes["limit_exceeded"] > 0 and outcomes["late_hold_expired"] > 0
    assert outcomes["late_ok"] > 0, outcomes
    assert outcomes["request_id_reused"] == 0, outcomes  # duplicates are the same request
    expired = sum(r["released"] for r in results)
    holdrecs = [await redis.hgetall(keyspace.drop(SHOW, d).holdrec) for d in DROPS]
    states = Counter(json.loads(raw)["s"] for recs in holdrecs for raw in recs.values())
    assert states["held"] == 0 and states["expired"] >= expired > 0
    assert states["confirmed"] == sum(1 for e in entries if e[1][b"hold"])


if __name__ == "__main__":
    url, prefix, worker, tasks = sys.argv[1:5]
    result = asyncio.run(_worker(url, prefix, int(worker), int(tasks)))
    print(json.dumps(result))
