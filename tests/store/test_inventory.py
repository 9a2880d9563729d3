"""The inventory operations against a real server: every refusal, holds, confirm, cancel,
buy_now, idempotency (also when the first reply was lost), expiry judged by the server clock,
the reaper under concurrency, windows, restock, close, and bad input that changes nothing.

Every test ends with the audit on its own key prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from livecommerce.core import config
from livecommerce.core.errors import ConflictError, NotFoundError, StoreError, ValidationError
from livecommerce.core.model import DropKind, DropSpec, Outcome, Reason
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOW = "show1"

MakeInventory = Callable[..., Awaitable[Inventory]]


@pytest.fixture
async def make_inv(redis: aioredis.Redis, keyspace: Keyspace) -> MakeInventory:
    """An Inventory on this test's prefix; keyword arguments are LIVECOMMERCE_* settings."""

    async def make(client: aioredis.Redis | None = None, **env: str) -> Inventory:
        settings = config.load({f"LIVECOMMERCE_{k.upper()}": v for k, v in env.items()})
        inventory = Inventory(client or redis, keyspace, settings)
        await inventory.load()
        return inventory

    return make


@pytest.fixture
async def inv(make_inv: MakeInventory) -> AsyncIterator[Inventory]:
    inventory = await make_inv()
    await inventory.create_show(SHOW, title="Show")
    yield inventory
    report = await audit(inventory.redis, inventory.keys)
    assert report.ok, report.summary()


def spec(drop: str = "d1", quantity: int = 10, limit: int = 3, **kw: Any) -> DropSpec:
    fields: dict[str, Any] = {
        "sku": f"sku-{drop}", "title": f"Item {drop}", "prices": {"EUR": 1250, "USD": 1400},
    }  # fmt: skip
    return DropSpec(id=drop, quantity=quantity, limit=limit, **{**fields, **kw})


async def counters(inv: Inventory, drop: str = "d1") -> tuple[int, int, int]:
    view = await inv.get_drop(SHOW, drop)
    assert view is not None
    return view["remaining"], view["held"], view["sold"]


async def stream_orders(inv: Inventory, show: str = SHOW) -> list[dict[str, str]]:
    entries = await inv.redis.xrange(inv.keys.orders(show))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def wait_server_past(inv: Inventory, at_ms: int, deadline_s: float = 10.0) -> None:
    """Poll the server's clock (TIME) until it has passed ``at_ms``."""
    give_up = time.monotonic() + deadline_s
    while await inv.server_time_ms() <= at_ms:
        assert time.monotonic() < give_up, "server clock did not advance"
        await asyncio.sleep(0.02)


async def dump(client: aioredis.Redis, keyspace: Keyspace) -> dict[str, Any]:
    """Every key under the prefix with its type, value and whether it expires."""
    out: dict[str, Any] = {}
    async for raw_key in client.scan_iter(match=f"{keyspace.prefix}:*", count=1000):
        key = raw_key.decode()
        kind = (await client.type(key)).decode()
        value: Any
        if kind == "string":
            value = await client.get(key)
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "stream":
            value = (await client.xrange(key), await client.xinfo_stream(key))
        else:
            value = await client.dump(key)
        out[key] = (kind, value, await client.ttl(key) > 0)
    return out


# -- reserve and its refusals ------------------------------------------------------------------


async def test_reserve_holds_units_until_an_expiry_on_the_server_clock(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=10))
    before = await inv.server_time_ms()
    out = await inv.reserve(SHOW, "d1", "alice", 2, "r1")
    after = await inv.server_time_ms()
    assert out.ok and out.hold is not None and out.reason is None
    assert out.hold.id == "d1.1" and out.hold.quantity == 2 and out.hold.state == "held"
    assert out.hold.unit_price == 1250 and out.hold.currency == "EUR"
    assert before <= out.now_ms <= after
    assert out.hold.expires_at == out.now_ms + 120_000  # the default hold TTL
    assert out.remaining == 8
    assert await counters(inv) == (8, 2, 0)
    # Another currency, priced at the drop's price for it.
    usd = await inv.reserve(SHOW, "d1", "bob", 1, "r1", currency="USD")
    assert usd.ok and usd.hold is not None and usd.hold.unit_price == 1400
    refused = await inv.reserve(SHOW, "d1", "carol", 1, "r1", currency="GBP")
    assert refused.reason is Reason.UNSUPPORTED_CURRENCY
    assert await counters(inv) == (7, 3, 0)


async def test_every_refusal_reason(inv: Inventory) -> None:
    now = await inv.server_time_ms()
    await inv.create_drop(SHOW, spec("later", opens_at=now + 3_600_000))
    await inv.create_drop(SHOW, spec("d1", quantity=5, limit=4))
    await inv.create_drop(SHOW, spec("shut", quantity=5))
    await inv.close(SHOW, "shut")

    out = await inv.reserve(SHOW, "later", "alice", 1, "a1")
    assert out.reason is Reason.NOT_OPEN and not out.ok
    assert out.detail["opens_at"] == now + 3_600_000

    out = await inv.reserve(SHOW, "shut", "alice", 1, "a2")
    assert out.reason is Reason.CLOSED and out.detail["closed_reason"] == "host"

    out = await inv.reserve(SHOW, "nope", "alice", 1, "a3")
    assert out.reason is Reason.UNKNOWN_DROP
    out = await inv.reserve("noshow", "d1", "alice", 1, "a3")
    assert out.reason is Reason.UNKNOWN_DROP

    for bad in (0, -1, 1001, 10**12, 1.5, "2", True, None):
        out = await inv.reserve(SHOW, "d1", "alice", bad, "a4")  # type: ignore[arg-type]
        assert out.reason is Reason.INVALID_QUANTITY, bad

    out = await inv.reserve(SHOW, "d1", "alice", 5, "a5")
    assert out.reason is Reason.LIMIT_EXCEEDED
    assert out.detail["limit"] == 4 and out.detail["allowed"] == 4

    assert (await inv.reserve(SHOW, "d1", "alice", 3, "a6")).ok
    out = await inv.reserve(SHOW, "d1", "alice", 2, "a7")
    assert out.reason is Reason.LIMIT_EXCEEDED and out.detail["allowed"] == 1

    out = await inv.reserve(SHOW, "d1", "bob", 3, "b1")
    assert out.reason is Reason.INSUFFICIENT_STOCK and out.remaining == 2  # says how many left

    assert (await inv.reserve(SHOW, "d1", "bob", 2, "b2")).ok
    out = await inv.reserve(SHOW, "d1", "carol", 1, "c1")
    assert out.reason is Reason.SOLD_OUT and out.remaining == 0
    assert await counters(inv) == (0, 5, 0)
    # Everything held, nothing sold: still open (holds may come back), so "sold out" for now.
    view = await inv.get_drop(SHOW, "d1")
    assert view is not None and view["state"] == "open"


# -- confirm, cancel, buy_now ------------------------------------------------------------------


async def test_confirm_appends_the_order_to_the_outbox_once(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=10))
    hold = (await inv.reserve(SHOW, "d1", "alice", 3, "r1")).hold
    assert hold is not None
    out = await inv.confirm(SHOW, hold.id, "alice", "pay-1")
    assert out.ok and out.order is not None and not out.replay
    order = out.order
    assert order.quantity == 3 and order.amount == 3 * 1250 and order.hold == hold.id
    assert order.viewer == "alice" and order.payment_reference == "pay-1"
    assert order.request_id == "r1" and order.drop == "d1" and order.show == SHOW
    if inv.durability.mode == "waitaof":
        assert out.durable is True
    assert await counters(inv) == (7, 0, 3)

    again = await inv.confirm(SHOW, hold.id, "alice", "pay-1")
    assert again.ok and again.replay and again.order == order
    entries = await stream_orders(inv)
    assert [e["order_id"] for e in entries] == [order.id]
    e = entries[0]
    assert (e["quantity"], e["amount"], e["viewer"], e["hold"]) == ("3", "3750", "alice", hold.id)
    assert e["payment_reference"] == "pay-1" and e["sku"] == "sku-d1"
    assert await counters(inv) == (7, 0, 3)

    # A confirmed hold cannot be cancelled; another viewer cannot touch it.
    assert (await inv.cancel(SHOW, hold.id, "alice")).reason is Reason.HOLD_CONFIRMED
    assert (await inv.confirm(SHOW, hold.id, "bob", "x")).reason is Reason.UNKNOWN_HOLD
    assert (await inv.confirm(SHOW, "d1.99", "alice", "x")).reason is Reason.UNKNOWN_HOLD


async def test_cancel_returns_the_stock_once(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=4, limit=4))
    hold = (await inv.reserve(SHOW, "d1", "alice", 4, "r1")).hold
    assert hold is not None
    assert await counters(inv) == (0, 4, 0)
    assert (await inv.cancel(SHOW, hold.id, "bob")).reason is Reason.UNKNOWN_HOLD
    out = await inv.cancel(SHOW, hold.id, "alice")
    assert out.ok and out.remaining == 4 and out.hold is not None
    assert out.hold.state == "cancelled"
    again = await inv.cancel(SHOW, hold.id, "alice")
    assert again.ok and again.replay
    assert await counters(inv) == (4, 0, 0)
    assert (await inv.confirm(SHOW, hold.id, "alice", "p")).reason is Reason.HOLD_CANCELLED
    assert await stream_orders(inv) == []
    # The limit counts held units: after the cancel alice may reserve her full limit again.
    assert (await inv.reserve(SHOW, "d1", "alice", 4, "r2")).ok


async def test_buy_now_sells_in_one_step(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=3, limit=3))
    out = await inv.buy_now(SHOW, "d1", "alice", 2, "b1", "pay-9")
    assert out.ok and out.order is not None and out.hold is None
    assert out.order.hold == "" and out.order.amount == 2500 and out.remaining == 1
    if inv.durability.mode == "waitaof":
        assert out.durable is True
    assert await counters(inv) == (1, 0, 2)
    assert (await inv.buy_now(SHOW, "d1", "alice", 2, "b2", "p")).reason is Reason.LIMIT_EXCEEDED
    assert (await inv.buy_now(SHOW, "d1", "bob", 2, "b1", "p")).remaining == 1
    assert (await inv.buy_now(SHOW, "d1", "bob", 1, "b3", "p")).ok
    # The last unit sold and nothing held: the drop closes for good (until a restock).
    view = await inv.get_drop(SHOW, "d1")
    assert view is not None and (view["state"], view["reason"]) == ("closed", "sold_out")
    out = await inv.buy_now(SHOW, "d1", "carol", 1, "c1", "p")
    assert out.reason is Reason.SOLD_OUT
    assert len(await stream_orders(inv)) == 2


# -- idempotency -------------------------------------------------------------------------------


async def test_same_request_id_returns_the_first_result(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=10))
    first = await inv.reserve(SHOW, "d1", "alice", 2, "r1")
    again = await inv.reserve(SHOW, "d1", "alice", 2, "r1")
    assert again.replay and not first.replay
    assert again.hold == first.hold and again.now_ms == first.now_ms
    # The same id for a different request is refused, not answered with the first result.
    other = await inv.reserve(SHOW, "d1", "alice", 1, "r1")
    assert not other.ok and other.reason is Reason.REQUEST_ID_REUSED
    # The same id from another viewer is another request.
    bob = await inv.reserve(SHOW, "d1", "bob", 2, "r1")
    assert bob.ok and not bob.replay and bob.hold != first.hold
    assert await counters(inv) == (6, 4, 0)

    bought = await inv.buy_now(SHOW, "d1", "carol", 1, "b1", "p")
    racing = await asyncio.gather(
        *(inv.buy_now(SHOW, "d1", "carol", 1, "b1", "p") for _ in range(20))
    )
    assert {r.order for r in racing} == {bought.order} and all(r.replay for r in racing)
    assert len(await stream_orders(inv)) == 1
    assert await counters(inv) == (5, 4, 1)

    # A refusal is a first result too (no second attempt slips through later).
    limited = await inv.reserve(SHOW, "d1", "alice", 2, "r9")
    assert limited.reason is Reason.LIMIT_EXCEEDED
    await inv.cancel(SHOW, first.hold.id, "alice")  # type: ignore[union-attr]
    replay = await inv.reserve(SHOW, "d1", "alice", 2, "r9")
    assert replay.replay and replay.reason is Reason.LIMIT_EXCEEDED


async def test_concurrent_duplicates_make_one_hold(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec(quantity=100, limit=100))
    outs = await asyncio.gather(*(inv.reserve(SHOW, "d1", "alice", 1, "same") for _ in range(200)))
    assert len({o.hold for o in outs}) == 1
    assert sum(not o.replay for o in outs) == 1
    assert await counters(inv) == (99, 1, 0)


async def test_script_run_twice_is_a_replay(inv: Inventory) -> None:
    """The script itself is idempotent: the caller may resend after any failure."""
    await inv.create_drop(SHOW, spec(quantity=10))
    keys = [*inv.keys.drop(SHOW, "d1").as_list(), inv.keys.request(SHOW, "alice", "r1")]
    args = [*inv._common(SHOW), "alice", 1, "r1", 120_000, "", "buy", "pay", 3600]
    first = Outcome.parse(await inv.runner.call("drop_reserve", keys, args))
    second = Outcome.parse(await inv.runner.call("drop_reserve", keys, args))
    assert first.ok and second.replay and second.order == first.order
    assert len(await stream_orders(inv)) == 1


async def test_replies_held_past_the_socket_timeout_fail_the_call_and_spare_the_pool(
    make_inv: MakeInventory, redis_url: str
) -> None:
    """The batch's replies share one deadline, the connection's socket timeout: past it the call
    fails as a store error (after redis-py's retries), and the pool's connections still work."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3)
    control = aioredis.Redis.from_url(redis_url)
    try:
        inv = await make_inv(client)
        await inv.create_show(SHOW, title="Show")
        await inv.create_drop(SHOW, spec(quantity=10))
        try:
            await control.execute_command("CLIENT", "PAUSE", 3_000, "WRITE")
        except ResponseError as exc:  # pragma: no cover - managed servers may forbid it
            pytest.skip(f"CLIENT PAUSE not allowed: {exc}")
        try:
            with pytest.raises(StoreError, match="redis"):
                await inv.reserve(SHOW, "d1", "alice", 1, "held")
        finally:
            await control.execute_command("CLIENT", "UNPAUSE")
        # Whatever the lost attempts did is replayed; nothing is left unread on a connection.
        outs = await asyncio.gather(*(inv.reserve(SHOW, "d1", f"v{i}", 1, f"r{i}")
                                      for i in range(8)))  # fmt: skip
        assert all(o.ok for o in outs)
        again = await inv.reserve(SHOW, "d1", "alice", 1, "held")
        assert again.ok
    finally:
        await control.aclose()
        await client.aclose()


@pytest.mark.parametrize("mode", ["reserve", "buy"])
async def test_reply_lost_to_a_timeout_then_retried(
    inv: Inventory, redis_url: str, mode: str
) -> None:
    """The caller gives up while the script is queued on the server (CLIENT PAUSE holds its
    reply back); the script still runs; the retry with the same request id gets that result."""
    await inv.create_drop(SHOW, spec(quantity=10))

    async def attempt() -> Outcome:
        if mode == "buy":
            return await inv.buy_now(SHOW, "d1", "alice", 2, "lost", "pay-1")
        return await inv.reserve(SHOW, "d1", "alice", 2, "lost")

    control = aioredis.Redis.from_url(redis_url)
    try:
        try:
            await control.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        except ResponseError as exc:  # pragma: no cover - managed servers may forbid it
            pytest.skip(f"CLIENT PAUSE not allowed: {exc}")
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(attempt(), timeout=0.3)
            retry_task = asyncio.create_task(attempt())  # queued behind the lost one
            await asyncio.sleep(0)
        finally:
            await control.execute_command("CLIENT", "UNPAUSE")
    finally:
        await control.aclose()
    retry = await retry_task
    assert retry.ok and retry.replay
    if mode == "buy":
        assert retry.order is not None
        assert await counters(inv) == (8, 0, 2)
        assert [e["order_id"] for e in await stream_orders(inv)] == [retry.order.id]
        if inv.durability.mode == "waitaof":
            assert retry.durable is True
    else:
        assert retry.hold is not None and retry.hold.id == "d1.1"
        assert await counters(inv) == (8, 2, 0)
        assert await inv.redis.zcard(inv.keys.drop(SHOW, "d1").holds) == 1


# -- expiry and the reaper ---------------------------------------------------------------------


async def test_expired_hold_cannot_be_confirmed_before_it_is_reaped(
    make_inv: MakeInventory,
) -> None:
    inv = await make_inv(hold_ttl="1")
    await inv.create_show(SHOW, title="Show")
    await inv.create_drop(SHOW, spec(quantity=5))
    hold = (await inv.reserve(SHOW, "d1", "alice", 2, "r1")).hold
    assert hold is not None and hold.expires_at - (await inv.server_time_ms()) <= 1000
    await wait_server_past(inv, hold.expires_at)
    holds_key = inv.keys.drop(SHOW, "d1").holds
    assert await inv.redis.zscore(holds_key, "1") is not None  # not reaped yet
    assert await counters(inv) == (3, 2, 0)

    out = await inv.confirm(SHOW, hold.id, "alice", "pay")
    assert out.reason is Reason.HOLD_EXPIRED and out.order is None
    assert await counters(inv) == (5, 0, 0)
    assert await stream_orders(inv) == []
    assert (await inv.confirm(SHOW, hold.id, "alice", "pay")).reason is Reason.HOLD_EXPIRED
    assert (await inv.cancel(SHOW, hold.id, "alice")).reason is Reason.HOLD_EXPIRED
    assert await inv.run_due() == 0  # nothing left for the reaper
    assert (await audit(inv.redis, inv.keys)).ok


async def test_cancel_after_expiry_reports_expired(make_inv: MakeInventory) -> None:
    inv = await make_inv(hold_ttl="1")
    await inv.create_show(SHOW, title="Show")
    await inv.create_drop(SHOW, spec(quantity=5))
    hold = (await inv.reserve(SHOW, "d1", "alice", 2, "r1")).hold
    assert hold is not None
    await wait_server_past(inv, hold.expires_at)
    assert (await inv.cancel(SHOW, hold.id, "alice")).reason is Reason.HOLD_EXPIRED
    assert await counters(inv) == (5, 0, 0)
    assert (await audit(inv.redis, inv.keys)).ok


async def test_concurrent_reapers_release_each_hold_exactly_once(
    make_inv: MakeInventory, redis_url: str
) -> None:
    inv = await make_inv(hold_ttl="1")
    await inv.create_show(SHOW, title="Show")
    for drop in ("d1", "d2"):
        await inv.create_drop(SHOW, spec(drop, quantity=100, limit=5))
    outs = await asyncio.gather(
        *(inv.reserve(SHOW, f"d{1 + i % 2}", f"v{i}", 1 + i % 3, f"r{i}") for i in range(60))
    )
    assert all(o.ok for o in outs)
    holds = [o.hold for o in outs if o.hold is not None]
    await wait_server_past(inv, max(h.expires_at for h in holds))

    clients = [aioredis.Redis.from_url(redis_url) for _ in range(8)]
    try:
        reapers = [await make_inv(client=c, hold_ttl="1") for c in clients]

        async def reap(r: Inventory, n: int) -> int:
            freed = 0
            for _ in range(3):
                if n % 2:
                    freed += await r.run_due()
                    continue
                for drop in ("d1", "d2"):
                    freed += (await r.tick(SHOW, drop, batch=7))[0]
            return freed

        released = await asyncio.gather(*(reap(r, n) for n, r in enumerate(reapers)))
        released_rest = await reapers[0].run_due()
    finally:
        for c in clients:
            await c.aclose()
    assert sum(released) + released_rest == len(holds) == 60
    for drop in ("d1", "d2"):
        assert await counters(inv, drop) == (100, 0, 0)
        k = inv.keys.drop(SHOW, drop)
        records = await inv.redis.hgetall(k.holdrec)
        assert records and all(b'"s":"expired"' in raw for raw in records.values())
        assert await inv.redis.zcard(k.holds) == 0 and await inv.redis.hlen(k.held) == 0
    assert (await audit(inv.redis, inv.keys)).ok


# -- windows on the server clock ---------------------------------------------------------------


async def test_windows_are_judged_by_the_server_clock(
    inv: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller's clock is a year ahead: nothing may depend on it.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 365 * 86_400)
    # Each phase's deadline is set only after the previous check, so a slow machine cannot
    # make a step land in the wrong phase.
    now = await inv.server_time_ms()
    await inv.create_drop(SHOW, spec("d1", opens_at=now + 3_600_000))
    out = await inv.reserve(SHOW, "d1", "alice", 1, "r1")
    assert out.reason is Reason.NOT_OPEN and out.detail["opens_at"] == now + 3_600_000
    now = await inv.server_time_ms()
    await inv.change_window(SHOW, "d1", opens_at=now + 300, closes_at=now + 3_600_000)
    await wait_server_past(inv, now + 300)
    out = await inv.reserve(SHOW, "d1", "alice", 1, "r2")
    assert out.ok and out.now_ms >= now + 300
    now = await inv.server_time_ms()
    await inv.change_window(SHOW, "d1", closes_at=now + 300)
    await wait_server_past(inv, now + 300)
    out = await inv.reserve(SHOW, "d1", "alice", 1, "r3")
    assert out.reason is Reason.CLOSED and out.detail["closed_reason"] == "time_up"
    # The hold taken while open stays confirmable until it expires.
    assert (await inv.confirm(SHOW, "d1.1", "alice", "pay")).ok


async def test_change_window_reopens_and_reschedules(inv: Inventory) -> None:
    now = await inv.server_time_ms()
    await inv.create_drop(SHOW, spec("d1", closes_at=now + 300))
    await wait_server_past(inv, now + 300)
    assert (await inv.reserve(SHOW, "d1", "a", 1, "r1")).reason is Reason.CLOSED
    now = await inv.server_time_ms()
    view = await inv.change_window(SHOW, "d1", closes_at=now + 60_000)
    assert view["state"] == "open" and view["closes_at"] == now + 60_000
    assert (await inv.reserve(SHOW, "d1", "a", 1, "r2")).ok
    with pytest.raises(ValidationError):
        await inv.change_window(SHOW, "d1", closes_at=now - 1)
    # A scheduled drop can be moved; once open its opening cannot.
    await inv.create_drop(SHOW, spec("d2", opens_at=now + 3_600_000))
    view = await inv.change_window(SHOW, "d2", closes_at=0, opens_at=now + 7_200_000)
    assert view["state"] == "scheduled" and view["opens_at"] == now + 7_200_000
    view = await inv.change_window(SHOW, "d2", closes_at=0, opens_at=0)  # open now
    assert view["state"] == "open"
    with pytest.raises(ConflictError):
        await inv.change_window(SHOW, "d2", closes_at=0, opens_at=now + 1)
    assert (await inv.reserve(SHOW, "d2", "a", 1, "r3")).ok


async def test_restock_reopens_a_sold_out_drop(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("d1", quantity=2, limit=5))
    assert (await inv.buy_now(SHOW, "d1", "a", 2, "b1", "p")).ok
    assert (await inv.reserve(SHOW, "d1", "b", 1, "r1")).reason is Reason.SOLD_OUT
    view = await inv.restock(SHOW, "d1", 3)
    assert view["state"] == "open" and view["quantity"] == 5 and view["remaining"] == 3
    assert (await inv.reserve(SHOW, "d1", "b", 3, "r2")).ok
    assert await counters(inv) == (0, 3, 2)
    await inv.close(SHOW, "d1")
    with pytest.raises(ConflictError):  # closed by the host: extend the window first
        await inv.restock(SHOW, "d1", 1)
    with pytest.raises(ConflictError):
        await inv.close(SHOW, "d1")


async def test_close_refuses_new_holds_but_keeps_taken_ones(inv: Inventory) -> None:
    await inv.create_drop(SHOW, spec("d1", quantity=5))
    hold = (await inv.reserve(SHOW, "d1", "a", 2, "r1")).hold
    assert hold is not None
    view = await inv.close(SHOW, "d1")
    assert (view["state"], view["reason"]) == ("closed", "host")
    out = await inv.reserve(SHOW, "d1", "b", 1, "r1")
    assert out.reason is Reason.CLOSED and out.detail["closed_reason"] == "host"
    assert (await inv.buy_now(SHOW, "d1", "b", 1, "r2", "p")).reason is Reason.CLOSED
    assert (await inv.confirm(SHOW, hold.id, "a", "pay")).ok
    assert await counters(inv) == (3, 0, 2)


async def test_timed_offer_announces_its_end(make_inv: MakeInventory) -> None:
    inv = await make_inv(ending_soon="1")
    await inv.create_show(SHOW, title="Show")
    view = await inv.create_drop(SHOW, spec("o1", kind=DropKind.OFFER, duration_ms=1300))
    assert view["state"] == "open" and view["closes_at"] == view["opens_at"] + 1300
    await wait_server_past(inv, view["closes_at"] - 1000)
    await inv.run_due()
    await wait_server_past(inv, view["closes_at"])
    await inv.run_due()
    out = await inv.reserve(SHOW, "o1", "a", 1, "r1")
    assert out.reason is Reason.CLOSED and out.detail["closed_reason"] == "time_up"
    events = [
        fields[b"type"].decode()
        for _, fields in await inv.redis.xrange(inv.keys.events(SHOW))
        if b"o1" in fields[b"data"]
    ]
    assert events == ["offer_started", "offer_ending_soon", "offer_ended"]
    assert (await audit(inv.redis, inv.keys)).ok


# -- bad input changes nothing -----------------------------------------------------------------


async def test_bad_input_gets_a_clear_error_and_changes_nothing(
    inv: Inventory, keyspace: Keyspace
) -> None:
    await inv.create_drop(SHOW, spec("d1", quantity=5))
    hold = (await inv.reserve(SHOW, "d1", "alice", 1, "r1")).hold
    assert hold is not None
    before = await dump(inv.redis, keyspace)
    long = "x" * 65
    refused = [
        inv.reserve(SHOW, "d1", "alice", 0, "q0"),
        inv.reserve(SHOW, "d1", "alice", -3, "q1"),
        inv.reserve(SHOW, "d1", "alice", 10**18, "q2"),
        inv.reserve(SHOW, "d1", "alice", 2.0, "q3"),  # type: ignore[arg-type]
        inv.reserve(SHOW, "d1", "alice", "1", "q4"),  # type: ignore[arg-type]
        inv.buy_now(SHOW, "d1", "alice", 0, "q5", "p"),
        inv.reserve(SHOW, "nope", "alice", 1, "q6"),
        inv.reserve(SHOW, long, "alice", 1, "q7"),
        inv.reserve(SHOW, "d1/../x", "alice", 1, "q8"),
        inv.reserve("other", "d1", "alice", 1, "q9"),
        inv.confirm(SHOW, "d1.999", "alice", "p"),
        inv.cancel(SHOW, "d1.999", "alice"),
        inv.confirm(SHOW, hold.id, "mallory", "p"),
        inv.cancel(SHOW, hold.id, "mallory"),
    ]
    for call in refused:
        out = await call
        assert not out.ok and out.reason in (
            Reason.INVALID_QUANTITY, Reason.UNKNOWN_DROP, Reason.UNKNOWN_HOLD,
        )  # fmt: skip
    raising: list[Callable[[], Awaitable[Any]]] = [
        lambda: inv.reserve(SHOW, "d1", long, 1, "r"),
        lambda: inv.reserve(SHOW, "d1", "", 1, "r"),
        lambda: inv.reserve(SHOW, "d1", 42, 1, "r"),  # type: ignore[arg-type]
        lambda: inv.reserve(SHOW, "d1", "alice", 1, "r" * 65),
        lambda: inv.reserve(SHOW, "d1", "alice", 1, "has space"),
        lambda: inv.reserve(SHOW, "d1", "alice", 1, None),  # type: ignore[arg-type]
        lambda: inv.reserve(SHOW, "d1", "alice", 1, "r", currency="euro"),
        lambda: inv.reserve(long, "d1", "alice", 1, "r"),
        lambda: inv.buy_now(SHOW, "d1", "alice", 1, "r", "p" * 129),
        lambda: inv.buy_now(SHOW, "d1", "alice", 1, "r", None),  # type: ignore[arg-type]
        lambda: inv.confirm(SHOW, "not-a-hold", "alice", "p"),
        lambda: inv.confirm(SHOW, hold.id, "alice", "p" * 129),
        lambda: inv.confirm(SHOW, 7, "alice", "p"),  # type: ignore[arg-type]
        lambda: inv.cancel(SHOW, "d1.x", "alice"),
        lambda: inv.restock(SHOW, "d1", 0),
        lambda: inv.restock(SHOW, "d1", -5),
        lambda: inv.restock(SHOW, "d1", 10**9),
        lambda: inv.restock(SHOW, "d1", "5"),  # type: ignore[arg-type]
        lambda: inv.change_window(SHOW, "d1", closes_at=-1),
        lambda: inv.create_drop(SHOW, spec("d2", quantity=0)),
        lambda: inv.create_drop(SHOW, spec("d2", quantity=10**7)),
        lambda: inv.create_drop(SHOW, spec("d2", limit=0)),
        lambda: inv.create_drop(SHOW, spec("d2", prices={})),
        lambda: inv.create_drop(SHOW, spec("d2", prices={"eur": 1})),
        lambda: inv.create_drop(SHOW, spec("d2", prices={"EUR": -1})),
        lambda: inv.create_drop(SHOW, spec("d2", currency="USD", prices={"EUR": 1})),
        lambda: inv.create_drop(SHOW, spec("d2", title="t" * 201)),
        lambda: inv.create_drop(SHOW, spec("d2", kind=DropKind.OFFER)),
        lambda: inv.create_drop(SHOW, spec("d 2")),
        lambda: inv.create_show("s" * 65, title="x"),
        lambda: inv.create_show("s2", title=""),
    ]
    for i, make_call in enumerate(raising):
        with pytest.raises(ValidationError):
            await make_call()
        assert await dump(inv.redis, keyspace) == before, f"bad call #{i} changed state"
    for make_call in (
        lambda: inv.restock(SHOW, "nope", 1),
        lambda: inv.close(SHOW, "nope"),
        lambda: inv.create_drop("noshow", spec("d9")),
    ):
        with pytest.raises(NotFoundError):
            await make_call()
    with pytest.raises(ConflictError):
        await inv.create_drop(SHOW, spec("d1"))
    with pytest.raises(ConflictError):
        await inv.create_show(SHOW, title="again")
    assert await dump(inv.redis, keyspace) == before


@pytest.mark.parametrize("quantity", ["", "abc", "0", "-1", "1.5", "1e12", "nan", "inf"])
async def test_reserve_script_refuses_bad_quantity_on_its_own(
    inv: Inventory, keyspace: Keyspace, quantity: str
) -> None:
    """Defence in depth: the Lua script validates too, before its first write."""
    await inv.create_drop(SHOW, spec("d1", quantity=5))
    before = await dump(inv.redis, keyspace)
    keys = [*inv.keys.drop(SHOW, "d1").as_list(), inv.keys.request(SHOW, "alice", "r1")]
    for mode in ("reserve", "buy"):
        args = [*inv._common(SHOW), "alice", quantity, "r1", 120_000, "", mode, "p", 3600]
        out = Outcome.parse(await inv.runner.call("drop_reserve", keys, args))
        assert out.reason is Reason.INVALID_QUANTITY
    assert await dump(inv.redis, keyspace) == before
