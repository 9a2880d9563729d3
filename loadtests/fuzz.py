"""Fuzzing the viewer endpoint through real sockets: hypothesis strategies of hostile frames and a
driver that feeds them to a running server, in both encodings.

Frames: valid-looking messages with wrong types, well-formed commands, truncated and mutated
msgpack and JSON, deep nesting, numbers beyond any range, invalid UTF-8 in text frames, the wrong
frame type for the encoding, frames over the size limit. Each connection sends a batch, then a
ping with a fresh id and reads up to its pong (every frame before it was handled, in order); a
connection the server closed (1007 invalid UTF-8, 1009 too big, 4029 rate abuse) is opened again.
``tests/realtime/test_fuzz.py`` runs a short campaign in CI; ``scripts/fuzz.py`` the long one.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
import websocket
from hypothesis import strategies as st

from livecommerce.realtime.codec import Encoding

TYPES = ("join", "ping", "reserve", "confirm", "cancel", "buy_now")
FIELDS = ("type", "id", "show", "token", "last_event_id", "drop", "quantity", "hold",
          "payment_reference", "currency")  # fmt: skip
KILLERS = frozenset({"invalid_utf8", "oversize"})
"""Frames after which the server closes the connection (1007, 1009)."""
HUGE = ("1e400", "-1e400", "9" * 400, "1" * 5000, "18446744073709551616", "1e-400")


def _scalars(binary: bool) -> st.SearchStrategy[Any]:
    parts: list[st.SearchStrategy[Any]] = [
        st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=70),
        st.sampled_from(["d1", "s1", "d1.1", "EUR", "eur", "r1", "", " ", "0-0", "1-1"]),
    ]  # fmt: skip
    if binary:
        parts.append(st.binary(max_size=40))
    return st.one_of(parts)


def values(binary: bool) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars(binary),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )


def messages(binary: bool) -> st.SearchStrategy[dict[Any, Any]]:
    """Maps that look like protocol messages: a known or odd ``type``, fields of any type."""
    kinds = st.sampled_from(TYPES) | values(binary)
    keys = st.sampled_from(FIELDS) | st.text(max_size=10)
    return st.builds(
        lambda kind, rest, drop_type: {**rest, **({} if drop_type else {"type": kind})},
        kinds, st.dictionaries(keys, values(binary), max_size=8), st.booleans(),
    )  # fmt: skip


def commands() -> st.SearchStrategy[dict[str, Any]]:
    """Well-formed commands on the test drop: the store may change, only as they say."""
    rid = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
    reserve = st.fixed_dictionaries({
        "type": st.sampled_from(["reserve", "buy_now"]), "id": rid, "drop": st.just("d1"),
        "quantity": st.integers(-2, 4), "payment_reference": st.text(max_size=10),
    })  # fmt: skip
    hold = st.fixed_dictionaries({
        "type": st.sampled_from(["confirm", "cancel"]), "id": rid,
        "hold": st.from_regex(r"d1\.[0-9]{1,3}", fullmatch=True), "payment_reference": st.just("p"),
    })  # fmt: skip
    return reserve | hold


@dataclass(frozen=True)
class Frame:
    """One frame to send: ``opcode`` 1 (text) or 2 (binary) and its bytes, as is."""

    opcode: int
    data: bytes
    kind: str


TEXT, BINARY = websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY


def _encoded(encoding: Encoding, message: Any) -> bytes:
    if encoding is Encoding.JSON:
        return orjson.dumps(message, default=lambda v: v.hex() if isinstance(v, bytes) else None,
                            option=orjson.OPT_NON_STR_KEYS)  # fmt: skip
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def frames(encoding: Encoding) -> st.SearchStrategy[Frame]:
    """Every kind of hostile frame for a connection speaking ``encoding``."""
    native = TEXT if encoding is Encoding.JSON else BINARY
    wrong = BINARY if native == TEXT else TEXT
    binary = encoding is Encoding.MSGPACK

    def msg(m: Any) -> Frame:
        return Frame(native, _encoded(encoding, m), "message")

    def truncated(m: Any, cut: float) -> Frame:
        data = _encoded(encoding, m)
        data = data[: max(0, int(len(data) * cut) - 1)]
        return Frame(native, data if binary else data.decode(errors="ignore").encode(), "truncated")

    def mutated(m: Any, flips: list[tuple[float, int]]) -> Frame:
        data = bytearray(_encoded(encoding, m))
        for where, byte in flips:
            if data:
                data[int(where * (len(data) - 1))] = byte
        raw = bytes(data)
        if not binary:  # invalid UTF-8 ends the connection: that is the killers' job
            raw = raw.decode(errors="replace").encode()
        return Frame(native, raw, "mutated")

    def deep(depth: int, as_map: bool) -> Frame:
        if binary:
            head = b"\x81\xa1a" if as_map else b"\x91"
            return Frame(BINARY, head * depth + b"\xc0", "deep")
        opening, closing = ('{"a":', "}") if as_map else ("[", "]")
        return Frame(TEXT, (opening * depth + "0" + closing * depth).encode(), "deep")

    def huge(number: str, name: str) -> Frame:
        text = f'{{"type": "reserve", "id": "h1", "drop": "d1", "{name}": {number}}}'
        if binary:  # msgpack cannot carry such numbers: the biggest it can, in every field
            return msg({"type": "reserve", "id": 2**64 - 1, "drop": "d1", name: -(2**63)})
        return Frame(TEXT, text.encode(), "huge")

    def invalid_utf8(prefix: bytes) -> Frame:
        return Frame(TEXT, prefix + b"\xc3\x28\xff", "invalid_utf8")

    def wrong_type(m: Any) -> Frame:
        return Frame(wrong, _encoded(encoding, m), "wrong_frame_type")

    unit = st.floats(min_value=0, max_value=1)
    # Frames that end the connection (1007, 1009) are one in twenty: the rest reach the session.
    killers = st.one_of(
        st.builds(invalid_utf8, st.binary(max_size=10).filter(lambda b: b.isascii())),
        st.just(Frame(native, b"[" * 20_000, "oversize")),
    )
    common = _common(msg, truncated, mutated, deep, huge, wrong_type, binary, unit)
    return st.integers(0, 19).flatmap(lambda n: killers if n == 0 else common)


def _common(msg: Callable[[Any], Frame], truncated: Callable[..., Frame],
            mutated: Callable[..., Frame], deep: Callable[..., Frame], huge: Callable[..., Frame],
            wrong_type: Callable[[Any], Frame], binary: bool,
            unit: st.SearchStrategy[float]) -> st.SearchStrategy[Frame]:  # fmt: skip
    maps, valid = messages(binary), commands()
    return st.one_of(
        maps.map(msg),
        valid.map(msg),
        st.builds(truncated, maps, unit),
        st.builds(mutated, maps | valid,
                  st.lists(st.tuples(unit, st.integers(0, 255)), min_size=1, max_size=4)),
        st.builds(deep, st.integers(1, 3000), st.booleans()),
        st.builds(huge, st.sampled_from(HUGE), st.sampled_from(["quantity", "id", "drop"])),
        maps.map(wrong_type),
        st.binary(max_size=60).map(lambda b: Frame(BINARY, b, "random") if binary else Frame(
            TEXT, b.decode(errors="replace").encode(), "random")),
    )  # fmt: skip


# -- the driver -----------------------------------------------------------------------------------
@dataclass
class Tally:
    frames: int = 0
    """Frames written to a socket."""
    confirmed: int = 0
    """Frames the server provably handled (see :meth:`FuzzConnection.send_batch`)."""
    reconnects: int = 0
    replies: collections.Counter[str] = field(default_factory=collections.Counter)
    closes: collections.Counter[int] = field(default_factory=collections.Counter)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    """Results with ``ok``: the only commands allowed to have changed the store."""

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "confirmed": self.confirmed,
                "reconnects": self.reconnects,
                "replies": dict(self.replies), "closes": {str(k): v for k, v in
                self.closes.items()}, "accepted_commands": len(self.accepted)}  # fmt: skip


class FuzzConnection:
    """One viewer connection that sends what it is given and survives being closed."""

    def __init__(self, url: str, encoding: Encoding, *, join: dict[str, Any] | None,
                 tally: Tally) -> None:  # fmt: skip
        self.url = url
        self.encoding = encoding
        self.join = join
        self.tally = tally
        self.ws: websocket.WebSocket | None = None
        self._pings = 0

    def _open(self) -> websocket.WebSocket:
        ws = websocket.create_connection(self.url, timeout=30, subprotocols=[
            self.encoding.subprotocol], skip_utf8_validation=True)  # fmt: skip
        if self.join is not None:
            ws.send(_encoded(self.encoding, self.join),
                    opcode=TEXT if self.encoding is Encoding.JSON else BINARY)  # fmt: skip
            reply = self._decode(ws.recv())
            if reply.get("type") != "snapshot":
                raise RuntimeError(f"join refused: {reply}")
        return ws

    def _decode(self, data: str | bytes) -> dict[str, Any]:
        if self.encoding is Encoding.JSON:
            value = json.loads(data)
        else:
            value = msgpack.unpackb(data, raw=False)
        assert isinstance(value, dict), value
        return value

    def send_batch(self, batch: list[Frame]) -> None:
        """Send every frame, then ping and read to the pong; reopen after a close.

        ``tally.confirmed`` counts the frames the server provably handled: the whole batch when
        the pong came back (frames are handled in order), or when the server closed with 1007 or
        1009 and the frame that does that was the batch's last."""
        if self.ws is None:
            self.ws = self._open()
        ws = self.ws
        code: int | None = None
        try:
            for frame in batch:
                ws.send(frame.data, opcode=frame.opcode)
                self.tally.frames += 1
            self._pings += 1
            ping = {"type": "ping", "id": f"fuzz-{self._pings}"}
            ws.send(_encoded(self.encoding, ping),
                    opcode=TEXT if self.encoding is Encoding.JSON else BINARY)  # fmt: skip
            self._read_until(ping["id"])
            self.tally.confirmed += len(batch)
            return
        except ClosedByServer as exc:
            code = exc.code
        except (websocket.WebSocketException, ConnectionError):
            code = self._close_code()  # the close frame may still wait in the receive buffer
        if code in (1007, 1009) and batch and batch[-1].kind in KILLERS:
            self.tally.confirmed += len(batch)
        self._reopen()

    def _close_code(self) -> int | None:
        try:
            self._read_until("")
        except ClosedByServer as exc:
            return exc.code
        except (websocket.WebSocketException, ConnectionError, OSError, ValueError):
            return None
        return None

    def _read_until(self, ping_id: str) -> None:
        assert self.ws is not None
        while True:
            opcode, data = self.ws.recv_data(control_frame=False)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                self.tally.closes[code] += 1
                raise ClosedByServer(code)
            message = self._decode(data)
            kind = str(message.get("type"))
            self.tally.replies[str(message.get("code", kind))] += 1
            if kind == "result" and message.get("ok"):
                self.tally.accepted.append(message)
            if kind == "pong" and message.get("id") == ping_id:
                return

    def _reopen(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):  # the server may have closed already
                self.ws.close(timeout=1)
            self.ws.shutdown()  # the socket, whatever close() managed
        self.tally.reconnects += 1
        self.ws = self._open()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None


class ClosedByServer(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"closed {code}")
        self.code = code


def mutants(batch: list[Frame], rng: random.Random, copies: int) -> list[Frame]:
    """``copies`` cheap mutants of every frame (bytes flipped, cut short, doubled), seeded."""
    out: list[Frame] = []
    for frame in batch:
        for _ in range(copies):
            data = bytearray(frame.data)
            how = rng.randrange(3)
            if how == 0 and data:
                for _ in range(rng.randint(1, 3)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            elif how == 1:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data += data[: rng.randrange(len(data) + 1)]
            raw = bytes(data)
            if frame.opcode == TEXT and frame.kind != "invalid_utf8":
                raw = raw.decode(errors="replace").encode()
            if len(raw) > 16_000 and frame.kind != "oversize":
                raw = raw[:16_000]
            out.append(Frame(frame.opcode, raw, frame.kind if frame.kind in KILLERS else "mutant"))
    return out


def batches(encoding: Encoding, *, min_size: int = 1,
            max_size: int = 40) -> st.SearchStrategy[list[Frame]]:  # fmt: skip
    return st.lists(frames(encoding), min_size=min_size, max_size=max_size)
