"""Stock out on real Valkey: every settlement of a pooled drop becomes one ``inventory.adjusted``
event per SKU, delivered by the relay with the orders' guarantees -- retried until delivered,
acknowledged only after success, dead-lettered and replayed with the same webhook-id -- while
the fulfillment audit keeps counting orders only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis
from helpers.polling import eventually
from prometheus_client import CollectorRegistry

from livecommerce.core import config
from livecommerce.core.config import RelaySettings
from livecommerce.core.errors import DeliveryError
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.delivery import MemoryDeliverer
from livecommerce.fulfillment.relay import Relay
from livecommerce.fulfillment.webhooks import WebhookMessage
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SKU = "TEE-1"
FAST = RelaySettings(group="fulfillment", max_attempts=3, timeout_s=2.0, claim_idle_s=0.05,
                     backoff_base_s=0.001, backoff_max_s=0.005, concurrency=8,
                     max_deliveries=3, trim_interval_s=0)  # fmt: skip


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task


async def sold_and_closed(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inv = Inventory(redis, keyspace, config.load({}))
    await inv.load()
    await inv.create_show("s1", title="Show")
    await inv.pools.report(SKU, 20, 1)
    await inv.create_drop("s1", DropSpec(id="d1", sku=SKU, title="Tee", quantity=10, limit=5,
                                         prices={"EUR": 900}))  # fmt: skip
    assert (await inv.buy_now("s1", "d1", "v1", 3, "r1", "pay")).ok
    await inv.pools.recover()  # settles the sale: sold 3
    await inv.close("s1", "d1")  # gives back the 7 unsold
    return inv


async def test_settlements_go_out_as_inventory_adjusted_and_are_acknowledged(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inv = await sold_and_closed(redis, keyspace)
    stream = keyspace.sku(SKU).adjusted
    assert await redis.xlen(stream) == 2
    sink = MemoryDeliverer()
    relay = Relay(redis, keyspace, FAST, sink, registry=CollectorRegistry(), block_ms=50)
    async with running(relay):
        await eventually(lambda: _true(len(adjusted(sink)) == 2))

        async def acked() -> bool:
            return int((await redis.xpending(stream, FAST.group))["pending"]) == 0

        await eventually(acked)
    assert [m.order_id for m in sink.delivered if not m.id.startswith("adj_")] == ["s1.d1.1"]
    events = adjusted(sink)
    bodies = [orjson.loads(m.body) for m in events]
    assert {b["type"] for b in bodies} == {"inventory.adjusted"}
    assert [(b["data"]["sold"], b["data"]["returned"]) for b in bodies] == [(3, 0), (0, 7)]
    assert [m.id for m in events] == ["adj_" + b["data"]["settlement"] for b in bodies]
    assert bodies[1]["data"]["pool"] == 17 and bodies[1]["data"]["sku"] == SKU
    assert (await inv.pools.ledger(SKU)).sold == 3  # type: ignore[union-attr]


async def test_a_failing_backend_gets_the_event_again_then_dead_letters_and_replay(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    await sold_and_closed(redis, keyspace)
    stream = keyspace.sku(SKU).adjusted
    ids = [f[b"id"].decode() for _, f in await redis.xrange(stream)]
    sink = MemoryDeliverer()
    sink.failures[ids[0]] = [DeliveryError("HTTP 503", status=503)]  # then succeeds
    sink.always_fail[ids[1]] = DeliveryError("HTTP 500: boom", status=500)
    relay = Relay(redis, keyspace, FAST, sink, registry=CollectorRegistry(), block_ms=50)
    async with running(relay):
        await eventually(lambda: _dl(redis, keyspace))
        assert [m.order_id for m in adjusted(sink)] == [ids[0]]
        assert sink.attempts[ids[0]] == 2 and sink.attempts[ids[1]] == 3
        [letter] = await deadletters.list_letters(redis, keyspace)
        assert letter.stream == stream
        del sink.always_fail[ids[1]]
        await deadletters.replay(redis, keyspace, [letter.id])
        await eventually(lambda: _true(len(adjusted(sink)) == 2))
    assert adjusted(sink)[1].id == f"adj_{ids[1]}"  # the same webhook-id: receivers de-duplicate
    assert await deadletters.count(redis, keyspace) == 0


def adjusted(sink: MemoryDeliverer) -> list[WebhookMessage]:
    return [m for m in sink.delivered if m.id.startswith("adj_")]


async def _true(value: bool) -> bool:
    return value


async def _dl(redis: aioredis.Redis, keyspace: Keyspace) -> bool:
    return await deadletters.count(redis, keyspace) == 1
