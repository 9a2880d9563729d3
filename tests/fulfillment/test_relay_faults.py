"""Fault tests with real processes: ``relay`` and ``sink`` run as their own commands.

Every wait is a poll for a condition with a deadline; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from helpers.polling import eventually

from livecommerce.core.config import Settings
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment import sink as sink_mod
from livecommerce.fulfillment.audit import audit
from livecommerce.fulfillment.sink import WEBHOOK_PATH, FailMode, set_fail_mode
from livecommerce.fulfillment.webhooks import generate_secret
from livecommerce.store.embedded import free_port
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

pytestmark = pytest.mark.slow

FAST_RELAY = {
    "LIVECOMMERCE_RELAY_BACKOFF": "0.02",
    "LIVECOMMERCE_RELAY_BACKOFF_MAX": "0.2",
    "LIVECOMMERCE_RELAY_TIMEOUT": "5",
    "LIVECOMMERCE_RELAY_CLAIM_IDLE": "0.5",
    "LIVECOMMERCE_RELAY_MAX_ATTEMPTS": "1000",
    "LIVECOMMERCE_RELAY_TRIM_INTERVAL": "0.2",
}


class Processes:
    """Starts ``python -m livecommerce.ops.cli_fulfillment ...`` processes; kills leftovers at the
    end."""

    def __init__(self, tmp: Path, redis_url: str, ks: Keyspace, secret: str) -> None:
        self.tmp = tmp
        self.secret = secret
        self.env = {
            **os.environ,
            "LIVECOMMERCE_REDIS_URL": redis_url,
            "LIVECOMMERCE_KEY_PREFIX": ks.prefix,
            "LIVECOMMERCE_WEBHOOK_SECRET": secret,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.sink_port = free_port()
        self.sink_url = f"http://127.0.0.1:{self.sink_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "livecommerce.ops.cli_fulfillment", *args],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.procs.append(proc)
        return proc

    async def start_sink(self) -> subprocess.Popen[bytes]:
        proc = self.spawn("sink", ["sink", "--port", str(self.sink_port)], {})
        await eventually(lambda: self._up(proc, self.sink_url + "/livez"), within=30.0)
        return proc

    async def start_relay(self, name: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.spawn(
            name,
            ["relay", "--consumer", name, "--port", str(port)],
            {**FAST_RELAY, "LIVECOMMERCE_WEBHOOK_URL": self.sink_url + WEBHOOK_PATH, **env},
        )
        base = f"http://127.0.0.1:{port}"
        await eventually(lambda: self._up(proc, base + "/readyz"), within=30.0)
        return proc, base

    async def _up(self, proc: subprocess.Popen[bytes], url: str) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {self.logs()}")
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, keyspace: Keyspace) -> Iterator[Processes]:
    p = Processes(tmp_path, redis_url, keyspace, generate_secret())
    yield p
    p.kill_all()


async def metric(base: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=2) as client:
        text = (await client.get(base + "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def shop(redis: aioredis.Redis, ks: Keyspace, shows: tuple[str, ...] = ("f1",)) -> Inventory:
    inventory = Inventory(redis, ks, Settings())
    await inventory.load()
    for show in shows:
        await inventory.create_show(show, title="Fault show")
        spec = DropSpec(
            id="tee", sku="TEE", title="Tee", quantity=1000, limit=100, prices={"EUR": 2500}
        )
        await inventory.create_drop(show, spec)
    return inventory


async def buy(inventory: Inventory, show: str, n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        outcome = await inventory.buy_now(show, "tee", f"v{i}", 1, f"r{i}", f"pay{i}")
        assert outcome.ok and outcome.order is not None
        out.append(outcome.order.id)
    return out


async def received(redis: aioredis.Redis, ks: Keyspace, n: int) -> bool:
    return await sink_mod.received_count(redis, ks) >= n


async def test_sink_down_for_a_while_then_up_delivers_everything_once(
    procs: Processes, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = await shop(redis, keyspace, ("f1", "f2"))
    orders = await buy(inventory, "f1", 15) + await buy(inventory, "f2", 15)
    _relay, base = await procs.start_relay("r1")
    # the sink is down: the relay keeps failing (connection refused) and retrying
    await eventually(
        lambda: _ge(metric(base, "livecommerce_relay_failures_total"), 10), within=30.0
    )
    assert await sink_mod.received_count(redis, keyspace) == 0
    await procs.start_sink()
    orders += await buy(inventory, "f1", 10, start=100)
    await eventually(lambda: received(redis, keyspace, len(orders)), within=30.0)
    report = await audit(redis, keyspace)
    assert report.ok, report.as_dict()
    assert report.received == report.confirmed == len(orders) == 40
    arrived = await sink_mod.arrivals(redis, keyspace)
    assert sorted(arrived) == sorted(f"msg_{o}" for o in orders)  # none twice after de-dup


async def test_relay_killed_after_sending_before_ack_another_relay_delivers_same_id(
    procs: Processes, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = await shop(redis, keyspace)
    await procs.start_sink()
    # the sink records the order, then answers late: the relay has sent but not acknowledged
    await set_fail_mode(redis, keyspace, FailMode.SLOW, times=1, delay_s=60)
    [order] = await buy(inventory, "f1", 1)
    first, _ = await procs.start_relay("first", LIVECOMMERCE_RELAY_TIMEOUT="120")
    await eventually(lambda: received(redis, keyspace, 1), within=30.0)
    stream = keyspace.orders("f1")
    [row] = await redis.xpending_range(stream, "fulfillment", "-", "+", 10)
    assert row["consumer"] == b"first"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)

    _second, base = await procs.start_relay("second")
    await eventually(lambda: _eq(_pending(redis, stream), 0), within=30.0)
    stats = await sink_mod.stats(redis, keyspace)
    assert stats["accepted"] == 1 and stats["duplicates"] == 1  # same webhook-id, twice
    assert await sink_mod.arrivals(redis, keyspace) == [f"msg_{order}"]
    assert await metric(base, "livecommerce_relay_claimed_total") == 1
    assert (await audit(redis, keyspace)).ok


async def test_poison_order_goes_to_dead_letters_and_is_replayed_from_the_cli(
    procs: Processes, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = await shop(redis, keyspace)
    await procs.start_sink()
    orders = await buy(inventory, "f1", 5)
    poison = orders[2]
    await set_fail_mode(redis, keyspace, FailMode.ERROR, match=poison)
    _relay, base = await procs.start_relay("r1", LIVECOMMERCE_RELAY_MAX_ATTEMPTS="3")
    await eventually(lambda: _eq(deadletters.count(redis, keyspace), 1), within=30.0)
    await eventually(lambda: received(redis, keyspace, 4), within=30.0)
    assert await metric(base, "livecommerce_relay_dead_letters_total") == 1

    listed = await run_cli(procs, "deadletters", "list", "--json")
    [letter] = [orjson.loads(line) for line in listed.splitlines()]
    assert letter["order"]["order_id"] == poison
    assert "HTTP 500" in letter["error"] and letter["attempts"] == 3

    await set_fail_mode(redis, keyspace, FailMode.NONE)
    replayed = await run_cli(procs, "deadletters", "replay", "--all")
    assert "1 replayed" in replayed
    await eventually(lambda: received(redis, keyspace, 5), within=30.0)
    assert await deadletters.count(redis, keyspace) == 0
    report = await audit(redis, keyspace)
    assert report.ok, report.as_dict()


async def test_sink_answers_500_then_times_out_then_recovers(
    procs: Processes, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = await shop(redis, keyspace)
    await procs.start_sink()
    await set_fail_mode(redis, keyspace, FailMode.ERROR, times=4)
    _relay, base = await procs.start_relay(
        "r1", LIVECOMMERCE_RELAY_TIMEOUT="0.3", LIVECOMMERCE_RELAY_CONCURRENCY="1"
    )
    orders = await buy(inventory, "f1", 3)
    await eventually(lambda: received(redis, keyspace, 3), within=30.0)
    assert await metric(base, 'livecommerce_relay_failures_total{reason="http_5xx"}') == 4

    await set_fail_mode(redis, keyspace, FailMode.TIMEOUT, times=2, delay_s=30)
    orders += await buy(inventory, "f1", 2, start=10)
    await eventually(lambda: received(redis, keyspace, 5), within=30.0)
    assert await metric(base, 'livecommerce_relay_failures_total{reason="timeout"}') == 2
    report = await audit(redis, keyspace)
    assert report.ok, report.as_dict()
    assert report.received == len(orders)


async def test_gone_disables_the_endpoint_and_the_relay_reports_it(
    procs: Processes, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = await shop(redis, keyspace)
    await procs.start_sink()
    await set_fail_mode(redis, keyspace, FailMode.GONE)
    relay, base = await procs.start_relay("r1")
    await buy(inventory, "f1", 2)
    await eventually(
        lambda: _ge(metric(base, "livecommerce_relay_endpoint_disabled"), 1), within=30.0
    )
    async with httpx.AsyncClient(timeout=2) as client:
        ready = (await client.get(base + "/readyz")).json()
    assert ready["ok"] is True and ready["disabled"]["status"] == 410
    assert await sink_mod.received_count(redis, keyspace) == 0
    assert await deadletters.count(redis, keyspace) == 0
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(20) == 3  # exit status 3: stopped with the endpoint disabled
    assert "410 Gone" in procs.logs()
    # nothing was lost: a relay started once the endpoint is fixed delivers both orders
    await set_fail_mode(redis, keyspace, FailMode.NONE)
    await procs.start_relay("r2")
    await eventually(lambda: received(redis, keyspace, 2), within=30.0)
    assert (await audit(redis, keyspace)).ok


async def run_cli(procs: Processes, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livecommerce.ops.cli_fulfillment",
        *args,
        env=procs.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _pending(redis: aioredis.Redis, stream: str) -> int:
    return int((await redis.xpending(stream, "fulfillment"))["pending"])


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _ge(value: Awaitable[float], expected: float) -> bool:
    return await value >= expected
