"""The viewer WebSocket endpoint: a thin loop around
:class:`~livecommerce.realtime.protocol.Session`.

The endpoint checks the handshake (Origin allowlist, subprotocol), then feeds every received
frame to the session and carries out the actions it returns: send a message, join a show
(snapshot, or resume from the show's event log), run a buy command against the inventory, close.
Live events reach the viewer through the :class:`~livecommerce.realtime.hub.Hub`.

Join is ordered so that nothing falls between the snapshot and the live stream: register with the
hub and hold live frames, make sure the pub/sub subscription is live, read the snapshot (or the log
after ``last_event_id``) in one MULTI, send it, then release the held frames minus the events the
snapshot already reflects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError, ResponseError
from starlette.websockets import WebSocket, WebSocketDisconnect

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.core.model import Outcome, drop_view
from livecommerce.realtime.broker import Broker, RedisBroker
from livecommerce.realtime.codec import Encoding, Frame, negotiate, parse_event_id
from livecommerce.realtime.hub import Hub
from livecommerce.realtime.metrics import GatewayMetrics
from livecommerce.realtime.outbox import Outbox
from livecommerce.realtime.protocol import (
    Close,
    CloseCode,
    Command,
    ErrorCode,
    Join,
    Op,
    Phase,
    Send,
    Session,
    error,
    result_message,
)
from livecommerce.store.services import Services

log = logging.getLogger("livecommerce.gateway")

JOIN_TIMEOUT_S = 10.0
VIEWERS_INTERVAL_S = 1.0
VIEWERS_STALE_MS = 5_000
SNAPSHOT_ATTEMPTS = 5
JOIN_CONCURRENCY = 64
COMMAND_CONCURRENCY = 160
"""Redis work in flight at once for joins and for commands: a burst of thousands of viewers
(a drop, or everyone reconnecting after a drain) queues here instead of exhausting the
connection pool (256 in app.py) and failing with "unavailable"."""


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin; scripts usually do not (and cannot be stopped by it anyway)."""
    if origin is None:
        return True
    if allowed:
        return "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class Connection:
    __slots__ = ("closing", "encoding", "outbox", "session", "show", "websocket")

    def __init__(self, websocket: WebSocket, encoding: Encoding, outbox: Outbox,
                 session: Session) -> None:  # fmt: skip
        self.websocket = websocket
        self.encoding = encoding
        self.outbox = outbox
        self.session = session
        self.show: str | None = None
        self.closing = False

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.push(Frame(message))


class Gateway:
    def __init__(self, services: Services, *, broker: Broker | None = None) -> None:
        self.services = services
        self.settings = services.settings.gateway
        self.metrics = GatewayMetrics(services.registry)
        self.hub = Hub(
            broker or RedisBroker(services.redis_url, services.keys),
            self.metrics,
            stock_interval_s=self.settings.stock_interval_s,
        )
        self.hub.on_lost = self._on_lost
        self.process_id = uuid.uuid4().hex[:12]
        self.connections: set[Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter: asyncio.Task[None] | None = None
        self._counted: set[str] = set()
        self._join_slots = asyncio.Semaphore(JOIN_CONCURRENCY)
        self._command_slots = asyncio.Semaphore(COMMAND_CONCURRENCY)
        self.clock_offset_ms = 0.0
        """Server (Redis) clock minus this process's wall clock, refreshed every second."""
        secret = self.settings.token_secret
        self._secret = secret.reveal() if secret is not None else None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.hub.start()
        await self._refresh_clock()
        self._counter = self._spawn(self._count_viewers(), "viewer-count")

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - the app's interface
        """Close every viewer with 4000 (reconnect) and wait, bounded, for them to go."""
        for conn in list(self.connections):
            await self._close(conn, CloseCode.RECONNECT, "reconnect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout=max(timeout, 0.01))

    async def stop(self) -> None:
        self._stop.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError, StoreError):
            for show in self._counted:
                await self.services.redis.hdel(self.services.keys.viewers(show), self.process_id)
        await self.hub.stop()

    def supervised(self) -> list[asyncio.Task[None]]:
        """The tasks that must run for the process's life (the app's readiness checks them)."""
        listener = getattr(self.hub.broker, "task", None)
        return [t for t in (self._counter, listener) if isinstance(t, asyncio.Task)]

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def server_time_ms(self) -> int:
        return int(time.time() * 1000 + self.clock_offset_ms)

    # -- the endpoint -------------------------------------------------------------------------
    async def endpoint(self, websocket: WebSocket) -> None:
        offered = list(websocket.scope.get("subprotocols") or [])
        encoding = negotiate(offered)
        refusal = self._refusal(websocket, encoding)
        if refusal is not None or encoding is None:
            self.metrics.refused.labels(refusal or "subprotocol").inc()
            await websocket.close(code=1008)  # before accept: uvicorn answers HTTP 403
            return
        await websocket.accept(subprotocol=encoding.subprotocol if offered else None)
        self.metrics.accepted.labels(str(encoding)).inc()
        self.metrics.connections.labels(str(encoding)).inc()
        conn = self._connect(websocket, encoding)
        try:
            await self._serve(conn)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("viewer connection failed")
            await self._close(conn, CloseCode.INTERNAL, "internal")
        finally:
            await self._release(conn)

    def _refusal(self, websocket: WebSocket, encoding: Encoding | None) -> str | None:
        """Why the handshake is refused (a metrics label), or None to accept it."""
        if self.services.draining:
            return "draining"
        if not origin_allowed(
            websocket.headers.get("origin"), websocket.headers.get("host"),
            self.settings.allowed_origins,
        ):  # fmt: skip
            return "origin"
        if encoding is None:
            return "subprotocol"
        return None

    def _connect(self, websocket: WebSocket, encoding: Encoding) -> Connection:
        """A new viewer connection: its bounded outbox and its protocol session."""
        conn: Connection | None = None

        def overflow(_: Outbox) -> None:
            if conn is not None:
                self.metrics.slow_consumers.inc()
                self._spawn(self._close(conn, CloseCode.SLOW_CONSUMER, "slow_consumer"), "close")

        outbox = Outbox(
            encoding, websocket._send, max_queue=self.settings.send_queue,
            max_buffer=self.settings.send_buffer_bytes, on_overflow=overflow,
        )  # fmt: skip
        session = Session(
            rate=self.settings.rate_per_s, burst=self.settings.rate_burst,
            token_secret=self._secret, now=time.monotonic(),
        )  # fmt: skip
        conn = Connection(websocket, encoding, outbox, session)
        self.connections.add(conn)
        self._empty.clear()
        return conn

    async def _release(self, conn: Connection) -> None:
        """Everything a connection held, given back (its show's subscription, its outbox)."""
        conn.session.close()
        if conn.show is not None:
            with contextlib.suppress(Exception):
                await self.hub.leave(conn.show, conn.outbox)
        await conn.outbox.aclose()
        self.connections.discard(conn)
        self.metrics.connections.labels(str(conn.encoding)).dec()
        if not self.connections:
            self._empty.set()

    async def _serve(self, conn: Connection) -> None:
        websocket, session = conn.websocket, conn.session
        while not conn.closing:
            if session.phase is Phase.AWAITING_JOIN:
                try:
                    message = await asyncio.wait_for(websocket.receive(), JOIN_TIMEOUT_S)
                except TimeoutError:
                    await self._close(conn, CloseCode.JOIN_TIMEOUT, "join_timeout")
                    return
            else:
                message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            payload = message.get("text")
            if payload is None:
                payload = message.get("bytes") or b""
            actions = session.receive_frame(
                conn.encoding, payload, now=time.monotonic(), wall=time.time()
            )
            for action in actions:
                if isinstance(action, Send):
                    body = action.message
                    if body.get("type") == "pong":
                        body["server_time"] = self.server_time_ms()
                    conn.send(body)
                elif isinstance(action, Join):
                    if not await self._join(conn, action):
                        return
                elif isinstance(action, Command):
                    await self._command(conn, action)
                elif isinstance(action, Close):
                    await self._close(conn, action.code, action.reason)
                    return

    async def _close(self, conn: Connection, code: CloseCode, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        conn.session.close()
        conn.outbox.closed = True
        self.metrics.closes.labels(str(int(code))).inc()
        with contextlib.suppress(Exception):
            await conn.websocket.close(code=int(code), reason=reason)

    def _on_lost(self) -> None:
        """The pub/sub link broke: events may have been missed, so every viewer resumes."""
        for conn in list(self.connections):
            if conn.show is not None:
                self._spawn(self._close(conn, CloseCode.RECONNECT, "reconnect"), "close")

    # -- join ---------------------------------------------------------------------------------
    async def _join(self, conn: Connection, join: Join) -> bool:
        try:
            async with self._join_slots:
                return await self._join_show(conn, join)
        except (StoreError, RedisError, OSError, ConnectionError, TimeoutError) as exc:
            log.warning("join of show %s failed: %s", join.show, exc)
            conn.send(error(ErrorCode.UNAVAILABLE, "store unavailable, reconnect").message)
            await self._close(conn, CloseCode.INTERNAL, "unavailable")
            return False

    async def _join_show(self, conn: Connection, join: Join) -> bool:
        show = join.show
        if await self.services.inventory.get_show(show) is None:
            conn.send(error(ErrorCode.UNKNOWN_SHOW, f"no show {show!r}").message)
            await self._close(conn, CloseCode.UNKNOWN_SHOW, "unknown_show")
            return False
        conn.show = show
        conn.outbox.hold()
        await self.hub.join(show, conn.outbox)
        if join.last_event_id is not None:
            missed = await self._read_since(show, join.last_event_id)
            if missed is not None:
                events, drops = missed
                self.metrics.resumes.labels("resumed").inc()
                conn.send({
                    "type": "resumed", "server_time": self.server_time_ms(),
                    "viewer": join.viewer, "show": show, "from": join.last_event_id,
                    "missed": len(events),
                })  # fmt: skip
                for event in events:
                    conn.outbox.push(Frame(event, event_id=event["id"]))
                for drop in drops:
                    if drop["state"] != "closed":
                        conn.send({"type": "stock", "ts": self.server_time_ms(), "data": {
                            "drop": drop["id"], "remaining": drop["remaining"],
                            "held": drop["held"], "sold": drop["sold"]}})  # fmt: skip
                conn.outbox.release(events[-1]["id"] if events else join.last_event_id)
                return True
            self.metrics.resumes.labels("gap").inc()
        snapshot = await self._snapshot(show)
        topic = self.hub.topics.get(show)
        snapshot.update(
            viewer=join.viewer,
            viewers=max(topic.viewers if topic else 0, len(topic.outboxes) if topic else 1),
            resumed=join.last_event_id is not None,
            gap=join.last_event_id is not None,
        )
        conn.send(snapshot)
        conn.outbox.release(snapshot["last_event_id"])
        return True

    async def _snapshot(self, show: str) -> dict[str, Any]:
        """Show, drops and the id of the last event they reflect, read in one MULTI."""
        keys, redis = self.services.keys, self.services.redis
        for _ in range(SNAPSHOT_ATTEMPTS):
            ids = await self.services.inventory.drop_ids(show)
            pipe = redis.pipeline(transaction=True)
            pipe.zrange(keys.drops(show), 0, -1)
            pipe.hgetall(keys.show(show))
            for drop in ids:
                pipe.hgetall(keys.drop(show, drop).drop)
            pipe.xrevrange(keys.events(show), count=1)
            pipe.time()
            result = await pipe.execute()
            if [d.decode() for d in result[0]] != ids:
                continue  # a drop was created in between: read again
            show_raw, drop_raws = result[1], result[2 : 2 + len(ids)]
            last, (sec, usec) = result[-2], result[-1]
            return {
                "type": "snapshot",
                "server_time": int(sec) * 1000 + int(usec) // 1000,
                "show": {k.decode(): v.decode() for k, v in show_raw.items()},
                "drops": [drop_view(raw) for raw in drop_raws if raw],
                "last_event_id": last[0][0].decode() if last else "0-0",
            }
        raise StoreError("snapshot: drops kept changing")

    async def _read_since(
        self, show: str, last_id: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """Events after ``last_id`` and the drops, or None when the log cannot cover the gap."""
        keys, redis = self.services.keys, self.services.redis
        stream = keys.events(show)
        ids = await self.services.inventory.drop_ids(show)
        pipe = redis.pipeline(transaction=True)
        pipe.xinfo_stream(stream)
        pipe.xrange(stream, min=last_id, max=last_id)
        pipe.xrange(stream, min=f"({last_id}", max="+")
        for drop in ids:
            pipe.hgetall(keys.drop(show, drop).drop)
        info, own, after, *drop_raws = await pipe.execute(raise_on_error=False)
        wanted = parse_event_id(last_id)
        if isinstance(info, ResponseError):  # no log at all
            if wanted != (0, 0):
                return None
            after = []
        else:
            if isinstance(info, Exception) or isinstance(after, Exception):
                raise StoreError(f"redis: {info if isinstance(info, Exception) else after}")
            max_deleted = parse_event_id(_text(info.get("max-deleted-entry-id", b"0-0")))
            last_generated = parse_event_id(_text(info.get("last-generated-id", b"0-0")))
            if wanted < max_deleted or wanted > last_generated:
                return None  # trimmed past the client's position, or an id from elsewhere
            if wanted != (0, 0) and wanted > max_deleted and not own:
                return None  # an id this log never had
        events = [_event(entry_id, fields) for entry_id, fields in after]
        drops = [drop_view(raw) for raw in drop_raws if isinstance(raw, dict) and raw]
        return events, drops

    # -- commands -----------------------------------------------------------------------------
    async def _command(self, conn: Connection, cmd: Command) -> None:
        show = conn.show
        assert show is not None
        started = time.perf_counter()
        try:
            async with self._command_slots:
                outcome = await self._run_command(show, cmd)
        except ValidationError as exc:
            self.metrics.count_command(cmd.op, "invalid")
            conn.send(error(ErrorCode.BAD_MESSAGE, str(exc), request_id=cmd.request_id,
                            field=exc.field).message)  # fmt: skip
            return
        except (StoreError, RedisError, OSError) as exc:
            log.warning("%s failed: %s", cmd.op, exc)
            self.metrics.count_command(cmd.op, "unavailable")
            conn.send(error(ErrorCode.UNAVAILABLE, "store unavailable; retry with the same id",
                            request_id=cmd.request_id).message)  # fmt: skip
            return
        if not outcome.now_ms:  # refused before the store was asked: our estimate of its clock
            outcome = dataclasses.replace(outcome, now_ms=self.server_time_ms())
        if cmd.op in (Op.RESERVE, Op.BUY_NOW):
            self.metrics.reserve_seconds.observe(time.perf_counter() - started)
        self.metrics.count_command(cmd.op, "ok" if outcome.ok else (outcome.reason or "refused"))
        conn.send(result_message(cmd, outcome))

    async def _run_command(self, show: str, cmd: Command) -> Outcome:
        inv = self.services.inventory
        if cmd.op is Op.RESERVE:
            return await inv.reserve(show, cmd.drop, cmd.viewer, cmd.quantity, cmd.request_id,
                                     currency=cmd.currency)  # fmt: skip
        if cmd.op is Op.BUY_NOW:
            return await inv.buy_now(show, cmd.drop, cmd.viewer, cmd.quantity, cmd.request_id,
                                     cmd.payment_reference, currency=cmd.currency)  # fmt: skip
        if cmd.op is Op.CONFIRM:
            return await inv.confirm(show, cmd.hold, cmd.viewer, cmd.payment_reference)
        return await inv.cancel(show, cmd.hold, cmd.viewer)

    # -- viewer counts ------------------------------------------------------------------------
    async def _refresh_clock(self) -> None:
        with contextlib.suppress(StoreError, RedisError, OSError):
            before = time.time() * 1000
            server = await self.services.inventory.server_time_ms()
            after = time.time() * 1000
            self.clock_offset_ms = server - (before + after) / 2

    async def _count_viewers(self) -> None:
        """Publish this process's viewer count per show and sum every process's (heartbeats)."""
        while not self._stop.is_set():
            try:
                await self._refresh_clock()
                await self._count_once()
            except (StoreError, RedisError, OSError) as exc:
                log.warning("viewer count failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=VIEWERS_INTERVAL_S)

    async def _count_once(self) -> None:
        keys, redis = self.services.keys, self.services.redis
        counts = self.hub.local_counts()
        gone = self._counted - counts.keys()
        now = self.server_time_ms()
        pipe = redis.pipeline(transaction=False)
        for show in gone:
            pipe.hdel(keys.viewers(show), self.process_id)
        shows = sorted(counts)
        for show in shows:
            pipe.hset(keys.viewers(show), self.process_id, f"{counts[show]}:{now}")
            pipe.pexpire(keys.viewers(show), VIEWERS_STALE_MS * 12)
            pipe.hgetall(keys.viewers(show))
        results = await pipe.execute()
        self._counted = set(counts)
        for i, show in enumerate(shows):
            raw: dict[bytes, bytes] = results[len(gone) + 3 * i + 2]
            total = 0
            for value in raw.values():
                count, _, stamp = value.decode().partition(":")
                if count.isdigit() and stamp.isdigit() and now - int(stamp) < VIEWERS_STALE_MS:
                    total += int(count)
            self.hub.set_viewers(show, total, now)


def _log_failure(task: asyncio.Task[None]) -> None:
    """No task of the gateway ends in an exception without a log line saying so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A log entry as the same message the live channel carries."""
    import orjson

    return {
        "id": entry_id.decode(),
        "type": fields[b"type"].decode(),
        "ts": int(fields.get(b"ts", b"0")),
        "data": orjson.loads(fields.get(b"data", b"{}")),
    }
