"""A server that starts while Redis is away waits for it instead of failing: under
``--workers N`` uvicorn's supervisor stops the whole server when a worker fails before it serves,
so a worker restarted during a Redis restart would take every other worker down with it."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from helpers.procs import Proc

from livecommerce.store.embedded import EmbeddedValkey, free_port

pytestmark = pytest.mark.slow


async def test_two_workers_started_while_redis_is_down_serve_once_it_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    valkey = EmbeddedValkey(tmp_path / "valkey", port=port)
    server = Proc(valkey.url, "sw" + secrets.token_hex(3), tmp_path / "server.log",
                  "--workers", "2")  # fmt: skip
    try:
        # Redis is not there yet: the workers must wait, not fail their start.
        for _ in range(30):  # ~3 s of the server's life without Redis (bounded)
            await asyncio.sleep(0.1)  # letting the server run into the missing Redis
            assert server.popen.poll() is None, (tmp_path / "server.log").read_text()
        valkey.start()
        await server.wait_ready(60.0)
        assert "waiting for redis" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()
        valkey.stop()
