from __future__ import annotations

import msgpack
import pytest
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode as WSOpcode

from livecommerce.core.errors import ProtocolError
from livecommerce.realtime.codec import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Encoding,
    Frame,
    decode,
    encode,
    negotiate,
    parse_event_id,
)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_encode_then_decode_gives_the_message_back(encoding: Encoding) -> None:
    msg = {"type": "reserve", "id": "r1", "quantity": 2, "data": {"prices": {"EUR": 1999}}}
    assert decode(encoding, encode(encoding, msg)) == msg


def test_negotiate_takes_the_first_known_subprotocol() -> None:
    assert negotiate([]) is Encoding.JSON
    assert negotiate(["x", SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON]) is Encoding.MSGPACK
    assert negotiate(["chat"]) is None


@pytest.mark.parametrize(
    ("encoding", "payload", "code"),
    [
        (Encoding.JSON, "{bad", "bad_frame"),
        (Encoding.JSON, "[1]", "bad_frame"),
        (Encoding.JSON, b"{}", "wrong_frame_type"),
        (Encoding.MSGPACK, "{}", "wrong_frame_type"),
        (Encoding.MSGPACK, b"\xc1", "bad_frame"),
        (Encoding.MSGPACK, msgpack.packb([1, 2]), "bad_frame"),
        (Encoding.MSGPACK, msgpack.packb({1: 2}), "bad_frame"),
    ],
)
def test_malformed_frames_raise_their_documented_code(
    encoding: Encoding, payload: str | bytes, code: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(encoding, payload)
    assert info.value.code == code


def test_frame_encodes_once_and_keeps_raw_json() -> None:
    frame = Frame({"type": "x", "n": 1}, json='{"type":"x","n":1}', event_id="5-0")
    assert frame.payload(Encoding.JSON) == '{"type":"x","n":1}'
    packed = frame.payload(Encoding.MSGPACK)
    assert frame.payload(Encoding.MSGPACK) is packed
    assert frame.asgi(Encoding.MSGPACK) == {"type": "websocket.send", "bytes": packed}
    assert parse_event_id("12-3") < parse_event_id("12-10") < parse_event_id("13-0")
    assert parse_event_id("garbage") == (0, 0)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.MSGPACK])
def test_wire_is_what_websockets_sends(size: int, encoding: Encoding) -> None:
    """The pre-built frame is byte for byte what ``websockets`` serializes for a server."""
    frame = Frame({"type": "x", "pad": "é" * (size // 2)})
    payload = frame.payload(encoding)
    data = payload.encode() if isinstance(payload, str) else payload
    opcode = WSOpcode.TEXT if encoding is Encoding.JSON else WSOpcode.BINARY
    expected = WSFrame(opcode, data).serialize(mask=False, extensions=[])
    assert frame.wire(encoding) == expected
    assert frame.wire(encoding) is frame.wire(encoding)  # built once
