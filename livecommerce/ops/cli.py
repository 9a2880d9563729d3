"""The ``livecommerce`` command. Every flag has an environment variable (docs/configuration.md).

Subcommands: serve, token, config, audit, relay, sink, deadletters, hostkey, privacy, sync.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from livecommerce import __version__
from livecommerce.core import logs
from livecommerce.core.config import Secret, load
from livecommerce.core.errors import LivecommerceError

# Modules that add their own subcommands with ``register(subparsers)``.
COMMAND_MODULES = (
    "livecommerce.ops.cli_audit",
    "livecommerce.ops.cli_fulfillment",
    "livecommerce.ops.cli_hostkeys",
    "livecommerce.ops.cli_privacy",
    "livecommerce.ops.cli_sync",
)


def _set_env(name: str, value: object) -> None:
    """A flag given on the command line wins over the environment; config.load reads both."""
    if value is not None:
        os.environ["LIVECOMMERCE_" + name] = str(value)


def cmd_serve(args: argparse.Namespace) -> int:
    from livecommerce.ops.runner import serve

    logs.configure(os.environ.get("LIVECOMMERCE_LOG_LEVEL", "info"))  # the service logs JSON
    _set_env("HOST", args.host)
    _set_env("PORT", args.port)
    _set_env("WORKERS", args.workers)
    _set_env("DATA_DIR", args.data_dir)
    _set_env("REDIS_URL", args.redis_url)
    if args.no_demo:
        _set_env("DEMO", "false")
    return serve(load())


def cmd_token(args: argparse.Namespace) -> int:
    from livecommerce.realtime.tokens import mint

    _set_env("DATA_DIR", args.data_dir)
    settings = load()
    secret = settings.gateway.token_secret
    if secret is not None:
        source = "LIVECOMMERCE_TOKEN_SECRET"
    else:
        # The server's development secret lives in its data dir: sign with that very one, and
        # never invent a fresh secret that no server uses (its tokens would fail auth_failed).
        path = (settings.redis.data_dir / "token_secret").resolve()
        if not path.exists():
            print(
                f"livecommerce token: no development secret at {path}: no server has run with "
                f"LIVECOMMERCE_DATA_DIR={path.parent}. Pass --data-dir (the server's "
                "LIVECOMMERCE_DATA_DIR) or set LIVECOMMERCE_TOKEN_SECRET.",
                file=sys.stderr,
            )
            return 2
        secret = Secret(path.read_text().strip())
        source = f"the development secret in {path} (server LIVECOMMERCE_DATA_DIR={path.parent})"
    ttl = args.ttl or settings.gateway.token_ttl_s
    print(mint(secret.reveal(), args.viewer, ttl, name=args.name))
    print(f"livecommerce token: signed with {source}", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(json.dumps(load().describe(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecommerce", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the server (embedded Valkey unless a URL is set)")
    p.add_argument("--host", help="LIVECOMMERCE_HOST (127.0.0.1)")
    p.add_argument("--port", type=int, help="LIVECOMMERCE_PORT (8000)")
    p.add_argument("--workers", type=int, help="LIVECOMMERCE_WORKERS (1)")
    p.add_argument("--data-dir", help="LIVECOMMERCE_DATA_DIR (.livecommerce)")
    p.add_argument("--redis-url", help="LIVECOMMERCE_REDIS_URL (embedded Valkey when unset)")
    p.add_argument("--no-demo", action="store_true", help="LIVECOMMERCE_DEMO=false")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="mint a signed viewer token (development)")
    p.add_argument("viewer", help="viewer id")
    p.add_argument("--ttl", type=int, help="seconds (LIVECOMMERCE_TOKEN_TTL)")
    p.add_argument("--name", help="display name shown in chat (default: the viewer id)")
    p.add_argument("--data-dir", help="LIVECOMMERCE_DATA_DIR of the server (its dev secret)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    p.set_defaults(func=cmd_config)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("LIVECOMMERCE_LOG_LEVEL", "info").upper(),
        format="%(message)s",
        stream=sys.stderr,
    )
    logs.install_redaction()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LivecommerceError as exc:
        print(f"livecommerce: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
