"""store/scriptrunner.py on real Valkey: a loop turn's calls as one pipeline, replies in order."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from livecommerce.core.errors import StoreError
from livecommerce.store.scriptrunner import ScriptRunner, build, load_all

ECHO = build("echo", "return ARGV[1]")
BOOM = build("boom", "return redis.error_reply('BOOM ' .. ARGV[1])")


@pytest.fixture
async def runner(redis: aioredis.Redis) -> ScriptRunner:
    scripts = {**load_all(), "echo": ECHO, "boom": BOOM}
    run = ScriptRunner(redis, scripts)
    await run.load()
    return run


async def test_a_big_batch_answers_every_call_in_order_errors_included(
    runner: ScriptRunner,
) -> None:
    """More replies than one socket read holds: some are taken from what hiredis already
    parsed, some waited for; each caller gets its own, an error reply as a StoreError."""
    n = 600  # a batch is at most 512 calls: two pipelines, the second formed meanwhile
    pad = "x" * 400  # ~240 KB of replies: several reads of the socket
    calls = [runner.call("boom" if i % 97 == 0 else "echo", [], [f"{i}:{pad}"]) for i in range(n)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for i, result in enumerate(results):
        if i % 97 == 0:
            assert isinstance(result, StoreError) and f"BOOM {i}:" in str(result), result
        else:
            assert result == f"{i}:{pad}".encode(), (i, result)


async def test_scripts_the_server_lost_are_loaded_again(
    runner: ScriptRunner, redis: aioredis.Redis
) -> None:
    await redis.script_flush()  # as after a restart without its scripts
    results = await asyncio.gather(*(runner.call("echo", [], [str(i)]) for i in range(20)))
    assert results == [str(i).encode() for i in range(20)]
