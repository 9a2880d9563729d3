"""The audit finds nothing on honest state and catches every kind of broken state: corrupted
keys, and -- the proof that the concurrency tests would fail if a script lost a check -- the
state left by deliberately broken scripts hammered by concurrent buyers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import DropSpec
from livecommerce.ops import cli_audit
from livecommerce.store.audit import audit, audit_drop
from livecommerce.store.audit_snapshot import AuditReport
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.scriptrunner import read_source

SHOW = "show1"


def spec(drop: str, quantity: int, limit: int = 3) -> DropSpec:
    return DropSpec(id=drop, sku=f"sku-{drop}", title=drop, quantity=quantity, limit=limit,
                    prices={"EUR": 500})  # fmt: skip


async def make_inventory(
    redis: aioredis.Redis, keyspace: Keyspace, overrides: dict[str, str] | None = None
) -> Inventory:
    inv = Inventory(redis, keyspace, config.load({}), script_overrides=overrides)
    await inv.load()
    return inv


async def healthy_show(inv: Inventory, show: str = SHOW) -> None:
    """Two drops with every kind of hold and order: held, confirmed, cancelled, bought."""
    await inv.create_show(show, title="Show")
    await inv.create_drop(show, spec("d1", 10))
    await inv.create_drop(show, spec("d2", 4, limit=4))
    await inv.restock(show, "d2", 2)
    holds = [await inv.reserve(show, "d1", f"v{i}", 1 + i % 2, f"r{i}") for i in range(5)]
    assert all(h.hold for h in holds)
    assert (await inv.confirm(show, holds[0].hold.id, "v0", "p0")).ok  # type: ignore[union-attr]
    assert (await inv.confirm(show, holds[1].hold.id, "v1", "p1")).ok  # type: ignore[union-attr]
    assert (await inv.cancel(show, holds[2].hold.id, "v2")).ok  # type: ignore[union-attr]
    assert (await inv.buy_now(show, "d2", "v0", 3, "b1", "p")).ok
    assert (await inv.buy_now(show, "d2", "v1", 3, "b2", "p")).ok  # sold out, closes


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    inventory = await make_inventory(redis, keyspace)
    await healthy_show(inventory)
    yield inventory


async def test_audit_is_ok_on_a_healthy_show(inv: Inventory) -> None:
    report = await audit(inv.redis, inv.keys)
    assert report.ok, report.summary()
    assert report.violations == []
    assert (report.shows, report.drops, report.orders) == (1, 2, 4)
    assert report.units_sold == 1 + 2 + 3 + 3
    assert (report.holds, report.units_held) == (2, 1 + 2)
    assert report.units_remaining == 10 - 3 - 3 + 0
    assert report.stream_entries == 4
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is True and as_json["orders"] == 4
    assert (await audit(inv.redis, inv.keys, SHOW)).to_dict() == report.to_dict()
    for drop in ("d1", "d2"):
        one = await audit_drop(inv.redis, inv.keys, SHOW, drop)
        assert one.ok and one.drops == 1, one.summary()
    assert (await audit(inv.redis, Keyspace("nothing-here"))).ok


async def test_audit_accepts_a_trimmed_outbox(inv: Inventory) -> None:
    """The relay trims delivered orders from the front (XTRIM MINID): that is no violation."""
    orders_key = inv.keys.orders(SHOW)
    entries = await inv.redis.xrange(orders_key)
    await inv.redis.xtrim(orders_key, minid=entries[2][0], approximate=False)
    report = await audit(inv.redis, inv.keys)
    assert report.ok, report.summary()
    assert report.orders == 4 and report.stream_entries == 2
    await inv.redis.xtrim(orders_key, maxlen=0, approximate=False)
    assert (await audit(inv.redis, inv.keys)).ok


Corruption = Callable[[aioredis.Redis, Keyspace], Awaitable[object]]


async def _first_entry(r: aioredis.Redis, ks: Keyspace) -> dict[bytes, bytes]:
    entries = await r.xrange(ks.orders(SHOW))
    fields: dict[bytes, bytes] = entries[0][1]
    return fields


async def _dup_entry(r: aioredis.Redis, ks: Keyspace) -> object:
    return await r.xadd(ks.orders(SHOW), await _first_entry(r, ks))  # type: ignore[arg-type]


async def _phantom_order(r: aioredis.Redis, ks: Keyspace) -> object:
    fields = await _first_entry(r, ks)
    fields[b"order_id"] = f"{SHOW}.d1.99".encode()
    return await r.xadd(ks.orders(SHOW), fields)  # type: ignore[arg-type]


async def _delete_middle_entry(r: aioredis.Redis, ks: Keyspace) -> object:
    entries = await r.xrange(ks.orders(SHOW))
    return await r.xdel(ks.orders(SHOW), entries[1][0])


async def _unindex_order(r: aioredis.Redis, ks: Keyspace) -> object:
    return await r.hdel(ks.drop(SHOW, "d1").orders_index, f"{SHOW}.d1.1")


async def _strand_hold(r: aioredis.Redis, ks: Keyspace) -> object:
    held = await r.zrange(ks.drop(SHOW, "d1").holds, 0, 0)
    return await r.zrem(ks.drop(SHOW, "d1").holds, held[0])


async def _drop_stream(r: aioredis.Redis, ks: Keyspace) -> object:
    return await r.delete(ks.orders(SHOW))


async def _oversell(r: aioredis.Redis, ks: Keyspace) -> object:
    # Sold two units more than the stock, with every counter "consistent" except remaining.
    k = ks.drop(SHOW, "d1")
    remaining = int(await r.hget(k.drop, "remaining") or 0)
    await r.hincrby(k.drop, "remaining", -(remaining + 2))
    return await r.hincrby(k.drop, "sold", remaining + 2)


CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "remaining+1": (
        lambda r, ks: r.hincrby(ks.drop(SHOW, "d1").drop, "remaining", 1),  # type: ignore[arg-type,return-value]
        "!= quantity",
    ),
    "oversell": (_oversell, "oversold"),
    "held counter": (
        lambda r, ks: r.hincrby(ks.drop(SHOW, "d1").drop, "held", 1),  # type: ignore[arg-type,return-value]
        "active holds add up to",
    ),
    "viewer over limit": (
        lambda r, ks: r.hincrby(ks.drop(SHOW, "d1").bought, "v3", 5),  # type: ignore[arg-type,return-value]
        "> limit 3",
    ),
    "duplicate stream entry": (_dup_entry, "appears 2 times"),
    "order without decrement": (_phantom_order, "sold without decrement"),
    "entry deleted from the middle": (_delete_middle_entry, "deleted from the middle"),
    "order missing from index": (_unindex_order, "not in drop d1's orders index"),
    "hold stranded": (_strand_hold, "stock stranded"),
    "outbox deleted": (_drop_stream, "orders stream: missing"),
    "unknown hold state": (
        lambda r, ks: r.hset(ks.drop(SHOW, "d1").holdrec, "9", '{"v":"x","q":1,"s":"lost"}'),  # type: ignore[arg-type,return-value]
        "unknown state 'lost'",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
async def test_audit_catches_corrupted_state(inv: Inventory, name: str) -> None:
    corrupt, expected = CORRUPTIONS[name]
    await corrupt(inv.redis, inv.keys)
    report = await audit(inv.redis, inv.keys)
    assert not report.ok
    assert any(expected in v for v in report.violations), report.summary()
    assert all(v.startswith(f"show {SHOW} ") for v in report.violations)


# -- deliberately broken scripts ---------------------------------------------------------------


def broken(name: str, old: str, new: str = "") -> dict[str, str]:
    """The full source of script ``name`` with ``old`` replaced (it must be there)."""
    source = read_source(name)
    assert source.count(old) == 1, f"{name}: {old!r} not found once; update the mutation"
    return {name: source.replace(old, new)}


NO_STOCK_CHECK = broken(
    "drop_reserve",
    "if d.remaining == 0 then return finish(refuse('sold_out', { remaining = 0 })) end\n"
    "if q > d.remaining then\n"
    "  return finish(refuse('insufficient_stock', { remaining = d.remaining }))\n"
    "end\n",
)
MUTATIONS: dict[str, tuple[dict[str, str], str]] = {
    "stock check removed": (NO_STOCK_CHECK, "oversold"),
    "limit check removed": (
        broken("drop_reserve", "if used + q > d.limit then", "if false then"),
        "> limit",
    ),
    "decrement removed": (
        broken("drop_reserve", "incr(d, 'remaining', -q)\n", "\n"),
        "!= quantity",
    ),
    "outbox append removed": (
        broken(
            "hold_confirm",
            "local stream_id = redis.call('XADD', K.orders, '*',",
            "local stream_id = '0-0' or redis.call('XADD', K.orders, '*',",
        ),
        "entries ever added",
    ),
    "release forgets the holds set": (
        broken(
            "hold_cancel",
            "  redis.call('ZREM', K.holds, n)\n  incr(d, 'remaining', rec.q)",
            "  incr(d, 'remaining', rec.q)",
        ),
        "in the holds set but is cancelled",
    ),
}


async def hammer(inv: Inventory, attempts: int = 300, viewers: int = 8) -> None:
    """Concurrent buyers, far more attempts than stock; most confirm, some cancel. Eight viewers
    with a limit of 3 could take 24 of the 10 units: both the limit and the stock must hold.
    (Two viewers could take 6: then it is the limit alone that holds.)"""
    await inv.create_show(SHOW, title="Show")
    await inv.create_drop(SHOW, spec("d1", 10, limit=3))

    async def buyer(i: int) -> None:
        viewer = f"v{i % viewers}"
        out = await inv.reserve(SHOW, "d1", viewer, 1 + i % 2, f"r{i}")
        if out.hold is not None and i % 5 == 4:
            await inv.cancel(SHOW, out.hold.id, viewer)
        elif out.hold is not None:
            await inv.confirm(SHOW, out.hold.id, viewer, f"pay{i}")

    await asyncio.gather(*(buyer(i) for i in range(attempts)))


@pytest.mark.parametrize("mutation", [None, *MUTATIONS])
async def test_audit_catches_a_broken_script(
    redis: aioredis.Redis, keyspace: Keyspace, mutation: str | None
) -> None:
    overrides, expected = MUTATIONS[mutation] if mutation else ({}, "")
    inv = await make_inventory(redis, keyspace, overrides)
    await hammer(inv, viewers=2 if mutation == "limit check removed" else 8)
    report = await audit(redis, keyspace)
    if mutation is None:  # the real scripts: the same hammering leaves no violation
        assert report.ok, report.summary()
        assert 0 < report.units_sold <= 10
        return
    assert not report.ok, f"the audit missed: {mutation}"
    assert any(expected in v for v in report.violations), report.summary()


# -- the command --------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="livecommerce")
    cli_audit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_audit_command(
    redis_url: str,
    keyspace: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def setup(corrupt: bool) -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            if corrupt:
                await client.hincrby(keyspace.drop(SHOW, "d1").drop, "sold", 1)
            else:
                await healthy_show(await make_inventory(client, keyspace))
        finally:
            await client.aclose()

    async def cleanup() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{keyspace.prefix}:*")]
            await client.delete(*keys)
        finally:
            await client.aclose()

    monkeypatch.setenv("LIVECOMMERCE_REDIS_URL", redis_url)
    monkeypatch.setenv("LIVECOMMERCE_KEY_PREFIX", keyspace.prefix)
    try:
        asyncio.run(setup(corrupt=False))
        assert run_cli(["audit", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is True and out["orders"] == 4 and out["violations"] == []
        assert run_cli(["audit", "--show", SHOW]) == 0
        assert capsys.readouterr().out.startswith("audit OK: 1 show(s), 2 drop(s), 4 order(s)")

        asyncio.run(setup(corrupt=True))
        assert run_cli(["audit"]) == 1
        text = capsys.readouterr().out
        assert "VIOLATION" in text and f"show {SHOW} drop d1" in text
    finally:
        asyncio.run(cleanup())


def test_report_merges_counts() -> None:
    a = AuditReport(shows=1, drops=2, orders=3, violations=["x"])
    a.merge(AuditReport(shows=1, drops=1, orders=1))
    assert (a.shows, a.drops, a.orders, a.ok) == (2, 3, 4, False)
