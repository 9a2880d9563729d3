"""Shared fixtures: a real Valkey (embedded, with AOF) for the whole session, a fresh key prefix
per test, and optionally a second real server from LIVECOMMERCE_TEST_REDIS_URL.

Tests that touch Redis take ``redis_url`` and ``keyspace`` (or ``redis`` for a connected client).
With LIVECOMMERCE_TEST_REDIS_URL set, every such test runs twice: on the embedded Valkey and on
that server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.keys import Keyspace

EXTERNAL = os.environ.get("LIVECOMMERCE_TEST_REDIS_URL", "").strip()
SERVERS = ["embedded", "external"] if EXTERNAL else ["embedded"]


@pytest.fixture(scope="session")
def embedded_valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "external":
        return EXTERNAL
    server: EmbeddedValkey = request.getfixturevalue("embedded_valkey")
    return server.url


@pytest.fixture
def keyspace() -> Keyspace:
    """A key prefix of this test's own: tests never see each other's keys."""
    return Keyspace(prefix="t" + uuid.uuid4().hex[:12])


@pytest.fixture
async def redis(redis_url: str, keyspace: Keyspace) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    # Remove this test's keys so a long session does not grow the server without bound.
    keys = [k async for k in client.scan_iter(match=f"{keyspace.prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    await client.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
