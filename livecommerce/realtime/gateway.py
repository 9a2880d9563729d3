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
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError, ResponseError
from starlette.websockets import WebSocket, WebSocketDisconnect

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.core.model import Outcome, drop_view, valid_id
from livecommerce.realtime import collector
from livecommerce.realtime.admission import Admission
from livecommerce.realtime.broker import Broker, RedisBroker
from livecommerce.realtime.chat import Moderate, Post, React
from livecommerce.realtime.codec import Encoding, Frame, negotiate, parse_event_id
from livecommerce.realtime.connection import Connection
from livecommerce.realtime.edge import EdgeView
from livecommerce.realtime.engagement import Engagement
from livecommerce.realtime.hub import Hub
from livecommerce.realtime.linedesk import LineDesk, nothing
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
from livecommerce.realtime.recovery import Recovery
from livecommerce.realtime.risk import RiskCheck, screen
from livecommerce.realtime.wsprotocol import WebSocketProtocol
from livecommerce.store.blocks import Blocks
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


class Gateway:
    def __init__(self, services: Services, *, broker: Broker | None = None) -> None:
        self.services = services
        self.settings = services.settings.gateway
        self.metrics = GatewayMetrics(services.registry)
        self.hub = Hub(
            broker or RedisBroker(services.redis_url, services.keys),
            self.metrics,
            stock_interval_s=self.settings.stock_interval_s,
            stock_budget=self.settings.stock_budget,
            batch_interval_s=self.settings.chat_interval_s,
        )
        self.hub.on_lost = self._on_lost
        self.recovery = Recovery(self.hub, self._read_since, reconnect=self._reconnect,
                                 filled=self._filled, spawn=self._spawn)  # fmt: skip
        self.edge = EdgeView(enabled=self.settings.edge_refusals)
        self.hub.on_event = self._on_event
        self.lines = LineDesk(
            services.inventory, self.metrics, in_flight=self.settings.line_in_flight,
            size=self.settings.line_size, stall_s=self.settings.line_stall_s,
            edge_reply=self._edge_reply, closed=self.edge.closed,
        )  # fmt: skip
        self.hub.on_line = self.lines.on_line
        self.process_id = uuid.uuid4().hex[:12]
        self.connections: set[Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        """Loops beside the viewer count that must run for the process's life (reactions, line)."""
        self._counted: set[str] = set()
        self._join_slots = asyncio.Semaphore(JOIN_CONCURRENCY)
        self._command_slots = asyncio.Semaphore(COMMAND_CONCURRENCY)
        self.attempts = 0
        """Commands and edge refusals so far: the quiet collector's sign of activity."""
        self._collector_installed = False
        self.clock_offset_ms = 0.0
        """Server (Redis) clock minus this process's wall clock, refreshed every second."""
        self.clock_error_ms = float("inf")
        """How far off ``clock_offset_ms`` may be: half the round trip that measured it."""
        secret = self.settings.token_secret
        self._secret = secret.reveal() if secret is not None else None
        self.engagement = Engagement(services, self.hub, self.server_time_ms,
                                     interval_s=self.settings.chat_interval_s)  # fmt: skip
        fraud = services.settings.fraud
        self.risk = RiskCheck(fraud, services.registry) if fraud.risk_url else None
        self.admission = Admission(fraud, Blocks(services.redis, services.keys))

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.hub.start()
        await self._refresh_clock()
        self._counter = self._spawn(self._count_viewers(), "viewer-count")
        self._background = [self._spawn(self.engagement.run(self._stop), "reactions")]
        if self.settings.gc_quiet_s:
            collector.install()
            self._collector_installed = True
            quiet = collector.QuietCollector(
                lambda: self.attempts, self.settings.gc_quiet_s,
                observe=self.metrics.gc_full_seconds.observe,
            )  # fmt: skip
            self._background.append(self._spawn(quiet.run(self._stop), "gc"))
        if self.settings.line_in_flight:
            self._background.append(self._spawn(self.lines.ticks(self._stop), "line-ticks"))

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
        if self.risk is not None:
            await self.risk.aclose()
        if self._collector_installed:
            self._collector_installed = False
            collector.uninstall()

    def supervised(self) -> list[asyncio.Task[None]]:
        """The tasks that must run for the process's life (the app's readiness checks them)."""
        listener = getattr(self.hub.broker, "task", None)
        tasks = (self._counter, listener, *self._background)
        return [t for t in tasks if isinstance(t, asyncio.Task)]

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
        address = self.admission.address_of(websocket)
        limited = self.admission.guard.admit(address, time.monotonic())
        if limited is not None:
            self.metrics.refused.labels(limited[0]).inc()
            await self.admission.refuse_handshake(websocket, *limited)
            return
        try:
            await self._accepted(websocket, encoding, offered, address)
        finally:
            self.admission.guard.leave(address)

    async def _accepted(
        self, websocket: WebSocket, encoding: Encoding, offered: list[str], address: str
    ) -> None:
        await websocket.accept(subprotocol=encoding.subprotocol if offered else None)
        self.metrics.accepted.labels(str(encoding)).inc()
        self.metrics.connections.labels(str(encoding)).inc()
        conn = self._connect(websocket, encoding)
        conn.address = address
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
        protocol = conn.outbox.protocol
        if isinstance(protocol, WebSocketProtocol):
            protocol.on_message = None  # frames still in flight go nowhere; no cycle kept
        if conn.viewer:
            self.admission.guard.part(conn.viewer)
            conn.viewer = ""
        if conn.next_receive is not None:
            conn.next_receive.cancel()
        if conn.show is not None:
            with contextlib.suppress(Exception):
                await self.hub.leave(conn.show, conn.outbox)
            if conn.show not in self.hub.topics:
                self.edge.forget(conn.show)  # no longer subscribed: the view would go stale
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
                message = await conn.receive()
            if message["type"] == "websocket.disconnect":
                return
            actions = message.get("actions")
            if actions is None:  # not decided in the fast lane
                payload = message.get("text")
                if payload is None:
                    payload = message.get("bytes") or b""
                actions = session.receive_frame(
                    conn.encoding, payload, now=time.monotonic(), wall=time.time()
                )
            for action in actions:
                if isinstance(action, Send):
                    self._reply(conn, action)
                elif isinstance(action, Join):
                    if not await self._join(conn, action):
                        return
                    self._open_fast_lane(conn)
                elif isinstance(action, Command):
                    await self._command(conn, action, edge_asked="edge_asked" in message)
                elif isinstance(action, Post | React | Moderate):
                    await self.engagement.handle(conn, action)
                elif isinstance(action, Close):
                    await self._close(conn, action.code, action.reason)
                    return

    def _reply(self, conn: Connection, action: Send) -> None:
        body = action.message
        if body.get("type") == "pong":
            body["server_time"] = self.server_time_ms()
        conn.send(body)

    # -- the fast lane --------------------------------------------------------------------------
    def _open_fast_lane(self, conn: Connection) -> None:
        """Let the joined viewer's frames be answered where they arrive (see :meth:`_fast`), under
        the server protocol of realtime/wsprotocol.py; under any other, nothing changes."""
        protocol = conn.outbox.protocol
        if isinstance(protocol, WebSocketProtocol):
            protocol.on_message = functools.partial(self._fast, conn)

    def _fast(self, conn: Connection, payload: str | bytes) -> dict[str, Any] | None:
        """A frame of a joined viewer, inside the protocol's ``data_received``. While the
        connection's task waits for it with nothing read ahead, the frame is decoded here, and
        what needs no I/O is answered at once: an error reply, a pong, an edge refusal (a burst
        is mostly those). Anything else goes to the task as its decided actions, in order.
        Returns None when answered, else the event for the task's inbox."""
        if not conn.idle or conn.closing:
            key = "text" if isinstance(payload, str) else "bytes"
            return {"type": "websocket.receive", key: payload}
        try:
            actions = conn.session.receive_frame(
                conn.encoding, payload, now=time.monotonic(), wall=time.time()
            )
            if len(actions) == 1:
                action = actions[0]
                if isinstance(action, Send):
                    self._reply(conn, action)
                    return None
                if isinstance(action, Command):
                    if self._at_edge(conn, action):
                        return None
                    return {"type": "websocket.receive", "actions": actions, "edge_asked": True}
        except Exception:
            log.exception("viewer frame failed")
            actions = [Close(CloseCode.INTERNAL, "internal")]
        return {"type": "websocket.receive", "actions": actions}

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
        """The pub/sub link broke: events may have been missed. The edge view forgets what it
        knew; the viewers stay and are caught up from the event log (recovery.py)."""
        self.edge.clear()
        self.recovery.lost()

    def _reconnect(self, outboxes: list[Outbox]) -> None:
        """Close these viewers with 4000: they resume from the log by reconnecting."""
        closing = set(outboxes)
        for conn in list(self.connections):
            if conn.outbox in closing:
                self._spawn(self._close(conn, CloseCode.RECONNECT, "reconnect"), "close")

    def _filled(self, show: str, drops: list[dict[str, Any]], outboxes: list[Outbox]) -> None:
        """A show's viewers are caught up: give them the drops' levels (stock pushes are not in
        the log) and let the edge view learn the drops again."""
        self.metrics.resumes.labels("filled").inc(len(outboxes))
        now = self.server_time_ms()
        for drop in drops:
            if drop["state"] == "closed":
                continue
            frame = Frame({"type": "stock", "ts": now, "data": {
                "drop": drop["id"], "remaining": drop["remaining"], "held": drop["held"],
                "sold": drop["sold"]}})  # fmt: skip
            for outbox in outboxes:
                outbox.push(frame)
        self._observe_drops(show, drops, 0)

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
        refused = await self.admission.refuse_join(show, join.viewer or "", conn.address)
        if refused is not None:
            code, close = refused
            conn.send(error(code, f"{code}: not admitted to show {show!r}").message)
            await self._close(conn, close, str(code))
            return False
        conn.viewer = join.viewer or ""
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
                    "missed": len(events), "chat": await self.engagement.chat_state(show),
                })  # fmt: skip
                for event in events:
                    conn.outbox.push(Frame(event, event_id=event["id"]))
                for drop in drops:
                    if drop["state"] != "closed":
                        conn.send({"type": "stock", "ts": self.server_time_ms(), "data": {
                            "drop": drop["id"], "remaining": drop["remaining"],
                            "held": drop["held"], "sold": drop["sold"]}})  # fmt: skip
                conn.outbox.release(events[-1]["id"] if events else join.last_event_id)
                # No server time of that read: it only fills in drops the view does not know,
                # never overrides an event (which may be newer than the read).
                self._observe_drops(show, drops, 0)
                return True
            self.metrics.resumes.labels("gap").inc()
        snapshot = await self._snapshot(show)
        topic = self.hub.topics.get(show)
        snapshot.update(
            viewer=join.viewer,
            viewers=max(topic.viewers if topic else 0, len(topic.outboxes) if topic else 1),
            resumed=join.last_event_id is not None,
            gap=join.last_event_id is not None,
            chat=await self.engagement.chat_state(show),
        )
        conn.send(snapshot)
        conn.outbox.release(snapshot["last_event_id"])
        self._observe_drops(show, snapshot["drops"], snapshot["server_time"])
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

    # -- edge view ----------------------------------------------------------------------------
    def _on_event(self, show: str, kind: str, data: Any, ts: int) -> None:
        load = self.edge.observe(show, kind, data, ts)
        if load is not None:
            self._spawn(self._load_buyers(show, *load), "edge-buyers")
        if kind == "sold_out" and isinstance(data, dict):
            opened = data.get("opens_at")
            if isinstance(opened, int) and 0 < opened <= ts:
                self.metrics.sell_out_seconds.observe((ts - opened) / 1000)

    def _observe_drops(self, show: str, drops: list[dict[str, Any]], ts: int) -> None:
        for drop, generation in self.edge.observe_drops(show, drops, ts):
            self._spawn(self._load_buyers(show, drop, generation), "edge-buyers")

    async def _load_buyers(self, show: str, drop: str, generation: int) -> None:
        try:
            buyers = await self.services.inventory.buyers(show, drop)
        except (StoreError, RedisError, OSError) as exc:
            log.warning("edge view: buyers of %s/%s not loaded: %s", show, drop, exc)
            self.edge.load_failed(show, drop, generation)
            return
        if self.edge.set_buyers(show, drop, generation, buyers):
            self.lines.flush(show, drop)

    def _at_edge(self, conn: Connection, cmd: Command) -> bool:
        """Answer ``cmd`` here if the edge is certain of the store's answer (or the store's own
        checks refuse it without Redis); False to ask the store."""
        if not self.edge.enabled or cmd.op not in (Op.RESERVE, Op.BUY_NOW):
            return False
        assert conn.show is not None
        try:
            reply = self._edge_refusal(conn.show, cmd)
        except ValidationError as exc:
            self.metrics.count_command(cmd.op, "invalid")
            conn.send(error(ErrorCode.BAD_MESSAGE, str(exc), request_id=cmd.request_id,
                            field=exc.field).message)  # fmt: skip
            return True
        if reply is None:
            return False
        self.attempts += 1
        self.metrics.count_command(cmd.op, reply.get("reason") or "ok")
        conn.send(reply)
        return True

    def _edge_refusal(self, show: str, cmd: Command) -> dict[str, Any] | None:
        """The store's certain answer to a reserve/buy_now, given here (docs/protocol.md, "Edge
        refusals"), or None to ask the store. Raises ValidationError as the store would."""
        early = self.services.inventory.check_buy(
            show, cmd.drop, cmd.viewer, cmd.quantity, cmd.request_id, cmd.currency,
            cmd.payment_reference,
        )  # fmt: skip
        if early is not None:  # answered without Redis by the store's own checks
            return result_message(cmd, self._stamped(early))
        return self._edge_reply(show, cmd)

    def _stamped(self, outcome: Outcome) -> Outcome:
        """``outcome`` with a server time: a refusal made before the store was asked carries this
        process's estimate of the store clock (the protocol promises the server clock)."""
        if outcome.now_ms:
            return outcome
        return dataclasses.replace(outcome, now_ms=self.server_time_ms())

    def _edge_reply(self, show: str, cmd: Command) -> dict[str, Any] | None:
        now = self.server_time_ms()
        refusal = self.edge.refusal(show, cmd.drop, cmd.viewer, now_ms=now,
                                    uncertainty_ms=self.clock_error_ms,
                                    fresh=cmd.fresh)  # fmt: skip
        if refusal is None:
            return None
        self.metrics.count_edge(refusal.reason)
        # result_message() of the store's refusal, built directly (the hot path of a burst).
        return {"type": "result", "id": cmd.request_id, "op": str(cmd.op), "ok": False,
                "server_time": now, "reason": refusal.reason, "detail": dict(refusal.detail),
                "replay": False}  # fmt: skip

    # -- commands -----------------------------------------------------------------------------
    async def _command(self, conn: Connection, cmd: Command, *, edge_asked: bool = False) -> None:
        """Answer ``cmd``: at the edge when it can (unless the fast lane just asked it), else in
        the drop's line if it has one, at the store."""
        show = conn.show
        assert show is not None
        started = time.perf_counter()
        self.attempts += 1
        edge_checked = self.edge.enabled and cmd.op in (Op.RESERVE, Op.BUY_NOW)
        if edge_checked and not edge_asked and self._at_edge(conn, cmd):
            return
        lined = bool(self.settings.line_in_flight) and cmd.op in (Op.RESERVE, Op.BUY_NOW)
        if not lined or not valid_id(cmd.drop) or self.edge.closed(show, cmd.drop):
            # A closed drop has nothing to sell in any order: its attempts (a buyer's, whom the
            # edge cannot refuse, or anyone's before its buyers are loaded) wait in no line.
            await self._store_command(conn, show, cmd, edge_checked, started)
            return
        release = await self.lines.queue_up(conn, (show, cmd.drop), cmd)
        if release is None:
            return
        try:
            await self._store_command(conn, show, cmd, edge_checked, started, release)
        finally:
            release()

    async def _store_command(self, conn: Connection, show: str, cmd: Command, edge_checked: bool,
                             started: float, answered: Callable[[], None] = nothing,
                             ) -> None:  # fmt: skip
        """Run ``cmd`` at the store and reply. ``answered`` is called once the store has
        answered, before the order's fsync wait (the waiting line's ticket is then done)."""
        try:
            async with self._command_slots:
                # The view may have learnt the answer while this attempt waited for a slot
                # (the drop sold out meanwhile): the waiting burst is then answered here.
                late = self._edge_reply(show, cmd) if edge_checked else None
                if late is not None:
                    self.metrics.count_command(cmd.op, late.get("reason") or "refused")
                    conn.send(late)
                    return
                refused = await self.admission.refuse_command(show, conn.address, cmd)
                outcome = refused or await self._run_command(show, cmd)
            # The fsync wait of an order holds no store slot and no place in the drop's line:
            # one WAITAOF round covers every order of a burst, and the next attempts reach the
            # store meanwhile.
            answered()
            outcome = await self.services.inventory.durable(outcome)
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
        outcome = self._stamped(outcome)
        if cmd.op in (Op.RESERVE, Op.BUY_NOW):
            self.metrics.reserve_seconds.observe(time.perf_counter() - started)
        self.metrics.count_command(cmd.op, "ok" if outcome.ok else (outcome.reason or "refused"))
        conn.send(result_message(cmd, outcome))

    async def _run_command(self, show: str, cmd: Command) -> Outcome:
        inv = self.services.inventory
        if self.risk is not None:
            refused = await screen(self.risk, inv, show, cmd)
            if refused is not None:
                return refused
        if cmd.op is Op.RESERVE:
            return await inv.reserve(show, cmd.drop, cmd.viewer, cmd.quantity, cmd.request_id,
                                     currency=cmd.currency)  # fmt: skip
        if cmd.op is Op.BUY_NOW:
            return await inv.buy_now(show, cmd.drop, cmd.viewer, cmd.quantity, cmd.request_id,
                                     cmd.payment_reference, currency=cmd.currency,
                                     wait_durable=False)  # fmt: skip
        if cmd.op is Op.CONFIRM:
            return await inv.confirm(show, cmd.hold, cmd.viewer, cmd.payment_reference,
                                     wait_durable=False)  # fmt: skip
        return await inv.cancel(show, cmd.hold, cmd.viewer)

    # -- viewer counts ------------------------------------------------------------------------
    async def _refresh_clock(self) -> None:
        with contextlib.suppress(StoreError, RedisError, OSError):
            before = time.time() * 1000
            server = await self.services.inventory.server_time_ms()
            after = time.time() * 1000
            self.clock_offset_ms = server - (before + after) / 2
            # TIME ran between before and after; its ms resolution adds one ms.
            self.clock_error_ms = (after - before) / 2 + 1

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
