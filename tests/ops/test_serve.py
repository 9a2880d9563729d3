"""The README's run command, as a new user runs it: `livecommerce serve` on the embedded Valkey
(persistence on), with the demo. Stopped with SIGTERM and started again on the same data
directory, it finds the same stock and orders."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from livecommerce.core.config import load
from livecommerce.fulfillment.sink import received_count
from livecommerce.store.embedded import free_port
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

pytestmark = pytest.mark.slow

REDIS_LINE = re.compile(r"embedded Valkey on (redis://\S+),")
KEY_LINE = re.compile(r"Host key:\s+(lch_\S+)")


class Served:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        env.update(LIVECOMMERCE_DATA_DIR=str(data_dir), LIVECOMMERCE_PORT=str(port))
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livecommerce", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:  # blocks per line; the server prints as it starts
            self.lines.append(line)
            if m := pattern.search(line):
                return m
            if time.monotonic() > deadline:
                break
        pytest.fail("server output never matched " + pattern.pattern + ":\n" + "".join(self.lines))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=30)  # drains and closes the pipe
            self.lines.append(rest)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        return self.proc.returncode


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def buy_one(redis_url: str) -> str:
    client = aioredis.Redis.from_url(redis_url)
    try:
        inv = Inventory(client, Keyspace("lc"), load({}))
        await inv.load()
        drops = await inv.list_drops("demo")
        open_drop = next(d for d in drops if d["state"] == "open")
        outcome = await inv.buy_now("demo", open_drop["id"], "tester", 1, "serve-test-1", "pm_1")
        assert outcome.ok and outcome.order and outcome.durable
        # The demo runs the relay in the server and the reference sink beside it: the order
        # must arrive there, signed and verified.
        deadline = time.monotonic() + 30
        while await received_count(client, Keyspace("lc")) < 1:
            assert time.monotonic() < deadline, "the order never reached the demo sink"
            await asyncio.sleep(0.05)
        return outcome.order.id
    finally:
        await client.aclose()


def test_serve_persists_across_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    first = Served(data_dir, port)
    try:
        redis_url = first.wait_for(REDIS_LINE).group(1)
        key = first.wait_for(KEY_LINE).group(1)
        first.wait_for(re.compile(r"Viewer 2:"))
        assert ready(port)
        output = "".join(first.lines)
        assert "/panel" in output and "/watch/demo" in output
        order_id = asyncio.run(buy_one(redis_url))
        stats = httpx.get(
            f"http://127.0.0.1:{port}/api/shows/demo/stats",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        ).json()
        assert stats["orders"] == 1
    finally:
        code = first.stop()
    assert code == 0, "".join(first.lines)
    assert (data_dir / "appendonly").is_dir()  # the AOF, not an in-memory server

    second = Served(data_dir, port)
    try:
        key = second.wait_for(KEY_LINE).group(1)
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/shows/demo/orders",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert [o["id"] for o in response.json()["orders"]] == [order_id]
        stats = httpx.get(
            f"http://127.0.0.1:{port}/api/shows/demo/stats",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        ).json()
        assert stats["orders"] == 1
    finally:
        assert second.stop() == 0
