"""RFC 6455 corner cases at the viewer endpoint, sent frame by frame from a raw socket (the
Autobahn cases we once failed; the whole Autobahn run is scripts/conformance.py)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
from helpers.gateway import Running, serve, settings
from helpers.raw_ws import BINARY, CLOSE, CONT, PING, PONG, TEXT, RawSocket

from livecommerce.store.keys import Keyspace


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    async with serve(settings(), redis_url, keyspace) as running:
        yield running


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
async def test_fragments_after_a_close_frame_close_normally(gw: Running, opcode: int) -> None:
    """Autobahn 7.1.5: fragment 1, close 1000, fragment 2: the close is echoed with 1000."""
    ws = await RawSocket.open(gw.port)
    try:
        ws.send(opcode, b"fragment1", fin=False)
        ws.send(CLOSE, struct.pack("!H", 1000))
        ws.send(CONT, b"fragment2", fin=True)
        assert await ws.close_code() == 1000
    finally:
        await ws.aclose()


async def test_a_ping_between_fragments_is_answered(gw: Running) -> None:
    """Control frames may sit between fragments (section 5.4); the message still arrives."""
    ws = await RawSocket.open(gw.port)
    try:
        ws.send(TEXT, b'{"type": "pi', fin=False)
        ws.send(PING, b"hello")
        ws.send(CONT, b'ng", "id": "p1"}', fin=True)
        assert await ws.recv() == (PONG, b"hello")
        opcode, payload = await ws.recv()
        assert opcode == TEXT and b'"pong"' in payload and b'"p1"' in payload
        ws.send(CLOSE, struct.pack("!H", 1000))
        assert await ws.close_code() == 1000
    finally:
        await ws.aclose()


async def test_a_continuation_without_a_start_is_a_protocol_error(gw: Running) -> None:
    ws = await RawSocket.open(gw.port)
    try:
        ws.send(CONT, b"orphan", fin=True)
        assert await ws.close_code() == 1002
    finally:
        await ws.aclose()
