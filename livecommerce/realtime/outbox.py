"""What goes out to one viewer: the bounded, ordered :class:`Outbox`, and the lookup of the
transport under uvicorn's ASGI ``send`` that lets the hub write a frame built once straight to
every viewer's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WSProtocol

from livecommerce.realtime.codec import Encoding, Frame, parse_event_id

log = logging.getLogger("livecommerce.hub")

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


@types.coroutine
def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, None]:
    """Drive a coroutine that was stepped by hand and suspended, from inside a task."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # forward cancellation and errors into the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            yielded = coro.send(sent)
        except StopIteration:
            return


def _asgi_owner(send: Callable[..., Any]) -> Any:
    """The server object whose bound method sits under an ASGI ``send`` (uvicorn's protocol,
    found through the wrappers' closures), or None."""
    stack: list[Any] = [send]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or len(seen) > 64:
            continue
        seen.add(id(obj))
        owner = getattr(obj, "__self__", None)
        transport = getattr(owner, "transport", None)
        if transport is not None and hasattr(transport, "get_write_buffer_size"):
            return owner
        for cell in getattr(obj, "__closure__", None) or ():
            with contextlib.suppress(ValueError):
                value = cell.cell_contents
                if callable(value):
                    stack.append(value)
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            stack.append(wrapped)
    return None


def find_transport(send: Callable[..., Any]) -> Any:
    """The asyncio transport under an ASGI ``send`` (uvicorn), or None.

    Used to read how many bytes wait to go out (``get_write_buffer_size``): uvicorn's
    WebSocket send never waits for the network, so that number is the real backlog of a viewer.
    """
    owner = _asgi_owner(send)
    return None if owner is None else owner.transport


def find_direct(send: Callable[..., Any]) -> Any:
    """uvicorn's websockets-sansio protocol under ``send`` when frames may bypass the ASGI send.

    That protocol's ``send`` of a ``websocket.send`` event is: wait while the transport is paused
    for writing (``writable``), refuse once closing (``close_sent``, ``disconnected``, the
    ``websockets`` connection no longer OPEN), else serialize the frame and ``transport.write``
    it. Without extensions the frame is the same bytes for every viewer, so the hub builds it
    once (:meth:`~livecommerce.realtime.codec.Frame.wire`) and writes it to each transport itself,
    as
    ``websockets.broadcast`` does. Anything else (another server or WebSocket implementation,
    permessage-deflate) returns None and keeps the ASGI path.
    """
    owner = _asgi_owner(send)
    conn = getattr(owner, "conn", None)
    if not isinstance(conn, WSProtocol) or conn.side is not Side.SERVER or conn.extensions:
        return None
    if not callable(getattr(getattr(owner, "writable", None), "is_set", None)):
        return None  # an asyncio.Event, or realtime.wsprotocol's lighter Writable
    if not all(hasattr(owner, name) for name in ("close_sent", "disconnected")):
        return None
    return owner


class Outbox:
    """What goes out to one viewer, in order, bounded.

    ``push`` never awaits: when nothing is queued the frame is written at once (straight to the
    transport under uvicorn's websockets-sansio protocol, see :func:`find_direct`; else through
    the ASGI send, which completes without suspending unless the transport is paused); otherwise
    it is queued for the writer task. While ``holding`` (during join) live frames are kept aside
    to be released after the snapshot.

    Most viewers keep up and never queue: the queue, the writer's wake-up event and the writer
    task are made the first time a frame has to wait (an idle viewer holds none of them).
    """

    __slots__ = ("_direct", "_floor", "_held", "_on_overflow", "_pending", "_queue", "_send",
                 "_task", "_transport", "_wake", "closed", "encoding", "max_buffer", "max_queue",
                 "overflowed", "position", "sent")  # fmt: skip

    def __init__(self, encoding: Encoding, send: ASGISend, *, max_queue: int, max_buffer: int,
                 on_overflow: Callable[[Outbox], None]) -> None:  # fmt: skip
        self.encoding = encoding
        self._send = send
        self._direct = find_direct(send)
        self._transport = (
            self._direct.transport if self._direct is not None else find_transport(send)
        )
        self.max_queue = max_queue
        self.max_buffer = max_buffer
        self._on_overflow = on_overflow
        self._queue: deque[Frame] | None = None
        self._held: list[Frame] | None = None
        self._pending: tuple[Coroutine[Any, Any, Any], Any] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.overflowed = False
        self.sent = 0
        self.position: str | None = None
        """The id of the last durable event this viewer was given (or its join's snapshot)."""
        self._floor = (0, 0)
        """``position`` parsed: live events at or before it are not sent again."""

    # -- holding during join ------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        return self._held is not None

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def push_live(self, frame: Frame) -> None:
        """A frame from the hub: kept aside while holding, else sent -- unless it is an event
        this viewer already has (its join's snapshot was read before the hub passed that event
        on: the event and the snapshot come over different connections)."""
        if self._held is not None:
            if len(self._held) >= self.max_queue:
                self._overflow()
                return
            self._held.append(frame)
            return
        if frame.event_id is not None and frame.key() <= self._floor:
            kept = frame.after(self._floor)  # a batch keeps what the viewer does not have
            if kept is None:
                return
            frame = kept
        self.push(frame)

    def release(self, after_event_id: str | None, replay: list[Frame] | None = None) -> None:
        """Send ``replay`` (events read from the show's log), then what arrived while holding,
        minus durable events the viewer already has: those up to ``after_event_id``, and those
        both read and held (an event published after the subscription came back but before the
        log was read is in both)."""
        held, self._held = self._held or [], None
        if after_event_id:
            self.position = after_event_id
            self._floor = max(self._floor, parse_event_id(after_event_id))
        floor = parse_event_id(after_event_id) if after_event_id else (0, 0)
        for frame in [*(replay or ()), *held]:
            kept = frame.after(floor)  # a batch keeps what the snapshot did not reflect
            if kept is not None:
                self.push(kept)
                if kept.event_id is not None:
                    floor = max(floor, kept.key())

    # -- sending ------------------------------------------------------------------------------
    def push(self, frame: Frame) -> None:
        if self.closed:
            return
        if frame.event_id is not None:
            self.position = frame.event_id
            self._floor = frame.key()
        if self._queue or self._pending is not None:
            if self._queue is not None and len(self._queue) >= self.max_queue:
                self._overflow()
                return
            self._enqueue(frame)
            return
        self._write_now(frame)

    @property
    def protocol(self) -> Any:
        """The server protocol frames are written to directly (:func:`find_direct`), or None."""
        return self._direct

    def _write_now(self, frame: Frame) -> None:
        direct = self._direct
        if direct is not None:
            if direct.writable.is_set():
                # What uvicorn's send does, minus the ASGI event, the coroutine and the framing
                # of the same bytes once per viewer.
                if direct.close_sent or direct.disconnected or direct.conn.state is not OPEN:
                    self.closed = True  # the ASGI send would raise: the client is gone
                    return
                direct.transport.write(frame.wire(self.encoding))
                self.sent += 1
                self._check_buffer()
                return
            # Paused for writing: the writer task waits for the transport, in order.
            self._enqueue(frame)
            return
        coro = self._send(frame.asgi(self.encoding))
        try:
            yielded = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            self.sent += 1
            self._check_buffer()
            return
        except Exception:  # the client is gone; the endpoint's receive loop will see it
            self.closed = True
            return
        # The server applies back-pressure: let the writer task finish this send.
        self._pending = (coro, yielded)  # type: ignore[assignment]
        self._wake_writer()

    def _check_buffer(self) -> None:
        if self._transport is not None:
            try:
                backlog = self._transport.get_write_buffer_size()
            except Exception:  # closed transport
                return
            if backlog > self.max_buffer:
                self._overflow()

    def _overflow(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.overflowed = True
        if self._queue is not None:
            self._queue.clear()
        self._held = None
        self._on_overflow(self)

    def _enqueue(self, frame: Frame) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(frame)
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Wake the writer task, made (with its event) the first time it is needed."""
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(self._wake), name="outbox")

    async def _write_loop(self, wake: asyncio.Event) -> None:
        while not self.closed:
            await wake.wait()
            wake.clear()
            try:
                if self._pending is not None:
                    coro, yielded = self._pending
                    await _finish(coro, yielded)
                    self._pending = None
                    self.sent += 1
                while self._queue and not self.closed:
                    frame = self._queue.popleft()
                    await self._send(frame.asgi(self.encoding))
                    self.sent += 1
                    self._check_buffer()
            except Exception:
                self.closed = True

    async def aclose(self) -> None:
        self.closed = True
        if self._pending is not None:
            self._pending[0].close()
            self._pending = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
