"""Edge limits and host blocks, with real uvicorn, real websockets clients and real Valkey:
each limit refuses with its documented code and leaves other addresses and viewers alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, serve, settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livecommerce.core.config import FraudSettings
from livecommerce.core.model import DropSpec
from livecommerce.realtime import admission
from livecommerce.realtime.client import Client, ClientClosed
from livecommerce.realtime.codec import SUBPROTOCOL_JSON
from livecommerce.realtime.guard import Guard
from livecommerce.realtime.tokens import mint
from livecommerce.store.blocks import Blocks
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

SLOW = 0.01
"""A rate so low that no token comes back during a test: one attempt, then refused."""


@contextlib.asynccontextmanager
async def gateway(redis_url: str, keyspace: Keyspace, **fraud: Any) -> AsyncIterator[Running]:
    cfg = dataclasses.replace(settings(), fraud=FraudSettings(**fraud))
    async with serve(cfg, redis_url, keyspace) as gw:
        inv: Inventory = gw.app.state.services.inventory
        if await inv.get_show("s1") is not None:
            yield gw  # a second gateway on the same keys
            return
        await inv.create_show("s1", title="Show", host="h1")
        for drop in ("d1", "d2"):
            await inv.create_drop("s1", DropSpec(id=drop, sku="k", title="Cap", quantity=50,
                                                 limit=5, prices={"EUR": 500}))  # fmt: skip
        yield gw


def token(viewer: str) -> str:
    return mint(SECRET, viewer, 600)


@contextlib.asynccontextmanager
async def raw(gw: Running, forwarded_for: str | None = None) -> AsyncIterator[ClientConnection]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with connect(gw.url, subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
                       additional_headers=headers) as ws:  # fmt: skip
        yield ws


async def join(ws: ClientConnection, viewer: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "join", "show": "s1"}
    if viewer:
        message["token"] = token(viewer)
    await ws.send(orjson.dumps(message).decode())
    reply: dict[str, Any] = orjson.loads(await ws.recv())
    return reply


def test_forwarded_for_counts_only_from_trusted_proxies() -> None:
    guard = Guard(FraudSettings(trusted_proxies=("10.0.0.0/8",)))
    assert guard.client_address("203.0.113.5", "6.6.6.6") == "203.0.113.5"  # not a proxy
    assert guard.client_address("10.1.2.3", "198.51.100.7") == "198.51.100.7"
    # The client may forge hops on the left; the right-most untrusted hop is what counts.
    assert guard.client_address("10.1.2.3", "6.6.6.6, 198.51.100.7, 10.9.9.9") == "198.51.100.7"
    assert guard.client_address("10.1.2.3", None) == "10.1.2.3"


async def test_address_connections_and_handshakes_refused_with_429(
    redis_url: str, keyspace: Keyspace
) -> None:
    async with (
        gateway(redis_url, keyspace, trusted_proxies=("127.0.0.1",), address_connections=2)
        as gw, contextlib.AsyncExitStack() as stack,
    ):  # fmt: skip
        for _ in range(2):
            ws = await stack.enter_async_context(raw(gw, "203.0.113.5"))
            assert (await join(ws))["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as refused:
            await stack.enter_async_context(raw(gw, "6.6.6.6, 203.0.113.5"))  # forged hop
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["retry-after"] == "1"
        other = await stack.enter_async_context(raw(gw, "198.51.100.7"))
        assert (await join(other))["type"] == "snapshot"  # another address is unaffected
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(gw.http + "/metrics")).text
        assert 'livecommerce_ws_refused_total{reason="address_connections"} 1.0' in metrics
    async with gateway(redis_url, keyspace, trusted_proxies=("127.0.0.1",),
                       address_handshakes_per_s=SLOW) as gw:  # fmt: skip
        async with raw(gw, "203.0.113.5") as first:
            assert (await join(first))["type"] == "snapshot"
        with pytest.raises(InvalidStatus) as refused:
            async with raw(gw, "203.0.113.5"):
                pass
        assert refused.value.response.status_code == 429
        async with raw(gw, "198.51.100.7") as other:
            assert (await join(other))["type"] == "snapshot"


async def test_viewer_connections_and_buy_attempts(redis_url: str, keyspace: Keyspace) -> None:
    async with gateway(redis_url, keyspace, viewer_connections=2, viewer_attempts_per_s=SLOW) as gw:
        async with Client(gw.url, "s1", token=token("ann")), \
                Client(gw.url, "s1", token=token("ann")) as second:  # fmt: skip
            with pytest.raises(ClientClosed) as closed:
                async with Client(gw.url, "s1", token=token("ann")):
                    pass
            assert closed.value.code == 4013
            async with Client(gw.url, "s1", token=token("bob")) as bob:
                assert (await bob.reserve("d1", 1, request_id="b1"))["ok"]
            first = await second.reserve("d1", 1, request_id="a1")
            assert first["ok"], first
            again = await second.reserve("d1", 1, request_id="a2")
            assert again["ok"] is False and again["reason"] == "too_many_attempts"
            assert again["detail"]["retry_after_ms"] > 0
            other_drop = await second.reserve("d2", 1, request_id="a3")
            assert other_drop["ok"], other_drop  # per drop: the other drop is untouched
            cancel = await second.cancel(first["hold"]["id"], request_id="a4")
            assert cancel["ok"], cancel  # giving stock back is never limited
        # Both closed: the count went back down.
        async with Client(gw.url, "s1", token=token("ann")):
            pass


async def test_a_host_blocks_a_viewer_and_an_address_at_the_edge(
    redis_url: str, redis: aioredis.Redis, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "BLOCKS_REFRESH_S", 0.0)  # every check reads the blocks afresh
    key, _ = await HostKeys(redis, keyspace).create("h1")
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        gateway(redis_url, keyspace, trusted_proxies=("127.0.0.1",)) as gw,
        httpx.AsyncClient(base_url=gw.http + "/api", headers=headers) as api,
        Client(gw.url, "s1", token=token("bot1")) as bot,
    ):
        assert (await bot.reserve("d1", 1, request_id="r1"))["ok"]
        r = await api.post("/shows/s1/blocks", json={"kind": "viewer", "value": "bot1",
                                                       "reason": "resale"})  # fmt: skip
        assert r.status_code == 201 and r.json()["by"] == "h1", r.text
        refused = await bot.reserve("d1", 1, request_id="r2")
        assert refused["ok"] is False and refused["reason"] == "blocked"
        with pytest.raises(ClientClosed) as closed:
            async with Client(gw.url, "s1", token=token("bot1")):
                pass
        assert closed.value.code == 4011
        async with Client(gw.url, "s1", token=token("fan")) as fan:
            assert (await fan.reserve("d1", 1, request_id="f1"))["ok"]  # others unaffected
        r = await api.post("/shows/s1/blocks", json={"kind": "address", "value": "203.0.113.9"})
        assert r.status_code == 201
        async with raw(gw, "203.0.113.9") as ws:
            reply = await join(ws, "someone")
            assert reply["type"] == "error" and reply["code"] == "blocked"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4011
        listed = (await api.get("/shows/s1/blocks")).json()["blocks"]
        assert {(b["kind"], b["value"]) for b in listed} == {
            ("viewer", "bot1"),
            ("address", "203.0.113.9"),
        }
        bad = await api.post("/shows/s1/blocks", json={"kind": "address", "value": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "value"
        r = await api.post("/shows/s1/unblock", json={"kind": "viewer", "value": "bot1"})
        assert r.json() == {"removed": True}
        assert (await bot.reserve("d1", 1, request_id="r3"))["ok"]


async def test_a_burst_as_the_block_cache_expires_reads_the_blocks_once(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    class Counting(Blocks):
        reads = 0

        async def fields(self, show: str) -> frozenset[str]:
            Counting.reads += 1
            return await super().fields(show)

    blocks = Counting(redis, keyspace)
    await blocks.block("s1", "viewer", "bot1", by="h1")
    checks = admission.Admission(FraudSettings(), blocks)
    results = await asyncio.gather(
        *(checks.blocked("s1", f"v{i % 3}" if i % 2 else "bot1", "") for i in range(50))
    )
    assert Counting.reads == 1
    assert results.count(True) == 25


async def test_blocks_are_read_again_ahead_of_their_age_while_the_cached_ones_answer(
    redis: aioredis.Redis, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past half the cache's age an attempt is answered from the cache and the blocks are read
    again in the background, once: in a steady stream of attempts none waits for the read, and
    a new block still takes effect within BLOCKS_REFRESH_S."""
    clock = [100.0]
    blocks = Blocks(redis, keyspace)
    reads: list[float] = []
    real_fields = blocks.fields

    async def counted(show: str) -> frozenset[str]:
        reads.append(clock[0])
        return await real_fields(show)

    monkeypatch.setattr(blocks, "fields", counted)
    adm = admission.Admission(FraudSettings(), blocks, clock=lambda: clock[0])
    assert not await adm.blocked("s1", "bot1", "")  # nothing cached: read now
    assert reads == [100.0]
    await blocks.block("s1", "viewer", "bot1", by="h1")
    clock[0] += admission.BLOCKS_REFRESH_S * 0.4
    assert not await adm.blocked("s1", "bot1", "")  # fresh enough: no read
    assert reads == [100.0] and not adm._ahead
    clock[0] += admission.BLOCKS_REFRESH_S * 0.2  # past half its age
    assert not await adm.blocked("s1", "bot1", "")  # answered from the cache ...
    assert not await adm.blocked("s1", "fan", "")  # ... and read ahead only once
    assert len(adm._ahead) == 1
    await asyncio.gather(*adm._ahead.values())
    assert reads == [100.0, clock[0]]
    assert await adm.blocked("s1", "bot1", "")  # the new block, read ahead
    assert not await adm.blocked("s1", "fan", "")
    assert len(reads) == 2
    clock[0] += admission.BLOCKS_REFRESH_S * 1.5  # past its age: the attempt waits for a read
    await blocks.unblock("s1", "viewer", "bot1")
    assert not await adm.blocked("s1", "bot1", "")
    assert len(reads) == 3 and not adm._ahead
