"""Fan-out benchmark: time from the host's trigger to the last viewer holding the drop event.

Side by side in one run, on loopback: a bare ``websockets.broadcast`` server (the baseline), the
livecommerce gateway with one process, and with two processes sharing the show through Valkey.
N viewers (default 1k, 5k, 10k) join one show from client worker processes; the driver triggers
(baseline: a control message; gateway: ``Inventory.create_drop``, what the host API does) and
every viewer records when the drop event arrived (CLOCK_MONOTONIC is shared by all processes).
Prints JSON and saves a PNG plot. Bounded runtime (``--deadline``)::

    .venv/bin/python scripts/bench_fanout.py --viewers 1000,5000,10000 --rounds 5
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
    conn.send(("ready", len(sockets)))
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        marker: str = command

        async def wait(ws: Any, marker: str = marker) -> int:
            while True:
                frame = await ws.recv()
                if marker in frame:
                    return time.monotonic_ns()

        try:
            stamps = await asyncio.wait_for(asyncio.gather(*(wait(ws) for ws in sockets)), 60)
        except TimeoutError:
            stamps = []
        conn.send(("done", stamps))
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
    args = parser.parse_args()
    hard = raise_fd_limit()
    deadline = time.monotonic() + args.deadline
    from livecommerce.store.embedded import EmbeddedValkey

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    valkey = EmbeddedValkey(tmp / "valkey")
    valkey.start()
    results: dict[str, Any] = {}
    skip = set(args.skip.split(","))
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
