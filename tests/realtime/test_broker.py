"""The Redis broker on a real Valkey: what one read brings is handed over in one call, in order."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from livecommerce.realtime.broker import RedisBroker
from livecommerce.store.keys import Keyspace

PUBLISH_N = "for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', KEYS[1], 'm' .. i) end"


async def test_messages_published_in_one_script_arrive_in_one_call(
    redis_url: str, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    calls: list[list[tuple[str, bytes]]] = []
    got = asyncio.Event()

    def on_messages(messages: list[tuple[str, bytes]]) -> None:
        calls.append(messages)
        if sum(len(c) for c in calls) >= 3:
            got.set()

    broker = RedisBroker(redis_url, keyspace)
    await broker.start(on_messages, lambda: None)
    try:
        await broker.subscribe("s1")
        await redis.eval(PUBLISH_N, 1, keyspace.channel("s1"), 3)  # type: ignore[misc]
        await asyncio.wait_for(got.wait(), 10)
        assert calls == [[("s1", b"m1"), ("s1", b"m2"), ("s1", b"m3")]]
    finally:
        await broker.stop()


async def test_a_flood_arrives_whole_and_in_order_in_few_calls(
    redis_url: str, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """5,000 messages (more than one socket read's worth): every one, in order, each given once;
    in far fewer calls than messages (the parser's buffered messages are taken along)."""
    n = 5000
    calls: list[list[tuple[str, bytes]]] = []
    got = asyncio.Event()

    def on_messages(messages: list[tuple[str, bytes]]) -> None:
        calls.append(messages)
        if sum(len(c) for c in calls) >= n:
            got.set()

    broker = RedisBroker(redis_url, keyspace)
    await broker.start(on_messages, lambda: None)
    try:
        await broker.subscribe("s1")
        await broker.subscribe("s2")
        await redis.eval(PUBLISH_N, 1, keyspace.channel("s2"), n)  # type: ignore[misc]
        await asyncio.wait_for(got.wait(), 20)
        received = [m for c in calls for m in c]
        assert received == [("s2", f"m{i}".encode()) for i in range(1, n + 1)]
        assert len(calls) < n // 10
    finally:
        await broker.stop()
