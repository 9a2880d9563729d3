"""The reference sink (in-process, over httpx's ASGI transport) and the end-to-end audit
(relay -> sink over real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.http import http_server
from prometheus_client import CollectorRegistry

from livecommerce.core.config import RelaySettings, Settings
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import sink as sink_mod
from livecommerce.fulfillment.audit import audit
from livecommerce.fulfillment.delivery import HttpDeliverer
from livecommerce.fulfillment.relay import Relay
from livecommerce.fulfillment.sink import WEBHOOK_PATH, FailMode, create_app, set_fail_mode
from livecommerce.fulfillment.webhooks import Signer, generate_secret, order_message
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

ENTRY = {
    "order_id": "s1.d1.1",
    "show": "s1",
    "drop": "d1",
    "sku": "k",
    "title": "Cap",
    "viewer": "v1",
    "quantity": "1",
    "unit_price": "500",
    "amount": "500",
    "currency": "EUR",
    "payment_reference": "p",
    "hold": "",
    "request_id": "r1",
    "confirmed_at": str(int(time.time() * 1000)),
}


@contextlib.asynccontextmanager
async def sink_client(
    redis: aioredis.Redis, ks: Keyspace, secrets: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(redis, ks, secrets)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        yield client


async def post(
    client: httpx.AsyncClient, secret: str, entry: dict[str, str], *, at: int | None = None
) -> httpx.Response:
    message = order_message(entry)
    headers = Signer([secret]).headers(message.id, at or int(time.time()), message.body)
    return await client.post(WEBHOOK_PATH, content=message.body, headers=headers)


async def test_accepts_signed_orders_once_and_counts_duplicates(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    secret = generate_secret()
    async with sink_client(redis, keyspace, [secret]) as client:
        first = await post(client, secret, ENTRY)
        again = await post(client, secret, ENTRY)
        other = await post(client, secret, {**ENTRY, "order_id": "s1.d1.2"})
    assert first.status_code == 200 and first.json() == {"ok": True, "duplicate": False}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert other.status_code == 200
    got = await sink_mod.received(redis, keyspace)
    assert set(got) == {"msg_s1.d1.1", "msg_s1.d1.2"}
    assert got["msg_s1.d1.1"].order["amount"] == 500
    assert await sink_mod.arrivals(redis, keyspace) == ["msg_s1.d1.1", "msg_s1.d1.2"]
    stats = await sink_mod.stats(redis, keyspace)
    assert stats["accepted"] == 2 and stats["duplicates"] == 1


async def test_rejects_bad_signatures_stale_timestamps_and_missing_headers(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    secret = generate_secret()
    async with sink_client(redis, keyspace, [secret]) as client:
        forged = await post(client, generate_secret(), ENTRY)
        stale = await post(client, secret, ENTRY, at=int(time.time()) - 301)
        future = await post(client, secret, ENTRY, at=int(time.time()) + 301)
        bare = await client.post(WEBHOOK_PATH, content=b"{}")
    assert forged.status_code == 401
    assert stale.status_code == 400 and "old" in stale.json()["error"]
    assert future.status_code == 400 and "new" in future.json()["error"]
    assert bare.status_code == 400
    assert await sink_mod.received_count(redis, keyspace) == 0
    assert (await sink_mod.stats(redis, keyspace))["rejected"] == 4


async def test_accepts_any_of_its_secrets_during_rotation(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    old, new = generate_secret(), generate_secret()
    async with sink_client(redis, keyspace, [old, new]) as client:
        assert (await post(client, old, ENTRY)).status_code == 200
        assert (await post(client, new, {**ENTRY, "order_id": "s1.d1.2"})).status_code == 200


async def test_injected_failures(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    secret = generate_secret()
    async with sink_client(redis, keyspace, [secret]) as client:
        await set_fail_mode(redis, keyspace, FailMode.ERROR, times=2, retry_after="1")
        r1, r2, r3 = [await post(client, secret, ENTRY) for _ in range(3)]
        assert [r1.status_code, r2.status_code, r3.status_code] == [500, 500, 200]
        assert r1.headers["retry-after"] == "1"

        await set_fail_mode(redis, keyspace, FailMode.GONE, match="d1.7")
        assert (await post(client, secret, {**ENTRY, "order_id": "s1.d1.7"})).status_code == 410
        assert (await post(client, secret, {**ENTRY, "order_id": "s1.d1.8"})).status_code == 200

        admin = await client.post("/admin/fail", json={"mode": "timeout", "delay_s": 0.01})
        assert admin.status_code == 200
        assert (await post(client, secret, {**ENTRY, "order_id": "s1.d1.9"})).status_code == 503
        assert (await client.post("/admin/fail", json={"mode": "none"})).status_code == 200
        assert (await post(client, secret, {**ENTRY, "order_id": "s1.d1.9"})).status_code == 200
        assert (await client.post("/admin/fail", json={"mode": "bogus"})).status_code == 400
        assert (await client.get("/readyz")).status_code == 200
        summary = (await client.get("/received")).json()
    assert summary["received"] == 3


async def _until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("fail_first", [False, True])
async def test_end_to_end_audit_with_the_inventory(
    redis: aioredis.Redis, keyspace: Keyspace, fail_first: bool
) -> None:
    """Orders bought through the Inventory == in the stream == received by the sink."""
    secret = generate_secret()
    settings = Settings()
    inventory = Inventory(redis, keyspace, settings)
    await inventory.load()
    for show in ("e2e1", "e2e2"):
        await inventory.create_show(show, title="Audit show")
        spec = DropSpec(
            id="cap", sku="CAP-1", title="Cap", quantity=500, limit=10, prices={"EUR": 1500}
        )
        await inventory.create_drop(show, spec)
    if fail_first:  # the backend fails a while first: retries, then everything arrives once
        await set_fail_mode(redis, keyspace, FailMode.ERROR, times=15)
    app = create_app(redis, keyspace, [secret])
    async with http_server(app) as url:
        deliverer = HttpDeliverer(url + WEBHOOK_PATH, Signer([secret]), timeout_s=5)
        confirmed = await _relay_bought_orders(redis, keyspace, inventory, deliverer)
    report = await audit(redis, keyspace)
    assert report.ok, report.as_dict()
    assert report.confirmed == report.received == confirmed
    assert report.in_stream <= confirmed  # acknowledged orders may have been trimmed already


async def _relay_bought_orders(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory, deliverer: HttpDeliverer
) -> int:
    relay_settings = RelaySettings(
        backoff_base_s=0.001,
        backoff_max_s=0.01,
        claim_idle_s=5,
        max_attempts=50,
        trim_interval_s=0.05,
    )
    relay = Relay(
        redis, keyspace, relay_settings, deliverer, registry=CollectorRegistry(), block_ms=50
    )
    relay.start()
    confirmed = 0
    try:
        for n in range(60):
            show = "e2e1" if n % 2 else "e2e2"
            outcome = await inventory.buy_now(show, "cap", f"v{n}", 1, f"req{n}", f"pay{n}")
            assert outcome.ok, outcome
            confirmed += 1
        await _until(lambda: _received(redis, keyspace, confirmed))
    finally:
        await relay.stop()
    return confirmed


async def _received(redis: aioredis.Redis, keyspace: Keyspace, n: int) -> bool:
    return await sink_mod.received_count(redis, keyspace) >= n
