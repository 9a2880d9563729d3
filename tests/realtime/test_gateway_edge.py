"""Edge refusals end to end: real uvicorn, real Valkey, real websockets clients.

An attempt answered at the edge leaves no idempotency record in Redis (the store records every
answer it gives): that is how these tests tell an edge refusal from a store refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, live_show, serve, settings
from helpers.polling import eventually
from helpers.raw_ws import TEXT, RawSocket, client_frame
from websockets.asyncio.client import ClientConnection, connect

from livecommerce.realtime.client import Client
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    async with live_show(redis, keyspace) as inventory:
        yield inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(inventory={"hold_ttl_s": 1}), redis_url, keyspace) as running:
        yield running


def token(viewer: str) -> str:
    return mint(SECRET, viewer, 600)


async def edge_settled(gw: Running) -> None:
    """Wait for the buyer loads the edge view has started (they follow a drop's closing)."""
    tasks = [t for t in list(gw.gateway._tasks) if t.get_name() == "edge-buyers"]
    await asyncio.gather(*tasks)


async def until(client: Client, kind: str, **data: Any) -> dict[str, Any]:
    while True:
        msg = await client.next_message(types=[kind])
        if all(msg["data"].get(k) == v for k, v in data.items()):
            return msg


async def recorded(redis: aioredis.Redis, keyspace: Keyspace, viewer: str, rid: str) -> bool:
    """Whether the store answered (viewer, request id): it keeps a record of every answer."""
    return bool(await redis.exists(keyspace.request("s1", viewer, rid)))


def edge_count(gw: Running, reason: str) -> float:
    value = gw.gateway.metrics.edge_refusals.labels(reason)._value.get()
    return float(value)


async def sell_out(gw: Running, inv: Inventory, buyer: Client, quantity: int = 1) -> None:
    await inv.create_drop("s1", drop("d1", quantity=quantity, limit=5))
    await until(buyer, "drop_opened", id="d1")
    reply = await buyer.buy_now("d1", quantity, "pay", request_id="a1")
    assert reply["ok"], reply
    await until(buyer, "drop_closed", id="d1")
    await edge_settled(gw)


async def test_sold_out_is_refused_at_the_edge_with_the_stores_reply(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    async with Client(gw.url, "s1", token=token("alice")) as alice, \
            Client(gw.url, "s1", token=token("bob")) as bob:  # fmt: skip
        await sell_out(gw, inv, alice)
        edge = await bob.buy_now("d1", 1, "pay", request_id="b1")
        assert not await recorded(redis, keyspace, "bob", "b1")  # never reached the store
        assert edge_count(gw, "sold_out") == 1
        # The store's own answer to the same attempt is the same reply.
        store = await inv.buy_now("s1", "d1", "carol", 1, "c1", "pay")
        assert edge["ok"] is False and edge["reason"] == store.reason == "sold_out"
        assert edge["detail"] == store.detail and edge["replay"] is False
        assert set(edge) == {"type", "id", "op", "ok", "server_time", "reason", "detail",
                             "replay"}  # fmt: skip
        assert isinstance(edge["server_time"], int) and edge["server_time"] > 0
        # Reserve is refused the same way.
        hold = await bob.reserve("d1", 1, request_id="b2")
        assert hold["reason"] == "sold_out" and not await recorded(redis, keyspace, "bob", "b2")
        # Bad input is still refused as before, not as sold out.
        bad = await bob.buy_now("d1", 0, "pay", request_id="b3")
        assert bad["reason"] == "invalid_quantity"


async def test_a_buyers_retry_still_replays_its_order(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        await sell_out(gw, inv, alice)
        again = await alice.buy_now("d1", 1, "pay", request_id="a1")
        assert again["ok"] and again["replay"] is True  # the store's replay, not "sold_out"
        other = await alice.buy_now("d1", 1, "pay", request_id="a2")
        assert other["reason"] == "sold_out" and await recorded(redis, keyspace, "alice", "a2")
    assert edge_count(gw, "sold_out") == 0


async def test_closed_and_not_open_are_refused_at_the_edge(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    async with Client(gw.url, "s1", token=token("bob")) as bob:
        now = await inv.server_time_ms()
        await inv.create_drop("s1", drop("later", opens_at=now + 600_000))
        await until(bob, "drop_scheduled", id="later")
        early = await bob.buy_now("later", 1, "pay", request_id="b1")
        assert early["reason"] == "not_open" and early["detail"] == {"opens_at": now + 600_000}
        assert not await recorded(redis, keyspace, "bob", "b1")
        await inv.create_drop("s1", drop("d2"))
        await inv.close("s1", "d2")
        await until(bob, "drop_closed", id="d2")
        await edge_settled(gw)
        closed = await bob.buy_now("d2", 1, "pay", request_id="b2")
        assert closed["reason"] == "closed" and closed["detail"] == {"closed_reason": "host"}
        assert not await recorded(redis, keyspace, "bob", "b2")
    assert edge_count(gw, "not_open") == 1 and edge_count(gw, "closed") == 1


async def test_a_late_joiner_learns_the_state_from_its_snapshot(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=1))
    await inv.buy_now("s1", "d1", "alice", 1, "a1", "pay")  # closed before anyone watched
    async with Client(gw.url, "s1", token=token("bob")) as bob:
        await edge_settled(gw)
        reply = await bob.buy_now("d1", 1, "pay", request_id="b1")
        assert reply["reason"] == "sold_out" and not await recorded(redis, keyspace, "bob", "b1")
    # The last viewer left: the process no longer follows the show, so it forgets it.
    assert gw.gateway.edge.state_of("s1", "d1") is None


async def test_switched_off_every_attempt_goes_to_the_store(
    redis_url: str, keyspace: Keyspace, inv: Inventory, redis: aioredis.Redis
) -> None:
    async with serve(settings(edge_refusals=False), redis_url, keyspace) as gw, \
            Client(gw.url, "s1", token=token("alice")) as alice:  # fmt: skip
        await sell_out(gw, inv, alice)
        reply = await alice.buy_now("d1", 1, "pay", request_id="a2")
        assert reply["reason"] == "sold_out" and await recorded(redis, keyspace, "alice", "a2")


# -- the races ------------------------------------------------------------------------------------
async def raw_viewer(gw: Running, viewer: str) -> ClientConnection:
    ws = await connect(gw.url, subprotocols=["livecommerce.v1.json"])  # type: ignore[list-item]
    await ws.send(orjson.dumps({"type": "join", "show": "s1", "token": token(viewer)}).decode())
    while orjson.loads(await ws.recv())["type"] != "snapshot":
        pass
    return ws


def buy(rid: str) -> str:
    msg = {"type": "buy_now", "id": rid, "drop": "d1", "quantity": 1, "payment_reference": "p"}
    return orjson.dumps(msg).decode()


async def received(ws: ClientConnection) -> list[dict[str, Any]]:
    """The messages of the next frame (a batch's, in order, as docs/protocol.md says)."""
    msg = orjson.loads(await ws.recv())
    return list(msg["messages"]) if msg["type"] == "batch" else [msg]


async def frames_until(ws: ClientConnection, want: set[str]) -> list[dict[str, Any]]:
    """Every message, in order, until results for all of ``want`` arrived."""
    seen = []
    while want:
        for msg in await received(ws):
            seen.append(msg)
            if msg["type"] == "result":
                want.discard(msg["id"])
    return seen


async def test_restock_landing_while_attempts_arrive(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """No edge refusal is given once the restock's event reached the process; before that,
    refusals are exactly the documented staleness; everything after is sold by the store."""
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        await sell_out(gw, inv, alice)
        viewers = [await raw_viewer(gw, f"v{i}") for i in range(4)]
        # Before the restock: all refused at the edge.
        for i, ws in enumerate(viewers):
            await ws.send(buy(f"pre{i}"))
        for i, ws in enumerate(viewers):
            [result] = [m for m in await frames_until(ws, {f"pre{i}"}) if m["type"] == "result"]
            assert result["reason"] == "sold_out"
            assert not await recorded(redis, keyspace, f"v{i}", f"pre{i}")
        # The race: attempts in flight while the restock commits.
        ids = [{f"r{i}-{n}" for n in range(8)} for i in range(len(viewers))]
        for i, ws in enumerate(viewers):
            for n in range(4):
                await ws.send(buy(f"r{i}-{n}"))
        restock = asyncio.create_task(inv.restock("s1", "d1", 100))
        for i, ws in enumerate(viewers):
            for n in range(4, 8):
                await ws.send(buy(f"r{i}-{n}"))
        await restock
        sold_after = 0
        for i, ws in enumerate(viewers):
            frames = await frames_until(ws, set(ids[i]))
            kinds = [m["type"] for m in frames]
            if "restocked" not in kinds:
                frames += await frames_until_event(ws, "restocked")
                kinds = [m["type"] for m in frames]
            cut = kinds.index("restocked")
            for m in frames[:cut]:
                if m["type"] == "result" and not m["ok"]:
                    assert m["reason"] == "sold_out"
            for m in frames[cut:]:
                if m["type"] == "result":
                    # The limit is 5 per viewer: 8 attempts may see limit_exceeded, never
                    # sold_out (100 units for 4 viewers x 8 attempts).
                    assert m["ok"] or m["reason"] == "limit_exceeded", m
                    sold_after += m["ok"]
            # And the next attempt, surely after the event, is the store's.
            await ws.send(buy(f"post{i}"))
            [post] = [m for m in await frames_until(ws, {f"post{i}"}) if m["type"] == "result"]
            assert await recorded(redis, keyspace, f"v{i}", f"post{i}")
            assert post["ok"] or post["reason"] == "limit_exceeded"
            await ws.close()
    view = await inv.get_drop("s1", "d1")
    assert view is not None and view["sold"] >= 1 + len(viewers)


async def frames_until_event(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    while True:
        messages = await received(ws)
        seen += messages
        if any(msg["type"] == kind for msg in messages):
            return seen


async def test_hold_expiring_while_attempts_arrive(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """Nothing left but a hold: never refused at the edge, so the unit sells once it expires."""
    await inv.create_drop("s1", drop("d1", quantity=1))
    async with Client(gw.url, "s1", token=token("alice")) as alice, \
            Client(gw.url, "s1", token=token("bob")) as bob:  # fmt: skip
        hold = await alice.reserve("d1", 1, request_id="a1")
        assert hold["ok"] and hold["remaining"] == 0
        n = 0
        while True:  # each attempt is answered by the store until the hold expired
            n += 1
            reply = await bob.buy_now("d1", 1, "pay", request_id=f"b{n}")
            assert await recorded(redis, keyspace, "bob", f"b{n}")
            if reply["ok"]:
                break
            assert reply["reason"] == "sold_out"
            await until(bob, "stock", drop="d1")  # the next level change (the reaper's)
        assert reply["order"]["viewer"] == "bob"
    assert sum(edge_count(gw, r) for r in ("sold_out", "closed", "not_open")) == 0


async def test_view_catches_up_after_the_pubsub_link_breaks(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        await sell_out(gw, inv, alice)
        assert gw.gateway.edge.state_of("s1", "d1") is not None
        registry = gw.app.state.services.registry

        async def caught_up() -> bool:
            sample = registry.get_sample_value("livecommerce_resumes_total", {"result": "filled"})
            return (sample or 0) >= 1

        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        # Missed while the link was down: a restock. The view was dropped when the link broke
        # and filled again from the store once the subscription was back, never kept stale.
        await inv.restock("s1", "d1", 2)
        await eventually(caught_up)  # the gateway noticed the loss and caught alice up
        reply = await alice.buy_now("d1", 1, "pay", request_id="a2")
        assert reply["ok"], reply
        assert alice.connections == 1  # caught up on the socket she had


async def test_orders_are_still_told_durable(gw: Running, inv: Inventory) -> None:
    """The fsync wait moved out of the store slot: the reply still waits for it."""
    await inv.create_drop("s1", drop("d1", quantity=5))
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        bought = await alice.buy_now("d1", 1, "pay", request_id="a1")
        assert bought["ok"] and bought["durable"] is True, bought
        hold = await alice.reserve("d1", 1, request_id="a2")
        assert hold["ok"] and "durable" not in hold
        confirmed = await alice.confirm(hold["hold"]["id"], "pay", request_id="a3")
        assert confirmed["ok"] and confirmed["durable"] is True, confirmed


async def test_attempts_waiting_for_the_store_when_it_sells_out_are_answered_at_the_edge(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    await inv.create_drop("s1", drop("d1", quantity=1))
    slots = gw.gateway._command_slots
    taken = 0
    while not slots.locked():  # every store slot busy: new attempts wait (the burst's queue)
        await slots.acquire()
        taken += 1
    try:
        async with Client(gw.url, "s1", token=token("bob")) as bob:
            attempt = asyncio.create_task(bob.buy_now("d1", 1, "pay", request_id="b1"))
            while not slots._waiters:  # noqa: ASYNC110 - yields until bob waits for a slot
                await asyncio.sleep(0)
            assert (await inv.buy_now("s1", "d1", "alice", 1, "a1", "pay")).ok  # sold out
            await until(bob, "drop_closed", id="d1")
            await edge_settled(gw)
            for _ in range(taken):
                slots.release()
            taken = 0
            reply = await attempt
            assert reply["reason"] == "sold_out"
            assert not await recorded(redis, keyspace, "bob", "b1")  # never reached the store
    finally:
        for _ in range(taken):
            slots.release()


async def test_a_buyers_fresh_attempt_on_a_sold_out_drop_is_answered_at_the_edge(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    """A buyer's attempt goes to the store (it may retry a success, which the store replays)
    unless the client says its request id is fresh: then the edge answers it."""
    await inv.create_drop("s1", drop("d1", quantity=1))
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        bought = await alice.buy_now("d1", 1, "pay", request_id="a1")  # an id given: not fresh
        assert bought["ok"], bought
        await until(alice, "drop_closed", id="d1")
        await edge_settled(gw)
        again = {"type": "buy_now", "drop": "d1", "quantity": 1, "payment_reference": "pay"}
        fresh = await alice.request({**again, "id": "a2", "fresh": True})
        assert fresh["ok"] is False and fresh["reason"] == "sold_out", fresh
        assert not await recorded(redis, keyspace, "alice", "a2")  # never reached the store
        replay = await alice.buy_now("d1", 1, "pay", request_id="a1")  # her retry: the store's
        assert replay["ok"] and replay["replay"], replay
        made = await alice.buy_now("d1", 1, "pay")  # an id the client makes goes out fresh
        assert made["reason"] == "sold_out"
        assert not await recorded(redis, keyspace, "alice", made["id"])
        unsaid = await alice.buy_now("d1", 1, "pay", request_id="a3")
        assert unsaid["reason"] == "sold_out"
        assert await recorded(redis, keyspace, "alice", "a3")  # a buyer's, unsaid: the store's


async def test_the_client_sends_fresh_only_the_first_time_it_sends_an_id_it_made() -> None:
    sent: list[dict[str, Any]] = []

    class Socket:
        async def send(self, payload: str) -> None:
            sent.append(orjson.loads(payload))

    client = Client("ws://127.0.0.1:9/ws", "s1", token="t")
    client._ws = Socket()  # type: ignore[assignment]
    for message in (
        {"type": "buy_now", "drop": "d1", "quantity": 1, "payment_reference": "p"},
        {"type": "reserve", "drop": "d1", "quantity": 1, "id": "given"},
        {"type": "reserve", "drop": "d1", "quantity": 1, "id": "said", "fresh": True},
        {"type": "cancel", "hold": "d1.1"},
    ):
        with pytest.raises(TimeoutError):
            await client.request(message, within_s=0.01)
    assert [m.get("fresh") for m in sent] == [True, None, True, None]
    # What a reconnect sends again is the message as kept, never fresh:
    task = asyncio.create_task(client.request({"type": "buy_now", "drop": "d1", "quantity": 1,
                                               "payment_reference": "p"}, within_s=5))  # fmt: skip
    while not client._pending:  # noqa: ASYNC110 - yields until the request is kept
        await asyncio.sleep(0)
    [(kept, _)] = client._pending.values()
    assert "fresh" not in kept and sent[-1]["fresh"] is True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# -- the fast lane: answered inside data_received, in order -----------------------------------
async def raw_join(gw: Running, viewer: str) -> RawSocket:
    sock = await RawSocket.open(gw.port, subprotocol="livecommerce.v1.json")
    sock.send(TEXT, orjson.dumps({"type": "join", "show": "s1", "token": token(viewer)}))
    while orjson.loads((await sock.recv())[1])["type"] != "snapshot":
        pass
    return sock


async def replies(sock: RawSocket, count: int) -> list[dict[str, Any]]:
    """The next ``count`` replies to commands (results, errors, pongs), pushes skipped."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        message = orjson.loads((await sock.recv())[1])
        if message["type"] in ("result", "error", "pong"):
            out.append(message)
    return out


def attempt(rid: str, drop_id: str, quantity: int = 1) -> bytes:
    return orjson.dumps({"type": "buy_now", "id": rid, "drop": drop_id, "quantity": quantity,
                         "payment_reference": "pay"})  # fmt: skip


async def test_an_edge_refusal_is_answered_where_it_arrives_and_never_queued(
    gw: Running, inv: Inventory, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        await sell_out(gw, inv, alice)
    sock = await raw_join(gw, "bob")
    await edge_settled(gw)  # the show was left: the view learns d1's buyers again
    try:
        [conn] = [c for c in gw.gateway.connections if c.viewer == "bob"]
        protocol = conn.outbox.protocol
        assert protocol.on_message is not None
        handed: list[Any] = []  # what the fast lane gave the task's inbox, per frame
        answer = protocol.on_message
        protocol.on_message = lambda payload: handed.append(answer(payload)) or handed[-1]
        for i in range(5):
            sock.send(TEXT, attempt(f"b{i}", "d1"))
            [reply] = await replies(sock, 1)
            assert reply["id"] == f"b{i}" and reply["reason"] == "sold_out"
        sock.send(TEXT, b'{"type":"ping","id":"p1"}')
        [pong] = await replies(sock, 1)
        assert pong["type"] == "pong" and isinstance(pong["server_time"], int)
        assert handed == [None] * 6  # each answered where it arrived: none went to the task
        assert not protocol.read_paused
        assert not await recorded(redis, keyspace, "bob", "b0")
    finally:
        await sock.aclose()


async def test_frames_arriving_together_are_answered_in_their_order(
    gw: Running, inv: Inventory
) -> None:
    """A sale (the store) then edge refusals, a pong and bad input, in one TCP write: the replies
    come in the order of the frames, as they would from the connection's task alone."""
    async with Client(gw.url, "s1", token=token("alice")) as alice:
        await sell_out(gw, inv, alice)
        await inv.create_drop("s1", drop("d2", quantity=5, limit=5))
        await until(alice, "drop_opened", id="d2")
    sock = await raw_join(gw, "bob")
    await edge_settled(gw)
    try:
        frames = [
            attempt("b1", "d2"),
            attempt("b2", "d1"),
            b'{"type":"ping","id":"p3"}',
            attempt("b4", "d1", quantity=0),
            attempt("b5", "d2"),
            attempt("b6", "d1"),
        ]
        sock.send_raw(b"".join(client_frame(TEXT, f) for f in frames))
        got = await replies(sock, len(frames))
        assert [m["id"] for m in got] == ["b1", "b2", "p3", "b4", "b5", "b6"]
        assert got[0]["ok"] and got[4]["ok"]
        assert got[1]["reason"] == got[5]["reason"] == "sold_out"
        assert got[3]["reason"] == "invalid_quantity"
    finally:
        await sock.aclose()
