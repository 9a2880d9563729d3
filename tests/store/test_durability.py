"""`durable: true` must mean "fsynced". With a Valkey that never fsyncs on its own
(appendfsync no), no order may come back durable -- also while other requests keep the pool's
connections busy (WAITAOF only covers writes made on the connection it is sent on)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from helpers.polling import eventually

from livecommerce.core.config import load
from livecommerce.core.model import DropSpec
from livecommerce.store.durability import AofBarrier
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


async def test_the_barrier_covers_writes_made_on_other_connections(tmp_path: Path) -> None:
    """The order scripts and the barrier use different connections; WAITAOF alone would only
    look at the barrier's own (write-free) connection and answer "fsynced" at once."""
    with EmbeddedValkey(tmp_path / "valkey", appendfsync="no") as server:
        writer = aioredis.Redis.from_url(server.url)
        waiter = aioredis.Redis.from_url(server.url)  # its own pool: never the writer's socket
        try:
            barrier = AofBarrier(waiter, "d:aofbarrier", timeout_ms=150)
            assert await barrier.detect() == "waitaof"
            await writer.set("d:order", "confirmed")
            assert await barrier.wait() is False  # nothing was fsynced
        finally:
            await writer.aclose()
            await waiter.aclose()


async def test_orders_on_a_server_that_never_fsyncs_are_not_durable(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "valkey", appendfsync="no") as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            inv = Inventory(client, Keyspace("d"), load({}))
            await inv.load()
            assert inv.durability.mode == "waitaof"
            inv.durability.timeout_ms = 150
            await inv.create_show("s", title="Show")
            await inv.create_drop(
                "s", DropSpec(id="d", sku="k", title="t", quantity=50, limit=50, prices={"EUR": 1})
            )
            stop = asyncio.Event()

            async def reader() -> None:  # other traffic on other connections of the pool
                while not stop.is_set():
                    await client.get("d:unrelated")

            readers = [asyncio.create_task(reader()) for _ in range(8)]
            try:
                outcomes = []
                for i in range(10):
                    outcomes.append(await inv.buy_now("s", "d", f"v{i}", 1, f"r{i}", "pm"))
            finally:
                stop.set()
                await asyncio.gather(*readers)
            assert all(o.ok and o.order for o in outcomes)
            assert [o.durable for o in outcomes] == [False] * 10
        finally:
            await client.aclose()


async def test_orders_on_the_default_server_are_durable(tmp_path: Path) -> None:
    with EmbeddedValkey(tmp_path / "valkey") as server:  # appendfsync everysec, as shipped
        client = aioredis.Redis.from_url(server.url)
        try:
            inv = Inventory(client, Keyspace("d"), load({}))
            await inv.load()
            await inv.create_show("s", title="Show")
            await inv.create_drop(
                "s", DropSpec(id="d", sku="k", title="t", quantity=5, limit=5, prices={"EUR": 1})
            )
            outcomes = await asyncio.gather(
                *(inv.buy_now("s", "d", f"v{i}", 1, f"r{i}", "pm") for i in range(5))
            )
            assert [o.durable for o in outcomes] == [True] * 5
        finally:
            await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_others_of_its_round_waiting(
    tmp_path: Path,
) -> None:
    """Callers of one round share one WAITAOF; one of them cancelled (its viewer gone) cancels
    nothing the others wait for, and a caller arriving during a round waits for the next."""
    with EmbeddedValkey(tmp_path / "valkey") as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            barrier = AofBarrier(client, "d:aofbarrier")
            assert await barrier.detect() == "waitaof"
            await client.set("d:order", "confirmed")
            callers = [asyncio.create_task(barrier.wait()) for _ in range(3)]
            await asyncio.sleep(0)  # all three are waiting for the same round
            callers[1].cancel()
            late = asyncio.create_task(barrier.wait())
            assert await callers[0] is True and await callers[2] is True
            assert callers[1].cancelled()
            assert await late is True
            assert await barrier.wait() is True  # a new round once the last one ended
        finally:
            await client.aclose()


async def test_a_caller_arriving_while_a_round_is_out_starts_its_own(tmp_path: Path) -> None:
    """Rounds overlap: the second caller's WAITAOF is at the server while the first one's is
    still blocked there (on a busy loop, waiting for a round to come back costs a loop turn)."""
    with EmbeddedValkey(tmp_path / "valkey", appendfsync="no") as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            barrier = AofBarrier(client, "d:aofbarrier", timeout_ms=1500)
            assert await barrier.detect() == "waitaof"

            def blocked(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    clients = await client.client_list()
                    return sum(1 for c in clients if c.get("cmd") == "waitaof") == n

                return check

            await client.set("d:order", "one")
            first = asyncio.create_task(barrier.wait())
            await eventually(blocked(1))
            await client.set("d:order", "two")
            second = asyncio.create_task(barrier.wait())
            await eventually(blocked(2))  # both out at once
            assert await first is False and await second is False  # nothing was fsynced
        finally:
            await client.aclose()
