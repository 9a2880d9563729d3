"""The per-drop limit also holds per payment reference, across viewer ids sharing one, in the
same atomic script as the sale -- under concurrency, on real Valkey."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from livecommerce.core.config import InventorySettings, Settings
from livecommerce.core.model import DropSpec, Reason
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

LIMIT = 3


@pytest.fixture
async def inventory(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inv = Inventory(redis, keyspace, Settings(inventory=InventorySettings(limit_per_payment=True)))
    await inv.load()
    await inv.create_show("s1", title="Show")
    await inv.create_drop("s1", DropSpec(id="d1", sku="k", title="Cap", quantity=500,
                                         limit=LIMIT, prices={"EUR": 900}))  # fmt: skip
    return inv


async def test_many_viewer_ids_one_card_get_the_limit_and_no_more(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    """60 bot accounts share one card (half one-tap, half reserve + confirm, all at once);
    20 honest viewers with their own cards buy alongside."""
    bots = [f"bot{i}" for i in range(60)]
    honest = [f"fan{i}" for i in range(20)]

    async def bot(i: int, viewer: str) -> int:
        if i % 2:
            out = await inventory.buy_now("s1", "d1", viewer, 1, f"b{i}", "card-shared")
        else:
            held = await inventory.reserve("s1", "d1", viewer, 1, f"b{i}")
            assert held.ok and held.hold is not None, held
            out = await inventory.confirm("s1", held.hold.id, viewer, "card-shared")
        if not out.ok:
            assert out.reason is Reason.LIMIT_EXCEEDED, out
            assert out.detail["scope"] == "payment_reference" and out.detail["limit"] == LIMIT
        return 1 if out.ok else 0

    async def fan(viewer: str) -> int:
        out = await inventory.buy_now("s1", "d1", viewer, 2, f"f-{viewer}", f"card-{viewer}")
        assert out.ok, out
        return 2

    results = await asyncio.gather(
        *(bot(i, v) for i, v in enumerate(bots)), *(fan(v) for v in honest)
    )
    bot_units = sum(results[: len(bots)])
    assert bot_units == LIMIT  # the whole farm got what one viewer may buy
    assert sum(results[len(bots) :]) == 2 * len(honest)  # honest viewers unaffected
    drop = await inventory.get_drop("s1", "d1")
    assert drop is not None
    assert drop["sold"] == LIMIT + 2 * len(honest)
    assert drop["held"] == 0  # refused confirms gave their holds back at once
    report = await audit(redis, keyspace)
    assert report.ok, report.summary()


async def test_a_refused_confirm_releases_the_hold_and_other_cards_still_work(
    inventory: Inventory,
) -> None:
    for i in range(LIMIT):
        assert (await inventory.buy_now("s1", "d1", f"a{i}", 1, f"r{i}", "card-x")).ok
    held = await inventory.reserve("s1", "d1", "late", 1, "r-late")
    assert held.ok and held.hold is not None
    refused = await inventory.confirm("s1", held.hold.id, "late", "card-x")
    assert refused.reason is Reason.LIMIT_EXCEEDED and refused.detail["allowed"] == 0
    again = await inventory.confirm("s1", held.hold.id, "late", "card-y")
    assert again.reason is Reason.HOLD_CANCELLED  # the hold went back to stock
    assert (await inventory.buy_now("s1", "d1", "late", 1, "r-late2", "card-y")).ok
    # No payment reference (a hold not yet paid) is not a shared signal.
    assert (await inventory.reserve("s1", "d1", "late2", 1, "r-l3")).ok


async def test_off_by_default_nothing_is_counted(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    inv = Inventory(redis, keyspace, Settings())
    await inv.load()
    await inv.create_show("s2", title="Show")
    await inv.create_drop("s2", DropSpec(id="d1", sku="k", title="Cap", quantity=50, limit=1,
                                         prices={"EUR": 900}))  # fmt: skip
    for i in range(5):
        assert (await inv.buy_now("s2", "d1", f"v{i}", 1, f"r{i}", "one-card")).ok
    assert await redis.exists(keyspace.drop("s2", "d1").payers) == 0
