"""Lifecycle edges: a show that ended sells nothing more, ever; a request id reused for a
different request is refused; the scheduler survives a drop that vanished; a replayed dead
letter keeps the audit green. Each would fail without its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.errors import ConflictError
from livecommerce.core.model import DropSpec, Reason
from livecommerce.fulfillment import deadletters
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace, drop_member

SHOW = "s1"


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    inventory = Inventory(redis, keyspace, config.load({}))
    await inventory.load()
    await inventory.create_show(SHOW, title="Show")
    yield inventory
    report = await audit(redis, keyspace)
    assert report.ok, report.summary()


def spec(drop: str, quantity: int = 2, **kw: int) -> DropSpec:
    return DropSpec(id=drop, sku="sku", title="Tee", quantity=quantity, limit=5,
                    prices={"EUR": 900}, **kw)  # type: ignore[arg-type]  # fmt: skip


async def test_an_ended_show_never_sells_again(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("sold"))
    assert (await inv.buy_now(SHOW, "sold", "v1", 2, "r1", "pm")).ok  # closes: sold out
    now = await inv.server_time_ms()
    await inv.create_drop(SHOW, spec("timed", closes_at=now + 60_000))
    await inv.create_drop(SHOW, spec("open"))
    await inv.end_show(SHOW)
    for drop in ("sold", "timed", "open"):
        view = await inv.get_drop(SHOW, drop)
        assert view is not None and view["state"] == "closed"
        with pytest.raises(ConflictError):
            await inv.restock(SHOW, drop, 5)
        with pytest.raises(ConflictError):
            await inv.change_window(SHOW, drop, closes_at=now + 3_600_000)
        refused = await inv.buy_now(SHOW, drop, "v2", 1, f"late-{drop}", "pm")
        assert not refused.ok
    assert await inv.redis.xlen(inv.keys.orders(SHOW)) == 1


async def test_ending_again_finishes_an_interrupted_end(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("d1"))
    # As if a first end_show died after ending the show but before closing its drops.
    await inv._show_update(SHOW, "end", {})
    with pytest.raises(ConflictError) as info:
        await inv.end_show(SHOW)
    assert info.value.code == "show_ended"
    view = await inv.get_drop(SHOW, "d1")
    assert view is not None and view["state"] == "closed"
    assert not (await inv.reserve(SHOW, "d1", "v1", 1, "r1")).ok


async def test_request_id_reused_for_another_request_is_refused(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("a", quantity=5))
    await inv.create_drop(SHOW, spec("b", quantity=5))
    first = await inv.reserve(SHOW, "a", "v1", 1, "same")
    assert first.ok and first.hold
    again = await inv.reserve(SHOW, "a", "v1", 1, "same")
    assert again.replay and again.hold == first.hold
    for other in (
        inv.buy_now(SHOW, "b", "v1", 2, "same", "pm"),  # other drop, other mode
        inv.reserve(SHOW, "a", "v1", 2, "same"),  # other quantity
        inv.buy_now(SHOW, "a", "v1", 1, "same", "pm"),  # other mode
    ):
        outcome = await other
        assert not outcome.ok and outcome.reason is Reason.REQUEST_ID_REUSED
    view_b = await inv.get_drop(SHOW, "b")
    assert view_b is not None and view_b["remaining"] == 5
    assert await inv.redis.xlen(inv.keys.orders(SHOW)) == 0


async def test_scheduler_pass_survives_a_vanished_drop(inv: Inventory) -> None:
    ghost = drop_member(SHOW, "ghost")
    await inv.redis.zadd(inv.keys.schedule, {ghost: 1})
    await inv.redis.sadd(inv.keys.active, ghost)
    assert await inv.tick(SHOW, "ghost") == (0, 0, 0)
    assert await inv.run_due() == 0
    assert await inv.redis.zscore(inv.keys.schedule, ghost) is None
    assert not await inv.redis.sismember(inv.keys.active, ghost)


async def test_replayed_dead_letter_keeps_the_audit_green(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("d1"))
    order = await inv.buy_now(SHOW, "d1", "v1", 1, "r1", "pm")
    assert order.ok and order.order
    stream = inv.keys.orders(SHOW)
    ((entry_id, fields),) = await inv.redis.xrange(stream)
    await deadletters.add(inv.redis, inv.keys, stream=stream.encode().decode(),
                          entry_id=entry_id.decode(), fields=fields, error="HTTP 500",
                          attempts=8)  # fmt: skip
    replayed = await deadletters.replay(inv.redis, inv.keys)
    assert len(replayed) == 1
    entries = await inv.redis.xrange(stream)
    assert len(entries) == 2 and entries[1][1][b"replay_of"]
    report = await audit(inv.redis, inv.keys)
    assert report.ok, report.summary()
