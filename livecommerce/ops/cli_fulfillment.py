"""Command-line entry points of the fulfillment path: ``relay``, ``sink``, ``deadletters``.

``livecommerce.ops.cli`` calls :func:`register` to add them to its subcommands; ``python -m
livecommerce.ops.cli_fulfillment ...`` runs them on their own (the fault tests do). Each subparser
sets
``func``: a callable taking the parsed namespace and returning the exit status.

``relay`` and ``sink`` are separate processes sharing one Redis: they need
``LIVECOMMERCE_REDIS_URL`` (or ``--redis-url``) -- the embedded Valkey belongs to ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from livecommerce.core import config
from livecommerce.core.config import Env, Secret, Settings
from livecommerce.core.errors import ConfigError, LivecommerceError
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.relay import Relay
from livecommerce.fulfillment.sink import create_app
from livecommerce.fulfillment.webhooks import parse_secrets
from livecommerce.store.keys import Keyspace

log = logging.getLogger("livecommerce.relay_cli")

SINK_PORT_DEFAULT = 8100


def register(subparsers: Any) -> None:
    """Add ``relay``, ``sink`` and ``deadletters {list,replay}`` to an argparse subparsers."""
    relay = subparsers.add_parser("relay", help="deliver confirmed orders to the backend")
    _redis_args(relay)
    relay.add_argument("--webhook-url", help="backend URL [LIVECOMMERCE_WEBHOOK_URL]")
    relay.add_argument(
        "--secret", help="whsec_ secret(s), comma-separated [LIVECOMMERCE_WEBHOOK_SECRET]"
    )
    relay.add_argument("--consumer", help="consumer name [LIVECOMMERCE_RELAY_CONSUMER]")
    relay.add_argument("--host", default="127.0.0.1", help="interface for --port")
    relay.add_argument(
        "--port", type=int, help="/livez /readyz /metrics port, 0 = off [LIVECOMMERCE_RELAY_PORT]"
    )
    relay.set_defaults(func=cmd_relay)

    sink = subparsers.add_parser("sink", help="run the reference fulfillment sink")
    _redis_args(sink)
    sink.add_argument("--host", default=None, help="interface [LIVECOMMERCE_SINK_HOST, 127.0.0.1]")
    sink.add_argument(
        "--port", type=int, default=None, help=f"port [LIVECOMMERCE_SINK_PORT, {SINK_PORT_DEFAULT}]"
    )
    sink.add_argument(
        "--secret",
        help="whsec_ secret(s) to accept [LIVECOMMERCE_SINK_SECRET, "
        "else LIVECOMMERCE_WEBHOOK_SECRET]",
    )
    sink.set_defaults(func=cmd_sink)

    dl = subparsers.add_parser("deadletters", help="list or replay dead-lettered orders")
    dl_sub = dl.add_subparsers(dest="deadletters_command", required=True)
    dl_list = dl_sub.add_parser("list", help="print dead letters, oldest first")
    _redis_args(dl_list)
    dl_list.add_argument("--limit", type=int, default=100)
    dl_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dl_list.set_defaults(func=cmd_deadletters_list)
    dl_replay = dl_sub.add_parser("replay", help="put dead letters back into the orders streams")
    _redis_args(dl_replay)
    dl_replay.add_argument("ids", nargs="*", help="dead-letter entry ids")
    dl_replay.add_argument("--all", action="store_true", help="replay every dead letter")
    dl_replay.set_defaults(func=cmd_deadletters_replay)


def _redis_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis/Valkey URL [LIVECOMMERCE_REDIS_URL]")
    parser.add_argument("--key-prefix", help="key prefix [LIVECOMMERCE_KEY_PREFIX]")


def _settings(args: argparse.Namespace) -> Settings:
    s = config.load()
    redis = s.redis
    if args.redis_url:
        redis = dataclasses.replace(redis, url=Secret(args.redis_url))
    if args.key_prefix:
        redis = dataclasses.replace(redis, key_prefix=args.key_prefix)
    relay = s.relay
    for flag, name in (("webhook_url", "webhook_url"), ("consumer", "consumer"), ("port", "port")):
        value = getattr(args, flag, None)
        if value is not None:
            relay = dataclasses.replace(relay, **{name: value})
    if getattr(args, "secret", None) and args.command_name == "relay":
        relay = dataclasses.replace(relay, webhook_secret=Secret(args.secret))
    return dataclasses.replace(s, redis=redis, relay=relay)


def _client(settings: Settings) -> aioredis.Redis:
    if settings.redis.url is None:
        raise ConfigError(
            "LIVECOMMERCE_REDIS_URL", "relay, sink and deadletters need the shared server's URL"
        )
    return aioredis.Redis.from_url(settings.redis.url.reveal(), decode_responses=False)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the command owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_app(relay: Relay, registry: CollectorRegistry) -> Starlette:
    """``/livez``, ``/readyz`` (Redis reachable) and ``/metrics`` of a relay process."""

    async def livez(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> Response:
        ok = await relay.ready()
        return JSONResponse({"ok": ok, **relay.status()}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)]
    )


async def _run_relay(settings: Settings, host: str) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    client = _client(settings)
    registry = CollectorRegistry()
    relay = Relay.from_settings(
        client, Keyspace(settings.redis.key_prefix), settings, registry=registry
    )
    server: _Server | None = None
    serving: asyncio.Task[None] | None = None
    if settings.relay.port:
        server = _Server(
            uvicorn.Config(
                health_app(relay, registry),
                host=host,
                port=settings.relay.port,
                log_level="warning",
                lifespan="off",
            )
        )
        serving = asyncio.create_task(server.serve())
    log.info("relay %s delivering to %s", relay.consumer, settings.relay.webhook_url)
    try:
        await relay.run(stop)
    finally:
        await relay.deliverer.aclose()
        if server is not None and serving is not None:
            server.should_exit = True
            await serving
        await client.aclose()
    return 0 if relay.disabled is None else 3


def cmd_relay(args: argparse.Namespace) -> int:
    args.command_name = "relay"
    settings = _settings(args)
    return asyncio.run(_run_relay(settings, args.host))


def cmd_sink(args: argparse.Namespace) -> int:
    args.command_name = "sink"
    settings = _settings(args)
    env = Env()
    raw = args.secret or env.optional_str("SINK_SECRET")
    if raw is None and settings.relay.webhook_secret is not None:
        raw = settings.relay.webhook_secret.reveal()
    if not raw:
        raise ConfigError("LIVECOMMERCE_SINK_SECRET", "the sink needs a whsec_ secret")
    secrets = parse_secrets(raw)
    host = args.host or env.optional_str("SINK_HOST") or "127.0.0.1"
    port = (
        args.port
        if args.port is not None
        else env.integer("SINK_PORT", SINK_PORT_DEFAULT, minimum=0, maximum=65_535)
    )

    async def serve() -> None:
        client = _client(settings)
        app = create_app(client, Keyspace(settings.redis.key_prefix), secrets)
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        try:
            await server.serve()
        finally:
            await client.aclose()

    asyncio.run(serve())
    return 0


def _with_client(settings: Settings, job: Callable[[aioredis.Redis, Keyspace], Any]) -> Any:
    async def go() -> Any:
        client = _client(settings)
        try:
            return await job(client, Keyspace(settings.redis.key_prefix))
        finally:
            await client.aclose()

    return asyncio.run(go())


def cmd_deadletters_list(args: argparse.Namespace) -> int:
    args.command_name = "deadletters"
    settings = _settings(args)

    async def job(client: aioredis.Redis, ks: Keyspace) -> list[deadletters.DeadLetter]:
        return await deadletters.list_letters(client, ks, count=args.limit)

    letters: list[deadletters.DeadLetter] = _with_client(settings, job)
    for letter in letters:
        if args.json:
            sys.stdout.write(orjson.dumps(letter.as_dict()).decode() + "\n")
        else:
            sys.stdout.write(
                f"{letter.id}  {letter.order_id}  attempts={letter.attempts}  {letter.error}\n"
            )
    if not args.json:
        sys.stdout.write(f"{len(letters)} dead letter(s)\n")
    return 0


def cmd_deadletters_replay(args: argparse.Namespace) -> int:
    args.command_name = "deadletters"
    if not args.ids and not args.all:
        sys.stderr.write("give dead-letter ids, or --all\n")
        return 2
    settings = _settings(args)

    async def job(client: aioredis.Redis, ks: Keyspace) -> list[deadletters.DeadLetter]:
        return await deadletters.replay(client, ks, None if args.all else list(args.ids))

    letters: list[deadletters.DeadLetter] = _with_client(settings, job)
    for letter in letters:
        sys.stdout.write(f"replayed {letter.id}  {letter.order_id}\n")
    sys.stdout.write(f"{len(letters)} replayed\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livecommerce")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        result: int = args.func(args)
    except LivecommerceError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
