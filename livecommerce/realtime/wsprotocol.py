"""The WebSocket server protocol under uvicorn: uvicorn's websockets-sansio implementation with
two conformance fixes to the ``websockets`` state machine, and one quiet line per failed
connection.

A close frame inside a fragmented message. RFC 6455 section 5.4 lets control frames arrive
between the fragments of a message, and section 5.5.1 says a close frame ends the conversation:
whatever follows it is ignored, and the endpoint answers with a close frame, typically echoing
the code. ``websockets`` instead fails the connection with 1002 (protocol error, "incomplete
fragmented message") when the close arrives while a fragmented message is unfinished (Autobahn
case 7.1.5 expects the 1000 echoed). Here the unfinished message is dropped and the close
handled as any other: the viewer's session never saw the partial message, so nothing is lost.

Invalid UTF-8 in a text message. Section 8.1: an endpoint that finds a text message is not UTF-8
MUST fail the connection, with 1007 (section 7.4.1). The sans-I/O ``websockets`` protocol leaves
text payloads to its caller, and uvicorn decodes them itself and logs every bad one at error
level with a full traceback ("Invalid UTF-8 sequence received from client.") before closing
with 1007: one hostile client could fill the log. Here the state machine checks each text
fragment as it arrives (an incremental decoder: a character may straddle two fragments) and a
bad one fails the connection inside the parser, as every other malformed frame does, so uvicorn
never meets undecodable text.

Memory per connection. uvicorn's protocol object lives as long as the viewer, and most viewers
are idle: what it holds for nothing is cut. Its receive queue (an ``asyncio.Queue``: four deques,
~3 KB) is an :class:`Inbox` with the same ``put_nowait``/``get``/``empty``; its "transport
writable" flag (an ``asyncio.Event`` and its deque) is a :class:`Writable`; the handshake's
request and response (parsed headers, ~3 KB), which it keeps but never reads again, are dropped
once the handshake is answered (the request's headers once the scope has them).

A connection failed for the client's fault (a malformed frame, invalid UTF-8, a frame over the
size limit) is logged as one INFO line on ``livecommerce.gateway`` with the close code and
reason. An unexpected error in the parser stays what ``websockets`` makes of it: an error with
its traceback, closed with 1011.

A message answered where it arrives. The app may set :attr:`WebSocketProtocol.on_message` on a
connection: a complete message that arrives while nothing waits in the inbox is handed to it
inside ``data_received``, before any ASGI event is made. It returns None when it has answered
the message itself (no event, no wake-up of the app's task, no pause of reading), or the event
to queue in the message's place. The gateway answers the buy attempts its edge view refuses this
way (docs/burst.md, "Answered where it arrives"); everything else goes on to its task in order.

Pass :data:`WS_PROTOCOL` as uvicorn's ``ws`` setting (``runner.uvicorn_config`` does).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from uvicorn.protocols.utils import get_client_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

log = logging.getLogger("livecommerce.gateway")

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

_NO_HEADERS = Headers()
"""In place of a handshake request's headers once they are read (never written to)."""

CLIENT_FAULTS = (ProtocolError, UnicodeDecodeError, PayloadTooBig)
"""What the parser fails a connection with when the client sent something wrong."""


class ConformingServerProtocol(ServerProtocol):
    """``websockets``' server protocol; a close frame inside a fragmented message closes cleanly,
    and a text message that is not UTF-8 fails the connection with 1007."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._text: codecs.IncrementalDecoder | None = None  # of the fragmented text message

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is abandoned with the connection
            self._text = None
        elif self.close_sent is None:  # after our close, messages are discarded unread
            self._check_text(frame)
        super().recv_frame(frame)

    def _check_text(self, frame: Frame) -> None:
        """Raise UnicodeDecodeError if ``frame`` is (part of) a text message that is not UTF-8;
        ``parse`` turns it into a 1007 close."""
        if frame.opcode is Opcode.TEXT and self.current_size is None:
            if frame.fin:
                str(frame.data, "utf-8")
            else:
                self._text = _Utf8Decoder()
                self._text.decode(frame.data)
        elif frame.opcode is Opcode.CONT and self._text is not None:
            self._text.decode(frame.data, final=frame.fin)  # final: no character left unfinished
            if frame.fin:
                self._text = None


class Inbox:
    """What the protocol hands the app's ``receive``, in order: ``asyncio.Queue``'s
    ``put_nowait``, ``get`` and ``empty`` (unbounded, so a put never waits), in two lists."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():  # woken, then cancelled: pass it on
                    self._wake_next()
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


class Writable:
    """``asyncio.Event``'s ``is_set``/``set``/``clear``/``wait`` for the "transport writable" flag,
    which is set nearly all of a connection's life: the waiters' list exists while one waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


OnMessage = Callable[[str | bytes], MutableMapping[str, Any] | None]
"""A complete message's payload (text as str) -> None if answered, else the event to queue."""


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol driving :class:`ConformingServerProtocol`, holding
    less per connection (the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = self.conn
        self.conn = ConformingServerProtocol(
            extensions=conn.available_extensions,
            max_size=(conn.max_message_size, conn.max_fragment_size),
            logger=conn.logger,
        )
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        self.writable.set()
        self.on_message: OnMessage | None = None
        """Given each complete message while the inbox is empty (the module's docstring)."""

    def send_receive_event_to_app(self) -> None:
        handler = self.on_message
        if handler is None or self.close_sent or not self.queue.empty():
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        # Text was checked as UTF-8 frame by frame (ConformingServerProtocol): decode cannot fail.
        event = handler(data.decode() if self.curr_msg_data_type == "text" else data)
        if event is None:
            return
        self.queue.put_nowait(event)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope has the headers now. uvicorn keeps the request and never reads it again;
        # the parser's generator keeps it too, as a local it never reads again: its headers go.
        self.request = None  # type: ignore[assignment]
        event.headers = _NO_HEADERS

    def start_keepalive(self) -> None:
        # uvicorn calls this once, right after it wrote the accepted handshake's 101 response:
        # the response is not read again.
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()

    def handle_parser_exception(self) -> None:
        """One INFO line (uvicorn's "[accepted]" line names the same client) when the client's
        frame failed the connection; then uvicorn sends the close frame and closes."""
        close = self.conn.close_sent
        if isinstance(self.conn.parser_exc, CLIENT_FAULTS) and close is not None:
            scope = self.scope
            log.info('%s - "WebSocket %s" failed %d: %s',
                     get_client_addr(scope), scope["path"], close.code, close.reason)  # fmt: skip
        super().handle_parser_exception()


WS_PROTOCOL = WebSocketProtocol
