"""The gateway end to end: real uvicorn on a free port, real websockets clients, real Valkey."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, serve, settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livecommerce.core.model import DropKind
from livecommerce.realtime.client import Client, ClientClosed
from livecommerce.realtime.codec import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Encoding,
    decode,
    encode,
)
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

ENCODINGS = [Encoding.JSON, Encoding.MSGPACK]


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one", host="h1")
    await inventory.start_show("s1")
    return inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(), redis_url, keyspace) as running:
        yield running


def token(viewer: str, ttl: int = 600) -> str:
    return mint(SECRET, viewer, ttl)


async def collect(client: Client, until: str, *, data: dict[str, Any] | None = None
                  ) -> list[dict[str, Any]]:  # fmt: skip
    """Messages up to and including the first of type ``until`` (whose data matches)."""
    seen = []
    while True:
        msg = await client.next_message()
        seen.append(msg)
        if msg["type"] == until and all(msg["data"].get(k) == v for k, v in (data or {}).items()):
            return seen


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_join_snapshot(gw: Running, inv: Inventory, encoding: Encoding) -> None:
    await inv.create_drop("s1", drop("d1", quantity=5))
    async with Client(gw.url, "s1", encoding=encoding, token=token("alice")) as client:
        snap = client.snapshot
        assert snap is not None
        assert snap["viewer"] == "alice"
        assert snap["resumed"] is False and snap["gap"] is False
        assert snap["show"]["id"] == "s1"
        [d1] = snap["drops"]
        assert d1["id"] == "d1" and d1["remaining"] == 5 and d1["prices"] == {"EUR": 1999}
        assert d1["currency"] == "EUR" and d1["limit"] == 2 and d1["state"] == "open"
        assert abs(snap["server_time"] - await inv.server_time_ms()) < 60_000
        assert snap["last_event_id"] != "0-0"
        pong = await client.ping()
        assert pong["type"] == "pong" and isinstance(pong["server_time"], int)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_event_type(gw: Running, inv: Inventory, encoding: Encoding) -> None:
    async with Client(gw.url, "s1", encoding=encoding, token=token("bob")) as client:
        now = await inv.server_time_ms()
        await inv.create_drop("s1", drop("d1", quantity=2, limit=5, opens_at=now + 200))
        seen = await collect(client, "drop_opened")
        assert [m["type"] for m in seen if "id" in m][:1] == ["drop_scheduled"]
        assert all(isinstance(m["id"], str) and isinstance(m["ts"], int) for m in seen)
        await inv.restock("s1", "d1", 1)
        await collect(client, "restocked")
        for i in range(3):
            reply = await client.buy_now("d1", 1, "pay", request_id=f"b{i}")
            assert reply["ok"], reply
        seen = await collect(client, "drop_closed")
        types = [m["type"] for m in seen]
        assert "sold_out" in types and "stock" in types
        assert seen[-1]["data"]["reason"] == "sold_out"
        await inv.create_drop("s1", drop("d2"))
        await collect(client, "drop_opened", data={"id": "d2"})
        await inv.close("s1", "d2")
        closed = await collect(client, "drop_closed", data={"id": "d2"})
        assert closed[-1]["data"]["reason"] == "host"
        await inv.create_drop("s1", drop("o1", kind=DropKind.OFFER, duration_ms=1500))
        await collect(client, "offer_started")
        soon = await collect(client, "offer_ending_soon")
        assert soon[-1]["data"]["seconds_left"] >= 0
        ended = await collect(client, "offer_ended")
        assert ended[-1]["data"]["reason"] == "time_up"
        await inv.end_show("s1")
        await collect(client, "show_ended")


async def test_stock_coalesced_and_final(gw: Running, inv: Inventory) -> None:
    await inv.create_drop("s1", drop("d1", quantity=50, limit=50))
    async with Client(gw.url, "s1", token=token("carol")) as client:
        for i in range(30):
            assert (await client.reserve("d1", 1, request_id=f"r{i}"))["ok"]
        levels = []
        while True:
            msg = await client.next_message(types=["stock"])
            levels.append(msg["data"]["remaining"])
            if msg["data"]["remaining"] == 20:
                break
        assert len(levels) < 30  # coalesced, and the last one is the true value


async def test_viewer_count_reaches_every_viewer(gw: Running, inv: Inventory) -> None:
    async with Client(gw.url, "s1") as a, Client(gw.url, "s1") as b:
        while (await a.next_message(types=["viewers"]))["data"]["count"] != 2:
            pass
        assert b.snapshot is not None


async def test_reserve_confirm_and_buy_over_both_encodings(gw: Running, inv: Inventory) -> None:
    await inv.create_drop("s1", drop("d1", quantity=3, limit=2))
    async with (
        Client(gw.url, "s1", token=token("dave")) as dave,
        Client(gw.url, "s1", token=token("erin"), encoding=Encoding.MSGPACK) as erin,
        Client(gw.url, "s1") as anon,
    ):
        hold = await dave.reserve("d1", 1, request_id="r1")
        assert hold["ok"] and hold["id"] == "r1" and hold["op"] == "reserve"
        assert hold["hold"]["quantity"] == 1 and hold["remaining"] == 2
        again = await dave.reserve("d1", 1, request_id="r1")
        assert again["ok"] and again["replay"] is True and again["remaining"] == 2
        over = await dave.reserve("d1", 2, request_id="r2")
        assert over["ok"] is False and over["reason"] == "limit_exceeded"
        order = await dave.confirm(hold["hold"]["id"], "pay_1", request_id="r3")
        assert (
            order["ok"] and order["order"]["viewer"] == "dave" and order["order"]["quantity"] == 1
        )
        late = await dave.cancel(hold["hold"]["id"], request_id="r4")
        assert late["ok"] is False and late["reason"] == "hold_confirmed"
        bought = await erin.buy_now("d1", 2, "pay_2", request_id="e1")
        assert bought["ok"] and bought["order"]["viewer"] == "erin"
        out = await dave.buy_now("d1", 1, "pay_3", request_id="r5")
        assert out["ok"] is False and out["reason"] in ("sold_out", "closed")
        unknown = await dave.reserve("nope", 1, request_id="r6")
        assert unknown["reason"] == "unknown_drop"
        bad_q = await dave.reserve("d1", 0, request_id="r7")
        assert bad_q["reason"] == "invalid_quantity"
        refused = await anon.reserve("d1", 1, request_id="a1")
        assert refused["type"] == "error" and refused["code"] == "auth_required"
        # Only the buyer saw its orders: the anonymous viewer got events, no result.
        seen = await collect(anon, "drop_closed")
        assert not [m for m in seen if m["type"] == "result"]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_malformed_input_changes_nothing(gw: Running, inv: Inventory,
                                               encoding: Encoding) -> None:  # fmt: skip
    await inv.create_drop("s1", drop("d1", quantity=5))
    other = "hello" if encoding is Encoding.MSGPACK else b"\x81"
    async with connect(gw.url, subprotocols=[encoding.subprotocol]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == encoding.subprotocol

        async def ask(payload: str | bytes) -> dict[str, Any]:
            await ws.send(payload)
            return decode(encoding, await ws.recv())

        garbage = "{nope" if encoding is Encoding.JSON else b"\xc1\xc1"
        assert (await ask(garbage))["code"] == "bad_frame"
        assert (await ask(other))["code"] == "wrong_frame_type"
        assert (await ask(encode(encoding, {"type": "reserve", "id": "x", "drop": "d1",
                                            "quantity": 1})))["code"] == "not_joined"  # fmt: skip
        assert (await ask(encode(encoding, [1, 2])))["code"] == "bad_frame"
        assert (await ask(encode(encoding, {"type": "join", "show": 5})))["code"] == "bad_message"
        snap = await ask(encode(encoding, {"type": "join", "show": "s1", "token": token("f")}))
        assert snap["type"] == "snapshot"
        assert (await ask(encode(encoding, {"type": "dance"})))["code"] == "unknown_type"
        wrong = await ask(encode(encoding, {"type": "reserve", "id": "r1", "drop": "d1",
                                            "quantity": "2"}))  # fmt: skip
        assert (
            wrong["code"] == "bad_message" and wrong["field"] == "quantity" and wrong["id"] == "r1"
        )
        wrong = await ask(encode(encoding, {"type": "confirm", "id": "r2", "hold": 7,
                                            "payment_reference": "p"}))  # fmt: skip
        assert wrong["field"] == "hold"
        wrong = await ask(encode(encoding, {"type": "reserve", "id": "bad id!", "drop": "d1",
                                            "quantity": 1}))  # fmt: skip
        assert wrong["field"] == "id"
        again = await ask(encode(encoding, {"type": "join", "show": "s1"}))
        assert again["code"] == "already_joined"
        assert (await ask(encode(encoding, {"type": "ping", "id": "p"})))["type"] == "pong"
    view = await inv.get_drop("s1", "d1")
    assert view is not None and view["remaining"] == 5 and view["held"] == 0


async def test_frame_too_large_closes(gw: Running) -> None:
    async with connect(gw.url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        await ws.send("x" * 20_000)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_rate_limit_then_policy_close(redis_url: str, keyspace: Keyspace,
                                            inv: Inventory) -> None:  # fmt: skip
    cfg = settings(rate_per_s=0.1, rate_burst=3)
    async with (
        serve(cfg, redis_url, keyspace) as gw,
        connect(
            gw.url,
            subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
        ) as ws,
    ):
        replies = []
        for i in range(3):
            await ws.send(encode(Encoding.JSON, {"type": "ping", "id": f"p{i}"}))
            replies.append(decode(Encoding.JSON, await ws.recv()))
        assert [r["type"] for r in replies] == ["pong"] * 3
        await ws.send(encode(Encoding.JSON, {"type": "ping", "id": "p3"}))
        limited = decode(Encoding.JSON, await ws.recv())
        assert limited["code"] == "rate_limited" and limited["retry_after_ms"] > 0
        with pytest.raises(ConnectionClosed) as info:
            for i in range(10):
                await ws.send(encode(Encoding.JSON, {"type": "ping", "id": f"q{i}"}))
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4029


async def test_tokens_forged_expired_missing(gw: Running, inv: Inventory) -> None:
    forged = mint("another-secret-another-secret-xx", "mallory", 600)
    expired = mint(SECRET, "mallory", 10, now=time.time() - 3600)
    for bad in (forged, expired, "not-a-jwt"):
        client = Client(gw.url, "s1", token=bad, reconnect=False)
        with pytest.raises(ClientClosed) as info:
            await client.connect()
        await client.close()
        assert info.value.code == 4003
    async with Client(gw.url, "s1") as anon:
        assert anon.snapshot is not None and anon.snapshot["viewer"] is None


async def test_origin_allowlist(redis_url: str, keyspace: Keyspace, inv: Inventory) -> None:
    cfg = settings(allowed_origins=("https://shop.example",))
    async with serve(cfg, redis_url, keyspace) as gw:
        with pytest.raises(InvalidStatus) as info:
            async with connect(gw.url, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        assert info.value.response.status_code == 403
        async with Client(gw.url, "s1", origin="https://shop.example") as ok:
            assert ok.snapshot is not None
    async with serve(settings(), redis_url, keyspace) as gw:  # empty list: same host only
        with pytest.raises(InvalidStatus):
            async with connect(gw.url, origin="https://evil.example"):  # type: ignore[arg-type]
                pass
        async with Client(gw.url, "s1", origin=f"http://127.0.0.1:{gw.port}") as same:
            assert same.snapshot is not None


async def test_unknown_show_and_subprotocol(gw: Running) -> None:
    client = Client(gw.url, "nope", reconnect=False)
    with pytest.raises(ClientClosed) as info:
        await client.connect()
    await client.close()
    assert info.value.code == 4004
    with pytest.raises(InvalidStatus):
        async with connect(gw.url, subprotocols=["chat"]):  # type: ignore[list-item]
            pass
    async with connect(gw.url) as ws:  # no subprotocol offered: JSON
        assert ws.subprotocol is None
        await ws.send('{"type":"join","show":"s1"}')
        assert decode(Encoding.JSON, await ws.recv())["type"] == "snapshot"
    async with connect(gw.url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == SUBPROTOCOL_MSGPACK


async def test_metrics_and_health(gw: Running) -> None:
    async with Client(gw.url, "s1", token=token("m")) as client:
        await client.reserve("nope", 1)
        async with httpx.AsyncClient(base_url=gw.http) as http:
            text = (await http.get("/metrics")).text
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/livez")).status_code == 200
    assert 'livecommerce_ws_connections{encoding="json"} 1.0' in text
    assert 'livecommerce_ws_commands_total{outcome="unknown_drop",type="reserve"} 1.0' in text
    for name in ("livecommerce_fanout_seconds", "livecommerce_reserve_seconds",
                 "livecommerce_slow_consumer_disconnects_total"):  # fmt: skip
        assert name in text
