"""A real gateway process (``python -m livecommerce serve``) on a free port, for the tests that
need several processes sharing one Valkey."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers.gateway import SECRET, free_port


class Proc:
    def __init__(self, redis_url: str, prefix: str, log: Path, *args: str) -> None:
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
            [sys.executable, "-m", "livecommerce", "serve", "--port", str(self.port), *args],
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
