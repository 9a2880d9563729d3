"""What the commands that work on the store directly share (``hostkey``, ``privacy``): the
``--redis-url``/``--data-dir``/``--json`` options, the settings they make, a Redis client on the
configured server -- or, when none is configured, on the embedded Valkey of the data directory
for the time of the command -- and how a key record is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.config import Secret, Settings
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKey

T = TypeVar("T")


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="[LIVECOMMERCE_REDIS_URL] (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="[LIVECOMMERCE_DATA_DIR] for the embedded Valkey")
    p.add_argument("--json", action="store_true", help="print JSON")


def store_settings(args: argparse.Namespace) -> Settings:
    settings = config.load()
    redis = settings.redis
    if args.redis_url:
        redis = dataclasses.replace(redis, url=Secret(args.redis_url))
    if args.data_dir:
        redis = dataclasses.replace(redis, data_dir=Path(args.data_dir).expanduser())
    return dataclasses.replace(settings, redis=redis)


@contextlib.asynccontextmanager
async def store_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    embedded: EmbeddedValkey | None = None
    if settings.redis.url is not None:
        url = settings.redis.url.reveal()
    else:
        embedded = EmbeddedValkey(settings.redis.data_dir, appendfsync="always")
        await asyncio.to_thread(embedded.start)
        url = embedded.url
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def run_on_store(
    args: argparse.Namespace, action: Callable[[aioredis.Redis, Keyspace, Settings], Awaitable[T]]
) -> T:
    """``action(redis, keyspace, settings)`` on the store the command's options name."""

    async def main() -> T:
        settings = store_settings(args)
        async with store_client(settings) as client:
            return await action(client, Keyspace(settings.redis.key_prefix), settings)

    return asyncio.run(main())


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else "-"


def key_line(record: HostKey) -> str:
    state = f"revoked {_when(record.revoked_at)}" if record.revoked else "active"
    return (
        f"{record.id}  {record.prefix}...  host={record.host}  created {_when(record.created_at)}"
        f"  {state}  {record.label}"
    ).rstrip()


def print_created(args: argparse.Namespace, secret: str, record: HostKey) -> None:
    if args.json:
        print(json.dumps({"key": secret, **record.public()}))
    else:
        print(secret)
        print(f"# {key_line(record)}", file=sys.stderr)
        print("# store it now: it is not shown again", file=sys.stderr)


def print_list(args: argparse.Namespace, records: list[HostKey]) -> None:
    if args.json:
        print(json.dumps([r.public() for r in records]))
    else:
        for record in records:
            print(key_line(record))


def print_revoked(args: argparse.Namespace, record: HostKey) -> None:
    print(json.dumps(record.public()) if args.json else f"revoked: {key_line(record)}")
