"""``livecommerce privacy {export,erase,key}``: privacy requests from the command line.

``privacy export VIEWER`` prints everything stored about a viewer as one JSON document;
``privacy erase VIEWER`` erases it (see docs/privacy.md); ``privacy key {create,list,revoke}``
manages the operator keys the ``/api/privacy`` routes take. Like ``hostkey``, the commands talk
to ``LIVECOMMERCE_REDIS_URL`` (or ``--redis-url``), else start the embedded Valkey on the data
directory for the duration of the command (never while ``serve`` runs on that directory).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TypeVar

from livecommerce.fulfillment import privacy
from livecommerce.ops.cli_store import (
    add_store_options,
    print_created,
    print_list,
    print_revoked,
    run_on_store,
)
from livecommerce.web.operatorkeys import OperatorKeys

T = TypeVar("T")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("privacy", help="export or erase a viewer's data; operator keys")
    sub = parser.add_subparsers(dest="privacy_command", required=True)

    p = sub.add_parser("export", help="print everything stored about a viewer (JSON)")
    p.add_argument("viewer", help="viewer id (the token's sub)")
    add_store_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("erase", help="erase a viewer's personal data (pseudonymise orders)")
    p.add_argument("viewer", help="viewer id (the token's sub)")
    add_store_options(p)
    p.set_defaults(func=cmd_erase)

    keys = sub.add_parser("key", help="operator keys for the /api/privacy routes")
    ksub = keys.add_subparsers(dest="key_command", required=True)
    p = ksub.add_parser("create", help="create an operator key (the secret is shown once)")
    p.add_argument("--name", required=True, help="operator id the key acts for")
    p.add_argument("--label", default="", help="a note for people")
    add_store_options(p)
    p.set_defaults(func=cmd_key_create)
    p = ksub.add_parser("list", help="list operator keys (never their secrets)")
    add_store_options(p)
    p.set_defaults(func=cmd_key_list)
    p = ksub.add_parser("revoke", help="revoke an operator key by its id or shown prefix")
    p.add_argument("key", metavar="PREFIX_OR_ID")
    add_store_options(p)
    p.set_defaults(func=cmd_key_revoke)


def cmd_export(args: argparse.Namespace) -> int:
    doc = run_on_store(args, lambda r, k, _s: privacy.export(r, k, args.viewer))
    print(json.dumps(doc, indent=None if args.json else 2))
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from livecommerce.fulfillment import erasure

    report = run_on_store(args, lambda r, k, s: erasure.erase(r, k, s, args.viewer))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def cmd_key_create(args: argparse.Namespace) -> int:
    secret, record = run_on_store(
        args, lambda r, k, _s: OperatorKeys(r, k).create(args.name, args.label)
    )
    print_created(args, secret, record)
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    print_list(args, run_on_store(args, lambda r, k, _s: OperatorKeys(r, k).list()))
    return 0


def cmd_key_revoke(args: argparse.Namespace) -> int:
    print_revoked(args, run_on_store(args, lambda r, k, _s: OperatorKeys(r, k).revoke(args.key)))
    return 0
