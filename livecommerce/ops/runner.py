"""``livecommerce serve``: the embedded Valkey (unless a URL is given), the server, and for the
demo the fulfillment relay and sink, a demo show, and the URLs to open.

On SIGTERM/SIGINT the server drains before uvicorn stops: readiness turns 503, viewers are
closed with the "reconnect" close code (they resume elsewhere), then uvicorn exits. A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from types import FrameType

import uvicorn

from livecommerce.core.config import Secret, Settings
from livecommerce.core.errors import ConfigError
from livecommerce.fulfillment.sink import WEBHOOK_PATH
from livecommerce.fulfillment.webhooks import generate_secret
from livecommerce.realtime.wsprotocol import WS_PROTOCOL
from livecommerce.store.embedded import EmbeddedValkey, free_port
from livecommerce.store.services import Services

log = logging.getLogger("livecommerce.runner")


def dev_secret(data_dir: Path, name: str) -> Secret:
    """A random secret kept in the data dir, so demo tokens survive a restart."""
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return Secret(path.read_text().strip())


def with_dev_secrets(settings: Settings) -> Settings:
    """Fill in the token secret for a demo run; refuse to run production without one."""
    if settings.gateway.token_secret is not None:
        return settings
    if not settings.gateway.demo:
        raise ConfigError("LIVECOMMERCE_TOKEN_SECRET", "required unless LIVECOMMERCE_DEMO=true")
    secret = dev_secret(settings.redis.data_dir, "token_secret")
    return dataclasses.replace(
        settings, gateway=dataclasses.replace(settings.gateway, token_secret=secret)
    )


def with_demo_sink(settings: Settings) -> tuple[Settings, int | None]:
    """For the demo without a fulfillment backend: the reference sink on a free loopback port,
    and the relay inside the server delivering to it. Returns the sink's port (or None).

    Only on the embedded Valkey: on a shared server the demo relay would acknowledge real
    orders in the fulfillment group and hand them to a toy sink."""
    if not settings.gateway.demo or settings.relay.webhook_url or settings.redis.url is not None:
        return settings, None
    path = settings.redis.data_dir / "webhook_secret"
    if not path.exists():
        settings.redis.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_secret())
        path.chmod(0o600)
    port = free_port()
    relay = dataclasses.replace(
        settings.relay,
        webhook_url=f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
        webhook_secret=Secret(path.read_text().strip()),
        in_server=True,
    )
    return dataclasses.replace(settings, relay=relay), port


class DrainingServer(uvicorn.Server):
    """uvicorn.Server that drains the gateway before it stops serving."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        app = self.config.loaded_app
        services = getattr(getattr(app, "state", None), "services", None)
        while services is None and hasattr(app, "app"):  # unwrap uvicorn's middleware
            app = app.app
            services = getattr(getattr(app, "state", None), "services", None)
        if services is not None:
            services.draining = True
            gateway = services.extras.get("gateway")
            if gateway is not None:
                await gateway.drain(services.settings.gateway.drain_s)
        self.should_exit = True


class QuietServer(uvicorn.Server):
    """A second server in the same process: the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def uvicorn_config(app: object, settings: Settings, **extra: object) -> uvicorn.Config:
    g = settings.gateway
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=g.host,
        port=g.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws=WS_PROTOCOL,
        ws_max_size=g.max_frame_bytes,
        ws_per_message_deflate=False,  # measured: doubles broadcast CPU (docs/protocol.md)
        timeout_graceful_shutdown=max(int(g.drain_s), 1),
        **extra,  # type: ignore[arg-type]
    )


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code."""
    settings = with_dev_secrets(settings)
    settings, sink_port = with_demo_sink(settings)
    embedded: EmbeddedValkey | None = None
    if settings.redis.url is None:
        embedded = EmbeddedValkey(settings.redis.data_dir, appendfsync=settings.redis.appendfsync)
        embedded.start()
        redis_url = embedded.url
        log.info("embedded Valkey on %s, data in %s", redis_url, embedded.data_dir)
    else:
        redis_url = settings.redis.url.reveal()
    try:
        if settings.gateway.workers > 1:
            return _serve_workers(settings, redis_url)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_serve(settings, redis_url, sink_port))
    finally:
        if embedded is not None:
            embedded.stop()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed (uvicorn[standard] brings it), as uvicorn's own workers use."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return None
    return uvloop.new_event_loop


def _serve_workers(settings: Settings, redis_url: str) -> int:
    os.environ["LIVECOMMERCE_REDIS_URL"] = redis_url
    assert settings.gateway.token_secret is not None
    os.environ["LIVECOMMERCE_TOKEN_SECRET"] = settings.gateway.token_secret.reveal()
    os.environ["LIVECOMMERCE_DEMO"] = "false"  # no demo with several workers
    g = settings.gateway
    print(f"livecommerce: {g.workers} workers on http://{g.host}:{g.port}", flush=True)
    uvicorn.run(
        "livecommerce.ops.app:app_from_env",
        factory=True,
        host=g.host,
        port=g.port,
        workers=g.workers,
        log_config=None,
        access_log=False,
        ws=WS_PROTOCOL,
        ws_max_size=g.max_frame_bytes,
        ws_per_message_deflate=False,
    )
    return 0


async def _serve(settings: Settings, redis_url: str, sink_port: int | None = None) -> int:
    from livecommerce.ops.app import create_app

    app = create_app(settings, redis_url=redis_url)
    server = DrainingServer(uvicorn_config(app, settings))
    stop_sink = await _start_sink(settings, redis_url, sink_port) if sink_port else None
    task = asyncio.create_task(server.serve())
    # uvicorn offers no event for "started"; poll its flag.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    try:
        if task.done():
            await task
            return 1
        port = settings.gateway.port
        if server.servers:
            port = server.servers[0].sockets[0].getsockname()[1]
        base = settings.gateway.public_url or f"http://{settings.gateway.host}:{port}"
        print(f"livecommerce: serving on {base}  (Ctrl-C to stop)", flush=True)
        if settings.gateway.demo:
            await _seed_demo(app.state.services, base)
        await task
        return 0
    finally:
        if stop_sink is not None:
            await stop_sink()


async def _seed_demo(services: Services, base: str) -> None:
    """Seed the demo show and print where to click."""
    from livecommerce.ops import demo

    info = await demo.seed(services, base_url=base)
    print(info.describe(), flush=True)


async def _start_sink(
    settings: Settings, redis_url: str, port: int
) -> Callable[[], Awaitable[None]]:
    """The reference fulfillment sink in this process (demo only). Returns its stopper."""
    import redis.asyncio as aioredis

    from livecommerce.fulfillment import sink
    from livecommerce.store.keys import Keyspace

    assert settings.relay.webhook_secret is not None
    client = aioredis.Redis.from_url(redis_url)
    app = sink.create_app(
        client, Keyspace(settings.redis.key_prefix), [settings.relay.webhook_secret.reveal()]
    )
    server = QuietServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    log.info("demo fulfillment sink on http://127.0.0.1:%d%s", port, sink.WEBHOOK_PATH)
    print(f"  Fulfillment sink (demo): http://127.0.0.1:{port}{sink.WEBHOOK_PATH}", flush=True)

    async def stop() -> None:
        server.should_exit = True
        await task
        await client.aclose()

    return stop
