"""Fan-out of a show's live events to the viewers connected to this process.

- One pub/sub subscription per show per process, reference-counted (:class:`Broker`; Redis is
  the real one, :class:`MemoryBroker` serves unit tests). Subscribing waits for the server's
  confirmation, so a caller may read the event log afterwards without a hole.
- Each event is encoded once per encoding (:class:`~livecommerce.realtime.codec.Frame`); the JSON
text is
  the one Redis published, never re-encoded.
- Stock levels are coalesced per show: at most one push per ``stock_interval_s`` carrying the
  latest level of every drop that changed, so the last push is always the true final value.
  The interval stretches with the cost of the show's fan-out here: the next push waits at least
  ``1 / stock_budget`` times as long as the last fan-out to the show's viewers took, so stock
  pushes take at most that share of the process (a big audience on a busy process gets fewer).
- What the broker read together (the messages of one store step: a last sale's ``sold_out``,
  ``drop_closed`` and stock level) goes to each viewer as one frame (:meth:`Hub.receive`).
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

from livecommerce.realtime.batch import batch_of
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
        self.fanout_s = 0.0
        """How long the latest fan-out to this show's viewers here took (stock pushes' budget)."""


class Hub:
    def __init__(self, broker: Broker, metrics: GatewayMetrics, *, stock_interval_s: float,
                 clock: Callable[[], float] = time.monotonic, batch_interval_s: float = 0.0,
                 stock_budget: float = 1.0) -> None:  # fmt: skip
        self.broker = broker
        self.batch_interval_s = batch_interval_s
        self.stock_budget = stock_budget
        """Largest share of this process's time a show's stock pushes may take (0 < x <= 1)."""
        self._run: dict[Topic, list[Frame]] | None = None
        """While :meth:`receive` dispatches: the frames each show's viewers get at its end."""
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
        await self.broker.start(self.receive, self._lost)

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
    def receive(self, messages: list[tuple[str, bytes]]) -> None:
        """Messages the broker read together (called by its listener; never awaits): each one
        dispatched, then what they give a show's viewers sent to each of them as one frame."""
        run: dict[Topic, list[Frame]] = {}
        self._run = run
        try:
            for show, raw in messages:
                self.dispatch(show, raw)
        finally:
            self._run = None
        for topic, frames in run.items():
            if self.topics.get(topic.show) is topic:
                self._send_run(topic, frames)

    def _send_run(self, topic: Topic, frames: list[Frame]) -> None:
        events = sum(1 for f in frames if f.event_id is not None)
        if events and topic.pending:  # a durable event takes the waiting pushes along
            if topic.batch_timer is not None:
                topic.batch_timer.cancel()
                topic.batch_timer = None
            frames, topic.pending = [*topic.pending, *frames], []
            topic.last_batch = self.clock()
        frame = batch_of(frames)
        if frame is not None:
            self.broadcast(topic, frame, events=events)

    def _emit(self, topic: Topic, frame: Frame) -> None:
        """Send ``frame`` to the show's viewers: at the end of the broker's read when one is
        being dispatched (with what else it brought), else at once."""
        if self._run is not None:
            self._run.setdefault(topic, []).append(frame)
        else:
            self._send_run(topic, [frame])

    def dispatch(self, show: str, raw: bytes) -> None:
        """One message from the broker (never awaits)."""
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
        self._emit(topic, frame)

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

    def broadcast(self, topic: Topic, frame: Frame, *, events: int = 0) -> None:
        """``frame`` to every viewer of the show here; ``events``: durable events in it."""
        started = time.perf_counter()
        outboxes = topic.outboxes
        for outbox in tuple(outboxes):
            outbox.push_live(frame)
        topic.fanout_s = took = time.perf_counter() - started
        if events:
            self.metrics.events.inc(events)
            self.metrics.fanout_seconds.observe(took)
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
        wait = topic.last_flush + self.stock_gap(topic) - self.clock()
        if wait <= 0:
            self._flush(topic)
        else:
            loop = asyncio.get_running_loop()
            topic.flush_timer = loop.call_later(wait, self._flush, topic)

    def stock_gap(self, topic: Topic) -> float:
        """Seconds from one stock push of the show to the next: ``stock_interval_s``, or longer
        when a fan-out to its viewers here takes more than ``stock_budget`` of that."""
        return max(self.stock_interval_s, topic.fanout_s / self.stock_budget)

    def _flush(self, topic: Topic) -> None:
        topic.flush_timer = None
        topic.last_flush = self.clock()
        if self.topics.get(topic.show) is not topic:
            return
        dirty, topic.dirty = topic.dirty, set()
        frames = [
            Frame({"type": "stock", "ts": topic.stock_ts.get(drop, 0), "data": level})
            for drop in sorted(dirty)
            if (level := topic.latest.get(drop)) is not None
        ]
        if self._run is not None:  # with what else the broker's read brought
            self._run.setdefault(topic, []).extend(frames)
        elif frames:
            self._send_run(topic, frames)

    def set_viewers(self, show: str, count: int, ts: int) -> None:
        topic = self.topics.get(show)
        if topic is None or topic.viewers == count:
            return
        topic.viewers = count
        self.broadcast(topic, Frame({"type": "viewers", "ts": ts, "data": {"count": count}}))
