"""Wire encodings of the viewer protocol: JSON (text frames) and msgpack (binary frames).

Both carry the same messages (maps with a ``type``). The encoding of a connection is chosen at the
handshake by WebSocket subprotocol (RFC 6455 section 1.9). :class:`Frame` is one message encoded
once per encoding, so a broadcast encodes each event once per encoding, never once per viewer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import msgpack
import orjson

from livecommerce.core.errors import ProtocolError

SUBPROTOCOL_JSON = "livecommerce.v1.json"
SUBPROTOCOL_MSGPACK = "livecommerce.v1.msgpack"


class Encoding(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"

    @property
    def subprotocol(self) -> str:
        return SUBPROTOCOL_JSON if self is Encoding.JSON else SUBPROTOCOL_MSGPACK

    @property
    def binary(self) -> bool:
        return self is Encoding.MSGPACK


BY_SUBPROTOCOL = {SUBPROTOCOL_JSON: Encoding.JSON, SUBPROTOCOL_MSGPACK: Encoding.MSGPACK}


def negotiate(offered: Iterable[str]) -> Encoding | None:
    """The first offered subprotocol we speak; JSON when none at all was offered; else None."""
    offered = list(offered)
    if not offered:
        return Encoding.JSON
    for name in offered:
        if name in BY_SUBPROTOCOL:
            return BY_SUBPROTOCOL[name]
    return None


def encode(encoding: Encoding, message: Mapping[str, Any]) -> str | bytes:
    """One message as a frame payload: ``str`` (text frame) for JSON, ``bytes`` for msgpack."""
    if encoding is Encoding.JSON:
        return orjson.dumps(message).decode()
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(encoding: Encoding, payload: str | bytes) -> dict[str, Any]:
    """A received frame as a message map. Raises ProtocolError and never anything else."""
    if encoding is Encoding.JSON:
        if not isinstance(payload, str):
            raise ProtocolError("wrong_frame_type", "binary frame on the JSON protocol")
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            if not str(exc).startswith(_OUT_OF_RANGE):
                raise ProtocolError("bad_frame", f"invalid JSON: {exc}") from exc
            value = _loads_out_of_range(payload, exc)
    else:
        if not isinstance(payload, bytes):
            raise ProtocolError("wrong_frame_type", "text frame on the msgpack protocol")
        try:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as exc:  # fmt: skip
            raise ProtocolError("bad_frame", f"invalid msgpack: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError("bad_frame", "a message must be a map")
    return value


# orjson refuses a number beyond a double's range (1e400, a 400-digit integer) as invalid JSON,
# yet it is valid JSON (RFC 8259 section 6): the message is well-formed, one field is wrong.
_OUT_OF_RANGE = "number is infinity when parsed as double"
_MAX_INT_DIGITS = 40


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads_out_of_range(payload: str, first: orjson.JSONDecodeError) -> Any:
    """Parse again, numbers out of range kept as ``inf`` so that the field check names them.

    Rare (orjson failed on that number), so the slower standard parser costs nothing overall;
    long integers become floats so Python never converts thousands of digits."""
    try:
        return json.loads(
            payload,
            parse_int=lambda s: int(s) if len(s) <= _MAX_INT_DIGITS else float(s),
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_frame", f"invalid JSON: {first}") from exc


class Frame:
    """One message, encoded lazily at most once per encoding and shared by every viewer.

    ``json`` may be given pre-encoded (the event as Redis published it) so it is never re-encoded.
    """

    __slots__ = ("_json", "_key", "_msgpack", "_wire_binary", "_wire_text", "event_id", "message")

    def __init__(self, message: Mapping[str, Any], *, json: str | None = None,
                 event_id: str | None = None) -> None:  # fmt: skip
        self.message = message
        self.event_id = event_id
        """Id of a durable event (from the show's log); None for everything else."""
        self._key: tuple[int, int] | None = None
        self._json = json
        self._msgpack: bytes | None = None
        self._wire_text: bytes | None = None
        self._wire_binary: bytes | None = None

    def key(self) -> tuple[int, int]:
        """``event_id`` as a comparable pair, parsed once for every viewer; (0, 0) for none."""
        if self._key is None:
            self._key = parse_event_id(self.event_id) if self.event_id is not None else (0, 0)
        return self._key

    def after(self, floor: tuple[int, int]) -> Frame | None:
        """This frame, or None when it is a durable event at or before ``floor``."""
        if self.event_id is not None and self.key() <= floor:
            return None
        return self

    def payload(self, encoding: Encoding) -> str | bytes:
        if encoding is Encoding.JSON:
            if self._json is None:
                self._json = orjson.dumps(self.message).decode()
            return self._json
        if self._msgpack is None:
            self._msgpack = msgpack.packb(self.message, use_bin_type=True)
        return self._msgpack

    def asgi(self, encoding: Encoding) -> dict[str, Any]:
        """The ASGI ``websocket.send`` event for this frame (built per call; cheap)."""
        data = self.payload(encoding)
        if isinstance(data, str):
            return {"type": "websocket.send", "text": data}
        return {"type": "websocket.send", "bytes": data}

    def size(self, encoding: Encoding) -> int:
        return len(self.payload(encoding))

    def wire(self, encoding: Encoding) -> bytes:
        """The whole server-to-client WebSocket frame (built once per encoding, then shared).

        Valid only on a connection without extensions (no permessage-deflate): what
        ``websockets`` would serialize for ``send_text`` / ``send_binary`` there.
        """
        if encoding is Encoding.JSON:
            if self._wire_text is None:
                text = self.payload(encoding)
                assert isinstance(text, str)
                self._wire_text = server_frame(OPCODE_TEXT, text.encode())
            return self._wire_text
        if self._wire_binary is None:
            data = self.payload(encoding)
            assert isinstance(data, bytes)
            self._wire_binary = server_frame(OPCODE_BINARY, data)
        return self._wire_binary


OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame as a server sends it (RFC 6455 section 5.2)."""
    first = 0x80 | opcode  # FIN, no RSV bits: no extension is in use
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def parse_event_id(event_id: str) -> tuple[int, int]:
    """A Redis stream id ``"<ms>-<seq>"`` as a comparable pair; (0, 0) when malformed."""
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
