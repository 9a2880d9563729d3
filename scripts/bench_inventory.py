"""Benchmark reservations: reserves/s and latency percentiles per mode, as JSON on stdout.

Starts its own embedded Valkey (AOF on, appendfsync everysec, in a temporary directory, loopback
only), creates one drop per mode with a large stock, and measures in the same run:

* ``ceiling_pipelined``: the server's own ceiling -- the same ``drop_reserve`` script sent as raw
  pre-encoded EVALSHA batches on one socket (hiredis parses the replies), so the client costs
  next to nothing and the single-threaded server is what limits;
* ``evalsha_sequential``: redis-py asyncio, one EVALSHA at a time (a round trip per reserve);
* ``inventory_reserve``: ``Inventory.reserve`` from N concurrent asyncio tasks in one process
  (ScriptRunner batches the calls of one loop turn into one pipeline);
* ``inventory_reserve_processes``: the same from several processes at once;
* ``inventory_buy_now``: ``Inventory.buy_now`` from N tasks: orders, each acknowledged after
  WAITAOF (coalesced: one fsync wait per burst).

The ratios compare the Inventory modes with the ceiling. Every mode ends with the audit: the
benchmark checks it sold nothing twice. Latency is per call, from the call to its result (for
the pipelined ceiling: the batch round trip, which is what each call in it waits).

    .venv/bin/python scripts/bench_inventory.py --seconds 3 --tasks 256 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hiredis
import orjson
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import MAX_QUANTITY, MAX_STOCK, DropSpec
from livecommerce.store.audit import audit
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOW = "bench"
KEYS = Keyspace("bench")
VIEWERS = 50_000
"""Viewer ids cycle through this many; with the limit at MAX_QUANTITY none reaches it."""


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    ordered = sorted(latencies_s)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3)

    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(ordered[-1] * 1000, 3)}


def result(ops: int, elapsed: float, latencies: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "ops": ops,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(ops / elapsed, 1),
        "latency_ms": percentiles(latencies),
        **extra,
    }


def settings() -> config.Settings:
    return config.load({"LIVECOMMERCE_KEY_PREFIX": KEYS.prefix})


def reserve_call(inv: Inventory, drop: str, viewer: str, rid: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of drop_reserve exactly as Inventory.reserve sends them."""
    keys = [*KEYS.drop(SHOW, drop).as_list(), KEYS.request(SHOW, viewer, rid)]
    args = [*inv._common(SHOW), viewer, 1, rid, inv._hold_ttl_ms, "", "reserve", "",
            inv.settings.inventory.idempotency_ttl_s]  # fmt: skip
    return keys, args


# -- modes ----------------------------------------------------------------------------------------


def _resp(parts: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


async def ceiling(port: int, inv: Inventory, seconds: float, batch: int) -> dict[str, Any]:
    """Raw pipelined EVALSHA on one socket: the server is the bottleneck, not the client.

    Commands are pre-encoded from a template, and the next batch is encoded while the server
    runs the current one, so the server never waits for this client.
    """
    sha = inv.runner.scripts["drop_reserve"].sha.encode()
    keys, args = reserve_call(inv, "ceiling", "VIEWER", "RID")
    idem_prefix = KEYS.request(SHOW, "", "").encode()[:-2]  # ...:req: (viewer and rid follow)

    def encode(n: int) -> bytes:
        chunks = []
        for i in range(n, n + batch):
            viewer, rid = b"v%d" % (i % VIEWERS), b"c%d" % i
            parts = [b"EVALSHA", sha, b"%d" % len(keys)]
            parts += [k.encode() for k in keys[:-1]]
            parts.append(idem_prefix + b":" + viewer + b":" + rid)
            parts += [str(a).encode() for a in args[:3]]
            parts += [viewer, b"1", rid]
            parts += [str(a).encode() for a in args[6:]]
            chunks.append(_resp(parts))
        return b"".join(chunks)

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    latencies: list[float] = []
    ops = 0
    n = 0
    start = time.perf_counter()
    try:
        payload = encode(n)
        n += batch
        sock.sendall(payload)
        sent_at = time.perf_counter()
        while True:
            done = time.perf_counter() - start >= seconds
            payload = b"" if done else encode(n)  # overlaps with the server's work
            n += batch
            got = 0
            while got < batch:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("server closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, hiredis.ReplyError) or b'"ok":true' not in reply:
                        raise RuntimeError(f"reserve failed: {reply!r}")
                    got += 1
            latencies.append(time.perf_counter() - sent_at)
            ops += batch
            if done:
                break
            sock.sendall(payload)
            sent_at = time.perf_counter()
        elapsed = time.perf_counter() - start
    finally:
        sock.close()
    return result(ops, elapsed, latencies, batch=batch,
                  note="latency is the round trip of one batch")  # fmt: skip


async def server_usec_per_call(client: aioredis.Redis) -> float:
    stats = await client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


async def sequential(inv: Inventory, seconds: float) -> dict[str, Any]:
    sha = inv.runner.scripts["drop_reserve"].sha
    latencies: list[float] = []
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += 1
        keys, args = reserve_call(inv, "sequential", f"v{n % VIEWERS}", f"s{n}")
        t0 = time.perf_counter()
        raw = await inv.redis.evalsha(sha, len(keys), *keys, *args)
        latencies.append(time.perf_counter() - t0)
        if b'"ok":true' not in raw:
            raise RuntimeError(f"reserve refused: {raw!r}")
    return result(n, time.perf_counter() - start, latencies)


async def inventory_mode(
    inv: Inventory, drop: str, seconds: float, tasks: int, tag: str, buy: bool = False
) -> dict[str, Any]:
    latencies: list[float] = []
    refused = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal refused
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            viewer, rid = f"v{(w * 7919 + i) % VIEWERS}", f"{tag}-{w}-{i}"
            t0 = time.perf_counter()
            if buy:
                out = await inv.buy_now(SHOW, drop, viewer, 1, rid, "bench")
            else:
                out = await inv.reserve(SHOW, drop, viewer, 1, rid)
            latencies.append(time.perf_counter() - t0)
            refused += not out.ok

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    elapsed = time.perf_counter() - start
    return result(len(latencies), elapsed, latencies, tasks=tasks, refused=refused)


def _process_main(url: str, seconds: float, tasks: int, tag: str, out: Any) -> None:
    async def run() -> dict[str, Any]:
        client = aioredis.Redis.from_url(url, max_connections=tasks + 16)
        try:
            inv = Inventory(client, KEYS, settings())
            await inv.load()
            return await inventory_mode(inv, "processes", seconds, tasks, tag)
        finally:
            await client.aclose()

    out.put(asyncio.run(run()))


def processes_mode(url: str, seconds: float, tasks: int, count: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_main, args=(url, seconds, tasks, f"p{i}", queue))
        for i in range(count)
    ]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(30)
    ops = sum(p["ops"] for p in parts)
    elapsed = max(p["seconds"] for p in parts)
    return {
        "ops": ops,
        "seconds": elapsed,
        "ops_per_s": round(sum(p["ops_per_s"] for p in parts), 1),
        "processes": count,
        "tasks_per_process": tasks,
        "latency_ms_per_process": [p["latency_ms"] for p in parts],
        "refused": sum(p["refused"] for p in parts),
    }


# -- main -----------------------------------------------------------------------------------------


async def bench(server: EmbeddedValkey, args: argparse.Namespace) -> dict[str, Any]:
    client = aioredis.Redis.from_url(server.url, max_connections=args.tasks + 16)
    try:
        inv = Inventory(client, KEYS, settings())
        await inv.load()
        await inv.create_show(SHOW, title="Benchmark")
        for drop in ("ceiling", "sequential", "inventory", "processes", "buy"):
            spec = DropSpec(id=drop, sku=drop, title=drop, quantity=MAX_STOCK,
                            limit=MAX_QUANTITY, prices={"EUR": 100})  # fmt: skip
            await inv.create_drop(SHOW, spec)
        info = await client.info("server")
        modes: dict[str, Any] = {}
        log = lambda m: print(f"bench: {m} ...", file=sys.stderr, flush=True)  # noqa: E731
        log("ceiling_pipelined")
        await client.config_resetstat()
        modes["ceiling_pipelined"] = await ceiling(server.port, inv, args.seconds, args.batch)
        usec = await server_usec_per_call(client)
        modes["ceiling_pipelined"]["server_usec_per_call"] = usec
        modes["ceiling_pipelined"]["server_cpu_bound_ops_per_s"] = round(1e6 / usec) if usec else 0
        log("evalsha_sequential")
        modes["evalsha_sequential"] = await sequential(inv, args.seconds)
        log("inventory_reserve")
        modes["inventory_reserve"] = await inventory_mode(
            inv, "inventory", args.seconds, args.tasks, "i"
        )
        if args.processes > 0:
            log("inventory_reserve_processes")
            modes["inventory_reserve_processes"] = await asyncio.to_thread(
                processes_mode, server.url, args.seconds, args.tasks, args.processes
            )
        log("inventory_buy_now")
        modes["inventory_buy_now"] = await inventory_mode(
            inv, "buy", args.seconds, args.tasks, "b", buy=True
        )
        log("audit")
        report = await audit(client, KEYS)
        top = modes["ceiling_pipelined"]["ops_per_s"]
        ratios = {
            name: round(m["ops_per_s"] / top, 3)
            for name, m in modes.items()
            if name != "ceiling_pipelined"
        }
        return {
            "benchmark": "inventory reserve",
            "server": {
                "name": info.get("server_name", "redis"),
                "version": info.get("valkey_version", info.get("redis_version")),
                "appendfsync": server.appendfsync,
                "durability": inv.durability.mode,
            },
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "machine": platform.machine(),
                "load_average_1m": os.getloadavg()[0],
            },
            "seconds_per_mode": args.seconds,
            "modes": modes,
            "ratio_to_ceiling": ratios,
            "audit": {
                "ok": report.ok,
                "orders": report.orders,
                "units_sold": report.units_sold,
                "holds": report.holds,
                "violations": report.violations[:10],
            },
        }
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each mode")
    parser.add_argument("--tasks", type=int, default=256, help="concurrent tasks per process")
    parser.add_argument("--processes", type=int, default=2, help="processes for that mode")
    parser.add_argument("--batch", type=int, default=500, help="pipeline batch of the ceiling")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    server = EmbeddedValkey(data_dir)
    try:
        server.start()
        report = asyncio.run(bench(server, args))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if report["audit"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
