"""Fan-out of a show's live events to the viewers connected to this process.

- One pub/sub subscription per show per process, reference-counted (:class:`Broker`; Redis is
  the real one, :class:`MemoryBroker` serves unit tests). Subscribing waits for the server's
  confirmation, so a caller may read the event log afterwards without a hole.
- Each event is encoded once per encoding (:class:`~livecommerce.codec.Frame`); the JSON text is
  the one Redis published, never re-encoded.
- Stock levels are coalesced per show: at most one push per ``stock_interval_s`` carrying the
  latest level of every drop that changed, so the last push is always the true final value.
- Every viewer has an :class:`Outbox`: frames are written at once when the socket keeps up; a
  viewer whose queue or unsent bytes overflow is closed with 4008 (slow consumer) instead of
  slowing anyone else.
- If the pub/sub connection breaks, every viewer is closed with 4000 (reconnect) and resumes
  from the event log: nothing is lost silently. The pub/sub client never retries by itself:
  redis-py's retry would reconnect and re-subscribe quietly, and what was published before the
  new subscription took effect would be lost without anyone knowing (a Valkey restart within
  the retry's back-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from websockets.protocol import OPEN, Side
from websockets.protocol import Protocol as WSProtocol

from livecommerce.codec import Encoding, Frame, parse_event_id
from livecommerce.keys import Keyspace
from livecommerce.metrics import GatewayMetrics

log = logging.getLogger("livecommerce.hub")

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
OnMessage = Callable[[str, bytes], None]


# -- brokers --------------------------------------------------------------------------------------
class Broker(Protocol):
    """Carries a show's live messages between gateway processes."""

    async def start(self, on_message: OnMessage, on_lost: Callable[[], None]) -> None: ...
    async def subscribe(self, show: str) -> None:
        """Returns once messages published from now on will be delivered."""

    async def unsubscribe(self, show: str) -> None: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """In-process broker for unit tests: ``publish`` delivers to this process only."""

    def __init__(self) -> None:
        self.shows: set[str] = set()
        self._on_message: OnMessage | None = None

    async def start(self, on_message: OnMessage, on_lost: Callable[[], None]) -> None:
        self._on_message = on_message

    async def subscribe(self, show: str) -> None:
        self.shows.add(show)

    async def unsubscribe(self, show: str) -> None:
        self.shows.discard(show)

    async def stop(self) -> None:
        self.shows.clear()

    def publish(self, show: str, message: dict[str, Any]) -> None:
        if show in self.shows and self._on_message is not None:
            self._on_message(show, orjson.dumps(message))


class RedisBroker:
    """One pub/sub connection per process; one channel per show with viewers here."""

    def __init__(self, redis_url: str, keys: Keyspace) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._channels: dict[str, str] = {}
        self._subscribed = asyncio.Event()
        self._on_message: OnMessage | None = None
        self._on_lost: Callable[[], None] | None = None

    async def start(self, on_message: OnMessage, on_lost: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._client = aioredis.Redis.from_url(self.redis_url, retry=Retry(NoBackoff(), 0))
        self._pubsub = self._client.pubsub()
        self._task = asyncio.create_task(self._listen(), name="hub-pubsub")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The listener, for supervision (it only ends when stopped)."""
        return self._task

    async def subscribe(self, show: str) -> None:
        channel = self.keys.channel(show)
        self._channels[channel] = show
        waiter = asyncio.get_running_loop().create_future()
        self._confirm[channel] = waiter
        await self._pubsub.subscribe(channel)
        self._subscribed.set()
        await asyncio.wait_for(waiter, timeout=10.0)

    async def unsubscribe(self, show: str) -> None:
        channel = self.keys.channel(show)
        self._channels.pop(channel, None)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        while True:
            await self._subscribed.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError, RuntimeError, KeyError, TypeError) as exc:
                # KeyError/TypeError: a reply redis-py could not parse; the stream is suspect.
                log.warning("pub/sub connection lost: %s", exc)
                self._lost()
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await self._pubsub.aclose()
                assert self._client is not None
                self._pubsub = self._client.pubsub()
                self._subscribed.clear()
                continue
            if message is None:
                if not self._pubsub.subscribed:
                    self._subscribed.clear()
                continue
            kind = message["type"]
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            if kind == "message":
                show = self._channels.get(channel)
                if show is not None and self._on_message is not None:
                    self._on_message(show, message["data"])
            elif kind == "subscribe":
                waiter = self._confirm.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _lost(self) -> None:
        for waiter in self._confirm.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("pub/sub connection lost"))
        self._confirm.clear()
        self._channels.clear()
        if self._on_lost is not None:
            self._on_lost()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()


# -- per-viewer outbox ----------------------------------------------------------------------------
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
    once (:meth:`~livecommerce.codec.Frame.wire`) and writes it to each transport itself, as
    ``websockets.broadcast`` does. Anything else (another server or WebSocket implementation,
    permessage-deflate) returns None and keeps the ASGI path.
    """
    owner = _asgi_owner(send)
    conn = getattr(owner, "conn", None)
    if not isinstance(conn, WSProtocol) or conn.side is not Side.SERVER or conn.extensions:
        return None
    if not isinstance(getattr(owner, "writable", None), asyncio.Event):
        return None
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
    """

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
        self._queue: deque[Frame] = deque()
        self._held: list[Frame] | None = None
        self._pending: tuple[Coroutine[Any, Any, Any], Any] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.overflowed = False
        self.sent = 0

    # -- holding during join ------------------------------------------------------------------
    def hold(self) -> None:
        self._held = []

    def push_live(self, frame: Frame) -> None:
        """A frame from the hub: kept aside while holding, else sent."""
        if self._held is not None:
            if len(self._held) >= self.max_queue:
                self._overflow()
                return
            self._held.append(frame)
            return
        self.push(frame)

    def release(self, after_event_id: str | None) -> None:
        """Send what arrived while holding, minus durable events the viewer already has."""
        held, self._held = self._held or [], None
        floor = parse_event_id(after_event_id) if after_event_id else (0, 0)
        for frame in held:
            if frame.event_id is not None and parse_event_id(frame.event_id) <= floor:
                continue
            self.push(frame)

    # -- sending ------------------------------------------------------------------------------
    def push(self, frame: Frame) -> None:
        if self.closed:
            return
        if self._queue or self._pending is not None:
            if len(self._queue) >= self.max_queue:
                self._overflow()
                return
            self._queue.append(frame)
            self._wake.set()
            return
        self._write_now(frame)

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
            self._queue.append(frame)
            self._wake.set()
            self._ensure_writer()
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
        self._wake.set()
        self._ensure_writer()

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
        self._queue.clear()
        self._held = None
        self._on_overflow(self)

    def _ensure_writer(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write_loop(), name="outbox")

    async def _write_loop(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
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


# -- hub ------------------------------------------------------------------------------------------
class Topic:
    """One show as this process sees it."""

    def __init__(self, show: str) -> None:
        self.show = show
        self.outboxes: set[Outbox] = set()
        self.ready: asyncio.Future[None] | None = None
        self.latest: dict[str, dict[str, Any]] = {}
        """Latest stock level per drop seen on the channel (stock messages and drop events)."""
        self.stock_ts: dict[str, int] = {}
        """Server time (ms) of each drop's latest level."""
        self.dirty: set[str] = set()
        self.last_flush = 0.0
        self.flush_timer: asyncio.TimerHandle | None = None
        self.viewers = 0


class Hub:
    def __init__(self, broker: Broker, metrics: GatewayMetrics, *, stock_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.broker = broker
        self.metrics = metrics
        self.stock_interval_s = stock_interval_s
        self.clock = clock
        self.topics: dict[str, Topic] = {}
        self._lock = asyncio.Lock()
        self.on_lost: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.broker.start(self.dispatch, self._lost)

    async def stop(self) -> None:
        for topic in self.topics.values():
            if topic.flush_timer is not None:
                topic.flush_timer.cancel()
        self.topics.clear()
        await self.broker.stop()

    def _lost(self) -> None:
        for topic in self.topics.values():
            topic.ready = None
        if self.on_lost is not None:
            self.on_lost()

    # -- membership ---------------------------------------------------------------------------
    async def join(self, show: str, outbox: Outbox) -> Topic:
        """Register ``outbox`` for ``show``; returns once the subscription is live."""
        topic = self.topics.get(show)
        if topic is None:
            topic = self.topics[show] = Topic(show)
        topic.outboxes.add(outbox)
        if topic.ready is None:
            topic.ready = asyncio.get_running_loop().create_future()
            ready = topic.ready
            try:
                async with self._lock:
                    await self.broker.subscribe(show)
            except BaseException as exc:
                topic.ready = None
                topic.outboxes.discard(outbox)
                if not ready.done():
                    ready.set_exception(ConnectionError(str(exc)))
                    ready.exception()  # retrieved: the joiners below re-raise their own
                raise
            ready.set_result(None)
        else:
            await asyncio.shield(topic.ready)
        return topic

    async def leave(self, show: str, outbox: Outbox) -> None:
        topic = self.topics.get(show)
        if topic is None:
            return
        topic.outboxes.discard(outbox)
        if topic.outboxes:
            return
        del self.topics[show]
        if topic.flush_timer is not None:
            topic.flush_timer.cancel()
        async with self._lock:
            await self.broker.unsubscribe(show)

    def local_counts(self) -> dict[str, int]:
        return {show: len(t.outboxes) for show, t in self.topics.items()}

    # -- incoming -----------------------------------------------------------------------------
    def dispatch(self, show: str, raw: bytes) -> None:
        """One message from the broker (called by the broker's listener; never awaits)."""
        topic = self.topics.get(show)
        if topic is None:
            return
        try:
            message = orjson.loads(raw)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("undecodable message on show %s", show)
            return
        data = message.get("data")
        if kind == "stock":
            if isinstance(data, dict) and isinstance(data.get("drop"), str):
                self._stock(topic, data, int(message.get("ts") or 0))
            return
        event_id = message.get("id")
        if (
            isinstance(data, dict)
            and "remaining" in data
            and isinstance(data.get("id"), str)
            and not kind.startswith("show_")
        ):
            topic.latest[data["id"]] = {
                "drop": data["id"],
                "remaining": data.get("remaining"),
                "held": data.get("held"),
                "sold": data.get("sold"),
            }
            topic.stock_ts[data["id"]] = int(message.get("ts") or 0)
        frame = Frame(message, json=raw.decode(), event_id=event_id if event_id else None)
        self.broadcast(topic, frame, event=True)

    def broadcast(self, topic: Topic, frame: Frame, *, event: bool = False) -> None:
        started = time.perf_counter()
        outboxes = topic.outboxes
        for outbox in tuple(outboxes):
            outbox.push_live(frame)
        if event:
            self.metrics.events.inc()
            self.metrics.fanout_seconds.observe(time.perf_counter() - started)
        self.metrics.frames.inc(len(outboxes))

    def _stock(self, topic: Topic, data: dict[str, Any], ts: int) -> None:
        drop = data["drop"]
        topic.latest[drop] = {
            "drop": drop,
            "remaining": data.get("remaining"),
            "held": data.get("held"),
            "sold": data.get("sold"),
        }
        topic.stock_ts[drop] = ts
        topic.dirty.add(drop)
        if topic.flush_timer is not None:
            return
        wait = topic.last_flush + self.stock_interval_s - self.clock()
        if wait <= 0:
            self._flush(topic)
        else:
            loop = asyncio.get_running_loop()
            topic.flush_timer = loop.call_later(wait, self._flush, topic)

    def _flush(self, topic: Topic) -> None:
        topic.flush_timer = None
        topic.last_flush = self.clock()
        if self.topics.get(topic.show) is not topic:
            return
        dirty, topic.dirty = topic.dirty, set()
        for drop in sorted(dirty):
            level = topic.latest.get(drop)
            if level is not None:
                ts = topic.stock_ts.get(drop, 0)
                self.broadcast(topic, Frame({"type": "stock", "ts": ts, "data": level}))

    def set_viewers(self, show: str, count: int, ts: int) -> None:
        topic = self.topics.get(show)
        if topic is None or topic.viewers == count:
            return
        topic.viewers = count
        self.broadcast(topic, Frame({"type": "viewers", "ts": ts, "data": {"count": count}}))
