"""Two real gateway processes (``python -m livecommerce serve``) sharing shows through Valkey."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, drop, free_port, settings

from livecommerce.realtime.client import Client
from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

pytestmark = pytest.mark.slow


class Proc:
    def __init__(self, redis_url: str, prefix: str, log: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "LIVECOMMERCE_REDIS_URL": redis_url,
            "LIVECOMMERCE_KEY_PREFIX": prefix,
            "LIVECOMMERCE_TOKEN_SECRET": SECRET,
            "LIVECOMMERCE_DEMO": "false",
            "LIVECOMMERCE_STOCK_INTERVAL": "0.05",
            "LIVECOMMERCE_REAP_INTERVAL": "0.05",
            "LIVECOMMERCE_DRAIN_SECONDS": "2",
        }
        self.log = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "livecommerce", "serve", "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def wait_ready(self, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                assert self.popen.poll() is None, "server exited"
                try:
                    r = await http.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0)
                    if r.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)  # polling a readiness probe, not synchronising
        raise TimeoutError("server not ready")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        self.log.close()


@pytest.fixture
def procs(redis_url: str, keyspace: Keyspace, tmp_path: Path) -> Iterator[list[Proc]]:
    started = [Proc(redis_url, keyspace.prefix, tmp_path / f"p{i}.log") for i in range(2)]
    yield started
    for p in started:
        p.stop()


@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one")
    await inventory.start_show("s1")
    yield inventory


async def test_two_processes_share_shows(procs: list[Proc], inv: Inventory) -> None:
    a, b = procs
    await asyncio.gather(a.wait_ready(), b.wait_ready())
    tok = mint(SECRET, "buyer", 600)
    async with (
        Client(a.url, "s1", token=tok) as on_a,
        Client(b.url, "s1", encoding=Encoding.MSGPACK) as on_b,
    ):
        now = await inv.server_time_ms()
        await inv.create_drop("s1", drop("d1", quantity=2, limit=2, opens_at=now + 300))
        for client in (on_a, on_b):
            opened = await client.next_message(types=["drop_opened"])
            assert opened["data"]["id"] == "d1"
        bought = await on_a.buy_now("d1", 2, "pay")  # a buy on process A ...
        assert bought["ok"], bought
        seen = []
        while not seen or seen[-1]["type"] != "drop_closed":  # ... seen by viewers on B
            seen.append(await on_b.next_message())
        types = [m["type"] for m in seen]
        assert "sold_out" in types and "drop_opened" not in types  # opened exactly once
        while (await on_b.next_message(types=["viewers"]))["data"]["count"] != 2:
            pass


async def test_resume_after_process_killed_and_drained(
    procs: list[Proc], inv: Inventory, redis_url: str, keyspace: Keyspace, tmp_path: Path
) -> None:
    a, b = procs
    c = Proc(redis_url, keyspace.prefix, tmp_path / "p2.log")
    procs.append(c)
    await asyncio.gather(a.wait_ready(), b.wait_ready(), c.wait_ready())
    await inv.create_drop("s1", drop("d1", quantity=100, limit=100))
    async with Client([a.url, b.url, c.url], "s1", max_backoff_s=0.2) as client:
        await inv.restock("s1", "d1", 1)
        assert (await client.next_message(types=["restocked"]))["data"]["added"] == 1
        a.popen.send_signal(signal.SIGKILL)  # crash: no close frame at all
        a.popen.wait(timeout=10)
        for n in range(2, 6):
            await inv.restock("s1", "d1", n)
        got = [(await client.next_message(types=["restocked"]))["data"]["added"] for _ in range(4)]
        assert got == [2, 3, 4, 5]
        assert client.connections == 2  # resumed on B
        b.popen.send_signal(signal.SIGTERM)  # graceful: drain with 4000, resume on C
        for n in range(6, 9):
            await inv.restock("s1", "d1", n)
        got = [(await client.next_message(types=["restocked"]))["data"]["added"] for _ in range(3)]
        assert got == [6, 7, 8]
        assert b.popen.wait(timeout=20) == 0
        assert 4000 in client.close_codes and client.connections == 3
