"""Fan-out of a show's live events to the viewers connected to this process.

- One pub/sub subscription per show per process, reference-counted (:class:`Broker`; Redis is
  the real one, :class:`MemoryBroker` serves unit tests). Subscribing waits for the server's
  confirmation, so a caller may read the event log afterwards without a hole.
- Each event is encoded once per encoding (:class:`~livecommerce.realtime.codec.Frame`); the JSON
text is
  the one Redis published, never re-encoded.
- Stock levels are coalesced per show: at most one push per ``stock_interval_s`` carrying the
  latest level of every drop that changed, so the last push is always the true final value.
- Every viewer has an :class:`Outbox`: frames are written at once when the socket keeps up; a
  viewer whose queue or unsent bytes overflow is closed with 4008 (slow consumer) instead of
  slowing anyone else.
- If the pub/sub connection breaks, the gateway fills the gap itself once the subscription is
  back (the show's event log, read after each viewer's position: :meth:`Hub.resubscribe`, then
  the gateway's recovery); a viewer it cannot fill in is closed with 4000 (reconnect) and
  resumes: nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from livecommerce.realtime.batch import Batch, batch_of
from livecommerce.realtime.broker import Broker
from livecommerce.realtime.codec import Frame
from livecommerce.realtime.metrics import GatewayMetrics
from livecommerce.realtime.outbox import Outbox

log = logging.getLogger("livecommerce.hub")


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
        self.pending: list[Frame] = []
        """Deferred pushes (chat, reactions) waiting for the next batch."""
        self.batch_timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.last_batch = 0.0


class Hub:
    def __init__(self, broker: Broker, metrics: GatewayMetrics, *, stock_interval_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 batch_interval_s: float = 0.0) -> None:  # fmt: skip
        self.broker = broker
        self.batch_interval_s = batch_interval_s
        self.deferred: set[str] = set()
        """Message types sent in batches (:meth:`defer`) rather than one frame each."""
        self.metrics = metrics
        self.stock_interval_s = stock_interval_s
        self.clock = clock
        self.topics: dict[str, Topic] = {}
        self._lock = asyncio.Lock()
        self.on_lost: Callable[[], None] | None = None
        self.handlers: dict[str, Callable[[Topic, dict[str, Any]], None]] = {}
        """Message types this process consumes itself instead of relaying to viewers
        (``reaction_tally``: summed by :mod:`livecommerce.realtime.engagement`)."""
        self.on_event: Callable[[str, str, Any, int], None] | None = None
        """Called with (show, type, data, ts) for every durable event (the gateway's edge view)."""
        self.on_line: Callable[[str, Any], None] | None = None
        """Called with (show, data) for each waiting-line progress message (not fanned out)."""

    async def start(self) -> None:
        await self.broker.start(self.dispatch, self._lost)

    async def stop(self) -> None:
        for topic in self.topics.values():
            if topic.flush_timer is not None:
                topic.flush_timer.cancel()
            if topic.batch_timer is not None:
                topic.batch_timer.cancel()
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
        try:
            await self._subscribed(topic)
        except BaseException:
            topic.outboxes.discard(outbox)
            raise
        return topic

    async def resubscribe(self, show: str) -> Topic | None:
        """After the link broke: the show's subscription again (None: nobody here watches it)."""
        topic = self.topics.get(show)
        if topic is not None:
            await self._subscribed(topic)
        return topic

    async def _subscribed(self, topic: Topic) -> None:
        """Return once ``topic``'s subscription is live (subscribing if nobody has yet)."""
        if topic.ready is not None:
            await asyncio.shield(topic.ready)
            return
        topic.ready = asyncio.get_running_loop().create_future()
        ready = topic.ready
        try:
            async with self._lock:
                await self.broker.subscribe(topic.show)
        except BaseException as exc:
            if topic.ready is ready:
                topic.ready = None
            if not ready.done():
                ready.set_exception(ConnectionError(str(exc)))
                ready.exception()  # retrieved: the joiners below re-raise their own
            raise
        ready.set_result(None)

    async def leave(self, show: str, outbox: Outbox) -> None:
        topic = self.topics.get(show)
        if topic is None:
            return
        topic.outboxes.discard(outbox)
        if topic.outboxes:
            return
        del self.topics[show]
        if topic.batch_timer is not None:
            topic.batch_timer.cancel()
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
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            handler(topic, message)
            return
        data = message.get("data")
        if kind == "line":
            if self.on_line is not None:
                self.on_line(show, data)
            return
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
        if self.on_event is not None:
            self.on_event(show, kind, data, int(message.get("ts") or 0))
        frame = Frame(message, json=raw.decode(), event_id=event_id if event_id else None)
        if kind in self.deferred:
            self.defer(topic, frame)
            return
        if topic.pending:  # a durable event takes the waiting pushes along, in one frame
            if topic.batch_timer is not None:
                topic.batch_timer.cancel()
                topic.batch_timer = None
            frames, topic.pending = [*topic.pending, frame], []
            topic.last_batch = self.clock()
            frame = Batch(frames)
        self.broadcast(topic, frame, event=True)

    # -- batches ------------------------------------------------------------------------------
    def defer(self, topic: Topic, frame: Frame) -> None:
        """Send ``frame`` with the show's next batch: at the end of this loop turn, or, when a
        batch went out less than ``batch_interval_s`` ago, when that interval is over. Every
        viewer of the show gets the same batch frame, encoded once per encoding."""
        topic.pending.append(frame)
        if topic.batch_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = topic.last_batch + self.batch_interval_s - self.clock()
        if wait > 0:
            topic.batch_timer = loop.call_later(wait, self._send_batch, topic)
        else:
            topic.batch_timer = loop.call_soon(self._send_batch, topic)

    def _send_batch(self, topic: Topic) -> None:
        topic.batch_timer = None
        topic.last_batch = self.clock()
        frames, topic.pending = topic.pending, []
        if self.topics.get(topic.show) is not topic:
            return
        frame = batch_of(frames)
        if frame is not None:
            self.metrics.batched.inc(len(frames))
            self.broadcast(topic, frame)

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
