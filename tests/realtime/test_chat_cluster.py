"""Chat across two real gateway processes (``python -m livecommerce serve``) on one Valkey."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, settings
from helpers.procs import Proc

from livecommerce.realtime.client import Client
from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

pytestmark = pytest.mark.slow


@pytest.fixture
def two(redis_url: str, keyspace: Keyspace, tmp_path: Path) -> Iterator[list[Proc]]:
    started = [Proc(redis_url, keyspace.prefix, tmp_path / f"c{i}.log") for i in range(2)]
    yield started
    for p in started:
        p.stop()


@pytest.fixture
async def show(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[str]:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one", host="h1")
    await inventory.start_show("s1")
    secret, _ = await HostKeys(redis, keyspace).create("h1")
    yield secret


async def next_of(client: Client, kind: str, **data: Any) -> dict[str, Any]:
    while True:
        msg = await client.next_message(types=[kind])
        if all(msg["data"].get(k) == v for k, v in data.items()):
            return msg


async def test_chat_moderation_and_reactions_across_two_processes(
    two: list[Proc], show: str
) -> None:
    a, b = two
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    auth = {"Authorization": f"Bearer {show}"}
    async with (
        Client(a.url, "s1", token=mint(SECRET, "ana", 600, name="Ana")) as ana,
        Client(b.url, "s1", token=mint(SECRET, "ben", 600), encoding=Encoding.MSGPACK) as ben,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.port}/api", headers=auth) as api_b,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{a.port}/api", headers=auth) as api_a,
    ):
        hello = await ana.chat("hello from A")
        got = await next_of(ben, "chat", id=hello["message"])  # posted on A, seen on B
        assert got["data"]["name"] == "Ana" and got["data"]["text"] == "hello from A"
        q = await ben.chat("blue?", question=True)
        await next_of(ana, "chat", id=q["message"])
        # The host acts through process B; viewers on both processes see it.
        assert (await api_b.post(f"/shows/s1/chat/messages/{q['message']}/pin")).status_code == 200
        for client in (ana, ben):
            pinned = await client.next_message(types=["chat_pinned"])
            assert pinned["data"]["message"]["id"] == q["message"]
        assert (
            await api_b.delete(f"/shows/s1/chat/messages/{hello['message']}")
        ).status_code == 204
        for client in (ana, ben):
            await next_of(client, "chat_deleted", id=hello["message"])
        await api_a.post("/shows/s1/chat/mutes", json={"viewer": "ben", "duration_s": 600})
        assert (await ben.chat("muted on B by A's API"))["code"] == "muted"
        # Taps on both processes reach the viewers of both, summed.
        await ben.react("heart", 20)
        await ana.react("heart", 5)
        for client in (ana, ben):
            total = 0
            while total < 25:
                msg = await client.next_message(types=["reactions"])
                total += msg["data"]["counts"].get("heart", 0)
            assert total == 25
    # A late joiner on A gets the history written through B, minus the deleted message.
    async with Client(a.url, "s1") as late:
        assert late.join_reply is not None
        chat = late.join_reply["chat"]
        assert [m["text"] for m in chat["messages"]] == ["blue?"]
        assert chat["pinned"]["id"] == q["message"]
