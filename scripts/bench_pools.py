"""Benchmark the stock pools: what allocating from a SKU's pool costs next to a typed-in drop,
and how many inbound levels per second one process applies. JSON on stdout.

Starts its own embedded Valkey (AOF on, everysec, temporary directory, loopback only) and
measures in the same run, each for ``--rounds`` sequential calls (median and p90 latency):

* ``create_drop_typed_in``: ``Inventory.create_drop`` of a SKU without a pool (today's path);
* ``create_drop_pooled``: the same for a SKU with a pool (debit + apply + settle: three scripts);
* ``restock_typed_in`` / ``restock_pooled``: one unit more, each way;
* ``buy_now_typed_in`` / ``buy_now_pooled``: the sale path, which pools do not touch;
* ``levels_per_s``: ``Pools.report`` from ``--tasks`` concurrent tasks over distinct SKUs.

Ratios compare each pooled mode with its typed-in baseline; the run ends with the audit
(inventory + pools), which must pass.

    .venv/bin/python scripts/bench_pools.py --rounds 300 --tasks 64
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import DropSpec
from livecommerce.store.audit import audit
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

KEYS = Keyspace("benchpools")


def spec(drop: str, sku: str, quantity: int = 1) -> DropSpec:
    return DropSpec(id=drop, sku=sku, title="Bench", quantity=quantity, limit=1000,
                    prices={"EUR": 100})  # fmt: skip


async def timed(rounds: int, call: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    latencies = []
    for i in range(rounds):
        start = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p90_ms": round(latencies[int(len(latencies) * 0.9)] * 1000, 3),
    }


async def run(rounds: int, tasks: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-pools-"))
    server = EmbeddedValkey(folder).start()
    redis = aioredis.Redis.from_url(server.url, max_connections=max(64, tasks * 2))
    try:
        inv = Inventory(redis, KEYS, config.load({}))
        await inv.load()
        await inv.create_show("typed", title="Typed in")
        await inv.create_show("pooled", title="Pooled")
        await inv.pools.report("POOLED", 10**8, 1)
        await inv.create_drop("typed", spec("sale", "TYPED", 10**6))
        await inv.create_drop("pooled", spec("sale", "POOLED", 10**6))
        out: dict[str, Any] = {"rounds": rounds, "tasks": tasks}
        out["create_drop_typed_in"] = await timed(
            rounds, lambda i: inv.create_drop("typed", spec(f"d{i}", "TYPED"))
        )
        out["create_drop_pooled"] = await timed(
            rounds, lambda i: inv.create_drop("pooled", spec(f"d{i}", "POOLED"))
        )
        out["restock_typed_in"] = await timed(rounds, lambda i: inv.restock("typed", "sale", 1))
        out["restock_pooled"] = await timed(rounds, lambda i: inv.restock("pooled", "sale", 1))
        out["buy_now_typed_in"] = await timed(
            rounds, lambda i: inv.buy_now("typed", "sale", f"v{i}", 1, f"r{i}", "pay")
        )
        out["buy_now_pooled"] = await timed(
            rounds, lambda i: inv.buy_now("pooled", "sale", f"v{i}", 1, f"r{i}", "pay")
        )
        count = rounds * tasks
        start = time.perf_counter()

        async def worker(t: int) -> None:
            for i in range(rounds):
                await inv.pools.report(f"L{t}-{i}", 100, 1, delivery=f"d{t}-{i}", source="bench")

        await asyncio.gather(*(worker(t) for t in range(tasks)))
        out["levels_per_s"] = round(count / (time.perf_counter() - start))
        for name in ("create_drop", "restock", "buy_now"):
            base = out[f"{name}_typed_in"]["median_ms"]
            out[f"{name}_pooled_vs_typed_in"] = round(out[f"{name}_pooled"]["median_ms"] / base, 2)
        await inv.pools.recover(0)
        report = await audit(redis, KEYS)
        out["audit_ok"] = report.ok
        if not report.ok:
            out["violations"] = report.violations[:10]
        return out
    finally:
        await redis.aclose()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    print(
        orjson.dumps(asyncio.run(run(args.rounds, args.tasks)), option=orjson.OPT_INDENT_2).decode()
    )


if __name__ == "__main__":
    main()
