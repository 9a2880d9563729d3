"""Crash tests: the Valkey process is killed with SIGKILL and restarted on the same data
directory. Every order acknowledged as confirmed (``durable`` -- it waited for WAITAOF) is still
there, the audit passes, and requests whose reply was lost to the crash can be retried with
their request ids without selling anything twice.

SIGKILL loses the process but not the kernel's page cache, so what it proves is that the
confirmed state is in the append-only file and reloads whole; power loss is what the fsync that
WAITAOF waits for protects against (docs/durability.md).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.errors import StoreError
from livecommerce.core.model import DropSpec, Outcome
from livecommerce.store.audit import audit
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOW = "crash"
KEYS = Keyspace("lc")

pytestmark = pytest.mark.slow


async def open_inventory(url: str) -> Inventory:
    inv = Inventory(aioredis.Redis.from_url(url), KEYS, config.load({}))
    await inv.load()
    return inv


async def acked_orders_survive_sigkill(data_dir: Path) -> None:
    server = EmbeddedValkey(data_dir).start()
    inv = await open_inventory(server.url)
    try:
        assert inv.durability.mode == "waitaof"  # the default configuration
        await inv.create_show(SHOW, title="Crash")
        spec = DropSpec(id="d1", sku="s", title="t", quantity=500, limit=2, prices={"EUR": 100})
        await inv.create_drop(SHOW, spec)
        holds = await asyncio.gather(
            *(inv.reserve(SHOW, "d1", f"h{i}", 1, f"r{i}") for i in range(40))
        )
        confirms = await asyncio.gather(
            *(inv.confirm(SHOW, o.hold.id, f"h{i}", f"pay{i}") for i, o in enumerate(holds[:30]))  # type: ignore[union-attr]
        )
        buys = await asyncio.gather(
            *(inv.buy_now(SHOW, "d1", f"b{i}", 2, f"r{i}", f"pay{i}") for i in range(30))
        )
        acked = [o.order for o in (*confirms, *buys) if o.order is not None and o.durable]
        assert len(acked) == 60
        server.kill()  # right after the last acknowledgement
    finally:
        await inv.redis.aclose()

    server = EmbeddedValkey(data_dir).start()
    inv = await open_inventory(server.url)
    try:
        entries = await inv.redis.xrange(KEYS.orders(SHOW))
        in_stream = {f[b"order_id"].decode(): f for _, f in entries}
        index = await inv.redis.hgetall(KEYS.drop(SHOW, "d1").orders_index)
        for order in acked:
            assert order is not None
            assert order.id in in_stream and int(in_stream[order.id][b"quantity"]) == order.quantity
            assert int(index[order.id.encode()]) == order.quantity
        view = await inv.get_drop(SHOW, "d1")
        assert view is not None and (view["sold"], view["held"]) == (30 + 60, 10)
        report = await audit(inv.redis, KEYS)
        assert report.ok and report.orders == 60, report.summary()
        # The holds survived too and are still confirmable (scripts reload on NOSCRIPT).
        out = await inv.confirm(SHOW, holds[35].hold.id, "h35", "after")  # type: ignore[union-attr]
        assert out.ok and out.durable
        replay = await inv.buy_now(SHOW, "d1", "b0", 2, "r0", "pay0")
        assert replay.replay and replay.order is not None and replay.order.id == acked[30].id
        assert (await audit(inv.redis, KEYS)).ok
    finally:
        await inv.redis.aclose()
        server.stop()


def test_acknowledged_orders_survive_sigkill(data_dir: Path) -> None:
    asyncio.run(acked_orders_survive_sigkill(data_dir))


async def kill_mid_burst_then_retry(data_dir: Path) -> None:
    buyers = 300
    server = EmbeddedValkey(data_dir).start()
    inv = await open_inventory(server.url)
    enough = asyncio.Event()
    acked: list[int] = []

    async def buy(i: int) -> Outcome:
        await asyncio.sleep(i / 1000)  # a steady stream of buyers, not one pipeline
        out = await inv.buy_now(SHOW, "d1", f"v{i}", 1, f"req{i}", f"pay{i}")
        if out.order is not None and out.durable:
            acked.append(i)
            if len(acked) == 50:
                enough.set()
        return out

    try:
        await inv.create_show(SHOW, title="Crash")
        spec = DropSpec(id="d1", sku="s", title="t", quantity=1000, limit=1, prices={"EUR": 100})
        await inv.create_drop(SHOW, spec)
        burst = [asyncio.create_task(buy(i)) for i in range(buyers)]
        await enough.wait()
        server.kill()  # while the rest of the burst is in flight
        results = await asyncio.gather(*burst, return_exceptions=True)
    finally:
        await inv.redis.aclose()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, StoreError) for r in failed), failed
    acked_orders = {
        i: r.order.id
        for i, r in enumerate(results)
        if isinstance(r, Outcome) and r.order is not None and r.durable
    }
    assert 50 <= len(acked_orders) < buyers  # the crash did cut the burst

    server = EmbeddedValkey(data_dir).start()
    inv = await open_inventory(server.url)
    try:
        stream = {f[b"order_id"].decode() for _, f in await inv.redis.xrange(KEYS.orders(SHOW))}
        assert set(acked_orders.values()) <= stream
        assert (await audit(inv.redis, KEYS)).ok
        # Every buyer retries with the same request id: one order each, never two.
        retried = await asyncio.gather(
            *(inv.buy_now(SHOW, "d1", f"v{i}", 1, f"req{i}", f"pay{i}") for i in range(buyers))
        )
        assert all(r.ok and r.order is not None for r in retried)
        for i, order_id in acked_orders.items():
            assert retried[i].replay and retried[i].order.id == order_id  # type: ignore[union-attr]
        report = await audit(inv.redis, KEYS)
        assert report.ok, report.summary()
        assert report.orders == report.units_sold == buyers == report.stream_entries
        assert len({r.order.id for r in retried}) == buyers  # type: ignore[union-attr]
    finally:
        await inv.redis.aclose()
        server.stop()


def test_sigkill_mid_burst_loses_no_acknowledged_order_and_sells_nothing_twice(
    data_dir: Path,
) -> None:
    asyncio.run(kill_mid_burst_then_retry(data_dir))
