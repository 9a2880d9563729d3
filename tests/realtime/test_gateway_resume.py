"""Resume from the event log, slow consumers, graceful drain (in-process uvicorn)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, serve, settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livecommerce.realtime.client import Client
from livecommerce.realtime.codec import SUBPROTOCOL_JSON, Encoding, decode, encode
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one")
    await inventory.start_show("s1")
    await inventory.create_drop("s1", drop("d1", quantity=1000, limit=1000))
    return inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(), redis_url, keyspace) as running:
        yield running


async def test_resume_gets_exactly_the_missed_events(gw: Running, inv: Inventory) -> None:
    async with Client(gw.url, "s1") as first:
        assert first.snapshot is not None
        await inv.restock("s1", "d1", 1)
        seen = await first.next_message(types=["restocked"])
        last = seen["id"]
    missed = [(await inv.restock("s1", "d1", n + 2)) for n in range(3)]
    assert len(missed) == 3
    async with Client(gw.url, "s1", last_event_id=last) as again:
        resumed = again.join_reply
        assert resumed is not None and resumed["type"] == "resumed" and resumed["missed"] == 3
        events = [await again.next_message(types=["restocked"]) for _ in range(3)]
        assert [e["data"]["added"] for e in events] == [2, 3, 4]
        ids = [e["id"] for e in events]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and ids[0] > last
        stock = await again.next_message(types=["stock"])
        assert stock["data"]["drop"] == "d1"
        await inv.restock("s1", "d1", 9)  # then live, with no duplicate in between
        live = await again.next_message(types=["restocked"])
        assert live["data"]["added"] == 9


async def test_resume_gap_gets_snapshot(gw: Running, inv: Inventory, redis: aioredis.Redis,
                                        keyspace: Keyspace) -> None:  # fmt: skip
    async with Client(gw.url, "s1") as first:
        old = first.snapshot["last_event_id"] if first.snapshot else ""
    for n in range(3):
        await inv.restock("s1", "d1", n + 1)
    await redis.xtrim(keyspace.events("s1"), maxlen=1, approximate=False)
    for stale in (old, "1-0", "99999999999999-0"):
        async with Client(gw.url, "s1", last_event_id=stale) as again:
            snap = again.snapshot
            assert snap is not None and snap["resumed"] is True and snap["gap"] is True
            assert snap["drops"][0]["quantity"] == 1006


async def test_client_resumes_after_dropped_connection(gw: Running, inv: Inventory) -> None:
    async with Client(gw.url, "s1", max_backoff_s=0.2) as client:
        await inv.restock("s1", "d1", 1)
        await client.next_message(types=["restocked"])
        for conn in list(gw.gateway.connections):  # the network blinks
            transport = conn.outbox._transport
            assert transport is not None
            transport.abort()
        for n in range(2, 5):
            await inv.restock("s1", "d1", n)
        got = [(await client.next_message(types=["restocked"]))["data"]["added"] for _ in range(3)]
        assert got == [2, 3, 4]
        assert client.connections == 2


async def test_slow_consumer_is_closed_others_keep_receiving(redis_url: str, keyspace: Keyspace,
                                                             inv: Inventory) -> None:  # fmt: skip
    cfg = settings(send_buffer_bytes=1024, send_queue=8)
    async with serve(cfg, redis_url, keyspace) as gw, Client(gw.url, "s1") as fast:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        async with connect(gw.url, sock=sock, subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
                           max_queue=1) as slow:  # fmt: skip
            await slow.send(encode(Encoding.JSON, {"type": "join", "show": "s1"}))
            assert decode(Encoding.JSON, await slow.recv())["type"] == "snapshot"
            # Small kernel buffers on both ends, so the backlog shows up in the server at once.
            for conn in gw.gateway.connections:
                assert conn.outbox._direct is not None  # frames bypass the ASGI send here
                server_sock = conn.outbox._transport.get_extra_info("socket")
                server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            metric = gw.gateway.metrics.slow_consumers
            added = 0
            while metric._value.get() == 0 and added < 3000:  # the slow one stops reading
                added += 1
                await inv.restock("s1", "d1", 1)
            assert metric._value.get() == 1
            for _ in range(added):  # the fast one got every event
                assert (await fast.next_message(types=["restocked"]))["type"] == "restocked"
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await slow.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4008


async def test_drain_closes_with_reconnect(gw: Running, inv: Inventory) -> None:
    token = mint(SECRET, "v1", 600)
    async with connect(gw.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send(encode(Encoding.JSON, {"type": "join", "show": "s1", "token": token}))
        assert decode(Encoding.JSON, await ws.recv())["type"] == "snapshot"
        gw.app.state.services.draining = True
        await gw.gateway.drain(2.0)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000
