"""Frames the WebSocket layer refuses (invalid UTF-8 in text, RFC 6455 section 8.1): the state
machine fed bytes, then a real gateway process, its log read as the operator would."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers.gateway import drop, serve, settings
from helpers.procs import Proc
from helpers.raw_ws import BINARY, CLOSE, CONT, PING, TEXT, RawSocket, client_frame
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

from livecommerce.realtime.client import Client
from livecommerce.realtime.wsprotocol import ConformingServerProtocol
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

# Each: the frames of one bad connection (opcode, payload, fin).
BAD_TEXT = {
    "invalid start byte": [(TEXT, b'{"type": "ping", "id": "\xff"}', True)],
    "surrogate": [(TEXT, b"\xed\xa0\x80", True)],
    "bad continuation fragment": [(TEXT, b'{"type": "pi', False), (CONT, b'ng\xc3\x28"}', True)],
    "character cut at the end": [(TEXT, b'{"a": "\xc3', False), (CONT, b"", True)],
}


def fed(*frames: tuple[int, bytes, bool]) -> ConformingServerProtocol:
    conn = ConformingServerProtocol(state=OPEN, max_size=1 << 16)
    conn.receive_data(b"".join(client_frame(op, data, fin=fin) for op, data, fin in frames))
    return conn


def data_frames(conn: ConformingServerProtocol) -> list[Frame]:
    return [e for e in conn.events_received() if isinstance(e, Frame)]


@pytest.mark.parametrize("frames", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_text_that_is_not_utf8_fails_the_connection_with_1007(
    frames: list[tuple[int, bytes, bool]],
) -> None:
    conn = fed(*frames)
    assert isinstance(conn.parser_exc, UnicodeDecodeError)
    assert conn.close_sent is not None and conn.close_sent.code == 1007
    sent = b"".join(conn.data_to_send())
    assert sent[0] == 0x80 | CLOSE and struct.unpack("!H", sent[2:4]) == (1007,)


def test_the_first_bad_fragment_fails_before_the_message_ends() -> None:
    conn = fed((TEXT, b"ok", False), (CONT, b"\xff", False))
    assert conn.close_sent is not None and conn.close_sent.code == 1007


def test_a_character_split_between_fragments_is_valid() -> None:
    conn = fed((TEXT, b'{"a": "caf\xc3', False), (PING, b"", True), (CONT, b'\xa9"}', True))
    assert conn.parser_exc is None
    frames = [f for f in data_frames(conn) if f.opcode is not Opcode.PING]
    assert b"".join(f.data for f in frames).decode() == '{"a": "café"}'
    assert fed((TEXT, "ü".encode(), True)).parser_exc is None


def test_binary_payloads_and_text_after_our_close_are_not_checked() -> None:
    assert fed((BINARY, b"\xff\xfe", True)).parser_exc is None
    conn = ConformingServerProtocol(state=OPEN)
    conn.send_close(1000)  # uvicorn discards what arrives after its close, unread
    conn.receive_data(client_frame(TEXT, b"\xff"))
    assert conn.parser_exc is None


# -- a real gateway process -----------------------------------------------------------------------
@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one")
    await inventory.start_show("s1")
    await inventory.create_drop("s1", drop("d1", quantity=100, limit=100))
    yield inventory


async def joined_raw(port: int) -> RawSocket:
    ws = await RawSocket.open(port)
    ws.send(TEXT, b'{"type": "join", "show": "s1"}')
    while b'"snapshot"' not in (await ws.recv())[1]:
        pass
    return ws


@pytest.mark.slow
async def test_invalid_utf8_closes_1007_with_one_quiet_line_and_no_neighbour_hurt(
    redis_url: str, keyspace: Keyspace, inv: Inventory, tmp_path: Path
) -> None:
    proc = Proc(redis_url, keyspace.prefix, tmp_path / "gateway.log")
    bad: list[str] = []  # "address:port " of each bad connection, as the log names it
    try:
        await proc.wait_ready()
        async with Client(proc.url, "s1", reconnect=False) as watcher:
            for i, frames in enumerate([*BAD_TEXT.values(), *BAD_TEXT.values()]):
                ws = await (joined_raw(proc.port) if i % 2 else RawSocket.open(proc.port))
                bad.append(f"127.0.0.1:{ws.writer.get_extra_info('sockname')[1]} ")
                try:
                    for opcode, payload, fin in frames:
                        ws.send(opcode, payload, fin=fin)
                    assert await ws.close_code() == 1007
                finally:
                    await ws.aclose()
            await inv.restock("s1", "d1", 3)  # the watcher still gets the show's events
            assert (await watcher.next_message(types=["restocked"]))["data"]["added"] == 3
            assert (await watcher.ping())["type"] == "pong"
            orphan = await RawSocket.open(proc.port)  # another malformed frame: the same one line
            orphan.send(CONT, b"orphan")
            assert await orphan.close_code() == 1002
            await orphan.aclose()
            assert watcher.connections == 1
    finally:
        proc.stop()
    text = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in text and "Invalid UTF-8" not in text, text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [r for r in records if r["level"] not in ("debug", "info")] == [], text
    for client in bad:  # besides uvicorn's "[accepted]": one line, short, at info
        [line] = [r for r in records if client in r["msg"] and "[accepted]" not in r["msg"]]
        assert (line["level"], line["logger"]) == ("info", "livecommerce.gateway"), line
        assert " failed 1007: " in line["msg"] and "\n" not in line["msg"] and "exc" not in line
    assert len([r for r in records if "failed 1002: unexpected continuation" in r["msg"]]) == 1


async def test_an_unexpected_parser_error_is_still_an_error_with_its_traceback(
    redis_url: str, keyspace: Keyspace, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def broken(self: ConformingServerProtocol, frame: Frame) -> None:
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr(ConformingServerProtocol, "_check_text", broken)
    caplog.set_level(logging.INFO)
    async with serve(settings(), redis_url, keyspace) as gw:
        ws = await RawSocket.open(gw.port)
        try:
            ws.send(TEXT, b'{"type": "ping", "id": "p1"}')
            assert await ws.close_code() == 1011
        finally:
            await ws.aclose()
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage() == "parser failed" and error.exc_info is not None
    assert not [r for r in caplog.records if r.name == "livecommerce.gateway"]  # no quiet line
