"""SKU stock pools on real Valkey: drops allocate from the pool the backend's on-hand level
feeds, never more than it holds, and give back what they did not sell; late and duplicate
levels change nothing; a level below what shows allocated takes units back without oversell.
After every scenario the audit (inventory + pools) passes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.errors import ConflictError, ValidationError
from livecommerce.core.model import DropSpec
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.pool_audit import audit_pools
from livecommerce.store.pools import Shortfall

SKU = "TEE-1"


def spec(drop: str, quantity: int, sku: str = SKU, limit: int = 50) -> DropSpec:
    return DropSpec(id=drop, sku=sku, title="Tee", quantity=quantity, limit=limit,
                    prices={"EUR": 1500})  # fmt: skip


async def make(redis: aioredis.Redis, keyspace: Keyspace, **env: str) -> Inventory:
    inv = Inventory(redis, keyspace, config.load({f"LIVECOMMERCE_{k}": v for k, v in env.items()}))
    await inv.load()
    return inv


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    inventory = await make(redis, keyspace)
    await inventory.create_show("s1", title="Show 1")
    yield inventory


async def assert_audit(inv: Inventory) -> None:
    report = await audit(inv.redis, inv.keys)
    assert report.ok, report.summary()
    pools = await audit_pools(inv.redis, inv.keys)
    assert pools.ok, pools.violations


async def test_a_sku_without_on_hand_keeps_todays_drops(inv: Inventory) -> None:
    drop = await inv.create_drop("s1", spec("d1", 5))
    assert drop["quantity"] == 5
    assert await inv.redis.hget(inv.keys.drop("s1", "d1").drop, "pooled") is None
    restocked = await inv.restock("s1", "d1", 3)
    assert restocked["remaining"] == 8
    await inv.close("s1", "d1")
    assert (await inv.get_drop("s1", "d1"))["remaining"] == 8  # type: ignore[index]
    assert await inv.pools.ledger(SKU) is None
    await assert_audit(inv)


async def test_allocate_sell_close_returns_the_unsold_units(inv: Inventory) -> None:
    update = await inv.pools.report(SKU, 10, 1, delivery="del-1")
    assert update.status == "created" and update.ledger and update.ledger.pool == 10
    await inv.create_drop("s1", spec("d1", 6))
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.allocated) == (4, 6)
    with pytest.raises(ConflictError) as refused:
        await inv.create_drop("s1", spec("d2", 5))
    assert refused.value.code == "insufficient_stock"
    assert await inv.get_drop("s1", "d2") is None
    assert (await inv.pools.ledger(SKU)).pool == 4  # type: ignore[union-attr]
    assert (await inv.buy_now("s1", "d1", "v1", 2, "r1", "pay")).ok
    await assert_audit(inv)

    closed = await inv.close("s1", "d1")
    assert closed["state"] == "closed"
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.allocated, ledger.sold) == (8, 0, 2)
    view = await inv.get_drop("s1", "d1")
    assert view and (view["remaining"], view["sold"]) == (0, 2)
    entries = await inv.redis.xrange(inv.keys.sku(SKU).adjusted)
    assert [(e[b"sold"], e[b"returned"]) for _, e in entries] == [(b"2", b"4")]
    await assert_audit(inv)


async def test_restock_of_a_pooled_drop_comes_from_the_pool(inv: Inventory) -> None:
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 4))
    view = await inv.restock("s1", "d1", 5)
    assert view["remaining"] == 9
    with pytest.raises(ConflictError):
        await inv.restock("s1", "d1", 2)  # one unit left in the pool
    assert (await inv.pools.ledger(SKU)).pool == 1  # type: ignore[union-attr]
    # The drop script itself refuses a restock that bypasses the pool.
    raw = await inv._drop_call("drop_restock", "s1", "d1", 3)
    assert b"pooled_drop" in raw
    assert (await inv.get_drop("s1", "d1"))["remaining"] == 9  # type: ignore[index]
    await assert_audit(inv)


async def test_a_refused_drop_gives_the_units_back(inv: Inventory) -> None:
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 4))
    with pytest.raises(ConflictError) as exists:
        await inv.create_drop("s1", spec("d1", 3))
    assert exists.value.code == "drop_exists"
    await inv.end_show("s1")
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.allocated) == (10, 0)
    await assert_audit(inv)


async def test_concurrent_allocation_across_shows_never_exceeds_the_pool(
    inv: Inventory,
) -> None:
    shows = [f"s{i}" for i in range(2, 7)]
    for show in shows:
        await inv.create_show(show, title=show)
    await inv.pools.report(SKU, 50, 1)

    async def create(show: str, n: int) -> bool:
        try:
            await inv.create_drop(show, spec(f"d{n}", 3))
        except ConflictError as exc:
            assert exc.code == "insufficient_stock"
            return False
        return True

    results = await asyncio.gather(*(create(s, n) for s in shows for n in range(6)))
    assert sum(results) == 16  # 16 x 3 = 48 of 50; a 17th would need 51
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.pool, ledger.allocated) == (2, 48)
    total = 0
    for show in shows:
        total += sum(d["quantity"] for d in await inv.list_drops(show))
    assert total == 48
    await assert_audit(inv)


async def test_late_and_duplicate_levels_change_nothing(inv: Inventory) -> None:
    first = await inv.pools.report(SKU, 10, 5, delivery="a")
    assert first.status == "created"
    assert (await inv.pools.report(SKU, 99, 9, delivery="a")).status == "duplicate"
    assert (await inv.pools.report(SKU, 99, 4, delivery="b")).status == "stale"
    assert (await inv.pools.report(SKU, 99, 5, delivery="c")).status == "stale"
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.on_hand, ledger.pool, ledger.version) == (10, 10, 5)
    applied = await inv.pools.report(SKU, 12, 6, delivery="d")
    assert applied.status == "applied" and applied.ledger and applied.ledger.pool == 12
    for bad in ({"on_hand": -1}, {"on_hand": "3"}, {"version": True}):
        args = {"on_hand": 3, "version": 7, **bad}
        with pytest.raises(ValidationError):
            await inv.pools.report(SKU, args["on_hand"], args["version"])
    with pytest.raises(ValidationError):
        await inv.pools.report("bad sku!", 1, 1)
    assert (await inv.pools.ledger(SKU)).on_hand == 12  # type: ignore[union-attr]
    await assert_audit(inv)


async def test_sales_reflected_by_the_backend_keep_the_pool(inv: Inventory) -> None:
    await inv.pools.report(SKU, 100, 1)
    await inv.create_drop("s1", spec("d1", 10))
    assert (await inv.buy_now("s1", "d1", "v1", 3, "r1", "pay")).ok
    await inv.pools.recover()  # settles the sale: inventory.adjusted(sold 3) goes out
    # The backend applied it and reports 97: the pool stays 90, the 7 unsold stay in the drop.
    update = await inv.pools.report(SKU, 97, 2)
    assert update.ledger and (update.ledger.pool, update.ledger.adjust) == (90, 3)
    await assert_audit(inv)


async def test_level_below_allocated_reduces_open_drops_without_oversell(
    inv: Inventory,
) -> None:
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 8))
    holds = [await inv.reserve("s1", "d1", f"v{i}", 1, f"r{i}") for i in range(3)]
    update = await inv.pools.report(SKU, 4, 2)  # the web store sold 6 meanwhile
    assert update.reduced == 4
    assert update.ledger and (update.ledger.pool, update.ledger.short) == (0, 0)
    view = await inv.get_drop("s1", "d1")
    assert view and (view["remaining"], view["held"]) == (1, 3)
    events = [e[b"type"] for _, e in await inv.redis.xrange(inv.keys.events("s1"))]
    assert b"stock_reduced" in events
    # Holds already given stay confirmable; nothing more than the drop holds is sold.
    for i, hold in enumerate(holds):
        assert (await inv.confirm("s1", hold.hold.id, f"v{i}", "pay")).ok  # type: ignore[union-attr]
    assert (await inv.buy_now("s1", "d1", "w", 1, "b", "pay")).ok
    refused = await inv.buy_now("s1", "d1", "w2", 1, "b2", "pay")
    assert not refused.ok
    with pytest.raises(ConflictError):
        await inv.create_drop("s1", spec("d2", 1))
    await assert_audit(inv)


async def test_level_below_allocated_can_close_the_drops(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inv = await make(redis, keyspace, STOCK_SHORTFALL="close")
    assert inv.pools.shortfall is Shortfall.CLOSE
    await inv.create_show("s1", title="Show")
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 6))
    update = await inv.pools.report(SKU, 3, 2)
    assert update.reduced == 6
    view = await inv.get_drop("s1", "d1")
    assert view and (view["state"], view["reason"], view["remaining"]) == (
        "closed",
        "out_of_stock",
        0,
    )
    assert update.ledger and (update.ledger.pool, update.ledger.short) == (3, 0)
    await assert_audit(inv)


async def test_level_drop_during_a_live_burst_never_oversells(inv: Inventory) -> None:
    await inv.pools.report(SKU, 200, 1)
    await inv.create_drop("s1", spec("d1", 150, limit=2))

    async def buy(i: int) -> bool:
        out = await inv.buy_now("s1", "d1", f"v{i}", 1, f"r{i}", "pay")
        return out.ok

    async def levels() -> None:
        for version, level in enumerate((120, 90, 60, 40), start=2):
            await inv.pools.report(SKU, level, version)

    results, _ = await asyncio.gather(asyncio.gather(*(buy(i) for i in range(300))), levels())
    view = await inv.get_drop("s1", "d1")
    assert view is not None and view["remaining"] >= 0
    assert view["sold"] == sum(results) <= 150
    await inv.end_show("s1")  # closes the drop (if the reduction has not closed it already)
    await inv.pools.recover()
    await assert_audit(inv)


async def test_holds_released_after_close_go_back_to_the_pool(inv: Inventory) -> None:
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 5))
    hold = (await inv.reserve("s1", "d1", "v1", 2, "r1")).hold
    assert hold is not None
    await inv.close("s1", "d1")
    assert (await inv.pools.ledger(SKU)).pool == 8  # type: ignore[union-attr]
    assert await inv.redis.sismember(inv.keys.pooled, "s1/d1")  # still holds units
    assert (await inv.cancel("s1", hold.id, "v1")).ok  # what an expiry does, too
    await inv.pools.recover()
    assert (await inv.pools.ledger(SKU)).pool == 10  # type: ignore[union-attr]
    assert not await inv.redis.sismember(inv.keys.pooled, "s1/d1")  # settled for good
    await assert_audit(inv)


async def test_audit_catches_a_unit_made_out_of_nothing(inv: Inventory) -> None:
    await inv.pools.report(SKU, 10, 1)
    await inv.create_drop("s1", spec("d1", 5))
    await assert_audit(inv)
    dk = inv.keys.drop("s1", "d1")
    await inv.redis.hincrby(dk.drop, "remaining", 1)
    await inv.redis.hincrby(dk.drop, "quantity", 1)  # the drop's own invariant still holds
    report = await audit_pools(inv.redis, inv.keys)
    assert not report.ok and "allocated" in report.violations[0]
    await inv.redis.hincrby(inv.keys.sku(SKU).pool, "pool", 5)
    report = await audit(inv.redis, inv.keys)
    assert any("ledger pool" in v for v in report.violations)


async def test_a_refused_allocation_leaves_nothing_on_the_worklists(inv: Inventory) -> None:
    await inv.pools.report(SKU, 3, 1)
    with pytest.raises(ConflictError):
        await inv.create_drop("s1", spec("d1", 5))
    await inv.pools.recover(0)
    assert not await inv.redis.sismember(inv.keys.pooled, "s1/d1")
    assert not await inv.redis.sismember(inv.keys.pending_xfers, SKU)
    await assert_audit(inv)


async def test_a_shortfall_on_held_units_is_covered_once_they_are_released(
    inv: Inventory,
) -> None:
    await inv.pools.report(SKU, 4, 1)
    await inv.create_drop("s1", spec("d1", 4))
    holds = [(await inv.reserve("s1", "d1", f"v{i}", 1, f"r{i}")).hold for i in range(4)]
    update = await inv.pools.report(SKU, 1, 2)  # 3 short, but every unit is held
    assert update.reduced == 0 and update.ledger and update.ledger.short == 3
    for i, hold in enumerate(holds[:3]):
        assert hold is not None and (await inv.cancel("s1", hold.id, f"v{i}")).ok
    await inv.pools.recover(0)
    ledger = await inv.pools.ledger(SKU)
    assert ledger and (ledger.short, ledger.pool, ledger.allocated) == (0, 0, 1)
    view = await inv.get_drop("s1", "d1")
    assert view and (view["remaining"], view["held"]) == (0, 1)
    await assert_audit(inv)
