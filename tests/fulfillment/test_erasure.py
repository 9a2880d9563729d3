"""Erasure on real Valkey: the viewer is replaced by a pseudonym in every store, the accounts
and the audit still add up, ``order.erased`` reaches the backend through the relay, a second
run changes nothing, and erasing during a running burst keeps the audit passing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from helpers.browser import Running, api_app, serve
from helpers.http import http_server
from helpers.polling import eventually
from helpers.privacy import SHOWS, display_name, seed
from prometheus_client import CollectorRegistry

from livecommerce.core.config import RelaySettings, Settings
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import erasure, privacy
from livecommerce.fulfillment import sink as sink_mod
from livecommerce.fulfillment.audit import audit as fulfillment_audit
from livecommerce.fulfillment.delivery import HttpDeliverer, MemoryDeliverer
from livecommerce.fulfillment.relay import Relay
from livecommerce.fulfillment.sink import WEBHOOK_PATH, create_app
from livecommerce.fulfillment.webhooks import ERASED_TYPE, Signer, generate_secret
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.operatorkeys import OperatorKeys

RELAY = RelaySettings(backoff_base_s=0.001, backoff_max_s=0.01, claim_idle_s=5, max_attempts=50,
                      trim_interval_s=0.05)  # fmt: skip


@pytest.fixture
async def inventory(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inv = Inventory(redis, keyspace, Settings())
    await inv.load()
    return inv


@contextlib.asynccontextmanager
async def relay_to_sink(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[None]:
    """The relay delivering every show's outbox to the reference sink over real HTTP."""
    secret = generate_secret()
    async with http_server(create_app(redis, keyspace, [secret])) as url:
        deliverer = HttpDeliverer(url + WEBHOOK_PATH, Signer([secret]), timeout_s=5)
        relay = Relay(redis, keyspace, RELAY, deliverer, registry=CollectorRegistry(), block_ms=50)
        relay.start()
        try:
            yield
        finally:
            await relay.stop()


async def drained(redis: aioredis.Redis, keyspace: Keyspace) -> bool:
    """Every entry of every orders stream handed over and acknowledged by the relay's group."""
    for show in SHOWS:
        for g in await redis.xinfo_groups(keyspace.orders(show)):
            if int(g["pending"]) or int(g.get("lag") or 0):
                return False
    return True


def without_time(doc: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in doc.items() if k != "generated_at"}


async def test_erasure_replaces_the_viewer_everywhere_and_keeps_the_accounts(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    await seed(redis, keyspace, inventory, "alice")
    await seed(redis, keyspace, inventory, "bob")
    async with relay_to_sink(redis, keyspace):  # everything delivered before the erasure
        await eventually(lambda: drained(redis, keyspace), within=30.0)
    sales = [await inventory.sales(show) for show in SHOWS]
    bob = await privacy.export(redis, keyspace, "bob")

    report = await erasure.erase(redis, keyspace, Settings(), "alice")
    pseudonym = report["pseudonym"]
    assert pseudonym.startswith("erased-") and report["erased"]["dead_letters"] == 1
    for show in SHOWS:
        counts = report["erased"]["shows"][show]
        assert counts["orders"] == 2 and counts["events"] == 2 and counts["replayed"] == 0
        assert counts["holds"] == 2 and counts["requests"] == 3
    # Until the backend hears of it, only its own copy still names the viewer...
    assert (await privacy.export(redis, keyspace, "alice"))["found"] == ["sink_received"]
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()
    async with relay_to_sink(redis, keyspace):  # ...then order.erased goes through the relay
        await eventually(lambda: drained(redis, keyspace), within=30.0)
    gone = await privacy.export(redis, keyspace, "alice")
    assert gone["found"] == [] and gone["shows"] == {}, gone
    dump = b"".join((await redis.hgetall(keyspace.sink_received)).values())
    assert b"alice" not in dump and b"card-alice" not in dump
    assert (await sink_mod.stats(redis, keyspace))["erasures"] == 4

    # The accounts are untouched: counters, units, amounts; the audit still passes.
    assert [await inventory.sales(show) for show in SHOWS] == sales
    assert without_time(await privacy.export(redis, keyspace, "bob")) == without_time(bob)
    kept = await privacy.export(redis, keyspace, pseudonym)
    for show in SHOWS:
        part = kept["shows"][show]
        assert part["drops"]["b"]["bought"] == 2 and part["drops"]["a"]["bought"] == 1
        assert part["drops"]["a"]["held"] == 1  # the live hold stays (and expires as usual)
        # The originals left the stream (the ledger keeps their copies); erasure events may
        # still wait for the relay's next trim.
        assert all(o.get("type") == ERASED_TYPE for o in part.get("orders", []))
    ledger = await redis.hgetall(keyspace.erased(SHOWS[0]))
    copies = [orjson.loads(v) for v in ledger.values()]
    assert sorted(int(c["amount"]) for c in copies) == [700, 1400]
    assert {c["viewer"] for c in copies} == {pseudonym}
    assert {c["payment_reference"] for c in copies} == {erasure.ERASED_REFERENCE}
    assert [d["viewer"] for d in kept["dead_letters"]] == [pseudonym]
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()
    end_to_end = await fulfillment_audit(redis, keyspace)
    assert end_to_end.confirmed == end_to_end.received == 8  # the seeded dead letters aside
    assert not (end_to_end.missing or end_to_end.unexpected or end_to_end.lost_from_stream)

    # Idempotent: nothing left to erase, nothing changes.
    before = {k: await redis.dump(k) for k in sorted(await redis.keys(keyspace.prefix + ":*"))}
    again = await erasure.erase(redis, keyspace, Settings(), "alice")
    assert again["pseudonym"] == "" and again["erased"] == {"shows": {}, "dead_letters": 0}
    after = {k: await redis.dump(k) for k in sorted(await redis.keys(keyspace.prefix + ":*"))}
    assert after == before


async def chat_dump(redis: aioredis.Redis, keyspace: Keyspace, show: str) -> bytes:
    """Every byte of a show's chat keys (names and contents), read by type."""
    out = []
    async for key in redis.scan_iter(match=keyspace.chat(show).history + "*", count=500):
        out.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "stream":
            for _id, fields in await redis.xrange(key):
                out += [b for kv in fields.items() for b in kv]
        elif kind == "hash":
            out += [b for kv in (await redis.hgetall(key)).items() for b in kv]
        elif kind == "set":
            out += list(await redis.smembers(key))
        elif kind == "zset":
            out += list(await redis.zrange(key, 0, -1))
        else:
            out.append(await redis.get(key) or b"")
    return b"\n".join(out)


async def test_erasure_removes_the_viewer_from_chat_and_tells_live_viewers(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    await seed(redis, keyspace, inventory, "alice")
    await seed(redis, keyspace, inventory, "bob")
    name = display_name("alice").encode()
    for show in SHOWS:
        dump = await chat_dump(redis, keyspace, show)
        assert b"alice" in dump and name in dump  # seeded: the scan sees the viewer
    own = (await privacy.export(redis, keyspace, "alice"))["shows"]
    bob = (await privacy.export(redis, keyspace, "bob"))["shows"]
    pubsub = redis.pubsub()
    await pubsub.subscribe(*(keyspace.channel(show) for show in SHOWS))
    for _ in SHOWS:
        assert (await pubsub.get_message(timeout=10))["type"] == "subscribe"  # type: ignore[index]

    report = await erasure.erase(redis, keyspace, Settings(), "alice")
    pseudonym = report["pseudonym"]
    for show in SHOWS:
        counts = report["erased"]["shows"][show]
        # three messages (the pin leaves with its message); mute, moderator seat, slow-mode
        # marker, three request ids
        assert counts["chat_messages"] == 3 and counts["chat_records"] == 6
        dump = await chat_dump(redis, keyspace, show)
        assert b"alice" not in dump and name not in dump, dump
        assert await redis.hget(keyspace.chat(show).mutes, pseudonym) == b"-1"
        assert bob[show]["chat"] == (await privacy.export(redis, keyspace, "bob"))["shows"][
            show]["chat"]  # fmt: skip
    # Live viewers were told: one chat_deleted per message (and the pin cleared), pushed in the
    # erasure's atomic step.
    pushed: list[tuple[str, dict[str, object]]] = []
    while len(pushed) < 7:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
        assert msg is not None, pushed
        event = orjson.loads(msg["data"])
        pushed.append((event["type"], event["data"]))
    await pubsub.aclose()
    deleted = {d["id"] for kind, d in pushed if kind == "chat_deleted"}
    assert deleted == {m["id"] for show in SHOWS for m in own[show]["chat"]["messages"]}
    assert ("chat_pinned", {"message": None}) in pushed
    assert "chat" not in (await privacy.export(redis, keyspace, "alice"))["shows"].get(SHOWS[0], {})
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()
    # Idempotent: the second run changes nothing in chat either.
    before = {show: await chat_dump(redis, keyspace, show) for show in SHOWS}
    again = await erasure.erase(redis, keyspace, Settings(), "alice")
    assert again["erased"]["shows"] == {}
    assert {show: await chat_dump(redis, keyspace, show) for show in SHOWS} == before


async def test_undelivered_orders_still_reach_the_backend_pseudonymised(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    """Erased before the relay handed them over: appended again as replays, then delivered."""
    await seed(redis, keyspace, inventory, "alice")
    report = await erasure.erase(redis, keyspace, Settings(), "alice")
    assert all(c["replayed"] == 2 for c in report["erased"]["shows"].values())
    stream = await redis.xrange(keyspace.orders(SHOWS[0]))
    assert [f[b"type"].decode() for _i, f in stream if b"type" in f] == [ERASED_TYPE] * 2
    assert not [f for _i, f in stream if b"alice" in b"".join(f.values())]
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()
    async with relay_to_sink(redis, keyspace):
        await eventually(lambda: drained(redis, keyspace), within=30.0)
    received = await sink_mod.received(redis, keyspace)
    assert len(received) == 4  # every order, once
    assert {r.order["viewer"] for r in received.values()} == {report["pseudonym"]}
    assert (await privacy.export(redis, keyspace, "alice"))["found"] == []
    end_to_end = await fulfillment_audit(redis, keyspace)
    assert end_to_end.confirmed == end_to_end.received == 4
    assert not (end_to_end.missing or end_to_end.unexpected or end_to_end.lost_from_stream)
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()


async def test_erasure_during_a_running_burst_keeps_the_audit_passing(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    """Buyers (the erased viewer among them) hammer three drops while the relay delivers and
    the viewer is erased again and again; the audit passes throughout and at the end."""
    show = "burst"
    await inventory.create_show(show, title="Burst")
    for drop in ("x", "y", "z"):
        await inventory.create_drop(show, DropSpec(id=drop, sku=drop, title=drop, quantity=400,
                                                   limit=6, prices={"EUR": 300}))  # fmt: skip
    viewers = [f"v{i}" for i in range(20)] + ["target"] * 5
    stop = asyncio.Event()
    rng = random.Random(12)

    async def buyer(n: int) -> None:
        viewer = viewers[n % len(viewers)]
        i = 0
        while not stop.is_set():
            i += 1
            drop = rng.choice("xyz")
            rid = f"{n}-{i}"
            if rng.random() < 0.5:
                await inventory.buy_now(show, drop, viewer, 1, rid, f"card-{viewer}")
                continue
            held = await inventory.reserve(show, drop, viewer, 1, rid)
            if held.ok and held.hold is not None:
                if rng.random() < 0.7:
                    await inventory.confirm(show, held.hold.id, viewer, f"card-{viewer}")
                else:
                    await inventory.cancel(show, held.hold.id, viewer)

    deliverer = MemoryDeliverer()
    relay = Relay(redis, keyspace, RELAY, deliverer, registry=CollectorRegistry(), block_ms=20)
    relay.start()
    tasks = [asyncio.create_task(buyer(n)) for n in range(len(viewers))]
    erasures = found = 0
    try:
        for _ in range(8):
            report = await erasure.erase(redis, keyspace, Settings(), "target")
            erasures += 1
            found += sum(c["orders"] for c in report["erased"]["shows"].values())
            mid = await audit(redis, keyspace)
            assert mid.ok, mid.summary()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    await erasure.erase(redis, keyspace, Settings(), "target")

    async def delivered() -> bool:
        groups = await redis.xinfo_groups(keyspace.orders(show))
        return all(not int(g["pending"]) and not int(g.get("lag") or 0) for g in groups)

    await eventually(delivered, within=30.0)
    await relay.stop()
    final = await audit(redis, keyspace)
    assert final.ok, final.summary()
    assert final.orders > 50 and erasures == 8 and found > 0
    left = await privacy.export(redis, keyspace, "target")
    assert left["found"] == [], left
    erased = [m for m in deliverer.delivered if m.id.endswith(".erased")]
    confirmed = {m.order_id for m in deliverer.delivered if not m.id.endswith(".erased")}
    assert erased and {m.order_id for m in erased} <= confirmed
    assert not any(b'"viewer":"target"' in m.body for m in erased)
    sold = sum(counts["units"] for counts in (await inventory.sales(show))[1].values())
    assert sold == final.units_sold


async def test_the_audit_still_sees_an_erasure_that_lost_an_order(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    """The ledger is what keeps an erased order visible: without it the audit fails."""
    await seed(redis, keyspace, inventory, "alice")
    await erasure.erase(redis, keyspace, Settings(), "alice")
    ledger = keyspace.erased(SHOWS[0])
    entry_id = (await redis.hkeys(ledger))[0]
    await redis.hdel(ledger, entry_id)
    broken = await audit(redis, keyspace)
    assert not broken.ok
    assert any("deleted from the middle" in v or "no entry" in v for v in broken.violations)


@pytest.fixture
async def server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    async with serve(api_app(Settings(), redis_url, keyspace)) as running:
        yield running


async def test_delete_route_and_cli_erase(
    server: Running, redis_url: str, redis: aioredis.Redis, keyspace: Keyspace,
    inventory: Inventory,
) -> None:  # fmt: skip
    await seed(redis, keyspace, inventory, "alice")
    await seed(redis, keyspace, inventory, "carol")
    operator, _ = await OperatorKeys(redis, keyspace).create("dpo")
    headers = {"Authorization": f"Bearer {operator}"}
    async with httpx.AsyncClient(base_url=server.url + "/api", headers=headers) as client:
        r = await client.delete("/privacy/viewers/alice")
        assert r.status_code == 200, r.text
        assert set(r.json()["erased"]["shows"]) == set(SHOWS)
        r = await client.delete("/privacy/viewers/alice")
        assert r.status_code == 200 and r.json()["erased"]["shows"] == {}
        r = await client.get("/privacy/viewers/alice")
        assert r.json()["found"] == ["sink_received"]  # the backend's copy: until order.erased
    env = {**os.environ, "LIVECOMMERCE_REDIS_URL": redis_url,
           "LIVECOMMERCE_KEY_PREFIX": keyspace.prefix}  # fmt: skip
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "livecommerce", "privacy", "erase", "carol", "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert orjson.loads(out.stdout)["erased"]["dead_letters"] == 1
    assert (await privacy.export(redis, keyspace, "carol"))["found"] == ["sink_received"]
    report_audit = await audit(redis, keyspace)
    assert report_audit.ok, report_audit.summary()
