"""``livecommerce audit [--show S] [--json]``: the inventory audit from the command line, on the
configured Redis or (when none is configured) the embedded Valkey of the data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import redis.asyncio as aioredis

from livecommerce.store.audit import audit
from livecommerce.store.audit_snapshot import AuditReport
from livecommerce.store.keys import Keyspace


def register(subparsers: Any) -> None:
    """Add ``livecommerce audit`` to the CLI."""
    p = subparsers.add_parser(
        "audit",
        help="check every stock and order invariant (exit 1 on a violation)",
        description=(
            "Check stock, holds and orders of every show (or one) on a consistent snapshot. "
            "Uses LIVECOMMERCE_REDIS_URL; when unset it starts the embedded Valkey on "
            "LIVECOMMERCE_DATA_DIR for the time of the audit, which must not be in use by a "
            "running `livecommerce serve` (stop the server first, or point at its Redis URL)."
        ),
    )
    p.add_argument("--show", help="audit only this show")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--redis-url", help="LIVECOMMERCE_REDIS_URL (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="LIVECOMMERCE_DATA_DIR (.livecommerce)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    import os

    from livecommerce.core.config import load
    from livecommerce.store.embedded import EmbeddedValkey

    for name, value in (("REDIS_URL", args.redis_url), ("DATA_DIR", args.data_dir)):
        if value is not None:
            os.environ["LIVECOMMERCE_" + name] = str(value)
    settings = load()
    keyspace = Keyspace(settings.redis.key_prefix)
    server: EmbeddedValkey | None = None
    if settings.redis.url is not None:
        url = settings.redis.url.reveal()
    else:
        if not (settings.redis.data_dir / "appendonly").exists():
            print(f"livecommerce audit: no data in {settings.redis.data_dir}", file=sys.stderr)
            return 2
        print(
            f"livecommerce audit: starting the embedded Valkey on {settings.redis.data_dir} "
            "(it must not be running elsewhere)",
            file=sys.stderr,
        )
        # No RDB snapshot on our shutdown: the audit only reads.
        server = EmbeddedValkey(settings.redis.data_dir, extra_args=("--save", "")).start()
        url = server.url
    try:
        report = asyncio.run(_run(url, keyspace, args.show))
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


async def _run(url: str, keyspace: Keyspace, show: str | None) -> AuditReport:
    client = aioredis.Redis.from_url(url, decode_responses=False)
    try:
        return await audit(client, keyspace, show)
    finally:
        await client.aclose()
