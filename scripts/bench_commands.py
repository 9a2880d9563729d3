"""Commands-per-second benchmark of the gateway: buy commands over WebSocket, as JSON on stdout.

Starts its own embedded Valkey (AOF on, appendfsync everysec, loopback only) and measures in the
same run, for each op (``buy_now``, ``reserve``):

* ``direct``: the baseline -- ``Inventory.buy_now`` / ``Inventory.reserve`` called from K
  concurrent asyncio tasks in one process (what the gateway itself calls per command);
* ``gateway``: one gateway process (``python -m livecommerce serve --no-demo``), K viewer
  connections (joined with tokens, from ``--client-processes`` client processes), each sending
  its next command as soon as the reply to the previous one arrives.

``ratio`` is gateway commands/s over direct commands/s: what the WebSocket path (receive, decode,
validate, rate-limit, reply, metrics) costs on top of the store.

``--scenarios sale,edge_refusal,store_refusal`` instead measures the gateway's CPU per buy attempt
(``server_cpu_us_per_command``) for a sale (``buy_now`` on an open drop), an edge refusal
(``buy_now`` on a sold-out drop) and a store refusal (``buy_now`` over the viewer's limit, which
only the store knows), each against two gateways in the same run: ``before`` (edge refusals off,
``LIVECOMMERCE_EDGE_REFUSALS=false``) and ``after`` (the default). Latency is per command, from the
send (or the call) to its reply. The per-connection rate limit is lifted for the run (it still
runs; it just never says no). ``--profile FILE`` records the gateway with py-spy (raw format) if
py-spy is on PATH or in the venv::

    .venv/bin/python scripts/bench_commands.py --connections 256 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123"
SHOW = "bench"
OPS = ("buy_now", "reserve")
SCENARIOS = ("sale", "edge_refusal", "store_refusal", "floor")
VARIANTS = {"before": {"LIVECOMMERCE_EDGE_REFUSALS": "false"}, "after": {}}


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ordered = sorted(latencies_s)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(ordered[-1] * 1000, 2)}


def summary(latencies: list[float], elapsed: float, refused: int, **extra: Any) -> dict[str, Any]:
    return {
        "commands": len(latencies),
        "seconds": round(elapsed, 3),
        "commands_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": percentiles(latencies),
        "refused": refused,
        **extra,
    }


# -- setup ----------------------------------------------------------------------------------------
async def create_drops(redis_url: str, prefix: str, drops: list[str]) -> None:
    import redis.asyncio as aioredis

    from livecommerce.core import config
    from livecommerce.core.model import MAX_QUANTITY, MAX_STOCK, DropSpec
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    client = aioredis.Redis.from_url(redis_url)
    try:
        inv = Inventory(client, Keyspace(prefix), config.load({"LIVECOMMERCE_KEY_PREFIX": prefix}))
        await inv.load()
        if await inv.get_show(SHOW) is None:
            await inv.create_show(SHOW, title="Benchmark")
            await inv.start_show(SHOW)
        for drop in drops:
            spec = DropSpec(id=drop, sku=drop, title=drop, quantity=MAX_STOCK,
                            limit=MAX_QUANTITY, prices={"EUR": 100})  # fmt: skip
            await inv.create_drop(SHOW, spec)
    finally:
        await client.aclose()


async def create_scenario_drop(redis_url: str, prefix: str, scenario: str, drop: str,
                               viewers: int) -> None:  # fmt: skip
    """``edge_refusal``: a drop sold out (closed) before the viewers join; ``store_refusal``: an
    open drop with limit 1 that each viewer ``v0..`` has already bought once."""
    import redis.asyncio as aioredis

    from livecommerce.core import config
    from livecommerce.core.model import MAX_STOCK, DropSpec
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    client = aioredis.Redis.from_url(redis_url)
    try:
        inv = Inventory(client, Keyspace(prefix), config.load({"LIVECOMMERCE_KEY_PREFIX": prefix}))
        await inv.load()
        quantity = 1 if scenario == "edge_refusal" else MAX_STOCK
        spec = DropSpec(id=drop, sku=drop, title=drop, quantity=quantity, limit=1,
                        prices={"EUR": 100})  # fmt: skip
        await inv.create_drop(SHOW, spec)
        if scenario == "edge_refusal":
            assert (await inv.buy_now(SHOW, drop, "setup", 1, f"setup-{drop}", "bench")).ok
        else:
            outs = await asyncio.gather(*(
                inv.buy_now(SHOW, drop, f"v{v}", 1, f"setup-{drop}", "bench")
                for v in range(viewers)
            ))  # fmt: skip
            assert all(o.ok for o in outs)
    finally:
        await client.aclose()


# -- baseline: Inventory called directly ----------------------------------------------------------
async def direct(redis_url: str, prefix: str, op: str, drop: str, tasks: int, seconds: float,
                 warmup: float) -> dict[str, Any]:  # fmt: skip
    import redis.asyncio as aioredis

    from livecommerce.core import config
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    # The same pool the server uses (app.py): blocking, 256 connections.
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=256, timeout=10)
    client = aioredis.Redis.from_pool(pool)
    inv = Inventory(client, Keyspace(prefix), config.load({"LIVECOMMERCE_KEY_PREFIX": prefix}))
    await inv.load()
    latencies: list[float] = []
    refused = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    calls = 0

    async def worker(w: int) -> None:
        nonlocal refused, calls
        i = 0
        viewer = f"v{w}"
        while (t0 := time.perf_counter()) < stop_at:
            i += 1
            calls += 1
            rid = f"d{w}-{i}"
            if op == "buy_now":
                out = await inv.buy_now(SHOW, drop, viewer, 1, rid, "bench")
            else:
                out = await inv.reserve(SHOW, drop, viewer, 1, rid)
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)
                refused += not out.ok

    cpu0 = time.process_time()
    try:
        await asyncio.gather(*(worker(w) for w in range(tasks)))
    finally:
        cpu = time.process_time() - cpu0
        await client.aclose()
    return summary(latencies, seconds, refused, tasks=tasks,
                   cpu_us_per_command=round(cpu / max(calls, 1) * 1e6, 1))  # fmt: skip


# -- gateway: viewers over WebSocket --------------------------------------------------------------
def client_main(url: str, op: str, drop: str, first: int, count: int, seconds: float,
                warmup: float, tag: str, out: Any, go: Any) -> None:  # fmt: skip
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    out.put(asyncio.run(_clients(url, op, drop, first, count, seconds, warmup, tag, out, go)))


async def _clients(url: str, op: str, drop: str, first: int, count: int, seconds: float,
                   warmup: float, tag: str, out: Any, go: Any) -> dict[str, Any]:  # fmt: skip
    import orjson
    from websockets.asyncio.client import connect

    from livecommerce.realtime import tokens

    latencies: list[float] = []
    refused = 0
    errors: list[str] = []
    sockets: list[Any] = []
    sem = asyncio.Semaphore(64)

    async def open_one(i: int) -> Any:
        async with sem:
            ws = await connect(url, subprotocols=["livecommerce.v1.json"],  # type: ignore[list-item]
                               ping_interval=None, open_timeout=30, max_queue=None)  # fmt: skip
            token = tokens.mint(SECRET, f"v{first + i}", 3600)
            await ws.send(orjson.dumps({"type": "join", "show": SHOW, "token": token}).decode())
            while orjson.loads(await ws.recv())["type"] != "snapshot":
                pass
            sockets.append(ws)
            return ws

    await asyncio.gather(*(open_one(i) for i in range(count)))
    out.put("connected")
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    cpu0 = time.process_time()
    sent = 0
    extra = '"payment_reference":"bench",' if op == "buy_now" else ""
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def run(c: int, ws: Any) -> None:
        nonlocal refused, sent
        i = 0
        while (t0 := time.perf_counter()) < stop_at:
            i += 1
            sent += 1
            rid = f"{tag}-{c}-{i}"
            await ws.send(f'{{"type":"{op}","id":"{rid}","drop":"{drop}","quantity":1,{extra}'
                          f'"currency":"EUR"}}')  # fmt: skip
            marker = f'"id":"{rid}"'
            while True:
                frame = await ws.recv()
                if marker in frame:
                    break
            if t0 >= measure_from:
                latencies.append(time.perf_counter() - t0)
                if '"ok":true' not in frame:
                    refused += 1
                    if len(errors) < 3:
                        errors.append(frame[:300])

    await asyncio.gather(*(run(c, ws) for c, ws in enumerate(sockets)))
    cpu = time.process_time() - cpu0
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {"latencies": latencies, "refused": refused, "errors": errors, "sent": sent,
            "cpu_s": cpu}  # fmt: skip


# -- floor: the least a Python server on this loop pays per attempt -----------------------------
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REFUSAL_TAIL = b'","op":"buy_now","ok":false,"server_time":0,"reason":"sold_out","detail":{}}'


def floor_main(port: int) -> None:
    """A WebSocket server that does the least a reply needs: uvloop, the handshake, then per
    frame: find its end, unmask it, find its request id, write a fixed refusal with that id (a
    join gets a bare snapshot). No decoding, no validation, no state: what the gateway pays per
    edge refusal on top of this is the gateway's own."""
    import base64
    import hashlib
    import re

    import uvloop
    from websockets.speedups import apply_mask  # type: ignore[import-not-found]

    key_re = re.compile(rb"(?im)^sec-websocket-key:[ \t]*(\S+)")

    class Floor(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.buf, self.open = transport, b"", False

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            if not self.open:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = buf
                    return
                found = key_re.search(buf[:end])
                assert found is not None
                accept = base64.b64encode(hashlib.sha1(found.group(1) + WS_GUID.encode())
                                          .digest())  # fmt: skip
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                    b"\r\nSec-WebSocket-Protocol: livecommerce.v1.json\r\n\r\n")  # fmt: skip
                self.open, buf = True, buf[end + 4 :]
            while len(buf) >= 2:
                size, start = buf[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(buf[2:4]), 4
                elif size == 127:
                    size, start = int.from_bytes(buf[2:10]), 10
                if len(buf) < start + 4 + size:
                    break
                payload = apply_mask(buf[start + 4 : start + 4 + size], buf[start : start + 4])
                opcode, buf = buf[0] & 0x0F, buf[start + 4 + size :]
                if opcode == 8:
                    self.transport.write(b"\x88\x02\x03\xe8")
                    self.transport.close()
                    return
                i = payload.find(b'"id":"')
                if i < 0:
                    reply = b'{"type":"snapshot"}'
                else:
                    rid = payload[i + 6 : payload.index(b'"', i + 6)]
                    reply = b'{"type":"result","id":"' + rid + REFUSAL_TAIL
                head = bytes((0x81, len(reply))) if len(reply) < 126 else (
                    b"\x81\x7e" + len(reply).to_bytes(2))  # fmt: skip
                self.transport.write(head + reply)
            self.buf = buf

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port,
                                                                backlog=4096)  # fmt: skip
        await server.serve_forever()

    uvloop.run(serve())


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise TimeoutError("floor server not listening")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def gateway_run(url: str, op: str, drop: str, connections: int, processes: int, seconds: float,
                warmup: float, tag: str, server_pid: int) -> dict[str, Any]:  # fmt: skip
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    go = ctx.Event()
    procs = []
    first = 0
    for p in range(processes):
        n = connections // processes + (1 if p < connections % processes else 0)
        args = (url, op, drop, first, n, seconds, warmup, f"{tag}{p}", queue, go)
        proc = ctx.Process(target=client_main, daemon=True, args=args)
        proc.start()
        procs.append(proc)
        first += n
    for _ in procs:
        if queue.get(timeout=120) != "connected":
            raise RuntimeError("a client process failed to connect")
    user0, sys0 = cpu_times(server_pid)
    go.set()
    parts = [queue.get(timeout=seconds + warmup + 120) for _ in procs]
    user1, sys1 = cpu_times(server_pid)
    server_cpu = user1 - user0 + sys1 - sys0
    for proc in procs:
        proc.join(10)
    latencies = [x for part in parts for x in part["latencies"]]
    errors = [e for part in parts for e in part["errors"]][:3]
    sent = sum(p["sent"] for p in parts)
    out = summary(latencies, seconds, sum(p["refused"] for p in parts),
                  connections=connections, client_processes=processes,
                  server_cpu_us_per_command=round(server_cpu / max(sent, 1) * 1e6, 1),
                  server_system_share=round((sys1 - sys0) / server_cpu, 3) if server_cpu else 0,
                  client_cpu_us_per_command=round(
                      sum(p["cpu_s"] for p in parts) / max(sent, 1) * 1e6, 1))  # fmt: skip
    if errors:
        out["sample_refusals"] = errors
    return out


def start_gateway(
    redis_url: str,
    prefix: str,
    port: int,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
    src: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """A gateway from the source tree ``src``, run in it: ``python -m`` puts the working directory
    first on sys.path, ahead of PYTHONPATH, so run anywhere else it would import that tree's code.
    ``wrapper``: a command the gateway runs under (e.g. valgrind and its options)."""
    if src != ROOT:
        extra_env = {**(extra_env or {}), "PYTHONPATH": str(src)}
    env = {**os.environ, **(extra_env or {}),
           "LIVECOMMERCE_REDIS_URL": redis_url, "LIVECOMMERCE_KEY_PREFIX": prefix,
           "LIVECOMMERCE_TOKEN_SECRET": SECRET, "LIVECOMMERCE_DEMO": "false",
           "LIVECOMMERCE_LOG_LEVEL": "warning", "LIVECOMMERCE_RATE": "100000",
           "LIVECOMMERCE_RATE_BURST": "100000"}  # fmt: skip
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "livecommerce", "serve", "--no-demo", "--port", str(port)],
        env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=src,
    )  # fmt: skip


def module_file(src: Path) -> str:
    """The livecommerce package a gateway run in ``src`` imports (for the report)."""
    env = {**os.environ, "PYTHONPATH": str(src)} if src != ROOT else None
    return subprocess.run(
        [sys.executable, "-c", "import livecommerce; print(livecommerce.__file__)"],
        env=env, cwd=src, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes], wait_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``wait_s``."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait_s)
    if proc.poll() is None:
        proc.kill()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError("gateway not ready")


def find_py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=256, help="K: connections / tasks")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--rounds", type=int, default=1, help="alternate direct/gateway N times")
    parser.add_argument("--skip", default="", help="comma list: direct,gateway")
    parser.add_argument("--profile", help="py-spy raw profile of the gateway's first op here")
    parser.add_argument(
        "--before-src",
        default="",
        help="with --scenarios: run the 'before' gateway from this source tree with its "
        "defaults (e.g. `git archive main | tar -x -C DIR`) instead of this tree with edge "
        "refusals off",
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help=f"comma list of {','.join(SCENARIOS)}: CPU per attempt, before/after",
    )
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.floor_server:
        floor_main(args.floor_server)
        return 0
    if args.scenarios:
        return scenarios_main(args, [s for s in args.scenarios.split(",") if s])
    from livecommerce.store.embedded import EmbeddedValkey, free_port

    skip = set(args.skip.split(","))
    ops = [op for op in args.ops.split(",") if op]
    tmp = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    valkey = EmbeddedValkey(tmp / "valkey").start()
    prefix = f"bc{os.getpid()}"
    port = free_port()
    gateway: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    log = lambda m: print(f"bench: {m} ...", file=sys.stderr, flush=True)  # noqa: E731
    try:
        drops = [f"{mode}-{op}-{r}" for op in ops for r in range(args.rounds)
                 for mode in ("direct", "gateway")]  # fmt: skip
        asyncio.run(create_drops(valkey.url, prefix, drops))
        if "gateway" not in skip:
            gateway = start_gateway(valkey.url, prefix, port, tmp / "gateway.log")
            wait_ready(port, gateway)
        for op in ops:
            rows: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            for r in range(args.rounds):
                if "direct" not in skip:
                    log(f"{op} direct, round {r + 1}")
                    rows["direct"].append(asyncio.run(direct(
                        valkey.url, prefix, op, f"direct-{op}-{r}", args.connections,
                        args.seconds, args.warmup,
                    )))  # fmt: skip
                if gateway is not None:
                    log(f"{op} gateway, round {r + 1}")
                    spy = None
                    py_spy = find_py_spy()
                    if args.profile and op == ops[0] and r == 0 and py_spy:
                        spy = subprocess.Popen(
                            [py_spy, "record", "--pid", str(gateway.pid), "--format", "raw",
                             "--rate", "250", "--duration", str(int(args.seconds + args.warmup)),
                             "--output", args.profile, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    rows["gateway"].append(gateway_run(
                        f"ws://127.0.0.1:{port}/ws", op, f"gateway-{op}-{r}", args.connections,
                        args.client_processes, args.seconds, args.warmup, f"g{r}", gateway.pid,
                    ))  # fmt: skip
                    if spy is not None:
                        spy.wait(60)
            results[op] = _combine(rows)
    finally:
        if gateway is not None:
            stop_process(gateway)
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    import orjson

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "connections": args.connections,
        "seconds": args.seconds,
        "results": results,
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def scenarios_main(args: argparse.Namespace, scenarios: list[str]) -> int:
    """Gateway CPU per attempt for each scenario, on a ``before`` and an ``after`` gateway."""
    from livecommerce.store.embedded import EmbeddedValkey, free_port

    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-commands-"))
    valkey = EmbeddedValkey(tmp / "valkey").start()
    prefix = f"bc{os.getpid()}"
    gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    floor: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    modules: dict[str, str] = {}
    results: dict[str, Any] = {}
    log = lambda m: print(f"bench: {m} ...", file=sys.stderr, flush=True)  # noqa: E731
    try:
        asyncio.run(create_drops(valkey.url, prefix, []))
        for variant, env in VARIANTS.items():
            src = ROOT
            if variant == "before" and args.before_src:  # that tree as it is, its defaults
                env, src = {}, Path(args.before_src).resolve()
            port = free_port()
            proc = start_gateway(valkey.url, prefix, port, tmp / f"{variant}.log", env, src=src)
            gateways[variant] = (proc, port)
            modules[variant] = module_file(src)
        for proc, port in gateways.values():
            wait_ready(port, proc)
        if "floor" in scenarios:
            port = free_port()
            floor["floor"] = (subprocess.Popen(
                [sys.executable, __file__, "--floor-server", str(port)],
                stdout=(tmp / "floor.log").open("wb"), stderr=subprocess.STDOUT,
            ), port)  # fmt: skip
            wait_listening(port, floor["floor"][0])
        for scenario in scenarios:
            targets = floor if scenario == "floor" else gateways
            rows: dict[str, list[dict[str, Any]]] = {v: [] for v in targets}
            for r in range(args.rounds):
                for variant, (proc, port) in targets.items():
                    drop = f"{scenario}-{variant}-{r}"
                    if scenario == "floor":
                        pass
                    elif scenario == "sale":
                        asyncio.run(create_drops(valkey.url, prefix, [drop]))
                    else:
                        asyncio.run(create_scenario_drop(valkey.url, prefix, scenario, drop,
                                                         args.connections))  # fmt: skip
                    log(f"{scenario} {variant}, round {r + 1}")
                    spy = None
                    py_spy = find_py_spy()
                    if args.profile and r == 0 and py_spy:
                        spy = subprocess.Popen(
                            [py_spy, "record", "--pid", str(proc.pid), "--format", "raw",
                             "--rate", "250", "--duration", str(int(args.seconds + args.warmup)),
                             "--output", f"{args.profile}-{scenario}-{variant}.txt",
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    rows[variant].append(gateway_run(
                        f"ws://127.0.0.1:{port}/ws", "buy_now", drop, args.connections,
                        args.client_processes, args.seconds, args.warmup, f"{variant}{r}",
                        proc.pid,
                    ))  # fmt: skip
                    if spy is not None:
                        spy.wait(60)
            out: dict[str, Any] = {}
            for variant, runs in rows.items():
                out[variant] = {
                    "server_cpu_us_per_command": statistics.median(
                        r["server_cpu_us_per_command"] for r in runs),
                    "server_system_share": statistics.median(
                        r["server_system_share"] for r in runs),
                    "commands_per_s": statistics.median(r["commands_per_s"] for r in runs),
                    "latency_ms_p50": statistics.median(r["latency_ms"].get("p50", 0.0)
                                                        for r in runs),
                    "refused": sum(r["refused"] for r in runs),
                    "rounds": runs,
                }  # fmt: skip
            before = out.get("before", {}).get("server_cpu_us_per_command")
            if before:
                out["cpu_ratio_after_over_before"] = round(
                    out["after"]["server_cpu_us_per_command"] / before, 3)  # fmt: skip
            results[scenario] = out
    finally:
        for proc, _ in [*gateways.values(), *floor.values()]:
            stop_process(proc)
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    import orjson

    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
        "before": args.before_src or "this tree, LIVECOMMERCE_EDGE_REFUSALS=false",
        "modules": modules,
        "results": results,
    }  # fmt: skip
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


def _combine(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, runs in rows.items():
        if not runs:
            continue
        out[mode] = runs[0] if len(runs) == 1 else {
            "commands_per_s": statistics.median(r["commands_per_s"] for r in runs),
            "latency_ms": {k: statistics.median(r["latency_ms"].get(k, 0.0) for r in runs)
                           for k in ("p50", "p99")},
            "rounds": runs,
        }  # fmt: skip
    if "direct" in out and "gateway" in out and out["direct"]["commands_per_s"]:
        out["ratio"] = round(out["gateway"]["commands_per_s"] / out["direct"]["commands_per_s"], 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
