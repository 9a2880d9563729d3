"""The waiting line across two gateways: real uvicorn servers (two apps, each with its own Redis
clients, pub/sub and state, sharing only Valkey), real Valkey, real websockets clients.

Gateway A is made "busy" by holding every one of its store slots: what A admits cannot reach
the store until the test lets go. With ``LIVECOMMERCE_LINE_IN_FLIGHT=1`` the line lets one
attempt of the drop at the store at a time, so service order must be ticket (arrival) order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, live_show, serve, settings
from helpers.polling import eventually

from livecommerce.realtime.client import Client
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    async with live_show(redis, keyspace) as inventory:
        yield inventory


@contextlib.asynccontextmanager
async def two_gateways(redis_url: str, keyspace: Keyspace,
                       **b: Any) -> AsyncIterator[tuple[Running, Running]]:  # fmt: skip
    async with serve(settings(line_in_flight=1), redis_url, keyspace) as a, \
            serve(settings(line_in_flight=1, **b), redis_url, keyspace) as gb:  # fmt: skip
        yield a, gb


@contextlib.asynccontextmanager
async def busy(gw: Running) -> AsyncIterator[asyncio.Semaphore]:
    """Every store slot of ``gw`` taken for the block (released on exit)."""
    slots = gw.gateway._command_slots
    taken = 0
    while not slots.locked():
        await slots.acquire()
        taken += 1
    try:
        yield slots
    finally:
        for _ in range(taken):
            slots.release()


@contextlib.asynccontextmanager
async def fsync_held(gw: Running, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Every order of ``gw`` waits for its fsync (WAITAOF) until the block ends: a sale is made
    at the store, but its buyer is not told yet (the real wait runs once let go)."""
    barrier = gw.gateway.services.inventory.durability
    wait, go = barrier.wait, asyncio.Event()

    async def held() -> bool | None:
        await go.wait()
        return await wait()

    monkeypatch.setattr(barrier, "wait", held)
    try:
        yield
    finally:
        go.set()


def viewer(gw: Running, name: str) -> Client:
    return Client(gw.url, "s1", token=mint(SECRET, name, 600), reconnect=False)


async def stuck_at_the_store(slots: asyncio.Semaphore) -> None:
    while not slots._waiters:  # noqa: ASYNC110 - yields until the attempt waits for a slot
        await asyncio.sleep(0)


async def queued(client: Client, rid: str) -> dict[str, Any]:
    msg = await client.next_message(types=["queued"])
    assert msg["id"] == rid, msg
    return msg


async def recorded(redis: aioredis.Redis, keyspace: Keyspace, viewer: str, rid: str) -> bool:
    return bool(await redis.exists(keyspace.request("s1", viewer, rid)))


async def sale_order(redis: aioredis.Redis, keyspace: Keyspace) -> list[str]:
    entries = await redis.xrange(keyspace.orders("s1"))
    return [fields[b"viewer"].decode() for _, fields in entries]


async def test_arrival_order_is_kept_across_gateways(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=10))
    async with two_gateways(redis_url, keyspace) as (a, b), \
            viewer(a, "a1") as a1, viewer(a, "a2") as a2, \
            viewer(b, "b1") as b1, viewer(b, "b2") as b2:  # fmt: skip
        async with busy(a) as slots:
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await stuck_at_the_store(slots)  # ticket 1: admitted, but A is busy
            # B is idle, yet b1 tapped after a1: it waits for a1 instead of being served first.
            t_b1 = asyncio.create_task(b1.buy_now("d1", 1, "pay", request_id="r-b1"))
            assert (await queued(b1, "r-b1"))["position"] == 1
            t_a2 = asyncio.create_task(a2.buy_now("d1", 1, "pay", request_id="r-a2"))
            assert (await queued(a2, "r-a2"))["position"] == 2
            t_b2 = asyncio.create_task(b2.buy_now("d1", 1, "pay", request_id="r-b2"))
            assert (await queued(b2, "r-b2"))["position"] == 3
            assert not t_b1.done() and await sale_order(redis, keyspace) == []
        results = await asyncio.gather(t_a1, t_b1, t_a2, t_b2)
        assert all(r["ok"] for r in results), results
        assert await sale_order(redis, keyspace) == ["a1", "b1", "a2", "b2"]  # ticket order
        waiting = a.gateway.metrics.line_waiting.labels("s1", "d1")._value.get()
        assert waiting == 0


async def test_an_order_waiting_for_its_fsync_leaves_room_in_the_line(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # The fsync wait (up to a second with appendfsync everysec) is shared by every order of a
    # burst and is no work at the store: a line that kept it in the window let one window of
    # sales through per fsync round, and the spike's buyers timed out behind it.
    await inv.create_drop("s1", drop("d1", quantity=10))
    no_stall = settings(line_in_flight=1, line_stall_s=3600)  # only answers move the line
    async with serve(no_stall, redis_url, keyspace) as a, viewer(a, "a1") as a1, \
            viewer(a, "a2") as a2:  # fmt: skip
        async with fsync_held(a, monkeypatch):
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await eventually(lambda: recorded(redis, keyspace, "a1", "r-a1"))
            t_a2 = asyncio.create_task(a2.buy_now("d1", 1, "pay", request_id="r-a2"))
            # a1 is sold and only waits for the disk: a2 goes to the store meanwhile.
            await eventually(lambda: recorded(redis, keyspace, "a2", "r-a2"))
            assert not t_a1.done() and not t_a2.done()
        results = await asyncio.gather(t_a1, t_a2)
        assert all(r["ok"] and r.get("durable") is True for r in results), results
        assert await sale_order(redis, keyspace) == ["a1", "a2"]
        assert a.gateway.lines.lines[("s1", "d1")].waiting == []


async def test_sold_out_flushes_everyone_in_line_at_once(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=1))
    async with two_gateways(redis_url, keyspace) as (a, b), viewer(a, "a1") as a1, \
            viewer(b, "b1") as b1, viewer(b, "b2") as b2, viewer(b, "b3") as b3:  # fmt: skip
        async with busy(a) as slots:
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await stuck_at_the_store(slots)
            waiting = []
            for n, client in enumerate((b1, b2, b3), start=1):
                waiting.append(asyncio.create_task(
                    client.buy_now("d1", 1, "pay", request_id=f"r-b{n}")))  # fmt: skip
                assert (await queued(client, f"r-b{n}"))["position"] == n
            assert (await inv.buy_now("s1", "d1", "zed", 1, "z1", "pay")).ok  # the last unit
            # Told while a1 is still stuck ahead of them, without a store round trip each.
            replies = await asyncio.gather(*waiting)
            assert [r["reason"] for r in replies] == ["sold_out"] * 3
            for n in (1, 2, 3):
                assert not await recorded(redis, keyspace, f"b{n}", f"r-b{n}")
        assert (await t_a1)["reason"] == "sold_out"
        assert await sale_order(redis, keyspace) == ["zed"]


async def test_a_buyer_on_a_sold_out_drop_waits_in_no_line(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    # A buyer's attempts cannot be refused at the edge (one may be the retry of a success), so
    # after the sell-out they all went through the line, one window at a time: in the spike
    # thousands of them queued behind each other for a drop with nothing left to sell.
    await inv.create_drop("s1", drop("d1", quantity=2))
    async with two_gateways(redis_url, keyspace, line_stall_s=3600) as (a, b), \
            viewer(a, "a1") as a1, viewer(b, "b1") as b1:  # fmt: skip
        assert (await b1.buy_now("d1", 1, "pay", request_id="r-b1"))["ok"]
        async with busy(a) as slots:
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await stuck_at_the_store(slots)  # the line's one place is a1's
            again = asyncio.create_task(b1.buy_now("d1", 1, "pay", request_id="r-b2"))
            await queued(b1, "r-b2")
            assert (await inv.buy_now("s1", "d1", "zed", 1, "z1", "pay")).ok  # the last unit
            # Closed: b1 goes to the store now (nothing to sell, so no order to keep), while
            # a1 is still stuck ahead of it; and so do b1's next attempts.
            assert (await again)["reason"] == "sold_out"
            retry = await b1.buy_now("d1", 1, "pay", request_id="r-b1")
            assert retry["ok"] and retry["replay"], retry
            assert (await b1.buy_now("d1", 1, "pay", request_id="r-b3"))["reason"] == "sold_out"
            assert not t_a1.done()
        assert (await t_a1)["reason"] == "sold_out"
        assert await sale_order(redis, keyspace) == ["b1", "zed"]
        assert b.gateway.lines.lines[("s1", "d1")].waiting == []


async def test_busy_past_the_lines_bound(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=10))
    async with two_gateways(redis_url, keyspace, line_size=2) as (a, b), \
            viewer(a, "a1") as a1, viewer(b, "b1") as b1, viewer(b, "b2") as b2, \
            viewer(b, "b3") as b3:  # fmt: skip
        async with busy(a) as slots:
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await stuck_at_the_store(slots)
            t_b1 = asyncio.create_task(b1.buy_now("d1", 1, "pay", request_id="r-b1"))
            await queued(b1, "r-b1")
            t_b2 = asyncio.create_task(b2.buy_now("d1", 1, "pay", request_id="r-b2"))
            await queued(b2, "r-b2")
            refused = await b3.buy_now("d1", 1, "pay", request_id="r-b3")
            assert refused["type"] == "error" and refused["code"] == "busy", refused
            assert isinstance(refused["retry_after_ms"], int) and refused["retry_after_ms"] > 0
            assert not await recorded(redis, keyspace, "b3", "r-b3")
        assert all(r["ok"] for r in await asyncio.gather(t_a1, t_b1, t_b2))
        # The busy attempt's ticket was counted answered: the line did not stop behind it.
        again = await b3.buy_now("d1", 1, "pay", request_id="r-b4")
        assert again["ok"], again
        assert b.gateway.metrics.line_busy._value.get() == 1


async def test_a_viewer_who_leaves_the_line_buys_nothing_and_holds_nothing(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=10))
    async with two_gateways(redis_url, keyspace) as (a, b), viewer(a, "a1") as a1, \
            viewer(b, "b2") as b2:  # fmt: skip
        line = b.gateway.lines.line(("s1", "d1"))
        async with busy(a) as slots:
            t_a1 = asyncio.create_task(a1.buy_now("d1", 1, "pay", request_id="r-a1"))
            await stuck_at_the_store(slots)
            async with viewer(b, "b1") as b1:
                gone = asyncio.create_task(b1.buy_now("d1", 1, "pay", request_id="r-b1"))
                await queued(b1, "r-b1")
                hold = asyncio.create_task(b1.reserve("d1", 1, request_id="r-b1h"))
            gone.cancel()
            hold.cancel()
            while line.waiting:  # noqa: ASYNC110 - yields until B has seen the disconnect
                await asyncio.sleep(0)
            t_b2 = asyncio.create_task(b2.buy_now("d1", 1, "pay", request_id="r-b2"))
            await queued(b2, "r-b2")
        assert (await t_a1)["ok"] and (await t_b2)["ok"]  # the line moved past b1's ticket
    assert not await recorded(redis, keyspace, "b1", "r-b1")
    assert not await recorded(redis, keyspace, "b1", "r-b1h")
    assert await sale_order(redis, keyspace) == ["a1", "b2"]
    view = await inv.get_drop("s1", "d1")
    assert view is not None and view["held"] == 0 and view["sold"] == 2
