"""Fan-out benchmark: time from the host's trigger to the last viewer holding the drop event.

Side by side in one run, on loopback: a bare ``websockets.broadcast`` server (the baseline), the
livecommerce gateway with one process, and with two processes sharing the show through Valkey.
N viewers (default 1k, 5k, 10k) join one show from client worker processes; the driver triggers
(baseline: a control message; gateway: ``Inventory.create_drop``, what the host API does) and
every viewer records when the drop event arrived (CLOCK_MONOTONIC is shared by all processes).
Prints JSON and saves a PNG plot. Bounded runtime (``--deadline``)::

    .venv/bin/python scripts/bench_fanout.py --viewers 1000,5000,10000 --rounds 5

``--mode chat``: the same drop with and without chat load, in one run and on one gateway
process: chatters post ``--chat-rate`` messages/s in total, reactors send a storm of reaction
taps, and a drop is opened in the middle; it reports the drop's time-to-last-viewer without and
with the load, the bare ``websockets.broadcast`` figure for the same viewers, and the server's
CPU seconds per second of chat (measured over a window of chat load alone, minus an idle one)::

    .venv/bin/python scripts/bench_fanout.py --mode chat --viewers 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

SECRET = "bench-secret-0123456789abcdef0123"
SUBPROTOCOL = "livecommerce.v1.json"


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the baseline: bare websockets.broadcast -------------------------------------------------------
def baseline_server(port: int, ready: Any, compression: str | None = None) -> None:
    raise_fd_limit()
    import websockets
    from websockets.asyncio.server import serve

    async def main() -> None:
        viewers: set[Any] = set()

        async def handler(ws: Any) -> None:
            first = await ws.recv()
            if first.startswith("go:"):  # control connection: broadcast the drop event
                async for message in ws:
                    websockets.broadcast(viewers, message)
                return
            viewers.add(ws)
            await ws.send('{"type":"snapshot"}')
            try:
                await ws.wait_closed()
            finally:
                viewers.discard(ws)

        async with serve(handler, "127.0.0.1", port, subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                         compression=compression, ping_interval=None, backlog=4096):  # fmt: skip
            ready.set()
            await asyncio.Future()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# -- viewers ---------------------------------------------------------------------------------------
def viewer_worker(
    urls: list[str], count: int, show: str, conn: Connection, compression: str | None = None
) -> None:
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(_viewers(urls, count, show, conn, compression))


async def _viewers(
    urls: list[str], count: int, show: str, conn: Connection, compression: str | None
) -> None:
    from websockets.asyncio.client import connect

    join = json.dumps({"type": "join", "show": show})
    sockets: list[Any] = []
    sem = asyncio.Semaphore(200)

    async def one(i: int) -> None:
        async with sem:
            for _attempt in range(5):
                try:
                    ws = await connect(urls[i % len(urls)], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                       compression=compression, ping_interval=None, open_timeout=30,
                                       max_queue=None)  # fmt: skip
                    break
                except OSError:
                    await asyncio.sleep(0.2)
            else:
                raise RuntimeError("could not connect")
            await ws.send(join)
            await ws.recv()  # snapshot
            sockets.append(ws)

    await asyncio.gather(*(one(i) for i in range(count)))
    # Every viewer reads all the time, as a real client does (chat keeps arriving between two
    # drops); a viewer stamps the first frame holding the armed marker.
    armed: list[str | None] = [None]
    stamps: dict[int, int] = {}
    complete = asyncio.Event()

    closed: set[int] = set()

    async def read(i: int, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:
                marker = armed[0]
                if marker is not None and i not in stamps and marker in frame:
                    stamps[i] = time.monotonic_ns()
                    if len(stamps) == len(sockets) - len(closed):
                        complete.set()
        closed.add(i)  # e.g. closed by the server as a slow consumer (4008)
        if armed[0] is not None and len(stamps) >= len(sockets) - len(closed):
            complete.set()

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    conn.send(("ready", len(sockets)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        stamps.clear()
        complete.clear()
        armed[0] = command
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(complete.wait(), 60)
        armed[0] = None
        conn.send(("done", list(stamps.values())))  # fewer than expected: some were closed
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


class Viewers:
    def __init__(
        self, urls: list[str], count: int, show: str, workers: int,
        compression: str | None = None,
    ) -> None:  # fmt: skip
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for w in range(workers):
            n = count // workers + (1 if w < count % workers else 0)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=viewer_worker, args=(urls, n, show, child, compression), daemon=True
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def wait_ready(self, deadline: float) -> int:
        total = 0
        for pipe in self.pipes:
            if not pipe.poll(max(1.0, deadline - time.monotonic())):
                raise TimeoutError("viewers did not connect in time")
            total += pipe.recv()[1]
        return total

    def arm(self, marker: str) -> None:
        for pipe in self.pipes:
            pipe.send(marker)

    def collect(self) -> list[int]:
        stamps: list[int] = []
        for pipe in self.pipes:
            if pipe.poll(90):
                stamps.extend(pipe.recv()[1])
        return stamps

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def summarise(trigger_ns: int, stamps: list[int], expected: int) -> dict[str, float]:
    lat = sorted((s - trigger_ns) / 1e6 for s in stamps)
    if not lat:
        return {"received": 0, "expected": expected}
    return {
        "received": len(lat),
        "expected": expected,
        "p50_ms": round(lat[len(lat) // 2], 2),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
        "last_ms": round(lat[-1], 2),
    }


def aggregate(rounds: list[dict[str, float]]) -> dict[str, Any]:
    ok = [r for r in rounds if r.get("received") == r.get("expected")]
    out: dict[str, Any] = {"rounds": rounds, "complete_rounds": len(ok)}
    for key in ("p50_ms", "p99_ms", "last_ms"):
        values = [r[key] for r in ok]
        if values:
            out[key] = round(statistics.median(values), 2)
    return out


# -- runs ------------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_baseline(
    n: int, rounds: int, workers: int, deadline: float, compression: str | None = None
) -> dict[str, Any]:
    from websockets.sync.client import connect

    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=baseline_server, args=(port, ready, compression), daemon=True)
    server.start()
    ready.wait(30)
    url = f"ws://127.0.0.1:{port}/ws"
    viewers = Viewers([url], n, "bench", workers, compression)
    try:
        viewers.wait_ready(deadline)
        results = []
        cpu: list[float] = []
        with connect(url, subprotocols=[SUBPROTOCOL]) as control:  # type: ignore[list-item]
            control.send("go:")
            for r in range(rounds):
                marker = f'"sku":"BENCH-{r}"'
                viewers.arm(marker)
                time.sleep(0.5)  # let every worker arm (benchmark pacing, not a test)
                payload = json.dumps({"id": f"{r}-0", "type": "drop_opened", "ts": 0,
                                      "data": {**SAMPLE_DROP, "sku": f"BENCH-{r}"}},
                                     separators=(",", ":"))  # fmt: skip
                assert server.pid is not None
                before = cpu_seconds(server.pid)
                t0 = time.monotonic_ns()
                control.send(payload)
                results.append(summarise(t0, viewers.collect(), n))
                cpu.append(cpu_seconds(server.pid) - before)
        out = aggregate(results)
        out["server_cpu_ms_per_broadcast"] = round(statistics.median(cpu) * 1000, 1)
        return out
    finally:
        viewers.stop()
        server.kill()
        server.join(5)


SAMPLE_DROP = {
    "id": "d", "show": "bench", "title": "Limited sneaker, size 42", "kind": "drop",
    "description": "A" * 200, "image_url": "https://cdn.example/img/sneaker.jpg",
    "quantity": 500, "remaining": 500, "held": 0, "sold": 0, "limit": 2,
    "prices": {"EUR": 12900}, "currency": "EUR", "opens_at": 0, "closes_at": 0,
    "state": "open", "reason": "",
}  # fmt: skip


def run_gateway(n: int, rounds: int, workers: int, processes: int, redis_url: str,
                deadline: float, logdir: Path) -> dict[str, Any]:  # fmt: skip
    import redis.asyncio as aioredis

    from livecommerce.core.config import InventorySettings, Settings
    from livecommerce.core.model import DropSpec
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    prefix = f"bench{os.getpid()}{n}{processes}"
    keys = Keyspace(prefix)
    settings = Settings(inventory=InventorySettings())

    async def setup() -> None:
        client = aioredis.Redis.from_url(redis_url)
        inv = Inventory(client, keys, settings)
        await inv.load()
        await inv.create_show("bench", title="Bench")
        await inv.start_show("bench")
        await client.aclose()

    asyncio.run(setup())
    servers = []
    ports = [free_port() for _ in range(processes)]
    env = {**os.environ, "LIVECOMMERCE_REDIS_URL": redis_url, "LIVECOMMERCE_KEY_PREFIX": prefix,
           "LIVECOMMERCE_TOKEN_SECRET": SECRET, "LIVECOMMERCE_DEMO": "false",
           "LIVECOMMERCE_LOG_LEVEL": "warning", "LIVECOMMERCE_SEND_QUEUE": "4096"}  # fmt: skip
    for port in ports:
        log = (logdir / f"gw-{n}-{processes}-{port}.log").open("wb")
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "livecommerce", "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    try:
        import httpx

        for port in ports:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("gateway not ready")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                time.sleep(0.1)
        urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
        viewers = Viewers(urls, n, "bench", workers)
        try:
            viewers.wait_ready(deadline)
            results = []

            async def trigger(r: int) -> int:
                client = aioredis.Redis.from_url(redis_url)
                inv = Inventory(client, keys, settings)
                await inv.load()
                spec = DropSpec(
                    id=f"d{r}", sku=f"BENCH-{r}", title=str(SAMPLE_DROP["title"]), quantity=500,
                    limit=2, prices={"EUR": 12900}, description="A" * 200,
                    image_url=str(SAMPLE_DROP["image_url"]),
                )  # fmt: skip
                t0 = time.monotonic_ns()
                await inv.create_drop("bench", spec)
                await client.aclose()
                return t0

            for r in range(rounds):
                viewers.arm(f'"sku":"BENCH-{r}"')
                time.sleep(0.5)  # let every worker arm (benchmark pacing, not a test)
                t0 = asyncio.run(trigger(r))
                results.append(summarise(t0, viewers.collect(), n))
            return aggregate(results)
        finally:
            viewers.stop()
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


# -- chat mode -------------------------------------------------------------------------------------
def chat_load_worker(url: str, chatters: int, rate: float, reactors: int, taps_per_s: int,
                     conn: Connection) -> None:  # fmt: skip
    """Chatters posting ``rate`` messages/s in total and reactors tapping ``taps_per_s`` in
    total, until told to stop; every connection also reads (and drops) what it receives."""
    raise_fd_limit()
    asyncio.run(_chat_load(url, chatters, rate, reactors, taps_per_s, conn))


async def _chat_load(url: str, chatters: int, rate: float, reactors: int, taps_per_s: int,
                     conn: Connection) -> None:  # fmt: skip
    from websockets.asyncio.client import connect

    from livecommerce.realtime.tokens import mint

    sockets = []
    for i in range(chatters + reactors):
        ws = await connect(url, subprotocols=[SUBPROTOCOL], compression=None,  # type: ignore[list-item]
                           ping_interval=None, max_queue=None)  # fmt: skip
        join: dict[str, Any] = {"type": "join", "show": "bench"}
        if i < chatters:
            join["token"] = mint(SECRET, f"chatter{i}", 3600, name=f"Chatter {i}")
        await ws.send(json.dumps(join))
        await ws.recv()
        sockets.append(ws)
    acks = [0]

    async def drain(ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for frame in ws:
                if '"chat_ack"' in frame:
                    acks[0] += 1

    readers = [asyncio.create_task(drain(ws)) for ws in sockets]
    conn.send("ready")
    loop = asyncio.get_running_loop()
    running = asyncio.Event()

    async def post(ws: Any, who: int) -> None:
        n = 0
        while True:
            await running.wait()
            n += 1
            await ws.send(
                json.dumps(
                    {
                        "type": "chat",
                        "id": f"c{who}-{n}",
                        "text": f"message {n} from chatter {who}: is it blue?",
                    }
                )
            )
            await asyncio.sleep(chatters / rate)  # pacing of the load, not synchronisation

    async def tap(ws: Any) -> None:
        per_frame = 50
        frames_per_s = max(1.0, taps_per_s / per_frame / max(reactors, 1))
        while True:
            await running.wait()
            await ws.send('{"type":"react","reaction":"heart","count":50}')
            await asyncio.sleep(1 / frames_per_s)

    tasks = [asyncio.create_task(post(ws, i)) for i, ws in enumerate(sockets[:chatters])]
    tasks += [asyncio.create_task(tap(ws)) for ws in sockets[chatters:]]
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "start":
            acks[0] = 0
            running.set()
        elif command == "pause":
            running.clear()
            conn.send(("acks", acks[0]))
        else:
            break
    for task in [*tasks, *readers]:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def run_chat(n: int, rounds: int, workers: int, redis_url: str, deadline: float, logdir: Path,
             chat_rate: float, taps_per_s: int) -> dict[str, Any]:  # fmt: skip
    import redis.asyncio as aioredis

    from livecommerce.core.config import InventorySettings, Settings
    from livecommerce.core.model import DropSpec
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace

    prefix = f"benchchat{os.getpid()}{n}"
    keys = Keyspace(prefix)
    settings = Settings(inventory=InventorySettings())

    async def setup() -> None:
        client = aioredis.Redis.from_url(redis_url)
        inv = Inventory(client, keys, settings)
        await inv.load()
        await inv.create_show("bench", title="Bench")
        await inv.start_show("bench")
        await client.aclose()

    asyncio.run(setup())
    port = free_port()
    env = {**os.environ, "LIVECOMMERCE_REDIS_URL": redis_url, "LIVECOMMERCE_KEY_PREFIX": prefix,
           "LIVECOMMERCE_TOKEN_SECRET": SECRET, "LIVECOMMERCE_DEMO": "false",
           "LIVECOMMERCE_LOG_LEVEL": "warning", "LIVECOMMERCE_SEND_QUEUE": "4096"}  # fmt: skip
    log = (logdir / f"gw-chat-{n}-{port}.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "livecommerce", "serve", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    import httpx

    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("gateway not ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        time.sleep(0.1)
    url = f"ws://127.0.0.1:{port}/ws"
    ctx = mp.get_context("spawn")
    load_pipe, child = ctx.Pipe()
    chatters = max(1, int(chat_rate // 5))  # 5 messages/s each: far under the rate limit
    reactors = 20
    load = ctx.Process(target=chat_load_worker, daemon=True,
                       args=(url, chatters, chat_rate, reactors, taps_per_s, child))  # fmt: skip
    load.start()
    viewers = Viewers([url], n, "bench", workers)

    async def trigger(r: int, tag: str) -> int:
        client = aioredis.Redis.from_url(redis_url)
        inv = Inventory(client, keys, settings)
        await inv.load()
        spec = DropSpec(
            id=f"{tag}{r}", sku=f"BENCH-{tag}-{r}", title=str(SAMPLE_DROP["title"]),
            quantity=500, limit=2, prices={"EUR": 12900}, description="A" * 200,
            image_url=str(SAMPLE_DROP["image_url"]),
        )  # fmt: skip
        t0 = time.monotonic_ns()
        await inv.create_drop("bench", spec)
        await client.aclose()
        return t0

    def fanout_sum() -> tuple[float, float]:
        """The gateway's own time to hand durable events to every viewer (its histogram)."""
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("livecommerce_fanout_seconds_sum", "livecommerce_fanout_seconds_count"):
                values[name] = float(value)
        return values["livecommerce_fanout_seconds_sum"], values[
            "livecommerce_fanout_seconds_count"
        ]

    def measure(r: int, tag: str) -> dict[str, float]:
        viewers.arm(f'"sku":"BENCH-{tag}-{r}"')
        time.sleep(0.5)  # let every worker arm (benchmark pacing, not a test)
        before = fanout_sum()
        t0 = asyncio.run(trigger(r, tag))
        result = summarise(t0, viewers.collect(), n)
        after = fanout_sum()
        if after[1] > before[1]:  # the drop event(s): server-side hand-off to 10k outboxes
            result["server_fanout_ms"] = round((after[0] - before[0]) * 1000, 2)
        return result

    def window(seconds: float) -> tuple[float, float]:
        """CPU seconds per second of the server, and of the viewer clients plus the load."""
        others = [p.pid for p in viewers.procs] + [load.pid]
        before = cpu_seconds(server.pid), sum(cpu_seconds(pid) for pid in others)
        time.sleep(seconds)  # a measuring window, not synchronisation
        after = cpu_seconds(server.pid), sum(cpu_seconds(pid) for pid in others)
        return (after[0] - before[0]) / seconds, (after[1] - before[1]) / seconds

    try:
        viewers.wait_ready(deadline)
        if not load_pipe.poll(max(1.0, deadline - time.monotonic())):
            raise TimeoutError("chat load did not connect")
        load_pipe.recv()
        quiet, loaded = [], []
        acks_per_s = []
        for r in range(rounds):
            quiet.append(measure(r, "q"))
            load_pipe.send("start")
            time.sleep(1.0)  # the chat load is running before the drop opens in its middle
            started = time.monotonic()
            loaded.append(measure(r, "c"))
            time.sleep(0.5)
            load_pipe.send("pause")
            acks_per_s.append(load_pipe.recv()[1] / (time.monotonic() - started + 1.0))
        idle, clients_idle = window(3.0)
        load_pipe.send("start")
        time.sleep(1.0)
        busy, clients_busy = window(3.0)
        load_pipe.send("pause")
        load_pipe.recv()
        out: dict[str, Any] = {
            "no_chat": aggregate(quiet),
            "chat": aggregate(loaded),
            "server_fanout_ms_no_chat": statistics.median(
                [q.get("server_fanout_ms", 0.0) for q in quiet]
            ),
            "server_fanout_ms_chat": statistics.median(
                [c.get("server_fanout_ms", 0.0) for c in loaded]
            ),
            "chat_messages_per_s": round(statistics.median(acks_per_s), 1),
            "reaction_taps_per_s": taps_per_s,
            "server_cpu_s_per_s_idle": round(idle, 3),
            "server_cpu_s_per_s_chat": round(busy, 3),
            "server_cpu_s_per_s_of_chat": round(busy - idle, 3),
            "clients_cpu_s_per_s_idle": round(clients_idle, 3),
            "clients_cpu_s_per_s_chat": round(clients_busy, 3),
        }
        if "last_ms" in out["no_chat"] and "last_ms" in out["chat"]:
            out["last_ratio_chat_vs_no_chat"] = round(
                out["chat"]["last_ms"] / out["no_chat"]["last_ms"], 2)  # fmt: skip
        return out
    finally:
        with contextlib.suppress(OSError):
            load_pipe.send("stop")
        load.join(10)
        if load.is_alive():
            load.kill()
        viewers.stop()
        server.send_signal(signal.SIGKILL)
        server.wait(10)


def main_chat(
    args: argparse.Namespace, deadline: float, valkey_url: str, tmp: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in (int(x) for x in args.viewers.split(",")):
        row: dict[str, Any] = {"baseline": run_baseline(n, args.rounds, args.workers, deadline)}
        row["gateway_1"] = run_chat(n, args.rounds, args.workers, valkey_url, deadline, tmp,
                                    args.chat_rate, args.taps)  # fmt: skip
        base, quiet = row["baseline"].get("last_ms"), row["gateway_1"]["no_chat"].get("last_ms")
        if base and quiet:
            row["last_ratio_no_chat_vs_baseline"] = round(quiet / base, 2)
        results[str(n)] = row
        print(json.dumps({str(n): row}), file=sys.stderr)
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    sizes = sorted({int(k) for k in results})
    for label in ("baseline", "baseline_deflate", "gateway_1", "gateway_2"):
        for metric, style in (("p50_ms", "--"), ("p99_ms", "-")):
            xs = [n for n in sizes if metric in results[str(n)].get(label, {})]
            ys = [results[str(n)][label][metric] for n in xs]
            if xs:
                ax.plot(xs, ys, style, marker="o", label=f"{label} {metric[:3]}")
    ax.set_xlabel("viewers in one show")
    ax.set_ylabel("trigger -> viewer holds the event (ms)")
    ax.set_title("Fan-out latency (loopback)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", default="1000,5000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="viewer client processes")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for the run")
    parser.add_argument("--out", default="bench_fanout")
    parser.add_argument(
        "--skip", default="", help="comma list: baseline,baseline_deflate,gateway_1,gateway_2"
    )
    parser.add_argument("--mode", choices=("drop", "chat"), default="drop")
    parser.add_argument("--chat-rate", type=float, default=50.0, help="chat messages/s (chat)")
    parser.add_argument("--taps", type=int, default=10_000, help="reaction taps/s (chat)")
    args = parser.parse_args()
    hard = raise_fd_limit()
    deadline = time.monotonic() + args.deadline
    from livecommerce.store.embedded import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    valkey = EmbeddedValkey(tmp / "valkey")
    valkey.start()
    results: dict[str, Any] = {}
    skip = set(args.skip.split(","))
    if args.mode == "chat":
        try:
            results = main_chat(args, deadline, valkey.url, tmp)
        finally:
            valkey.stop()
        report = {
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "mode": "chat",
            "chat_rate": args.chat_rate,
            "taps_per_s": args.taps,
            "results": results,
        }
        Path(args.out + ".json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return 0
    try:
        for n in (int(x) for x in args.viewers.split(",")):
            if n + 100 > hard:
                print(f"skipping {n}: open-files limit {hard}", file=sys.stderr)
                continue
            row: dict[str, Any] = {}
            if "baseline" not in skip:
                row["baseline"] = run_baseline(n, args.rounds, args.workers, deadline)
            if "baseline_deflate" not in skip:
                # The same bare server with permessage-deflate: what compression costs.
                row["baseline_deflate"] = run_baseline(
                    n, args.rounds, args.workers, deadline, compression="deflate"
                )
            for processes in (1, 2):
                if f"gateway_{processes}" not in skip:
                    row[f"gateway_{processes}"] = run_gateway(
                        n, args.rounds, args.workers, processes, valkey.url, deadline, tmp
                    )
            results[str(n)] = row
            print(json.dumps({str(n): {k: {m: v.get(m) for m in ("p50_ms", "p99_ms", "last_ms",
                  "complete_rounds")} for k, v in row.items()}}), file=sys.stderr)  # fmt: skip
    finally:
        valkey.stop()
    report = {"cpus": os.cpu_count(), "rounds": args.rounds, "results": results}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    plot(results, Path(args.out + ".png"))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
