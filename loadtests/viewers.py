"""One process of simulated viewers for ``scripts/spike.py``, on asyncio and the project's client
(:class:`livecommerce.realtime.client.Client`).

The parent starts N of these (``multiprocessing``, spawn) and talks to each over a pipe:

* parent -> worker: the :class:`WorkerConfig` (as the process argument), in wave mode
  ``("burst", {"wave": k, "start_ms": t})`` for each wave, then ``"stop"``;
* worker -> parent: ``("progress", {...})`` twice a second, then ``("result", {...})`` with the
  raw samples once the viewers are closed.

Viewer ``i`` of the whole spike connects at ``start_ms + i / viewers * ramp`` (wall clock, shared
by all processes) and lives in process ``i % processes``, so every process ramps at the same pace.
When it sees ``drop_opened`` it makes its attempts at uniformly random moments in the buy window,
one at a time (a viewer taps again after the previous answer). An attempt answered
``unavailable`` is sent again with the same request id after a short back-off (what the protocol
asks of a client), for up to ``retry_for_s``; in wave mode so is one not answered within
``reply_timeout_s`` (only then is it a ``timeout``).

Wave mode (``waves`` > 0, :mod:`loadtests.chaos`): viewers do not buy on ``drop_opened``; each
``burst`` message starts a wave in which every viewer makes its share of the wave's attempts
(:func:`wave_attempts`). Each viewer also records the durable event ids it received and how its
reconnects were answered (``resumed`` or ``snapshot``), for the gap check of
:func:`loadtests.chaos.gap_check`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from livecommerce.realtime.client import Client, ClientClosed, is_event
from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from loadtests.bots import BotPlan
from loadtests.common import SpikePlan
from loadtests.wire import WireClient, WireClosed

PROGRESS_INTERVAL_S = 0.5
CONNECTED_SAMPLE_S = 0.25
CONNECT_TRIES = 3
UNKNOWN_SHOW_TRIES = 20
CLOCK_PINGS = 8
"""Viewers per process that ping once after joining, to estimate the server's clock."""
RETRY_BACKOFF_S = (0.2, 2.0)
"""First and largest pause before an ``unavailable`` attempt is sent again (doubling)."""


@dataclass(frozen=True)
class WorkerConfig:
    plan: dict[str, Any]
    """:class:`SpikePlan` fields."""
    url: str
    """The gateway's ws(s)://.../ws URL."""
    token_secret: str
    processes: int
    index: int
    start_ms: float
    encoding: str = "json"
    reply_timeout_s: float = 10.0
    open_timeout_s: float = 15.0
    bots: dict[str, Any] = field(default_factory=dict)
    """:class:`loadtests.bots.BotPlan` fields (empty: no bot mode)."""
    retry_for_s: float = 60.0
    """How long an attempt answered ``unavailable`` keeps being sent again (same request id)."""
    waves: int = 0
    """0: buy on ``drop_opened``; N: buy in N waves, each started by a ``burst`` message."""
    client: str = "lean"
    """``lean`` (:class:`loadtests.wire.WireClient`) or ``product`` (the project's client)."""


def wave_attempts(plan: SpikePlan, waves: int, wave: int, index: int) -> int:
    """Attempts of viewer ``index`` in ``wave`` (0-based): ``plan.attempts`` split evenly over
    the waves, each wave's share spread over the viewers, the extra ones rotating by wave."""
    per_wave, extra_waves = divmod(plan.attempts, max(waves, 1))
    total = per_wave + (1 if wave < extra_waves else 0)
    base, extra = divmod(total, max(plan.viewers, 1))
    return base + (1 if (index - wave * extra) % max(plan.viewers, 1) < extra else 0)


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (10k sockets need it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def now_ms() -> float:
    return time.time() * 1000.0


class TimedClient(Client):
    """The project's client, stamping each message with its arrival time (``_rx_ms``) before
    it waits in the client's queue, so queueing in this busy process is not counted as fan-out."""

    def _dispatch(self, message: dict[str, Any]) -> None:
        message["_rx_ms"] = now_ms()
        super()._dispatch(message)


AnyClient = TimedClient | WireClient


@dataclass
class Watch:
    """What one viewer's pushed messages are checked against."""

    client: AnyClient
    index: int
    track: dict[str, Any] | None
    """The gap check's record (wave mode), else None."""
    saw_open: bool = False
    buying: asyncio.Task[None] | None = None


class Samples:
    """Everything one process measures (raw, the parent aggregates)."""

    def __init__(self) -> None:
        self.join_ms: list[float] = []
        self.fanout_ms: list[float] = []
        """drop_opened: server ``ts`` -> arrival, one per viewer that saw it."""
        self.push_ms: list[float] = []
        """Every other durable event and ``stock`` push: server ``ts`` -> arrival."""
        self.burst_pushes: Counter[str] = Counter()
        """Pushes by type viewers received after they saw the drop open (a batch's one by one)."""
        self.buy_ms: list[float] = []
        self.sent_at: list[float] = []
        self.answered_at: list[float] = []
        self.ok_at: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.units_by_viewer: dict[str, int] = {}
        self.bot_outcomes: Counter[str] = Counter()
        self.orders: list[str] = []
        self.connected: list[tuple[float, int]] = []
        self.close_codes: Counter[str] = Counter()
        self.unavailable = 0
        """``unavailable`` replies (each followed by a retry with the same request id)."""
        self.waves: dict[int, Counter[str]] = {}
        """Per wave: attempts, ok, unavailable, retried, retried_ok, timeout, rejoin_resumed,
        rejoin_snapshot, viewers_started, viewers_done (wave mode)."""
        self.wave = -1
        self.tracks: dict[str, dict[str, Any]] = {}
        """Per viewer (wave mode): first/resync event ids, the durable event ids seen, at_end."""
        self.connected_now = 0
        self.closed_now = 0
        """Connections the server (or its death) closed so far, each followed by a reconnect."""
        self.joined = 0
        self.failed = 0
        self.saw_drop = 0
        self.buyers_done = 0
        self.clock_offset_ms = 0.0
        self.best_rtt_ms = float("inf")

    def progress(self) -> dict[str, Any]:
        return {
            "joined": self.joined,
            "failed": self.failed,
            "saw_drop": self.saw_drop,
            "buyers_done": self.buyers_done,
            "answered": len(self.answered_at),
            "ok": len(self.ok_at),
            "sent": len(self.sent_at),
            "unanswered": self.outcomes["timeout"],
            "unavailable": self.unavailable,
            "connected": self.connected_now,
            "closed": self.closed_now,
            "at_ms": now_ms(),
            "wave": self.wave,
            "wave_started": self.in_wave("viewers_started"),
            "wave_done": self.in_wave("viewers_done"),
        }

    def in_wave(self, key: str, wave: int | None = None) -> int:
        return self.waves.get(self.wave if wave is None else wave, Counter())[key]

    def count(self, key: str, n: int = 1) -> None:
        """Count ``key`` in the current wave (wave mode; a no-op before the first burst)."""
        if self.wave >= 0:
            self.waves.setdefault(self.wave, Counter())[key] += n

    def result(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "join_ms": self.join_ms,
            "fanout_ms": self.fanout_ms,
            "push_ms": self.push_ms,
            "buy_ms": self.buy_ms,
            "sent_at": self.sent_at,
            "answered_at": self.answered_at,
            "ok_at": self.ok_at,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "units_by_viewer": self.units_by_viewer,
            "bot_outcomes": dict(self.bot_outcomes),
            "orders": self.orders,
            "connected": self.connected,
            "close_codes": dict(self.close_codes),
            "burst_pushes": dict(self.burst_pushes),
            "clock_offset_ms": self.clock_offset_ms,
            "best_rtt_ms": self.best_rtt_ms if self.best_rtt_ms != float("inf") else None,
            "waves": {str(k): dict(v) for k, v in self.waves.items()},
            "tracks": self.tracks,
        }


class Viewers:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.plan = SpikePlan(**config.plan)
        self.bots = BotPlan(**config.bots)
        self.samples = Samples()
        self.clients: list[AnyClient] = []
        self.by_index: dict[int, AnyClient] = {}
        self.stopping = asyncio.Event()
        self.pings = 0
        self.wave_tasks: set[asyncio.Task[None]] = set()
        self._resent_mark = 0

    # -- one viewer -----------------------------------------------------------------------------
    async def _connect(self, index: int) -> AnyClient | None:
        viewer = self.plan.viewer(index)
        token = mint(self.config.token_secret, viewer, 3600) if self.config.token_secret else None
        failures = 0
        for _ in range(CONNECT_TRIES * UNKNOWN_SHOW_TRIES):
            client = self._client(token, index)
            t0 = time.perf_counter()
            try:
                first = await client.connect()
            except (ClientClosed, WireClosed) as exc:
                await client.close()
                if exc.code == 4004:  # unknown_show: the host is still creating it
                    await asyncio.sleep(0.5)
                    continue
                self.samples.errors[f"join_refused:{exc.code}"] += 1
                return None
            except Exception as exc:
                await client.close()
                self.samples.errors[f"connect:{type(exc).__name__}"] += 1
                failures += 1
                if failures >= CONNECT_TRIES:
                    return None
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            self.samples.join_ms.append((time.perf_counter() - t0) * 1000)
            self.samples.joined += 1
            self._drops_in(first)
            if self.config.waves:
                self.samples.tracks[viewer] = {
                    "first": first.get("last_event_id"), "resync": None, "seen": [],
                    "at_end": False,
                }  # fmt: skip
            return client
        self.samples.errors["join:unknown_show"] += 1
        return None

    def _client(self, token: str | None, index: int) -> AnyClient:
        """A viewer's connection: the lean one, or the project's client (``--client
        product``, and always in wave mode, whose faults need its reconnect and resume)."""
        config = self.config
        kind = WireClient if config.client == "lean" and not config.waves else TimedClient
        return kind(
            config.url, self.plan.show, token=token, encoding=Encoding(config.encoding),
            open_timeout_s=config.open_timeout_s, headers=self.bots.headers(index),
        )  # fmt: skip

    async def _sync_clock(self, client: AnyClient) -> None:
        sent = now_ms()
        with contextlib.suppress(Exception):
            pong = await client.ping()
            got = float(pong.get("_rx_ms") or now_ms())
            rtt = got - sent
            server = pong.get("server_time")
            if isinstance(server, int) and rtt < self.samples.best_rtt_ms:
                self.samples.best_rtt_ms = rtt
                self.samples.clock_offset_ms = server - (sent + got) / 2

    def _drops_in(self, message: dict[str, Any]) -> bool:
        """Does a snapshot show our drop already open (a late joiner)?"""
        return any(
            d.get("id") == self.plan.drop and d.get("state") == "open"
            for d in message.get("drops") or []
        )

    async def viewer(self, index: int) -> None:
        plan = self.plan
        start = self.config.start_ms + index / max(plan.viewers, 1) * plan.ramp_s * 1000
        await asyncio.sleep(max(0.0, (start - now_ms()) / 1000))
        client = await self._connect(index)
        if client is None:
            self.samples.failed += 1
            return
        self.clients.append(client)
        self.by_index[index] = client
        if self.pings < CLOCK_PINGS:
            self.pings += 1
            await self._sync_clock(client)
        watch = Watch(client, index, self.samples.tracks.get(plan.viewer(index)))
        if not self.config.waves and client.snapshot is not None \
                and self._drops_in(client.snapshot):  # fmt: skip
            self._start_buying(watch)
        try:
            if isinstance(client, WireClient):  # pushes come to a callback, no task wakes
                client.on_push = lambda msg: self._pushed(watch, msg)
                code = await client.closed()
                if not self.stopping.is_set():
                    self.samples.errors[f"closed:{code}"] += 1
            else:
                async for msg in client.messages():
                    self._pushed(watch, msg)
        except ClientClosed as exc:
            if not self.stopping.is_set():
                self.samples.errors[f"closed:{exc.code}"] += 1
        finally:
            if watch.buying is not None:
                watch.buying.cancel()
                await asyncio.gather(watch.buying, return_exceptions=True)

    def _pushed(self, watch: Watch, msg: dict[str, Any]) -> None:
        """One pushed message of a viewer: latency samples, the gap check's track, and the
        drop's opening, which starts the viewer's attempts (not in wave mode)."""
        plan = self.plan
        kind = msg.get("type")
        if watch.saw_open:
            self.samples.burst_pushes[str(kind)] += 1
        ts = msg.get("ts")
        if isinstance(ts, int):
            latency = float(msg.get("_rx_ms") or now_ms()) + self._offset() - ts
            data = msg.get("data") or {}
            if kind == "drop_opened" and data.get("id") == plan.drop and not watch.saw_open:
                watch.saw_open = True  # a restock reopens it: the first opening is the drop
                self.samples.fanout_ms.append(latency)
            else:
                self.samples.push_ms.append(latency)
        if watch.track is not None:
            self._track(watch.track, msg)
        if self.config.waves or watch.buying is not None:
            return
        is_open = kind == "drop_opened" and (msg.get("data") or {}).get("id") == plan.drop
        if is_open or (kind == "snapshot" and self._drops_in(msg)):
            self._start_buying(watch)

    def _start_buying(self, watch: Watch) -> None:
        self.samples.saw_drop += 1
        watch.buying = asyncio.create_task(self._buy_all(watch.client, watch.index))

    def _track(self, track: dict[str, Any], msg: dict[str, Any]) -> None:
        """Wave mode: what the gap check needs of one pushed message."""
        kind = msg.get("type")
        if kind == "snapshot":  # a rejoin the server could not resume: state replaced
            track["resync"] = msg.get("last_event_id")
            self.samples.count("rejoin_snapshot")
        elif kind == "resumed":
            self.samples.count("rejoin_resumed")
        elif is_event(msg):
            track["seen"].append(msg["id"])

    def _offset(self) -> float:
        return self.samples.clock_offset_ms

    async def _buy_all(self, client: AnyClient, index: int) -> None:
        plan = self.plan
        try:
            await self._buy_some(client, index, plan.attempts_of(index), "b")
        finally:
            self.samples.buyers_done += 1

    async def _buy_some(self, client: AnyClient, index: int, n: int, prefix: str) -> None:
        """``n`` attempts at random moments of the buy window, one after the other."""
        delays = sorted(random.uniform(0, self.plan.buy_window_s) for _ in range(n))
        begin = time.monotonic()
        viewer = self.plan.viewer(index)
        for k, delay in enumerate(delays):
            await asyncio.sleep(max(0.0, begin + delay - time.monotonic()))
            if self.stopping.is_set():
                return
            await self._buy(client, viewer, f"{prefix}{k}", index)

    async def _buy_wave(self, client: AnyClient, index: int, wave: int, start_ms: float) -> None:
        s = self.samples
        n = wave_attempts(self.plan, self.config.waves, wave, index)
        s.count("viewers_started")
        try:
            await asyncio.sleep(max(0.0, (start_ms - now_ms()) / 1000))
            await self._buy_some(client, index, n, f"w{wave}b")
        finally:
            s.count("viewers_done")

    async def _buy(self, client: AnyClient, viewer: str, request_id: str, index: int = 0) -> None:
        outcome = await self._buy_once(client, viewer, request_id, index)
        self.samples.outcomes[outcome] += 1
        self.samples.count("attempts")
        self.samples.count(outcome if outcome in ("ok", "timeout") else "refused")
        if self.bots.is_bot(index):
            self.samples.bot_outcomes[outcome] += 1

    async def _send_until_available(
        self, client: AnyClient, viewer: str, request_id: str, index: int
    ) -> dict[str, Any]:
        """The attempt's reply. ``unavailable`` -- and in wave mode also no reply within the reply
        timeout (the connection may be down, its server gone) -- is answered by sending it again
        with the same request id, for up to ``retry_for_s``: the store answers a request id once."""
        payment = self.bots.payment_reference(index, viewer, request_id)
        give_up = time.monotonic() + self.config.retry_for_s
        pause, retried = RETRY_BACKOFF_S[0], False
        while True:
            try:
                message = {"type": "buy_now", "drop": self.plan.drop, "quantity": 1,
                           "payment_reference": payment, "id": request_id}  # fmt: skip
                if not retried:  # the first send of this id: a retry may replay a success
                    message["fresh"] = True
                reply = await client.request(message, within_s=self.config.reply_timeout_s)
            except TimeoutError:
                if not self.config.waves or time.monotonic() + pause > give_up:
                    raise  # a plain spike reports a timeout as such
                self.samples.count("timeout_retried")
                reply = {"type": "error", "code": "timeout"}
            failed = reply.get("type") == "error" and reply.get("code") in (
                "unavailable",
                "timeout",
            )
            if not failed or time.monotonic() + pause > give_up:
                if retried and not failed:
                    self.samples.count("retried_answered")
                    if reply.get("ok"):
                        self.samples.count("retried_ok")
                return reply
            if reply.get("code") == "unavailable":
                self.samples.unavailable += 1
                self.samples.count("unavailable")
            if not retried:
                retried = True
                self.samples.count("retried")
            await asyncio.sleep(random.uniform(pause / 2, pause))
            pause = min(pause * 2, RETRY_BACKOFF_S[1])

    async def _buy_once(self, client: AnyClient, viewer: str, request_id: str, index: int) -> str:
        """One attempt; returns its outcome label (ok, a refusal reason, timeout, ...)."""
        s = self.samples
        sent = now_ms()
        s.sent_at.append(sent)
        try:
            reply = await self._send_until_available(client, viewer, request_id, index)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            return f"lost:{type(exc).__name__}"
        got = float(reply.get("_rx_ms") or now_ms())
        s.buy_ms.append(got - sent)
        s.answered_at.append(got)
        if reply.get("type") == "error":
            return f"error:{reply.get('code')}"
        if not reply.get("ok"):
            return str(reply.get("reason"))
        s.ok_at.append(got)
        order = reply.get("order") or {}
        s.units_by_viewer[viewer] = s.units_by_viewer.get(viewer, 0) + int(order.get("quantity", 1))
        if order.get("id"):
            s.orders.append(str(order["id"]))
        return "ok"

    # -- the process ----------------------------------------------------------------------------
    def connected_now(self) -> int:
        return sum(c.connections - len(c.close_codes) for c in self.clients)

    async def _report(self, conn: Connection) -> None:
        last_progress = 0.0
        while not self.stopping.is_set():
            self.samples.connected_now = self.connected_now()
            self.samples.closed_now = sum(len(c.close_codes) for c in self.clients)
            self.samples.connected.append((now_ms(), self.samples.connected_now))
            if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = time.monotonic()
                conn.send(("progress", self.samples.progress()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), CONNECTED_SAMPLE_S)

    def _close_wave(self) -> None:
        """Count the commands the clients sent again on reconnect during the wave that ends."""
        resent = sum(c.resent for c in self.clients)
        self.samples.count("resent", resent - self._resent_mark)
        self._resent_mark = resent

    def _burst(self, wave: int, start_ms: float) -> None:
        self._close_wave()
        self.samples.wave = wave
        self.samples.waves.setdefault(wave, Counter())
        for index, client in self.by_index.items():
            task = asyncio.create_task(self._buy_wave(client, index, wave, start_ms))
            self.wave_tasks.add(task)
            task.add_done_callback(self.wave_tasks.discard)

    async def run(self, conn: Connection) -> None:
        # The pipe stays blocking (no add_reader: uvloop would make the fd non-blocking and a
        # large result would then fail half-written); a thread waits for each message instead.
        loop = asyncio.get_running_loop()
        mine = range(self.config.index, self.plan.viewers, self.config.processes)
        tasks = [asyncio.create_task(self.viewer(i)) for i in mine]
        reporter = asyncio.create_task(self._report(conn))
        while True:
            message = await loop.run_in_executor(None, conn.recv)
            if message == "stop":
                self._close_wave()
                break
            kind, data = message
            if kind == "burst":
                self._burst(int(data["wave"]), float(data["start_ms"]))
        for client in self.clients:
            for code in client.close_codes:
                self.samples.close_codes[str(code)] += 1
        for index, client in self.by_index.items():
            track = self.samples.tracks.get(self.plan.viewer(index))
            if track is not None:
                track["at_end"] = client.connections > len(client.close_codes)
        self.stopping.set()
        await reporter
        self.samples.connected.append((now_ms(), self.connected_now()))
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for task in [*tasks, *self.wave_tasks]:
            task.cancel()
        await asyncio.gather(*tasks, *self.wave_tasks, return_exceptions=True)
        await loop.run_in_executor(None, conn.send, ("result", self.samples.result()))


def worker_main(config: WorkerConfig, conn: Connection) -> None:
    """Entry point of one viewer process (multiprocessing target)."""
    raise_open_files_limit()
    try:
        import uvloop

        uvloop.run(Viewers(config).run(conn))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(Viewers(config).run(conn))
