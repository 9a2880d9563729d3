"""A cross-slot stock move cut by SIGKILL of the process that was doing it.

A real child process runs the first step(s) of an allocation (pool -> drop) or of a settlement
(drop -> pool), says so on stdout and waits; the test kills it with SIGKILL there. The audit
passes at once (the units in flight are counted), and after the recovery pass the move is
complete, exactly once -- also when the recovery runs twice or races a second recovery.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import DropSpec
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.pool_audit import audit_pools

SKU = "MUG-1"

CHILD = textwrap.dedent(
    """
    import asyncio, sys, uuid
    import redis.asyncio as aioredis
    from livecommerce.core import config
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    async def main(url, prefix, stop_after):
        inv = Inventory(aioredis.Redis.from_url(url), Keyspace(prefix), config.load({}))
        await inv.load()
        if stop_after == "credit":  # settle the closed drop, stop before the pool credit
            dk = inv.keys.drop("s1", "d1")
            await inv.runner.call("drop_settle", [*dk.as_list(), inv.keys.returns("s1", "d1")],
                                  [*inv._common("s1"), "settle", 0])
        else:
            fields = {"id": "d2", "show": "s1", "sku": "MUG-1", "title": "Mug", "kind": "drop",
                      "description": "", "image_url": "", "quantity": 7, "limit": 5,
                      "prices": {"EUR": 900}, "currency": "EUR", "opens_at": 0,
                      "closes_at": 0, "duration_ms": 0}
            intent = {"kind": "create", "show": "s1", "drop": "d2", "sku": "MUG-1",
                      "units": 7, "fields": fields, "tid": uuid.uuid4().hex, "at": 0}
            await inv.pools.debit(intent)               # step 1
            if stop_after == "apply":
                await inv.pools.apply(intent)           # step 2
        print("between-steps", flush=True)
        await asyncio.Event().wait()                    # killed here

    asyncio.run(main(*sys.argv[1:4]))
    """
)


async def kill_between_steps(url: str, keyspace: Keyspace, stop_after: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, keyspace.prefix, stop_after,
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line.strip() == b"between-steps", line
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL


async def assert_audit(inv: Inventory) -> None:
    report = await audit(inv.redis, inv.keys)
    assert report.ok, report.summary()
    assert (await audit_pools(inv.redis, inv.keys)).ok


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, config.load({}))
    await inventory.load()
    await inventory.create_show("s1", title="Show")
    await inventory.pools.report(SKU, 20, 1)
    await inventory.create_drop(
        "s1", DropSpec(id="d1", sku=SKU, title="Mug", quantity=5, limit=5, prices={"EUR": 900})
    )
    return inventory


@pytest.mark.parametrize("stop_after", ["debit", "apply"])
async def test_sigkill_between_the_steps_of_an_allocation(
    inv: Inventory, redis_url: str, keyspace: Keyspace, stop_after: str
) -> None:
    await kill_between_steps(redis_url, keyspace, stop_after)
    ledger = await inv.pools.ledger(SKU)
    assert ledger and ledger.pool == 8  # 20 - 5 - 7: the 7 are in flight
    assert await inv.redis.hlen(keyspace.sku(SKU).xfer) == 1
    await assert_audit(inv)  # in flight counts as allocated: exact even now

    first, second = await asyncio.gather(inv.pools.recover(0), inv.pools.recover(0))
    assert first[0] + second[0] >= 1
    await inv.pools.recover(0)
    assert await inv.redis.hlen(keyspace.sku(SKU).xfer) == 0
    view = await inv.get_drop("s1", "d2")
    assert view and view["quantity"] == view["remaining"] == 7  # applied once, not twice
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.allocated) == (8, 12)
    assert (await inv.buy_now("s1", "d2", "v", 2, "r", "pay")).ok
    await assert_audit(inv)


async def test_sigkill_between_the_steps_of_a_return(
    inv: Inventory, redis_url: str, keyspace: Keyspace
) -> None:
    assert (await inv.buy_now("s1", "d1", "v", 2, "r", "pay")).ok
    await inv._drop_call("drop_close", "s1", "d1")  # closed, not yet given back
    await kill_between_steps(redis_url, keyspace, "credit")
    assert await inv.redis.hlen(keyspace.returns("s1", "d1")) == 1
    assert (await inv.pools.ledger(SKU)).pool == 15  # type: ignore[union-attr]
    await assert_audit(inv)

    await asyncio.gather(inv.pools.recover(0), inv.pools.recover(0))
    await inv.pools.recover(0)
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.sold, ledger.allocated) == (18, 2, 0)
    assert await inv.redis.hlen(keyspace.returns("s1", "d1")) == 0
    assert await inv.redis.xlen(keyspace.sku(SKU).adjusted) == 1  # one event, not two
    await assert_audit(inv)
