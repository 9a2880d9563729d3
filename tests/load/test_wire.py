"""The spike's lean viewer connection (loadtests/wire.py): framing as unit tests, and the whole
conversation against a real uvicorn gateway on real Valkey."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, live_show, serve, settings
from helpers.polling import eventually

from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from loadtests.wire import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    HandshakeRefused,
    WireClient,
    WireClosed,
    _Protocol,
)


# -- framing --------------------------------------------------------------------------------------
def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


class Recorder:
    """Stands in for the WireClient behind a protocol: what the parser hands on."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ended: list[tuple[int | None, str]] = []

    def _message(self, payload: bytes) -> None:
        self.messages.append(payload)

    def _ended(self, code: int | None, reason: str) -> None:
        self.ended.append((code, reason))


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def unmask(frame: bytes) -> tuple[int, bytes]:
    """Opcode and payload of one masked client frame (length < 126)."""
    assert frame[1] & 0x80, "client frames are masked"
    n, mask = frame[1] & 0x7F, frame[2:6]
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(frame[6 : 6 + n]))


async def test_frames_split_at_every_byte_come_out_whole_and_in_order() -> None:
    big = orjson.dumps({"type": "stock", "pad": "x" * 70_000})  # 8-byte length
    mid = orjson.dumps({"type": "snapshot", "pad": "y" * 300})  # 2-byte length
    small = b'{"type":"pong","id":"1"}'
    wire = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        + server_frame(OP_TEXT, small)
        + server_frame(OP_TEXT, mid[:100], fin=False)  # a fragmented message
        + server_frame(OP_PING, b"hb")  # a control frame between its fragments
        + server_frame(0x0, mid[100:])
        + server_frame(OP_TEXT, big)
    )
    for step in (1, 7, 1000, len(wire)):
        owner, transport = Recorder(), Transport()
        proto = _Protocol(owner)  # type: ignore[arg-type]
        proto.connection_made(transport)  # type: ignore[arg-type]
        for at in range(0, len(wire), step):
            proto.data_received(wire[at : at + step])
        assert proto.handshake.result().startswith(b"HTTP/1.1 101")
        assert owner.messages == [small, mid, big], step
        assert [unmask(w) for w in transport.written] == [(OP_PONG, b"hb")]


async def test_a_close_frame_is_answered_and_reported_with_its_code() -> None:
    owner, transport = Recorder(), Transport()
    proto = _Protocol(owner)  # type: ignore[arg-type]
    proto.connection_made(transport)  # type: ignore[arg-type]
    after = server_frame(OP_TEXT, b'{"type":"stock"}')  # past the close: never read
    proto.data_received(
        b"HTTP/1.1 101 OK\r\n\r\n" + server_frame(OP_CLOSE, b"\x0f\xa8slow") + after
    )
    assert owner.ended == [(4008, "slow")] and owner.messages == []
    assert unmask(transport.written[0]) == (OP_CLOSE, b"\x0f\xa8") and transport.closed


# -- against a real gateway -----------------------------------------------------------------------
@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    async with live_show(redis, keyspace) as inventory:
        yield inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    cfg = settings(allowed_origins=("https://shop.example",))
    async with serve(cfg, redis_url, keyspace) as running:
        yield running


def viewer(gw: Running, name: str, **kw: Any) -> WireClient:
    return WireClient(gw.url, "s1", token=mint(SECRET, name, 600), **kw)


async def pushes_until(seen: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            for msg in seen:
                if msg.get("type") == kind:
                    return msg
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.MSGPACK])
async def test_join_buy_and_pushes_on_a_real_gateway(
    gw: Running, inv: Inventory, encoding: Encoding
) -> None:
    client = viewer(gw, "alice", encoding=encoding, headers={"Origin": "https://shop.example"})
    seen: list[dict[str, Any]] = []
    client.on_push = seen.append
    first = await client.connect()
    assert first["type"] == "snapshot" and client.snapshot is first
    assert (await client.ping())["type"] == "pong"
    await inv.create_drop("s1", drop("d1", quantity=1, limit=1))
    opened = await pushes_until(seen, "drop_opened")
    assert opened["data"]["id"] == "d1" and opened["_rx_ms"] > 0
    reply = await client.buy_now("d1", 1, "pay", request_id="r1")
    assert reply["type"] == "result" and reply["ok"] and reply["id"] == "r1"
    again = await client.buy_now("d1", 1, "pay", request_id="r1")
    assert again["ok"] and again["replay"] is True  # the same request id: the same order
    assert reply not in seen and again not in seen  # replies complete commands, not pushes
    await pushes_until(seen, "drop_closed")
    await client.close()
    assert await client.closed() == 1000 and client.close_codes == []


async def test_the_server_closing_ends_waiting_commands_and_reports_the_code(
    gw: Running, inv: Inventory
) -> None:
    client = viewer(gw, "bob")
    await client.connect()
    # A reaction has no reply: the command waits until the connection ends, then fails at once
    # instead of running into its timeout.
    waiting = asyncio.create_task(
        client.request({"type": "react", "reaction": "heart", "count": 1}, within_s=30)
    )
    await asyncio.sleep(0)  # the task sends the command and waits for its reply
    gw.server.should_exit = True  # uvicorn closes its websockets on shutdown
    code = await asyncio.wait_for(client.closed(), 10)
    assert client.close_codes == [code]
    with pytest.raises(WireClosed) as ended:
        await waiting
    assert ended.value.code == code


async def test_refusals_at_the_door(gw: Running) -> None:
    with pytest.raises(WireClosed) as unknown:
        await WireClient(gw.url, "nosuch", token=mint(SECRET, "carol", 600)).connect()
    assert unknown.value.code == 4004
    with pytest.raises(WireClosed) as forged:
        await WireClient(gw.url, "s1", token="v1.forged.token").connect()
    assert forged.value.code == 4003
    with pytest.raises(HandshakeRefused) as origin:
        await viewer(gw, "dave", headers={"Origin": "https://evil.example"}).connect()
    assert origin.value.status == 403


async def test_a_reply_that_does_not_come_times_out(gw: Running) -> None:
    client = viewer(gw, "erin")
    await client.connect()
    # A command the server does not answer with this id: a reaction has no reply.
    with pytest.raises(TimeoutError):
        await client.request({"type": "react", "reaction": "heart", "count": 1}, within_s=0.2)
    assert not client._pending
    await client.close()


def test_client_frames_use_a_fresh_mask_each_time() -> None:
    from loadtests.wire import client_frame

    payload = os.urandom(64)
    a, b = client_frame(OP_TEXT, payload), client_frame(OP_TEXT, payload)
    assert a[2:6] != b[2:6]  # 4 random bytes: equal once in 2**32
    assert unmask(a) == unmask(b) == (OP_TEXT, payload)


async def test_pushes_read_before_the_handler_is_set_are_given_to_it_in_order(
    gw: Running, inv: Inventory
) -> None:
    client = viewer(gw, "frank")
    await client.connect()
    await inv.create_drop("s1", drop("d1", quantity=1))
    await inv.close("s1", "d1")

    async def both_read() -> bool:  # both events read, nobody to give them to yet
        return sum(m["type"] in ("drop_opened", "drop_closed") for m in client._early) == 2

    await eventually(both_read)
    seen: list[dict[str, Any]] = []
    client.on_push = seen.append
    kinds = [m["type"] for m in seen if m["type"] in ("drop_opened", "drop_closed")]
    assert kinds == ["drop_opened", "drop_closed"]
    await client.close()
