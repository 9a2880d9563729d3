"""Viewers are told when the store's on-hand falls below what a live drop allocated, and a
drop's held units that expire after it closed go back to the pool -- through the real server
(uvicorn, its scheduler, real websockets clients, real Valkey)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, serve, settings
from helpers.polling import eventually

from livecommerce.realtime.client import Client
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.pool_audit import audit_pools

SKU = "SKU-d1"


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show", host="h1")
    await inventory.start_show("s1")
    await inventory.pools.report(SKU, 10, 1)
    return inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(inventory={"hold_ttl_s": 1}), redis_url, keyspace) as running:
        yield running


async def collect(client: Client, until: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        msg = await client.next_message()
        seen.append(msg)
        if msg["type"] == until:
            return seen


async def test_viewers_see_the_reduction_and_expired_holds_return_to_the_pool(
    gw: Running, inv: Inventory
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=8, limit=5))
    async with Client(gw.url, "s1", token=mint(SECRET, "ana", 600)) as client:
        reply = await client.reserve("d1", 2, request_id="r1")
        assert reply["ok"], reply
        update = await inv.pools.report(SKU, 5, 2)  # the web store sold 5: 3 short
        assert update.reduced == 3
        reduced = (await collect(client, "stock_reduced"))[-1]["data"]
        assert (reduced["id"], reduced["taken"], reduced["remaining"]) == ("d1", 3, 3)

        await inv.close("s1", "d1")  # the 3 unsold go back now, the 2 held once they expire
        closed = (await collect(client, "drop_closed"))[-1]["data"]
        assert closed["reason"] == "host"

    async def pool_has_the_expired_units() -> bool:
        ledger = await inv.pools.ledger(SKU)
        return ledger is not None and ledger.allocated == 0

    await eventually(pool_has_the_expired_units)  # the server's scheduler: expiry, then return
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.on_hand, ledger.short) == (5, 5, 0)
    assert (await audit_pools(inv.redis, inv.keys)).ok
