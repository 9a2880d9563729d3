"""Locust: the moment a drop goes live. Viewers ramp into a show over WebSockets, the host drops a
product over the host API, every viewer taps Buy within the buy window; an audit follows.

Run it (a local server, a host key, the token secret; see ``loadtests/README.md``)::

    LC_HOST_KEY=lch_... LIVECOMMERCE_TOKEN_SECRET=... LC_REDIS_URL=redis://127.0.0.1:6379 \\
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 --headless \\
        --viewers 200 --stock 50 --limit 2 --ramp 10 --buy-window 1 --csv out/spike

Every message type goes through locust's request events, so the UI and the CSV show them:

====================  ==================================  =========================================
type                  name                                response time
====================  ==================================  =========================================
``WS``                ``connect``, ``join``, ``ping``     handshake / join -> snapshot / ping RTT
``WS``                ``buy_now ok``, ``buy_now sold_out`` reply latency, one name per outcome
                      ``buy_now limit_exceeded``, ...     (refusals are correct answers: success)
``WS``                ``buy_now error|timeout|lost``      failures
``WS``                ``drop``, ``reconnect``             connection lost (failure) / resumed
``WSR``               ``drop_opened``, ``stock``, ...     fan-out: server ``ts`` -> receipt
``POST``/``GET``      ``host: ...``                       the host API calls
====================  ==================================  =========================================

Locust runs on gevent, so the viewer uses ``websocket-client`` (gevent patches its sockets), never
an asyncio client. The post-run audit runs in a subprocess (``loadtests/postrun.py``) for the
same reason; its verdict sets the exit code (1 = an invariant is broken).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult, Event
from locust import HttpUser, LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # ``loadtests`` as a package, wherever locust runs from

from livecommerce.realtime.tokens import mint  # noqa: E402
from loadtests import common  # noqa: E402
from loadtests.common import SpikePlan  # noqa: E402

log = logging.getLogger("loadtests")

SUBPROTOCOL = "livecommerce.v1.json"
CONNECT_TIMEOUT_S = 15.0
JOIN_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 10.0
CONNECT_TRIES = 3
UNKNOWN_SHOW_TRIES = 20
"""The host creates the show while the first viewers connect: retry ``unknown_show`` a while."""
JOIN_GRACE_S = 10.0
"""After the ramp, the host waits at most this long for the last viewers to join."""


# -- configuration: every option has an environment variable -----------------------------------
@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser  # locust's own add_argument (groups do not take include_in_web_ui/is_secret)
    g.add_argument(
        "--viewers",
        type=int,
        env_var="LC_VIEWERS",
        default=0,
        help="viewers to ramp in (0 = --users minus the host)",
    )
    g.add_argument("--stock", type=int, env_var="LC_STOCK", default=100, help="units dropped")
    g.add_argument(
        "--limit", type=int, env_var="LC_LIMIT", default=2, help="per-viewer limit of the drop"
    )
    g.add_argument(
        "--attempts-per-viewer",
        type=int,
        env_var="LC_ATTEMPTS_PER_VIEWER",
        default=4,
        help="buy attempts per viewer",
    )
    g.add_argument(
        "--attempts",
        type=int,
        env_var="LC_ATTEMPTS",
        default=0,
        help="total buy attempts (overrides --attempts-per-viewer)",
    )
    g.add_argument(
        "--ramp",
        type=float,
        env_var="LC_RAMP",
        default=0.0,
        help="seconds to ramp viewers in (0 = users / spawn rate, else 10)",
    )
    g.add_argument(
        "--buy-window",
        type=float,
        env_var="LC_BUY_WINDOW",
        default=1.0,
        help="seconds in which every viewer's attempts fall",
    )
    g.add_argument(
        "--run-id",
        env_var="LC_RUN",
        default="",
        help="names show/drop/viewers (random; set it for distributed runs)",
    )
    g.add_argument(
        "--host-key",
        env_var="LC_HOST_KEY",
        default="",
        is_secret=True,
        help="host API key (lch_...) that creates the show and drops",
    )
    g.add_argument(
        "--token-secret",
        env_var="LIVECOMMERCE_TOKEN_SECRET",
        default="",
        is_secret=True,
        help="the server's viewer-token secret (HS256)",
    )
    g.add_argument(
        "--redis-url",
        env_var="LC_REDIS_URL",
        default="",
        is_secret=True,
        help="the server's Redis, for the post-run audit (empty = no audit)",
    )
    g.add_argument(
        "--key-prefix",
        env_var="LIVECOMMERCE_KEY_PREFIX",
        default="lc",
        help="the server's key prefix",
    )
    g.add_argument(
        "--no-sink",
        action="store_true",
        env_var="LC_NO_SINK",
        default=False,
        help="skip the end-to-end check against the reference sink",
    )
    g.add_argument(
        "--sink-wait",
        type=float,
        env_var="LC_SINK_WAIT",
        default=60.0,
        help="seconds the audit waits for the relay to deliver",
    )
    g.add_argument(
        "--audit-out",
        env_var="LC_AUDIT_OUT",
        default="",
        help="audit JSON file (default: <csv prefix>_audit.json)",
    )


# -- per-process state of the current run -------------------------------------------------------
@dataclass
class Run:
    plan: SpikePlan = field(default_factory=SpikePlan)
    started: float = field(default_factory=time.monotonic)
    show_ready: Event = field(default_factory=Event)
    drop_at: float | None = None
    joined: int = 0
    connected: int = 0
    connect_errors: int = 0
    drops: int = 0
    buyers_done: int = 0
    units_by_viewer: dict[str, int] = field(default_factory=dict)
    orders: list[str] = field(default_factory=list)
    clock_offset_ms: float = 0.0
    """Server clock minus ours, from the join with the shortest round trip (NTP-style)."""
    best_rtt_ms: float = float("inf")
    indexes: itertools.count[int] = field(default_factory=itertools.count)
    finished: bool = False
    """Set after the audit: the next test (web UI) starts a new run with a new id."""


RUN = Run(finished=True)


def _plan(options: Any) -> SpikePlan:
    viewers = options.viewers or max((options.num_users or 2) - 1, 1)
    attempts = options.attempts or viewers * options.attempts_per_viewer
    ramp = options.ramp
    if not ramp:
        ramp = (viewers + 1) / options.spawn_rate if options.spawn_rate else 10.0
    return SpikePlan(
        viewers=viewers,
        stock=options.stock,
        limit=options.limit,
        attempts=attempts,
        ramp_s=ramp,
        buy_window_s=options.buy_window,
        **({"run": options.run_id} if options.run_id else {}),
    )


def current_run(environment: Environment) -> Run:
    """The run in progress, or a new one (the shape ticks once before ``test_start`` fires)."""
    global RUN
    if RUN.finished:
        RUN = Run(plan=_plan(environment.parsed_options))
        if not isinstance(environment.runner, WorkerRunner):
            log.info("spike plan: %s", json.dumps(RUN.plan.as_dict()))
    return RUN


@events.test_start.add_listener
def _test_start(environment: Environment, **_: Any) -> None:
    current_run(environment)


def fire(
    environment: Environment,
    request_type: str,
    name: str,
    response_time: float,
    length: int = 0,
    exception: BaseException | None = None,
) -> None:
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=max(response_time, 0.0),
        response_length=length,
        exception=exception,
        context={},
    )


class ConnectionDropped(Exception):
    """The server closed or lost a viewer's connection (close code in the message)."""


class ProtocolError(Exception):
    """The server answered something the protocol does not allow here."""


def _close_code(data: bytes) -> int:
    return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005


# -- the viewer ---------------------------------------------------------------------------------
class ViewerUser(User):
    """One viewer: connect, join the show, watch; when the drop opens, tap Buy a few times."""

    weight = 1
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.index = -1
        self.viewer = ""
        self.ws: websocket.WebSocket | None = None
        self.pending: dict[str, AsyncResult] = {}
        self.last_event_id: str | None = None
        self.buying = False
        self.stopping = False

    @property
    def plan(self) -> SpikePlan:
        return RUN.plan

    def on_start(self) -> None:
        self.index = next(RUN.indexes)
        tag = ""
        if isinstance(self.environment.runner, WorkerRunner):
            tag = f"w{self.environment.runner.client_id[-6:]}-"
        self.viewer = f"v{self.plan.run}-{tag}{self.index}"
        RUN.show_ready.wait(timeout=JOIN_TIMEOUT_S)  # locally the host sets it; else retries
        self._connect_and_join()

    def on_stop(self) -> None:
        self.stopping = True
        self._close()

    def _close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            RUN.connected -= 1
            with contextlib.suppress(Exception):
                ws.close(timeout=1)

    def _token(self) -> str | None:
        secret = self.environment.parsed_options.token_secret
        return mint(secret, self.viewer, 3600) if secret else None

    def _connect_and_join(self, resume: bool = False) -> bool:
        url = common.ws_url(self.host or "http://127.0.0.1:8000")
        for attempt in range(CONNECT_TRIES * UNKNOWN_SHOW_TRIES):
            if self.stopping:
                return False
            t0 = time.perf_counter()
            try:
                ws = websocket.create_connection(
                    url, subprotocols=[SUBPROTOCOL], timeout=CONNECT_TIMEOUT_S
                )
            except Exception as exc:
                fire(self.environment, "WS", "connect", (time.perf_counter() - t0) * 1000, 0, exc)
                RUN.connect_errors += 1
                if attempt + 1 >= CONNECT_TRIES:
                    return False
                gevent.sleep(0.5 + random.random())
                continue
            fire(self.environment, "WS", "connect", (time.perf_counter() - t0) * 1000)
            self.ws = ws
            RUN.connected += 1
            outcome = self._join(ws, resume)
            if outcome == "joined":
                return True
            self._close()
            if outcome != "unknown_show":
                return False
            gevent.sleep(0.5)  # the host may not have created the show yet
        return False

    def _join(self, ws: websocket.WebSocket, resume: bool) -> str:
        join: dict[str, Any] = {"type": "join", "show": self.plan.show}
        token = self._token()
        if token:
            join["token"] = token
        if resume and self.last_event_id:
            join["last_event_id"] = self.last_event_id
        t0 = time.perf_counter()
        name = "reconnect" if resume else "join"
        try:
            ws.send(json.dumps(join))
            ws.settimeout(JOIN_TIMEOUT_S)
            raw = ws.recv()
            msg = json.loads(raw) if raw else {}
        except Exception as exc:
            fire(self.environment, "WS", name, (time.perf_counter() - t0) * 1000, 0, exc)
            return "failed"
        elapsed = (time.perf_counter() - t0) * 1000
        kind = msg.get("type")
        if kind == "error" and msg.get("code") == "unknown_show":
            return "unknown_show"
        if kind not in ("snapshot", "resumed"):
            fire(
                self.environment,
                "WS",
                name,
                elapsed,
                len(raw),
                ProtocolError(f"expected snapshot, got {kind}: {msg.get('code', '')}"),
            )
            return "failed"
        fire(self.environment, "WS", name, elapsed, len(raw))
        ws.settimeout(None)
        if not resume:
            RUN.joined += 1
        if kind == "snapshot":
            self.last_event_id = msg.get("last_event_id") or self.last_event_id
            for drop in msg.get("drops") or []:
                if drop.get("id") == self.plan.drop and drop.get("state") == "open":
                    self._start_buying()
        if not resume:
            self._sync_clock(ws)
        return "joined"

    def _sync_clock(self, ws: websocket.WebSocket) -> None:
        """One ping: its round trip and the pong's ``server_time`` estimate the server's clock
        (NTP-style, error <= RTT/2); the shortest round trip seen in this process wins."""
        sent_ms = time.time() * 1000
        t0 = time.perf_counter()
        try:
            ws.send(json.dumps({"type": "ping", "id": "clock"}))
            ws.settimeout(JOIN_TIMEOUT_S)
            while True:
                raw = ws.recv()
                msg = json.loads(raw) if raw else {}
                if msg.get("type") == "pong":
                    break
                self._on_message(msg, len(raw))  # pushes that came first still count
        except Exception as exc:
            fire(self.environment, "WS", "ping", (time.perf_counter() - t0) * 1000, 0, exc)
            return
        finally:
            ws.settimeout(None)
        got_ms = time.time() * 1000
        fire(self.environment, "WS", "ping", (time.perf_counter() - t0) * 1000, len(raw))
        rtt = got_ms - sent_ms
        if isinstance(msg.get("server_time"), int) and rtt < RUN.best_rtt_ms:
            RUN.best_rtt_ms = rtt
            RUN.clock_offset_ms = msg["server_time"] - (sent_ms + got_ms) / 2

    @task
    def listen(self) -> None:
        """Read pushes and replies until the run stops; reconnect (resume) after a drop."""
        if self.ws is None:
            gevent.sleep(1.0)  # never joined: the failure was reported; idle till the end
            return
        ws = self.ws
        try:
            opcode, frame = ws.recv_data_frame()
        except Exception as exc:
            if self.stopping:
                return
            self._dropped(ConnectionDropped(f"{type(exc).__name__}: {exc}"))
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            self._dropped(ConnectionDropped(f"closed by server: {_close_code(frame.data)}"))
            return
        data = frame.data
        self._on_message(json.loads(data), len(data))

    def _dropped(self, exc: ConnectionDropped) -> None:
        fire(self.environment, "WS", "drop", 0, 0, exc)
        RUN.drops += 1
        self._close()
        for pending in self.pending.values():
            pending.set_exception(exc)
        self.pending.clear()
        if not self.stopping:
            gevent.sleep(random.uniform(0.1, 1.0))  # back-off with jitter
            self._connect_and_join(resume=True)

    def _on_message(self, msg: dict[str, Any], length: int) -> None:
        kind = msg.get("type")
        if kind == "batch":  # several pushes in one frame (docs/protocol.md, "Batches")
            for item in msg.get("messages") or ():
                if isinstance(item, dict):
                    self._on_message(item, length)
            return
        if kind in ("result", "pong") or (kind == "error" and msg.get("id") in self.pending):
            waiter = self.pending.pop(str(msg.get("id")), None)
            if waiter is not None:
                waiter.set(msg)
            return
        if kind == "error":
            fire(
                self.environment,
                "WS",
                f"error {msg.get('code')}",
                0,
                length,
                ProtocolError(str(msg.get("message"))),
            )
            return
        ts = msg.get("ts")
        if isinstance(ts, int):
            latency = time.time() * 1000 + RUN.clock_offset_ms - ts
            fire(self.environment, "WSR", str(kind), latency, length)
        if "id" in msg and isinstance(msg.get("id"), str):
            self.last_event_id = msg["id"]
        data = msg.get("data") or {}
        if kind == "drop_opened" and data.get("id") == self.plan.drop:
            self._start_buying()

    # -- buying ---------------------------------------------------------------------------------
    def _start_buying(self) -> None:
        if self.buying:
            return
        self.buying = True
        n = self.plan.attempts_of(self.index)
        delays = sorted(random.uniform(0, self.plan.buy_window_s) for _ in range(n))
        gevent.spawn(self._buy_all, delays)

    def _buy_all(self, delays: list[float]) -> None:
        begin = time.monotonic()
        try:
            for k, delay in enumerate(delays):
                gevent.sleep(max(0.0, begin + delay - time.monotonic()))
                if self.stopping:
                    return
                self._buy(k)
        finally:
            RUN.buyers_done += 1

    def _buy(self, k: int) -> None:
        rid = f"b{k}"
        msg = {
            "type": "buy_now",
            "id": rid,
            "drop": self.plan.drop,
            "quantity": 1,
            "payment_reference": f"pay-{self.viewer}-{k}",
            "fresh": True,  # each id is sent once (docs/protocol.md)
        }
        waiter: AsyncResult = AsyncResult()
        self.pending[rid] = waiter
        t0 = time.perf_counter()
        try:
            ws = self.ws
            if ws is None:
                raise ConnectionDropped("not connected")
            ws.send(json.dumps(msg))
            reply: dict[str, Any] = waiter.get(timeout=REPLY_TIMEOUT_S)
        except gevent.Timeout:
            self.pending.pop(rid, None)
            fire(
                self.environment,
                "WS",
                "buy_now timeout",
                (time.perf_counter() - t0) * 1000,
                0,
                TimeoutError(f"no reply in {REPLY_TIMEOUT_S} s"),
            )
            return
        except Exception as exc:
            self.pending.pop(rid, None)
            fire(self.environment, "WS", "buy_now lost", (time.perf_counter() - t0) * 1000, 0, exc)
            return
        elapsed = (time.perf_counter() - t0) * 1000
        if reply.get("type") == "error":
            fire(
                self.environment,
                "WS",
                "buy_now error",
                elapsed,
                0,
                ProtocolError(f"{reply.get('code')}: {reply.get('message')}"),
            )
            return
        if reply.get("ok"):
            order = reply.get("order") or {}
            RUN.units_by_viewer[self.viewer] = RUN.units_by_viewer.get(self.viewer, 0) + int(
                order.get("quantity", 1)
            )
            if order.get("id"):
                RUN.orders.append(str(order["id"]))
            fire(self.environment, "WS", "buy_now ok", elapsed)
        else:
            fire(self.environment, "WS", f"buy_now {reply.get('reason')}", elapsed)


# -- the host -----------------------------------------------------------------------------------
class HostUser(HttpUser):
    """The host: creates the product and the show, waits for the ramp, drops, watches stats."""

    fixed_count = 1
    wait_time = constant(1)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.environment.parsed_options.host_key}"}

    def _call(self, method: str, path: str, body: dict[str, Any], name: str) -> bool:
        with self.client.request(
            method, path, json=body, headers=self._headers(), name=name, catch_response=True
        ) as response:
            if response.status_code in (200, 201):
                response.success()
                return True
            response.failure(f"{response.status_code}: {response.text[:200]}")
            return False

    def on_start(self) -> None:
        if not self.environment.parsed_options.host_key:
            fire(
                self.environment,
                "POST",
                "host: setup",
                0,
                0,
                ValueError("no host key: set LC_HOST_KEY or --host-key"),
            )
            return
        plan = RUN.plan
        if self._call(*common.product_request(plan), name="host: create product"):
            ok = self._call(*common.show_request(plan), name="host: create show")
            if ok:
                RUN.show_ready.set()

    @task
    def run_the_show(self) -> None:
        plan = RUN.plan
        if RUN.drop_at is None:
            waited = time.monotonic() - RUN.started
            if RUN.joined < plan.viewers and waited < plan.ramp_s + JOIN_GRACE_S:
                return  # still ramping
            if not RUN.show_ready.is_set():
                return
            RUN.drop_at = time.monotonic()
            self._call(*common.drop_request(plan), name="host: drop")
            return
        self.client.get(
            common.drop_stats_path(plan), headers=self._headers(), name="host: drop stats"
        )


# -- the shape: ramp, drop, buy window, settle --------------------------------------------------
class SpikeShape(LoadTestShape):
    """Ramp ``viewers`` (+ the host) in over ``ramp`` seconds; hold until every viewer finished its
    attempts after the drop (or the bounded wait ran out); then stop."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        plan = current_run(self.runner.environment).plan
        users = plan.viewers + 1
        rate = users / max(plan.ramp_s, 0.1)
        budget = plan.ramp_s + JOIN_GRACE_S + plan.buy_window_s + REPLY_TIMEOUT_S + 5
        if self.get_run_time() > budget:
            return None
        if RUN.drop_at is not None:
            since = time.monotonic() - RUN.drop_at
            finished = RUN.buyers_done >= RUN.joined and RUN.joined > 0
            if since > plan.buy_window_s + 0.5 and finished:
                return None
            if since > plan.buy_window_s + REPLY_TIMEOUT_S + 2:
                return None
        return users, rate


# -- the audit after the run --------------------------------------------------------------------
@events.test_stop.add_listener
def _audit(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, LocalRunner | MasterRunner):
        return
    RUN.finished = True
    options = environment.parsed_options
    plan = RUN.plan
    told = sum(RUN.units_by_viewer.values())
    print(
        f"spike {plan.run}: {RUN.joined}/{plan.viewers} viewers joined, "
        f"{RUN.connect_errors} connection errors, {RUN.drops} connections dropped, "
        f"{told} units told sold to {len(RUN.units_by_viewer)} buyers (stock {plan.stock})",
        flush=True,
    )
    if not options.redis_url:
        print("AUDIT SKIPPED: give --redis-url (LC_REDIS_URL) to audit the run", flush=True)
        return
    out = options.audit_out or (f"{options.csv_prefix}_audit.json" if options.csv_prefix else "")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as seen:
        if isinstance(environment.runner, LocalRunner):  # workers keep their own tallies
            json.dump({"units_by_viewer": RUN.units_by_viewer, "orders": RUN.orders}, seen)
        else:
            json.dump({}, seen)
    cmd = [
        sys.executable,
        str(HERE / "postrun.py"),
        "--redis-url",
        options.redis_url,
        "--key-prefix",
        options.key_prefix,
        "--run",
        plan.run,
        "--stock",
        str(plan.stock),
        "--limit",
        str(plan.limit),
        "--client-json",
        seen.name,
        "--sink-wait",
        str(options.sink_wait),
    ]
    if out:
        cmd += ["--out", out]
    if options.no_sink:
        cmd.append("--no-sink")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=options.sink_wait + 60, env=env
        )
    finally:
        os.unlink(seen.name)
    print(done.stdout, end="", flush=True)
    if done.returncode not in (0, 1):
        print(done.stderr, end="", file=sys.stderr, flush=True)
    environment.process_exit_code = 0 if done.returncode == 0 else 1
