"""``livecommerce hostkey {create,list,revoke}``: host API keys from the command line.

The commands talk to ``LIVECOMMERCE_REDIS_URL`` (or ``--redis-url``). Without one they start
the embedded Valkey on ``LIVECOMMERCE_DATA_DIR`` for the duration of the command -- only do that
while ``livecommerce serve`` is *not* running on the same directory (two servers must never
share one append-only file); with the server running, pass the URL it logs at start-up.
The secret of a new key is printed once and never stored.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from livecommerce.ops.cli_store import (
    add_store_options,
    print_created,
    print_list,
    print_revoked,
    run_on_store,
)
from livecommerce.web.hostkeys import HostKeys

T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add ``hostkey {create,list,revoke}`` to the ``livecommerce`` command."""
    parser = subparsers.add_parser("hostkey", help="create, list and revoke host API keys")
    sub = parser.add_subparsers(dest="hostkey_command", required=True)

    p = sub.add_parser("create", help="create a key for a host (the secret is shown once)")
    p.add_argument("--host", required=True, help="host id the key acts for")
    p.add_argument("--label", default="", help="a note for people (e.g. 'studio laptop')")
    add_store_options(p)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("list", help="list keys (never their secrets)")
    add_store_options(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("revoke", help="revoke a key by its id or shown prefix")
    p.add_argument("key", metavar="PREFIX_OR_ID", help="key id or prefix (lch_...)")
    add_store_options(p)
    p.set_defaults(func=cmd_revoke)


def _run(args: argparse.Namespace, action: Callable[[HostKeys], Awaitable[T]]) -> T:
    return run_on_store(args, lambda redis, keys, _settings: action(HostKeys(redis, keys)))


def cmd_create(args: argparse.Namespace) -> int:
    secret, record = _run(args, lambda keys: keys.create(args.host, args.label))
    print_created(args, secret, record)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print_list(args, _run(args, lambda keys: keys.list()))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    print_revoked(args, _run(args, lambda keys: keys.revoke(args.key)))
    return 0
