"""``livecommerce hostkey {create,list,revoke}``: host API keys from the command line.

The commands talk to ``LIVECOMMERCE_REDIS_URL`` (or ``--redis-url``). Without one they start
the embedded Valkey on ``LIVECOMMERCE_DATA_DIR`` for the duration of the command -- only do that
while ``livecommerce serve`` is *not* running on the same directory (two servers must never
share one append-only file); with the server running, pass the URL it logs at start-up.
The secret of a new key is printed once and never stored.
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
from typing import Any, TypeVar

import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.config import Secret, Settings
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKey, HostKeys

T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add ``hostkey {create,list,revoke}`` to the ``livecommerce`` command."""
    parser = subparsers.add_parser("hostkey", help="create, list and revoke host API keys")
    sub = parser.add_subparsers(dest="hostkey_command", required=True)

    p = sub.add_parser("create", help="create a key for a host (the secret is shown once)")
    p.add_argument("--host", required=True, help="host id the key acts for")
    p.add_argument("--label", default="", help="a note for people (e.g. 'studio laptop')")
    _common(p)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("list", help="list keys (never their secrets)")
    _common(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("revoke", help="revoke a key by its id or shown prefix")
    p.add_argument("key", metavar="PREFIX_OR_ID", help="key id or prefix (lch_...)")
    _common(p)
    p.set_defaults(func=cmd_revoke)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="[LIVECOMMERCE_REDIS_URL] (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="[LIVECOMMERCE_DATA_DIR] for the embedded Valkey")
    p.add_argument("--json", action="store_true", help="print JSON")


def _settings(args: argparse.Namespace) -> Settings:
    settings = config.load()
    redis = settings.redis
    if args.redis_url:
        redis = dataclasses.replace(redis, url=Secret(args.redis_url))
    if args.data_dir:
        redis = dataclasses.replace(redis, data_dir=Path(args.data_dir).expanduser())
    return dataclasses.replace(settings, redis=redis)


@contextlib.asynccontextmanager
async def _host_keys(settings: Settings) -> AsyncIterator[HostKeys]:
    embedded: EmbeddedValkey | None = None
    if settings.redis.url is not None:
        url = settings.redis.url.reveal()
    else:
        embedded = EmbeddedValkey(settings.redis.data_dir, appendfsync="always")
        await asyncio.to_thread(embedded.start)
        url = embedded.url
    client = aioredis.Redis.from_url(url)
    try:
        yield HostKeys(client, Keyspace(settings.redis.key_prefix))
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def _run(args: argparse.Namespace, action: Callable[[HostKeys], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _host_keys(_settings(args)) as keys:
            return await action(keys)

    return asyncio.run(main())


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ms else "-"


def _line(record: HostKey) -> str:
    state = f"revoked {_when(record.revoked_at)}" if record.revoked else "active"
    return (
        f"{record.id}  {record.prefix}...  host={record.host}  created {_when(record.created_at)}"
        f"  {state}  {record.label}"
    ).rstrip()


def cmd_create(args: argparse.Namespace) -> int:
    secret, record = _run(args, lambda keys: keys.create(args.host, args.label))
    if args.json:
        print(json.dumps({"key": secret, **record.public()}))
    else:
        print(secret)
        print(f"# {_line(record)}", file=sys.stderr)
        print("# store it now: it is not shown again", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _run(args, lambda keys: keys.list())
    if args.json:
        print(json.dumps([r.public() for r in records]))
    else:
        for record in records:
            print(_line(record))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    record = _run(args, lambda keys: keys.revoke(args.key))
    print(json.dumps(record.public()) if args.json else f"revoked: {_line(record)}")
    return 0
