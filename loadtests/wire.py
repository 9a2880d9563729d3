"""A lean viewer connection for the spike's load generator: RFC 6455 framing on an asyncio
protocol, pushes handed to a callback as they are read.

Why not the project's :class:`livecommerce.realtime.client.Client`: on a machine that runs the
server and its load generator on the same cores, the viewer processes spent two thirds of the
CPU of a burst (``burst_cpu`` in the spike report), mostly in the client's machinery rather
than in the protocol: a task per ``wait_for``, the websockets connection's assembler and
queues, a task wake-up for every pushed message. The spike then measured its own load
generator. This connection does what a viewer of the spike needs and no more:

* the opening handshake (``Sec-WebSocket-Accept`` checked, the encoding's subprotocol
  offered, extra headers for the bot mode), then ``join``; :meth:`connect` returns the first
  ``snapshot`` or ``resumed``;
* server frames parsed in ``data_received`` (text, binary, ping answered, close answered,
  fragments joined); every message is stamped with its arrival time (``_rx_ms``) and either
  completes the command waiting for its ``id`` or goes to :attr:`on_push`, in order, in the
  same call -- no queue, no task;
* client frames masked with a fresh random key (``websockets``' C ``apply_mask``), as the
  RFC asks;
* :meth:`request` sends a command and waits for its reply, bounded by a timer on the future
  (no extra task); :meth:`closed` resolves with the close code.

It does not reconnect: a connection that ends is an error of the run (the chaos mode, which
kills servers on purpose, keeps the project's client with its reconnect and resume).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import random
import struct
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

from livecommerce.realtime.codec import Encoding, decode, encode

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REPLY_TYPES = frozenset({"result", "pong", "chat_ack", "moderated"})
MAX_HANDSHAKE_BYTES = 16_384

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WireClosed(Exception):
    """The connection ended (``code`` None: no close frame, the socket just went)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class HandshakeRefused(Exception):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"handshake refused: HTTP {status}")
        self.status = status


def now_ms() -> float:
    return time.time() * 1000.0


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


def accept_of(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: WireClient) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.fragment_op = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HANDSHAKE_BYTES and not self.handshake.done():
                    self.handshake.set_exception(HandshakeRefused(0))
                return
            head = bytes(self.buffer[: end + 4])
            del self.buffer[: end + 4]
            self.upgraded = True
            if not self.handshake.done():
                self.handshake.set_result(head)
        self._frames()

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                at = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                at = 10
            if b1 & 0x80:  # a server must not mask; tolerated all the same
                if len(buf) < at + 4 + n:
                    return
                mask = bytes(buf[at : at + 4])
                payload = apply_mask(bytes(buf[at + 4 : at + 4 + n]), mask)
                at += 4
            else:
                if len(buf) < at + n:
                    return
                payload = bytes(buf[at : at + n])
            del buf[: at + n]
            self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_PING:
            self.write(client_frame(OP_PONG, payload))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            reason = payload[2:].decode("utf-8", "replace")
            self.write(client_frame(OP_CLOSE, payload[:2]))
            self.buffer.clear()  # nothing after a close frame is read (RFC 6455 5.5.1)
            self.owner._ended(code, reason)
            if self.transport is not None:
                self.transport.close()
            return
        if opcode == OP_CONT:
            self.fragments.append(payload)
            if not fin:
                return
            opcode, payload = self.fragment_op, b"".join(self.fragments)
            self.fragments = []
        elif not fin:
            self.fragment_op, self.fragments = opcode, [payload]
            return
        self.owner._message(payload)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        self.owner._ended(None, "connection lost")


class WireClient:
    """One viewer's connection (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        show: str,
        *,
        token: str | None = None,
        encoding: Encoding = Encoding.JSON,
        open_timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.show = show
        self.token = token
        self.encoding = encoding
        self.open_timeout_s = open_timeout_s
        self.headers = dict(headers or {})
        self._on_push: Callable[[dict[str, Any]], None] | None = None
        self._early: list[dict[str, Any]] = []
        """Pushes read before :attr:`on_push` was set (given to it then, in order)."""
        self.snapshot: dict[str, Any] | None = None
        self.connections = 0
        self.resent = 0
        """Always 0: nothing is sent again (no reconnect); kept for the spike's counters."""
        self.close_codes: list[int | None] = []
        self._proto: _Protocol | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"w{random.getrandbits(32):08x}"
        self._first: asyncio.Future[dict[str, Any]] | None = None
        self._closed: asyncio.Future[int | None] | None = None
        self._binary = encoding.binary

    @property
    def on_push(self) -> Callable[[dict[str, Any]], None] | None:
        """Called with every pushed message (not command replies), in order, as it is read;
        those read before it is set are handed to it when it is."""
        return self._on_push

    @on_push.setter
    def on_push(self, handler: Callable[[dict[str, Any]], None] | None) -> None:
        self._on_push = handler
        early, self._early = self._early, []
        if handler is not None:
            for message in early:
                handler(message)

    # -- lifecycle ----------------------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        """Open, upgrade and join; the first ``snapshot`` or ``resumed``. Raises
        :class:`HandshakeRefused`, :class:`WireClosed` (closed before the join was answered,
        e.g. 4004 unknown show), ``OSError`` or ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._closed = loop.create_future()
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        if parts.scheme == "wss":
            raise ValueError("the lean client speaks ws:// only (use --client product for wss)")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {self.encoding.subprotocol}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]  # fmt: skip
        try:
            async with asyncio.timeout(self.open_timeout_s):
                first = await self._open(loop, host, port, key, lines)
        except BaseException:
            if self._proto is not None and self._proto.transport is not None:
                self._proto.transport.close()
            raise
        self.snapshot = first if first.get("type") == "snapshot" else None
        return first

    async def _open(self, loop: asyncio.AbstractEventLoop, host: str, port: int, key: str,
                    lines: list[str]) -> dict[str, Any]:  # fmt: skip
        assert self._first is not None
        _, proto = await loop.create_connection(lambda: _Protocol(self), host, port)
        self._proto = proto
        assert proto.transport is not None
        proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await proto.handshake
        status, accept = _response(head)
        if status != 101 or accept != accept_of(key):
            raise HandshakeRefused(status)  # the caller closes the transport
        self.connections += 1
        join: dict[str, Any] = {"type": "join", "show": self.show}
        if self.token:
            join["token"] = self.token
        self._send(join)
        return await self._first

    async def close(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.write(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            proto.transport.close()
        self._ended(1000, "closed by the client", mine=True)

    async def closed(self) -> int | None:
        """Wait until the connection ends; its close code (None: no close frame)."""
        assert self._closed is not None
        return await asyncio.shield(self._closed)

    # -- commands -----------------------------------------------------------------------------
    def new_request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def request(self, message: dict[str, Any], *, within_s: float = 10.0) -> dict[str, Any]:
        """Send a command (an ``id`` is added if missing); its reply, or ``TimeoutError`` after
        ``within_s``, or :class:`WireClosed` if the connection ends first."""
        rid = str(message.setdefault("id", self.new_request_id()))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        if self._closed is not None and self._closed.done():
            raise WireClosed(self._closed.result(), "connection closed")
        self._pending[rid] = future
        timer = loop.call_later(within_s, _expire, future)
        self._send(message)
        try:
            return await future
        finally:
            timer.cancel()
            if self._pending.get(rid) is future:
                del self._pending[rid]

    async def buy_now(self, drop: str, quantity: int, payment_reference: str, *,
                      request_id: str | None = None, within_s: float = 10.0,
                      ) -> dict[str, Any]:  # fmt: skip
        msg: dict[str, Any] = {"type": "buy_now", "drop": drop, "quantity": quantity,
                               "payment_reference": payment_reference}  # fmt: skip
        if request_id is not None:
            msg["id"] = request_id
        return await self.request(msg, within_s=within_s)

    async def ping(self) -> dict[str, Any]:
        return await self.request({"type": "ping"})

    # -- internals ----------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        assert self._proto is not None
        payload = encode(self.encoding, message)
        data = payload if isinstance(payload, bytes) else payload.encode()
        self._proto.write(client_frame(OP_BINARY if self._binary else OP_TEXT, data))

    def _message(self, payload: bytes) -> None:
        message = decode(self.encoding, payload if self._binary else payload.decode())
        message["_rx_ms"] = now_ms()
        self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "batch":  # several pushes in one frame, in order (docs/protocol.md)
            stamp = message["_rx_ms"]
            for item in message.get("messages") or ():
                if isinstance(item, dict):
                    item["_rx_ms"] = stamp
                    self._dispatch(item)
            return
        if kind in REPLY_TYPES or (kind == "error" and "id" in message):
            future = self._pending.pop(str(message.get("id")), None)
            if future is not None and not future.done():
                future.set_result(message)
                return
        first = self._first
        if first is not None and not first.done():
            if kind in ("snapshot", "resumed"):
                first.set_result(message)
            return  # anything before the join's answer (an error before a close) is dropped
        if self._on_push is not None:
            self._on_push(message)
        else:
            self._early.append(message)

    def _ended(self, code: int | None, reason: str, *, mine: bool = False) -> None:
        closed = self._closed
        if closed is None or closed.done():
            return
        if not mine:
            self.close_codes.append(code)
        closed.set_result(code)
        error = WireClosed(code, reason)
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _response(head: bytes) -> tuple[int, str]:
    """Status and ``Sec-WebSocket-Accept`` of the handshake's response head."""
    lines = head.decode("latin-1").split("\r\n")
    status = 0
    with contextlib.suppress(IndexError, ValueError):
        status = int(lines[0].split(" ", 2)[1])
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-accept":
            accept = value.strip()
    return status, accept
