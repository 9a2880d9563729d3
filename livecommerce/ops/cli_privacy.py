"""``livecommerce privacy {export,erase,key}``: privacy requests from the command line.

``privacy export VIEWER`` prints everything stored about a viewer as one JSON document;
``privacy erase VIEWER`` erases it (see docs/privacy.md); ``privacy key {create,list,revoke}``
manages the operator keys the ``/api/privacy`` routes take. Like ``hostkey``, the commands talk
to ``LIVECOMMERCE_REDIS_URL`` (or ``--redis-url``), else start the embedded Valkey on the data
directory for the duration of the command (never while ``serve`` runs on that directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from livecommerce.core.config import Settings
from livecommerce.fulfillment import privacy
from livecommerce.ops.cli_hostkeys import _line, _settings
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.keys import Keyspace
from livecommerce.web.operatorkeys import OperatorKeys

T = TypeVar("T")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("privacy", help="export or erase a viewer's data; operator keys")
    sub = parser.add_subparsers(dest="privacy_command", required=True)

    p = sub.add_parser("export", help="print everything stored about a viewer (JSON)")
    p.add_argument("viewer", help="viewer id (the token's sub)")
    _common(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("erase", help="erase a viewer's personal data (pseudonymise orders)")
    p.add_argument("viewer", help="viewer id (the token's sub)")
    _common(p)
    p.set_defaults(func=cmd_erase)

    keys = sub.add_parser("key", help="operator keys for the /api/privacy routes")
    ksub = keys.add_subparsers(dest="key_command", required=True)
    p = ksub.add_parser("create", help="create an operator key (the secret is shown once)")
    p.add_argument("--name", required=True, help="operator id the key acts for")
    p.add_argument("--label", default="", help="a note for people")
    _common(p)
    p.set_defaults(func=cmd_key_create)
    p = ksub.add_parser("list", help="list operator keys (never their secrets)")
    _common(p)
    p.set_defaults(func=cmd_key_list)
    p = ksub.add_parser("revoke", help="revoke an operator key by its id or shown prefix")
    p.add_argument("key", metavar="PREFIX_OR_ID")
    _common(p)
    p.set_defaults(func=cmd_key_revoke)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", help="[LIVECOMMERCE_REDIS_URL] (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="[LIVECOMMERCE_DATA_DIR] for the embedded Valkey")
    p.add_argument("--json", action="store_true", help="print JSON")


@contextlib.asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
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


def _run(
    args: argparse.Namespace, action: Callable[[aioredis.Redis, Keyspace, Settings], Awaitable[T]]
) -> T:
    async def main() -> T:
        settings = _settings(args)
        async with _client(settings) as client:
            return await action(client, Keyspace(settings.redis.key_prefix), settings)

    return asyncio.run(main())


def cmd_export(args: argparse.Namespace) -> int:
    doc = _run(args, lambda r, k, _s: privacy.export(r, k, args.viewer))
    print(json.dumps(doc, indent=None if args.json else 2))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from livecommerce.fulfillment import erasure

    report = _run(args, lambda r, k, s: erasure.erase(r, k, s, args.viewer))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    secret, record = _run(args, lambda r, k, _s: OperatorKeys(r, k).create(args.name, args.label))
    if args.json:
        print(json.dumps({"key": secret, **record.public()}))
    else:
        print(secret)
        print(f"# {_line(record)}", file=sys.stderr)
        print("# store it now: it is not shown again", file=sys.stderr)
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    records = _run(args, lambda r, k, _s: OperatorKeys(r, k).list())
    if args.json:
        print(json.dumps([r.public() for r in records]))
    else:
        for record in records:
            print(_line(record))
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    record = _run(args, lambda r, k, _s: OperatorKeys(r, k).revoke(args.key))
    print(json.dumps(record.public()) if args.json else f"revoked: {_line(record)}")
    return 0
