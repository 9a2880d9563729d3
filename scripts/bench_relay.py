"""Benchmark the fulfillment relay: orders/s relayed and confirm -> delivered latency, as JSON.

Starts its own embedded Valkey, the reference sink (``livecommerce.ops.cli_fulfillment sink``) and
the relay
(``livecommerce.ops.cli_fulfillment relay``) as separate processes, and buys through the Inventory
(``buy_now``) from this process:

* **baselines** (same run, same machine): plain signed HTTP POSTs to the sink without Redis
  streams (the HTTP ceiling), and a raw XADD / XREADGROUP / XACK loop without HTTP (the Redis
  ceiling);
* **burst**: N orders confirmed with the relay stopped, then the relay started: orders/s drained;
* **steady**: orders confirmed at a fixed rate (default 1000/s) with the relay running:
  latency percentiles from ``confirmed_at`` (Valkey's clock, in the outbox entry) to the sink's
  receipt time (same host, same clock).

Alongside the rates it reports CPU time per order (from ``/proc``, Linux only) of the relay
process(es) and the sink in each phase, and of the client side of the HTTP baseline: on a shared
machine this is the steadier figure.

WAITAOF is switched off for the buyers here: it delays the buyer's answer, not the outbox entry,
and this measures the relay.

    .venv/bin/python scripts/bench_relay.py --rate 1000 --seconds 10 --burst 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from livecommerce.core.config import RedisSettings, Settings
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import sink as sink_mod
from livecommerce.fulfillment.delivery import HttpDeliverer
from livecommerce.fulfillment.sink import WEBHOOK_PATH
from livecommerce.fulfillment.webhooks import Signer, generate_secret, order_message
from livecommerce.store.embedded import EmbeddedValkey, free_port
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOWS = ("bench1", "bench2", "bench3", "bench4")


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds consumed so far by these processes (None without ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / tick


def per_order_ms(before: float | None, after: float | None, n: int) -> float | None:
    if before is None or after is None or n <= 0:
        return None
    return round((after - before) * 1000 / n, 3)


async def command_calls(redis: aioredis.Redis) -> dict[str, int]:
    """Calls per Redis command since the last ``CONFIG RESETSTAT`` (``INFO commandstats``)."""
    info = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def calls_per_order(calls: dict[str, int], n: int) -> dict[str, float]:
    """The commands issued at least once per 100 orders, per order."""
    return {k: round(v / n, 3) for k, v in sorted(calls.items()) if v * 100 >= n}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[k], 2)


async def wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"process exited: {proc.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


async def wait_received(redis: aioredis.Redis, ks: Keyspace, n: int, within: float) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await sink_mod.received_count(redis, ks) >= n:
            return time.monotonic()
        await asyncio.sleep(0.005)
    raise SystemExit(f"only {await sink_mod.received_count(redis, ks)} of {n} received")


async def reset_sink(redis: aioredis.Redis, ks: Keyspace) -> None:
    await redis.delete(ks.sink_received, ks.sink_arrivals, ks.sink_stats)


async def baseline_http(url: str, secret: str, n: int, concurrency: int) -> tuple[float, float]:
    """Signed POSTs straight to the sink with the relay's HTTP client: the HTTP ceiling.

    Returns (requests/s, client CPU ms per request).
    """
    deliverer = HttpDeliverer(url, Signer([secret]), timeout_s=30, max_connections=concurrency)
    fields = {
        "order_id": "",
        "show": "base",
        "drop": "d",
        "sku": "k",
        "title": "t",
        "viewer": "v",
        "quantity": "1",
        "unit_price": "1",
        "amount": "1",
        "currency": "EUR",
        "payment_reference": "p",
        "hold": "",
        "request_id": "r",
        "confirmed_at": str(int(time.time() * 1000)),
    }
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await deliverer.deliver(order_message({**fields, "order_id": f"base.d.{i}"}))

    start = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu_ms = (time.process_time() - cpu) * 1000 / n
    rate = n / (time.perf_counter() - start)
    await deliverer.aclose()
    return rate, round(cpu_ms, 3)


async def baseline_stream(redis: aioredis.Redis, ks: Keyspace, n: int, batch: int) -> float:
    """XADD n entries, then XREADGROUP + XACK them without HTTP: the Redis ceiling."""
    stream = ks.orders("baseline")
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"order_id": f"b.{i}", "confirmed_at": "0"})
    await pipe.execute()
    await redis.xgroup_create(stream, "base", id="0")
    done = 0
    start = time.perf_counter()
    while done < n:
        rows = await redis.xreadgroup("base", "c", {stream: ">"}, count=batch)
        ids = [entry_id for entry_id, _ in rows[0][1]]
        await redis.xack(stream, "base", *ids)  # one XACK per read, as the relay does when busy
        done += len(ids)
    rate = n / (time.perf_counter() - start)
    await redis.delete(stream)
    return rate


async def buy_many(inventory: Inventory, n: int, tag: str, concurrency: int) -> float:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            show = SHOWS[i % len(SHOWS)]
            outcome = await inventory.buy_now(show, "d", f"{tag}{i}", 1, f"{tag}{i}", "pay")
            assert outcome.ok, outcome

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def steady(inventory: Inventory, rate: float, seconds: float) -> tuple[int, float]:
    """Buy at a fixed rate (open loop: a slow answer does not slow the arrivals)."""
    total = int(rate * seconds)
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter()
    for i in range(total):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        show = SHOWS[i % len(SHOWS)]
        task = asyncio.create_task(inventory.buy_now(show, "d", f"s{i}", 1, f"s{i}", "pay"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return total, total / (time.perf_counter() - start)


async def latencies(
    redis: aioredis.Redis, ks: Keyspace, tag: str
) -> tuple[list[float], list[int], int]:
    """Latencies and receipt times of the orders of one phase; and how many others arrived."""
    got = [r for r in (await sink_mod.received(redis, ks)).values()]
    mine = [r for r in got if str(r.order["viewer"]).startswith(tag)]
    lat = [float(r.received_at_ms - int(r.order["confirmed_at"])) for r in mine]
    return lat, sorted(r.received_at_ms for r in mine), len(got) - len(mine)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    valkey = EmbeddedValkey(tmp / "valkey").start()
    ks = Keyspace("bench")
    secret = generate_secret()
    sink_port = free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    env = {
        **os.environ,
        "LIVECOMMERCE_REDIS_URL": valkey.url,
        "LIVECOMMERCE_KEY_PREFIX": ks.prefix,
        "LIVECOMMERCE_WEBHOOK_SECRET": secret,
        "LIVECOMMERCE_WEBHOOK_URL": sink_url + WEBHOOK_PATH,
        "LIVECOMMERCE_RELAY_CONCURRENCY": str(args.concurrency),
        "LIVECOMMERCE_LOG_LEVEL": "warning",
    }
    cli = [sys.executable, "-m", "livecommerce.ops.cli_fulfillment"]
    log = (tmp / "procs.log").open("ab")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*cli, *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    redis = aioredis.Redis.from_url(valkey.url, max_connections=512)
    try:
        sink = spawn("sink", "--port", str(sink_port))
        await wait_http(sink_url + "/livez", sink)
        settings = Settings(redis=RedisSettings(wait_aof=False))
        inventory = Inventory(redis, ks, settings)
        await inventory.load()
        for show in SHOWS:
            await inventory.create_show(show, title="Bench")
            await inventory.create_drop(
                show,
                DropSpec(
                    id="d",
                    sku="SKU",
                    title="Thing",
                    quantity=1_000_000,
                    limit=10,
                    prices={"EUR": 100},
                ),
            )

        sink_cpu = cpu_seconds([sink.pid])
        http_rate, http_client_cpu_ms = await baseline_http(
            sink_url + WEBHOOK_PATH, secret, args.baseline, args.concurrency
        )
        http_sink_cpu_ms = per_order_ms(sink_cpu, cpu_seconds([sink.pid]), args.baseline)
        stream_rate = await baseline_stream(redis, ks, args.baseline, 100)
        await reset_sink(redis, ks)

        # burst: confirmed while no relay runs, then drained
        buy_rate = await buy_many(inventory, args.burst, "b", 64)
        await redis.config_resetstat()
        relay_started = time.monotonic()
        relays = []
        for n in range(args.relays):
            relay_port = free_port()
            relay = spawn("relay", "--port", str(relay_port), "--consumer", f"bench{n}")
            relays.append(relay)
            await wait_http(f"http://127.0.0.1:{relay_port}/readyz", relay)
        relay_pids = [r.pid for r in relays]
        # measured from readiness on: imports and startup are not per-order work (the relay
        # may already have delivered some orders by then, which makes these figures a bit low)
        relay_cpu, sink_cpu = cpu_seconds(relay_pids), cpu_seconds([sink.pid])
        done = await wait_received(redis, ks, args.burst, within=600)
        relay_cpu_after, sink_cpu_after = cpu_seconds(relay_pids), cpu_seconds([sink.pid])
        burst_calls = await command_calls(redis)
        _, stamps, _ = await latencies(redis, ks, "b")
        span_s = max(0.001, (stamps[-1] - stamps[0]) / 1000)
        burst = {
            "orders": args.burst,
            "confirm_rate_per_s": round(buy_rate),
            "relayed_per_s": round(args.burst / span_s),
            "relayed_per_s_incl_startup": round(args.burst / (done - relay_started)),
            "relay_cpu_ms_per_order": per_order_ms(relay_cpu, relay_cpu_after, args.burst),
            "sink_cpu_ms_per_order": per_order_ms(sink_cpu, sink_cpu_after, args.burst),
            # relay, sink and this process's polling together
            "redis_calls_per_order": calls_per_order(burst_calls, args.burst),
        }
        await reset_sink(redis, ks)

        # steady: a fixed confirm rate with the relay running
        await redis.config_resetstat()
        relay_cpu, sink_cpu = cpu_seconds(relay_pids), cpu_seconds([sink.pid])
        valkey_cpu, own_cpu = cpu_seconds([valkey.pid or 0]), time.process_time()
        total, achieved = await steady(inventory, args.rate, args.seconds)
        own_cpu_after, valkey_cpu_after = time.process_time(), cpu_seconds([valkey.pid or 0])
        await wait_received(redis, ks, total, within=120)
        relay_cpu_after, sink_cpu_after = cpu_seconds(relay_pids), cpu_seconds([sink.pid])
        steady_calls = await command_calls(redis)
        lat, stamps, others = await latencies(redis, ks, "s")
        steady_result = {
            "target_rate_per_s": args.rate,
            "achieved_confirm_rate_per_s": round(achieved),
            "orders": total,
            "relayed_per_s": round(total / max(0.001, (stamps[-1] - stamps[0]) / 1000)),
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": max(lat),
            },
            "late_burst_redeliveries": others,
            "relay_cpu_ms_per_order": per_order_ms(relay_cpu, relay_cpu_after, total),
            "sink_cpu_ms_per_order": per_order_ms(sink_cpu, sink_cpu_after, total),
            # the load generator shares the machine: buying costs CPU here and in Valkey
            "buyer_cpu_ms_per_order": per_order_ms(0.0, own_cpu_after - own_cpu, total),
            "valkey_cpu_ms_per_order": per_order_ms(valkey_cpu, valkey_cpu_after, total),
            # buying (evalsha), relay, sink and this process's polling together
            "redis_calls_per_order": calls_per_order(steady_calls, total),
        }
        stats = await sink_mod.stats(redis, ks)
        return {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "relay_processes": args.relays,
            "relay_concurrency": args.concurrency,
            "baseline": {
                "http_posts_per_s": round(http_rate),
                "http_client_cpu_ms_per_post": http_client_cpu_ms,
                "http_sink_cpu_ms_per_post": http_sink_cpu_ms,
                "redis_xreadgroup_xack_per_s": round(stream_rate),
            },
            "burst": burst,
            "steady": steady_result,
            "ratios": {
                "burst_vs_http_baseline": round(burst["relayed_per_s"] / http_rate, 2),
                "burst_vs_redis_baseline": round(burst["relayed_per_s"] / stream_rate, 3),
            },
            "sink_duplicates": stats.get("duplicates", 0),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        await redis.aclose()
        valkey.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000, help="steady confirms per second")
    parser.add_argument("--seconds", type=float, default=10, help="steady phase duration")
    parser.add_argument("--burst", type=int, default=20_000, help="orders in the burst")
    parser.add_argument("--baseline", type=int, default=10_000, help="messages per baseline")
    parser.add_argument("--concurrency", type=int, default=64, help="relay requests in flight")
    parser.add_argument("--relays", type=int, default=1, help="relay processes (one group)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
