"""Host API keys: created with a secret shown once, stored hashed, verified, listed, revoked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from livecommerce.core.errors import AuthError, ConflictError, NotFoundError, ValidationError
from livecommerce.realtime import tokens
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys, digest


async def test_create_stores_only_the_hash(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    keys = HostKeys(redis, keyspace)
    secret, record = await keys.create("host1", "studio")
    assert secret.startswith("lch_") and len(secret) > 40
    stored = await redis.hgetall(keyspace.host_keys)
    assert list(stored) == [digest(secret).encode()]
    assert secret.encode() not in b"".join(stored.values())
    assert orjson.loads(next(iter(stored.values())))["host"] == "host1"
    assert record.prefix == secret[:12] and record.id == digest(secret)[:16]
    assert (await keys.verify(secret)).host == "host1"


async def test_verify_refuses_unknown_viewer_tokens_and_revoked(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    keys = HostKeys(redis, keyspace)
    secret, record = await keys.create("host1")
    with pytest.raises(AuthError, match="viewer tokens"):
        await keys.verify(tokens.mint("x" * 32, "viewer1", 60))
    with pytest.raises(AuthError):
        await keys.verify(secret + "x")
    with pytest.raises(AuthError):
        await keys.verify("")
    revoked = await keys.revoke(record.id[:8])
    assert revoked.revoked and revoked.revoked_at > 0
    with pytest.raises(AuthError, match="revoked"):
        await keys.verify(secret)
    assert (await keys.revoke(record.prefix)).revoked  # idempotent


async def test_revoke_by_prefix_full_secret_and_errors(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    keys = HostKeys(redis, keyspace)
    s1, r1 = await keys.create("a")
    s2, _ = await keys.create("b")
    with pytest.raises(ValidationError):
        await keys.revoke("ab")
    with pytest.raises(NotFoundError):
        await keys.revoke("zzzzzzzzzzzzzzzzzzz")
    with pytest.raises(ConflictError):
        await keys.revoke("lch_")  # matches both
    await keys.revoke(s2)
    listed = {r.host: r.revoked for r in await keys.list()}
    assert listed == {"a": False, "b": True}
    assert (await keys.verify(s1)).id == r1.id


async def test_create_validates(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    keys = HostKeys(redis, keyspace)
    with pytest.raises(ValidationError) as exc:
        await keys.create("bad host")
    assert exc.value.field == "host"
    with pytest.raises(ValidationError):
        await keys.create("h", "x" * 101)
    assert await keys.list() == []


def run_cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "livecommerce", "hostkey", *args],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout


def test_cli_create_list_revoke(redis_url: str, keyspace: Keyspace, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "LIVECOMMERCE_REDIS_URL": redis_url,
           "LIVECOMMERCE_KEY_PREFIX": keyspace.prefix}  # fmt: skip
    created = orjson.loads(run_cli("create", "--host", "h1", "--label", "cam", "--json", env=env))
    assert created["key"].startswith("lch_") and created["host"] == "h1"
    listed = orjson.loads(run_cli("list", "--json", env=env))
    assert [k["label"] for k in listed] == ["cam"] and "key" not in listed[0]
    out = run_cli("revoke", created["prefix"], env=env)
    assert out.startswith("revoked:")
    assert orjson.loads(run_cli("list", "--json", env=env))[0]["revoked"] is True
