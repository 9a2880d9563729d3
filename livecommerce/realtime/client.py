"""Async Python client of the viewer protocol (docs/protocol.md), with reconnect and resume.

::

    async with Client("ws://127.0.0.1:8000/ws", "s1", token=token) as client:
        snapshot = client.snapshot
        reply = await client.reserve("d1", 1)
        async for message in client.messages():
            ...

``messages()`` yields every server message except command replies (``result``, ``error`` with a
request id, ``pong``): snapshots, ``resumed``, events, ``stock``, ``viewers``. When the connection
drops or the server closes with a code that says "reconnect", the client reconnects (round-robin
over the given URLs, with back-off), joins again with the last event id it saw, and re-sends the
commands still waiting for a reply with the same request ids (the server answers them
idempotently). It stops, raising :class:`ClientClosed`, on a close code that says not to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from livecommerce.core.errors import LivecommerceError, ProtocolError
from livecommerce.realtime.codec import Encoding, decode, encode
from livecommerce.realtime.protocol import RECONNECTABLE

EVENT_REPLY_TYPES = frozenset({"result", "pong", "chat_ack", "moderated"})


_FRESH = frozenset({"reserve", "buy_now"})
"""Commands sent ``"fresh": true`` the first time when their id is made here (an id never sent
before): on a closed drop the gateway may then answer them itself (docs/protocol.md, "Edge
refusals")."""


class ClientClosed(LivecommerceError):
    """The server closed the connection with a code that says not to reconnect."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


def is_event(message: dict[str, Any]) -> bool:
    """Durable show events carry an id, a server time and data."""
    return "id" in message and "ts" in message and "data" in message


class Client:
    def __init__(
        self,
        urls: str | Sequence[str],
        show: str,
        *,
        token: str | None = None,
        encoding: Encoding = Encoding.JSON,
        origin: str | None = None,
        reconnect: bool = True,
        max_backoff_s: float = 2.0,
        max_attempts: int = 50,
        last_event_id: str | None = None,
        open_timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.headers = dict(headers or {})
        """Extra handshake headers (the load tools' X-Forwarded-For, for instance)."""
        self.show = show
        self.token = token
        self.encoding = encoding
        self.origin = origin
        self.reconnect = reconnect
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self.open_timeout_s = open_timeout_s
        self.last_event_id = last_event_id
        self.snapshot: dict[str, Any] | None = None
        self.connections = 0
        self.resent = 0
        """Commands sent again, with their request ids, on a new connection."""
        self.close_codes: list[int | None] = []
        self.join_errors: list[dict[str, Any]] = []
        self.join_reply: dict[str, Any] | None = None
        """The ``snapshot`` or ``resumed`` that answered the first join."""
        self._url_cycle = itertools.cycle(range(len(self.urls)))
        self._ws: ClientConnection | None = None
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._pending: dict[str, tuple[dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"c{random.getrandbits(32):08x}"
        self._reader: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        """Connect and join; returns the first ``snapshot`` or ``resumed`` message."""
        await self._open()
        self._reader = asyncio.create_task(self._run(), name="client-reader")
        self.join_reply = await self._next_join_reply()
        return self.join_reply

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        for _, future in self._pending.values():
            if not future.done():
                future.cancel()

    async def _open(self) -> None:
        url = self.urls[next(self._url_cycle)]
        ws = await connect(
            url, subprotocols=[self.encoding.subprotocol],  # type: ignore[list-item]
            origin=self.origin, open_timeout=self.open_timeout_s,  # type: ignore[arg-type]
            max_size=None, compression=None, ping_interval=None,
            additional_headers=self.headers,
        )  # fmt: skip
        self._ws = ws
        self.connections += 1
        join: dict[str, Any] = {"type": "join", "show": self.show}
        if self.token:
            join["token"] = self.token
        if self.last_event_id:
            join["last_event_id"] = self.last_event_id
        await ws.send(encode(self.encoding, join))
        if self.connections > 1:
            self.resent += len(self._pending)
        for message, _ in self._pending.values():
            await ws.send(encode(self.encoding, message))

    async def _next_join_reply(self) -> dict[str, Any]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item.get("type") in ("snapshot", "resumed"):
                return item
            self.join_errors.append(item)  # e.g. auth_failed, before the close that follows

    # -- reading ------------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while True:
            assert self._ws is not None
            ws = self._ws
            try:
                async for frame in ws:
                    attempt = 0
                    self._dispatch(decode(self.encoding, frame))
                code, reason = ws.close_code, ws.close_reason or ""
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
            except ProtocolError as exc:
                await self._queue.put(exc)
                return
            self.close_codes.append(code)
            if self._closed:
                return
            if not self.reconnect or (code is not None and code < 4000 and code not in (1001,
                                      1006, 1011, 1012)) or (code is not None and code >= 4000
                                      and code not in RECONNECTABLE):  # fmt: skip
                await self._queue.put(ClientClosed(code, reason))
                return
            while True:
                attempt += 1
                if attempt > self.max_attempts:
                    await self._queue.put(ClientClosed(code, "gave up reconnecting"))
                    return
                delay = min(self.max_backoff_s, 0.05 * 2 ** min(attempt, 10))
                await asyncio.sleep(random.uniform(0, delay) if attempt > 1 else 0)
                try:
                    await self._open()
                    break
                except (OSError, InvalidHandshake, InvalidStatus, TimeoutError,
                        websockets.exceptions.WebSocketException):  # fmt: skip
                    continue

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "batch":  # several pushes in one frame, in order (docs/protocol.md)
            for item in message.get("messages") or ():
                if isinstance(item, dict):
                    self._dispatch(item)
            return
        if kind in EVENT_REPLY_TYPES or (kind == "error" and "id" in message):
            entry = self._pending.pop(str(message.get("id")), None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(message)
                return
        if kind == "snapshot":
            self.snapshot = message
            self.last_event_id = message.get("last_event_id") or self.last_event_id
        elif is_event(message):
            self.last_event_id = message["id"]
        self._queue.put_nowait(message)

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Every pushed message, across reconnects. Raises ClientClosed at the end."""
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def next_message(self, *, types: Sequence[str] | None = None,
                           within_s: float = 10.0) -> dict[str, Any]:  # fmt: skip
        """The next pushed message (of one of ``types``), skipping others."""
        async with asyncio.timeout(within_s):
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                if types is None or item.get("type") in types:
                    return item

    # -- commands -----------------------------------------------------------------------------
    def new_request_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def request(self, message: dict[str, Any], *, within_s: float = 10.0) -> dict[str, Any]:
        """Send a command with an ``id`` (added if missing); return its reply.

        A ``reserve``/``buy_now`` whose id is made here goes out ``"fresh": true`` (an id never
        sent before), and so does one whose message says ``"fresh": true``; a resend after a
        reconnect never does (it may be the retry of a success)."""
        message = dict(message)
        fresh = message.pop("fresh", None)
        made_here = "id" not in message
        rid = str(message.setdefault("id", self.new_request_id()))
        if fresh is None:
            fresh = made_here and message.get("type") in _FRESH
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (message, future)  # resent as is on reconnect: not fresh
        if self._ws is not None:
            first = {**message, "fresh": True} if fresh else message
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(encode(self.encoding, first))
        try:
            async with asyncio.timeout(within_s):
                return await future
        finally:
            if self._pending.get(rid, (None, None))[1] is future:
                del self._pending[rid]  # given up (or cancelled): not sent again on reconnect

    async def send_raw(self, payload: str | bytes) -> None:
        """Send a frame as is (tests of malformed input)."""
        assert self._ws is not None
        await self._ws.send(payload)

    async def reserve(self, drop: str, quantity: int, *, currency: str | None = None,
                      request_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        msg: dict[str, Any] = {"type": "reserve", "drop": drop, "quantity": quantity}
        return await self.request(_opt(msg, currency=currency, id=request_id))

    async def buy_now(self, drop: str, quantity: int, payment_reference: str, *,
                      currency: str | None = None, request_id: str | None = None,
                      ) -> dict[str, Any]:  # fmt: skip
        msg: dict[str, Any] = {"type": "buy_now", "drop": drop, "quantity": quantity,
                               "payment_reference": payment_reference}  # fmt: skip
        return await self.request(_opt(msg, currency=currency, id=request_id))

    async def confirm(self, hold: str, payment_reference: str, *,
                      request_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        msg = {"type": "confirm", "hold": hold, "payment_reference": payment_reference}
        return await self.request(_opt(msg, id=request_id))

    async def cancel(self, hold: str, *, request_id: str | None = None) -> dict[str, Any]:
        return await self.request(_opt({"type": "cancel", "hold": hold}, id=request_id))

    async def ping(self) -> dict[str, Any]:
        return await self.request({"type": "ping"})

    async def chat(self, text: str, *, question: bool = False,
                   request_id: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Post a chat message; returns ``chat_ack`` or the ``error`` refusing it."""
        msg: dict[str, Any] = {"type": "chat", "text": text, "question": question}
        return await self.request(_opt(msg, id=request_id))

    async def react(self, reaction: str, count: int = 1) -> None:
        """Send taps (no reply: they come back summed in ``reactions`` messages)."""
        assert self._ws is not None
        await self._ws.send(encode(self.encoding, {"type": "react", "reaction": reaction,
                                                   "count": count}))  # fmt: skip

    async def moderate(self, action: str, **fields: Any) -> dict[str, Any]:
        """A moderator's ``delete`` (message=...), ``mute`` (viewer=..., duration_s=...) or
        ``unmute`` (viewer=...); returns ``moderated`` or the ``error``."""
        return await self.request({"type": "moderate", "action": action, **fields})


def _opt(message: dict[str, Any], **optional: Any) -> dict[str, Any]:
    message.update({k: v for k, v in optional.items() if v is not None})
    return message
