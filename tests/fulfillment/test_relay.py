"""The relay against a real Valkey, with the in-memory deliverer (and real HTTP on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from helpers.gateway import free_port
from helpers.http import http_server, silent_server
from helpers.polling import eventually
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from livecommerce.core.config import RelaySettings, Secret, Settings
from livecommerce.core.errors import ConfigError, DeliveryError
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.acks import Acks
from livecommerce.fulfillment.delivery import HttpDeliverer, MemoryDeliverer
from livecommerce.fulfillment.policy import (
    GroupPosition,
    backoff_delay,
    keep_floor,
    parse_retry_after,
    trim_floor,
)
from livecommerce.fulfillment.relay import Relay, server_relay
from livecommerce.fulfillment.webhooks import Signer, generate_secret, order_message
from livecommerce.store.keys import Keyspace

GROUP = "fulfillment"
FAST = RelaySettings(
    group=GROUP,
    max_attempts=3,
    timeout_s=2.0,
    claim_idle_s=0.05,
    backoff_base_s=0.001,
    backoff_max_s=0.005,
    concurrency=8,
    max_deliveries=3,
    trim_interval_s=0,
)


# -- helpers -------------------------------------------------------------------------------------


async def add_show(redis: aioredis.Redis, ks: Keyspace, show: str) -> None:
    await redis.zadd(ks.shows, {show: 1})
    with contextlib.suppress(Exception):
        await redis.xgroup_create(ks.orders(show), GROUP, id="0", mkstream=True)


async def add_order(redis: aioredis.Redis, ks: Keyspace, show: str, n: int) -> str:
    order_id = f"{show}.d1.{n}"
    await redis.xadd(
        ks.orders(show),
        {
            "order_id": order_id,
            "show": show,
            "drop": "d1",
            "sku": "SKU",
            "title": "Cap",
            "viewer": f"v{n}",
            "quantity": "1",
            "unit_price": "1000",
            "amount": "1000",
            "currency": "EUR",
            "payment_reference": "pay",
            "hold": "",
            "request_id": f"r{n}",
            "confirmed_at": str(int(time.time() * 1000)),
        },
    )
    return order_id


async def pending(redis: aioredis.Redis, ks: Keyspace, show: str, group: str = GROUP) -> int:
    return int((await redis.xpending(ks.orders(show), group))["pending"])


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await task


def make_relay(
    redis: aioredis.Redis, ks: Keyspace, deliverer: MemoryDeliverer, **over: object
) -> Relay:
    keep = int(over.pop("keep_recent", 0))  # type: ignore[call-overload]
    settings = RelaySettings(**{**FAST.__dict__, **over})  # type: ignore[arg-type]
    return Relay(redis, ks, settings, deliverer, registry=CollectorRegistry(), block_ms=50,
                 keep_recent=keep)  # fmt: skip


def sample(relay: Relay, name: str, **labels: str) -> float:
    return relay.metrics.registry.get_sample_value(name, labels) or 0.0


# -- pure policy ---------------------------------------------------------------------------------
def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    low = [backoff_delay(n, base_s=1, max_s=10, rand=0.0) for n in range(1, 7)]
    high = [backoff_delay(n, base_s=1, max_s=10, rand=0.999) for n in range(1, 7)]
    assert low == [0.5, 1, 2, 4, 5, 5]
    assert all(lo <= hi < 2 * lo for lo, hi in zip(low, high, strict=True))
    assert backoff_delay(5, base_s=1, max_s=10, retry_after_s=42, rand=0.3) == 42
    assert backoff_delay(1, base_s=1, max_s=10, retry_after_s=10**9) == 3600


def test_retry_after_seconds_and_http_date() -> None:
    now = time.time()
    assert parse_retry_after("7", now) == 7
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    parsed = parse_retry_after(date, now)
    assert parsed is not None and 28 <= parsed <= 31


def test_trim_floor_is_the_minimum_over_groups() -> None:
    assert trim_floor([]) is None
    assert trim_floor([GroupPosition(0, "0-0", None)]) is None
    assert trim_floor([GroupPosition(0, "5-3", None)]) == "5-4"
    assert trim_floor([GroupPosition(2, "9-0", "4-1"), GroupPosition(0, "7-0", None)]) == "4-1"
    assert trim_floor([GroupPosition(0, "9-0", None), GroupPosition(0, "0-0", None)]) is None


# -- the relay on Valkey -------------------------------------------------------------------------
async def test_delivers_every_order_of_every_show_once_and_acknowledges(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    expected = set()
    for show in ("s1", "s2"):
        await add_show(redis, keyspace, show)
        for n in range(10):
            expected.add(await add_order(redis, keyspace, show, n))
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _true(len(sink.delivered) >= 20))
        await add_show(redis, keyspace, "s3")  # a show created while the relay runs
        expected.add(await add_order(redis, keyspace, "s3", 0))
        await eventually(lambda: _true(len(sink.delivered) >= 21))
        await eventually(
            lambda: _all_zero([pending(redis, keyspace, s) for s in ("s1", "s2", "s3")])
        )
    assert sorted(m.order_id for m in sink.delivered) == sorted(expected)
    assert {m.id for m in sink.delivered} == {f"msg_{o}" for o in expected}
    assert sample(relay, "livecommerce_relay_delivered_total") == 21
    # per show, first attempts go out in stream order
    s1 = [m.order_id for m in sink.delivered if m.show == "s1"]
    assert s1 == [f"s1.d1.{n}" for n in range(10)]


async def test_acknowledgements_of_one_loop_turn_go_out_together(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """Concurrent XACKs on several streams complete; a failed XACK reaches the waiters of its
    stream only (those entries stay pending: delivered again, never lost)."""
    ids: dict[str, list[str]] = {}
    for show in ("s1", "s2"):
        await add_show(redis, keyspace, show)
        for n in range(5):
            await add_order(redis, keyspace, show, n)
        rows = await redis.xreadgroup(GROUP, "c1", {keyspace.orders(show): ">"})
        ids[show] = [_text(entry_id) for entry_id, _ in rows[0][1]]
    acks = Acks(redis, GROUP)
    await asyncio.gather(
        *(acks.ack(keyspace.orders(show), i) for show in ("s1", "s2") for i in ids[show][:3])
    )
    assert await pending(redis, keyspace, "s1") == 2 and await pending(redis, keyspace, "s2") == 2

    await redis.set(keyspace.orders("broken"), "not a stream")
    results = await asyncio.gather(
        acks.ack(keyspace.orders("s1"), ids["s1"][3]),
        acks.ack(keyspace.orders("broken"), "1-0"),
        return_exceptions=True,
    )
    assert results[0] is None and isinstance(results[1], ResponseError)  # per stream
    assert await pending(redis, keyspace, "s1") == 1


async def test_failed_attempts_are_retried_until_delivered(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    order = await add_order(redis, keyspace, "s1", 1)
    sink.failures[order] = [
        DeliveryError("HTTP 500", status=500),
        DeliveryError("timeout after 2s"),
    ]
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _true(len(sink.delivered) == 1))
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
    assert sink.attempts[order] == 3
    assert sample(relay, "livecommerce_relay_attempts_total") == 3
    assert sample(relay, "livecommerce_relay_failures_total", reason="http_5xx") == 1
    assert sample(relay, "livecommerce_relay_failures_total", reason="timeout") == 1
    assert await deadletters.count(redis, keyspace) == 0


async def test_orders_waiting_out_an_outage_go_at_the_first_delivery_that_succeeds(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """The backend was unreachable: its orders wait in back-off (here 60-120 s). The first
    delivery that succeeds afterwards sends them at once; an order refused for itself (HTTP 500)
    keeps its back-off."""
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    down = [await add_order(redis, keyspace, "s1", n) for n in range(5)]
    for order in down:
        sink.failures[order] = [DeliveryError("network: connection refused")]
    refused = await add_order(redis, keyspace, "s1", 9)
    sink.failures[refused] = [DeliveryError("HTTP 500", status=500)]
    relay = make_relay(redis, keyspace, sink, backoff_base_s=120.0, backoff_max_s=120.0)
    async with running(relay):
        first_tries = [*down, refused]
        await eventually(lambda: _true(all(sink.attempts.get(o) == 1 for o in first_tries)))
        fresh = await add_order(redis, keyspace, "s1", 20)  # the backend is back: this one goes
        await eventually(lambda: _true({m.order_id for m in sink.delivered} >= {fresh, *down}))
        assert all(sink.attempts[o] == 2 for o in down)
        assert sink.attempts[refused] == 1 and refused not in {m.order_id for m in sink.delivered}
    assert await deadletters.count(redis, keyspace) == 0


async def test_after_max_attempts_an_order_is_dead_lettered_then_replayed(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    bad = await add_order(redis, keyspace, "s1", 1)
    good = await add_order(redis, keyspace, "s1", 2)
    sink.always_fail[bad] = DeliveryError("HTTP 500: boom", status=500)
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _eq(deadletters.count(redis, keyspace), 1))
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
        [letter] = await deadletters.list_letters(redis, keyspace)
        assert letter.order_id == bad
        assert letter.attempts == 3
        assert "HTTP 500: boom" in letter.error
        assert letter.stream == keyspace.orders("s1")
        assert [m.order_id for m in sink.delivered] == [good]

        del sink.always_fail[bad]
        replayed = await deadletters.replay(redis, keyspace, [letter.id])
        assert [r.order_id for r in replayed] == [bad]
        await eventually(lambda: _true(len(sink.delivered) == 2))
    assert sink.delivered[-1].id == f"msg_{bad}"
    assert await deadletters.count(redis, keyspace) == 0
    assert sample(relay, "livecommerce_relay_dead_letters_total") == 1


async def test_gone_disables_the_endpoint_and_keeps_the_order_pending(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    order = await add_order(redis, keyspace, "s1", 1)
    sink.always_fail[order] = DeliveryError("HTTP 410: gone", status=410)
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _true(relay.disabled is not None))
        await add_order(redis, keyspace, "s1", 2)  # not sent to a disabled endpoint
    assert relay.disabled is not None and relay.disabled.status == 410
    assert sample(relay, "livecommerce_relay_endpoint_disabled") == 1
    assert sample(relay, "livecommerce_relay_failures_total", reason="gone") == 1
    assert sink.delivered == []
    assert sink.attempts == {order: 1}
    # nothing was acknowledged: order 1 is pending (order 2 may have been read, not sent)
    first = (await redis.xrange(keyspace.orders("s1"), count=1))[0][0]
    rows = await redis.xpending_range(keyspace.orders("s1"), GROUP, "-", "+", 10)
    assert first in [r["message_id"] for r in rows]
    assert await deadletters.count(redis, keyspace) == 0
    # a relay started later (the endpoint fixed) delivers both
    fixed = MemoryDeliverer()
    async with running(make_relay(redis, keyspace, fixed)):
        await eventually(lambda: _true(len(fixed.delivered) == 2))


async def test_entries_left_by_a_dead_consumer_are_claimed_with_the_same_id(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    orders = [await add_order(redis, keyspace, "s1", n) for n in range(3)]
    # a relay that read the entries and died before acknowledging them
    await redis.xreadgroup(GROUP, "dead-relay", {keyspace.orders("s1"): ">"}, count=10)
    assert await pending(redis, keyspace, "s1") == 3
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _true(len(sink.delivered) == 3))
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
    assert sorted(m.id for m in sink.delivered) == sorted(f"msg_{o}" for o in orders)
    assert sample(relay, "livecommerce_relay_claimed_total") == 3


async def test_poison_entries_go_to_dead_letters_by_delivery_count(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    order = await add_order(redis, keyspace, "s1", 1)
    stream = keyspace.orders("s1")
    [[_, [(entry_id, _fields)]]] = await redis.xreadgroup(GROUP, "crasher-1", {stream: ">"})
    for n in (2, 3):  # two more relays took it over and crashed on it
        await redis.xclaim(stream, GROUP, f"crasher-{n}", 0, [entry_id])
    relay = make_relay(redis, keyspace, sink)  # max_deliveries=3; this would be the 4th
    async with running(relay):
        await eventually(lambda: _eq(deadletters.count(redis, keyspace), 1))
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
    [letter] = await deadletters.list_letters(redis, keyspace)
    assert letter.order_id == order
    assert "poison" in letter.error
    assert sink.attempts == {}


async def test_malformed_entries_are_dead_lettered(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    await redis.xadd(keyspace.orders("s1"), {"order_id": "s1.d1.9", "quantity": "lots"})
    async with running(make_relay(redis, keyspace, sink)):
        await eventually(lambda: _eq(deadletters.count(redis, keyspace), 1))
    [letter] = await deadletters.list_letters(redis, keyspace)
    assert "malformed" in letter.error and letter.attempts == 0


async def test_trim_only_below_what_every_group_acknowledged(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    stream = keyspace.orders("s1")
    await redis.xgroup_create(stream, "backend", id="0")  # a backend that pulls
    for n in range(10):
        await add_order(redis, keyspace, "s1", n)
    relay = make_relay(redis, keyspace, sink)
    async with running(relay):
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
        await eventually(lambda: _true(len(sink.delivered) == 10))
    assert await relay.trim() == 0  # the backend has read nothing yet
    rows = await redis.xreadgroup("backend", "b1", {stream: ">"}, count=5)
    ids = [entry_id for entry_id, _ in rows[0][1]]
    await redis.xack(stream, "backend", *ids[:3])
    assert await relay.trim() == 3  # entries 4 and 5 are still pending for the backend
    assert await redis.xlen(stream) == 7
    await redis.xack(stream, "backend", *ids[3:])
    rest = await redis.xreadgroup("backend", "b1", {stream: ">"}, count=10)
    await redis.xack(stream, "backend", *[entry_id for entry_id, _ in rest[0][1]])
    assert await relay.trim() == 7
    assert await redis.xlen(stream) == 0
    await relay.update_gauges()
    assert sample(relay, "livecommerce_relay_pending") == 0
    assert sample(relay, "livecommerce_relay_lag") == 0


async def test_trim_keeps_the_newest_orders_for_the_dashboard_feed(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    sink = MemoryDeliverer()
    await add_show(redis, keyspace, "s1")
    stream = keyspace.orders("s1")
    for n in range(8):
        await add_order(redis, keyspace, "s1", n)
    relay = make_relay(redis, keyspace, sink, keep_recent=5)
    async with running(relay):
        await eventually(lambda: _eq(pending(redis, keyspace, "s1"), 0))
        await eventually(lambda: _true(len(sink.delivered) == 8))
    newest = [entry_id for entry_id, _ in await redis.xrevrange(stream, count=5)]
    assert await relay.trim() == 3
    assert [entry_id for entry_id, _ in await redis.xrevrange(stream)] == newest
    assert await relay.trim() == 0


def test_keep_floor_never_trims_the_newest() -> None:
    assert keep_floor("9-0", ["8-0", "7-0"], 3) is None
    assert keep_floor("9-0", ["8-0", "7-0", "6-0"], 3) == "6-0"
    assert keep_floor("5-0", ["8-0", "7-0", "6-0"], 3) == "5-0"


# -- HTTP transport (a real server on loopback) --------------------------------------------------
ORDER_ENTRY = {
    "order_id": "s.d.1",
    "show": "s",
    "drop": "d",
    "sku": "k",
    "title": "t",
    "viewer": "v",
    "quantity": "1",
    "unit_price": "5",
    "amount": "5",
    "currency": "EUR",
    "payment_reference": "p",
    "hold": "",
    "request_id": "r",
    "confirmed_at": "1",
}


async def test_http_deliverer_signs_and_maps_statuses() -> None:
    secret = generate_secret()
    seen: list[dict[str, object]] = []
    peers: set[object] = set()
    replies = iter(
        [
            Response(status_code=204),
            Response("busy", status_code=503, headers={"retry-after": "3"}),
            Response(status_code=307, headers={"location": "/elsewhere"}),
            Response(status_code=410),
        ]
    )

    async def hook(request: Request) -> Response:
        body = await request.body()
        seen.append(Webhook(secret).verify(body, dict(request.headers)))
        assert request.headers["user-agent"] == "livecommerce-relay"
        peers.add(request.client)
        return next(replies)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with http_server(app) as url:
        deliverer = HttpDeliverer(url + "/hook", Signer([secret]), timeout_s=5)
        message = order_message(ORDER_ENTRY)
        await deliverer.deliver(message)
        with pytest.raises(DeliveryError) as busy:
            await deliverer.deliver(message)
        assert busy.value.status == 503 and busy.value.retry_after == 3 and not busy.value.gone
        assert "busy" in str(busy.value)
        with pytest.raises(DeliveryError) as moved:  # redirects are not followed: not a 2xx
            await deliverer.deliver(message)
        assert moved.value.status == 307 and not moved.value.gone
        with pytest.raises(DeliveryError) as gone:
            await deliverer.deliver(message)
        assert gone.value.gone
        await deliverer.aclose()
    assert len(seen) == 4 and all(s == seen[0] for s in seen)
    assert len(peers) == 1  # one keep-alive connection for the sequential requests


async def test_http_deliverer_translates_timeouts_and_network_errors() -> None:
    message = order_message(ORDER_ENTRY)
    signer = Signer([generate_secret()])
    async with silent_server() as url:
        slow = HttpDeliverer(url + "/slow", signer, timeout_s=0.2)
        with pytest.raises(DeliveryError, match="timeout") as exc:
            await slow.deliver(message)
        assert exc.value.status is None
        await slow.aclose()
    down = HttpDeliverer(f"http://127.0.0.1:{free_port()}/down", signer, timeout_s=5)
    with pytest.raises(DeliveryError, match="network") as refused:
        await down.deliver(message)
    assert refused.value.status is None
    await down.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _true(value: bool) -> bool:
    return value


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _all_zero(values: list[Awaitable[int]]) -> bool:
    return all(v == 0 for v in [await x for x in values])


async def test_server_relay_runs_in_the_background_only_when_configured(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    base = Settings()
    assert server_relay(redis, keyspace, base) is None
    with pytest.raises(ConfigError):
        server_relay(redis, keyspace, replace(base, relay=replace(base.relay, in_server=True)))
    settings = replace(
        base,
        relay=replace(
            FAST,
            in_server=True,
            max_attempts=1000,
            webhook_url="http://127.0.0.1:9/none",
            webhook_secret=Secret(generate_secret()),
        ),
    )
    relay = server_relay(redis, keyspace, settings, registry=CollectorRegistry())
    assert relay is not None
    await add_show(redis, keyspace, "s1")
    await add_order(redis, keyspace, "s1", 1)
    relay.start()
    try:  # nothing listens on port 9: the relay keeps retrying and the order stays pending
        await eventually(lambda: _true(sample(relay, "livecommerce_relay_attempts_total") >= 2))
        assert await relay.ready()
    finally:
        await relay.stop()
    assert await pending(redis, keyspace, "s1") == 1
