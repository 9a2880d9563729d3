"""One process of simulated viewers for ``scripts/spike.py``, on asyncio and the project's client
(:class:`livecommerce.realtime.client.Client`).

The parent starts N of these (``multiprocessing``, spawn) and talks to each over a pipe:

* parent -> worker: the :class:`WorkerConfig` (as the process argument), then ``"stop"``;
* worker -> parent: ``("progress", {...})`` twice a second, then ``("result", {...})`` with the
  raw samples once the viewers are closed.

Viewer ``i`` of the whole spike connects at ``start_ms + i / viewers * ramp`` (wall clock, shared
by all processes) and lives in process ``i % processes``, so every process ramps at the same pace.
When it sees ``drop_opened`` it makes its attempts at uniformly random moments in the buy window,
one at a time (a viewer taps again after the previous answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from livecommerce.realtime.client import Client, ClientClosed
from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from loadtests.common import SpikePlan

PROGRESS_INTERVAL_S = 0.5
CONNECTED_SAMPLE_S = 0.25
CONNECT_TRIES = 3
UNKNOWN_SHOW_TRIES = 20
CLOCK_PINGS = 8
"""Viewers per process that ping once after joining, to estimate the server's clock."""


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


class Samples:
    """Everything one process measures (raw, the parent aggregates)."""

    def __init__(self) -> None:
        self.join_ms: list[float] = []
        self.fanout_ms: list[float] = []
        """drop_opened: server ``ts`` -> arrival, one per viewer that saw it."""
        self.push_ms: list[float] = []
        """Every other durable event and ``stock`` push: server ``ts`` -> arrival."""
        self.buy_ms: list[float] = []
        self.sent_at: list[float] = []
        self.answered_at: list[float] = []
        self.ok_at: list[float] = []
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.units_by_viewer: dict[str, int] = {}
        self.orders: list[str] = []
        self.connected: list[tuple[float, int]] = []
        self.close_codes: Counter[str] = Counter()
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
        }

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
            "orders": self.orders,
            "connected": self.connected,
            "close_codes": dict(self.close_codes),
            "clock_offset_ms": self.clock_offset_ms,
            "best_rtt_ms": self.best_rtt_ms if self.best_rtt_ms != float("inf") else None,
        }


class Viewers:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.plan = SpikePlan(**config.plan)
        self.samples = Samples()
        self.clients: list[Client] = []
        self.stopping = asyncio.Event()
        self.pings = 0

    # -- one viewer -----------------------------------------------------------------------------
    async def _connect(self, index: int) -> TimedClient | None:
        viewer = self.plan.viewer(index)
        token = mint(self.config.token_secret, viewer, 3600) if self.config.token_secret else None
        failures = 0
        for _ in range(CONNECT_TRIES * UNKNOWN_SHOW_TRIES):
            client = TimedClient(
                self.config.url,
                self.plan.show,
                token=token,
                encoding=Encoding(self.config.encoding),
                open_timeout_s=self.config.open_timeout_s,
            )
            t0 = time.perf_counter()
            try:
                first = await client.connect()
            except ClientClosed as exc:
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
            return client
        self.samples.errors["join:unknown_show"] += 1
        return None

    async def _sync_clock(self, client: Client) -> None:
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
        if self.pings < CLOCK_PINGS:
            self.pings += 1
            await self._sync_clock(client)
        buying: asyncio.Task[None] | None = None
        if client.snapshot is not None and self._drops_in(client.snapshot):
            self.samples.saw_drop += 1
            buying = asyncio.create_task(self._buy_all(client, index))
        try:
            async for msg in client.messages():
                kind = msg.get("type")
                ts = msg.get("ts")
                if isinstance(ts, int):
                    latency = float(msg.get("_rx_ms") or now_ms()) + self._offset() - ts
                    data = msg.get("data") or {}
                    if kind == "drop_opened" and data.get("id") == plan.drop:
                        self.samples.fanout_ms.append(latency)
                    else:
                        self.samples.push_ms.append(latency)
                is_open = kind == "drop_opened" and (msg.get("data") or {}).get("id") == plan.drop
                if buying is None and (is_open or (kind == "snapshot" and self._drops_in(msg))):
                    self.samples.saw_drop += 1
                    buying = asyncio.create_task(self._buy_all(client, index))
        except ClientClosed as exc:
            if not self.stopping.is_set():
                self.samples.errors[f"closed:{exc.code}"] += 1
        finally:
            if buying is not None:
                buying.cancel()
                await asyncio.gather(buying, return_exceptions=True)

    def _offset(self) -> float:
        return self.samples.clock_offset_ms

    async def _buy_all(self, client: Client, index: int) -> None:
        plan = self.plan
        n = plan.attempts_of(index)
        delays = sorted(random.uniform(0, plan.buy_window_s) for _ in range(n))
        begin = time.monotonic()
        viewer = plan.viewer(index)
        try:
            for k, delay in enumerate(delays):
                await asyncio.sleep(max(0.0, begin + delay - time.monotonic()))
                if self.stopping.is_set():
                    return
                await self._buy(client, viewer, k)
        finally:
            self.samples.buyers_done += 1

    async def _buy(self, client: Client, viewer: str, k: int) -> None:
        s = self.samples
        sent = now_ms()
        s.sent_at.append(sent)
        try:
            reply = await asyncio.wait_for(
                client.buy_now(self.plan.drop, 1, f"pay-{viewer}-{k}", request_id=f"b{k}"),
                self.config.reply_timeout_s,
            )
        except TimeoutError:
            s.outcomes["timeout"] += 1
            return
        except Exception as exc:
            s.outcomes[f"lost:{type(exc).__name__}"] += 1
            return
        got = float(reply.get("_rx_ms") or now_ms())
        s.buy_ms.append(got - sent)
        s.answered_at.append(got)
        if reply.get("type") == "error":
            s.outcomes[f"error:{reply.get('code')}"] += 1
        elif reply.get("ok"):
            s.outcomes["ok"] += 1
            s.ok_at.append(got)
            order = reply.get("order") or {}
            s.units_by_viewer[viewer] = s.units_by_viewer.get(viewer, 0) + int(
                order.get("quantity", 1)
            )
            if order.get("id"):
                s.orders.append(str(order["id"]))
        else:
            s.outcomes[str(reply.get("reason"))] += 1

    # -- the process ----------------------------------------------------------------------------
    def connected_now(self) -> int:
        return sum(c.connections - len(c.close_codes) for c in self.clients)

    async def _report(self, conn: Connection) -> None:
        last_progress = 0.0
        while not self.stopping.is_set():
            self.samples.connected.append((now_ms(), self.connected_now()))
            if time.monotonic() - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = time.monotonic()
                conn.send(("progress", self.samples.progress()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), CONNECTED_SAMPLE_S)

    async def run(self, conn: Connection) -> None:
        # The pipe stays blocking (no add_reader: uvloop would make the fd non-blocking and a
        # large result would then fail half-written); a thread waits for "stop" instead.
        loop = asyncio.get_running_loop()
        got_stop = loop.run_in_executor(None, conn.recv)
        mine = range(self.config.index, self.plan.viewers, self.config.processes)
        tasks = [asyncio.create_task(self.viewer(i)) for i in mine]
        reporter = asyncio.create_task(self._report(conn))
        await got_stop
        for client in self.clients:
            for code in client.close_codes:
                self.samples.close_codes[str(code)] += 1
        self.stopping.set()
        await reporter
        self.samples.connected.append((now_ms(), self.connected_now()))
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.run_in_executor(None, conn.send, ("result", self.samples.result()))


def worker_main(config: WorkerConfig, conn: Connection) -> None:
    """Entry point of one viewer process (multiprocessing target)."""
    raise_open_files_limit()
    try:
        import uvloop

        uvloop.run(Viewers(config).run(conn))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(Viewers(config).run(conn))
