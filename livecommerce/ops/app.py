"""The Starlette application: WebSocket gateway, host API, pages and health, with one lifespan
that owns every resource.

Shutdown is ordered: readiness flips (``services.draining``), viewers are closed with the
"reconnect" close code so they resume on another process, background tasks stop, connections
close. ``livecommerce.ops.runner`` triggers the drain on SIGTERM *before* uvicorn stops serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from livecommerce.core.config import Settings
from livecommerce.core.errors import StoreError
from livecommerce.fulfillment.relay import server_relay
from livecommerce.fulfillment.retention import Retention
from livecommerce.ops.scheduler import Scheduler
from livecommerce.realtime.gateway import Gateway
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.services import Services
from livecommerce.web import hostapi, pages

log = logging.getLogger("livecommerce.app")

STARTUP_RETRY_S = (0.1, 2.0)
"""First and longest pause between PINGs while a starting server waits for Redis."""


async def livez(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.draining:
        return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
    stopped = [t.get_name() for t in services.extras.get("tasks", ()) if t.done()]
    if stopped:
        reason = "background task stopped: " + ", ".join(stopped)
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)
    try:
        await asyncio.wait_for(services.redis.ping(), timeout=1.0)
    except (RedisError, OSError, TimeoutError):
        return JSONResponse({"ready": False, "reason": "redis unreachable"}, status_code=503)
    return JSONResponse({"ready": True})


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)


class ViewerEndpoint:
    """The viewer WebSocket (``/ws``) as a plain ASGI app.

    A function endpoint would be wrapped by Starlette in two more coroutines, an exception
    wrapper and its ``send`` closure, all held for the connection's life (~1.7 KB per idle
    viewer). The application's exception middleware still wraps this one, with the same
    handlers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive=receive, send=send)
        services: Services = websocket.app.state.services
        gateway: Gateway = services.extras["gateway"]
        await gateway.endpoint(websocket)


async def start_services(
    settings: Settings, redis_url: str, keyspace: Keyspace
) -> tuple[Services, list[asyncio.Task[None]], asyncio.Event]:
    # A burst of joins must wait briefly for a free connection, not fail: a blocking pool.
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=256, timeout=10)
    redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
    await wait_for_redis(redis, settings.redis.startup_wait_s)
    inventory = Inventory(redis, keyspace, settings)
    await inventory.load()
    services = Services(
        settings=settings, redis=redis, keys=keyspace, inventory=inventory, redis_url=redis_url
    )
    stop = asyncio.Event()
    scheduler = Scheduler(inventory, settings.inventory.reap_interval_s)
    services.extras["scheduler"] = scheduler
    tasks = [asyncio.create_task(scheduler.run(stop), name="scheduler")]
    retention = Retention(redis, keyspace, settings.privacy)
    tasks.append(asyncio.create_task(retention.run(stop), name="retention"))
    for task in tasks:
        task.add_done_callback(_report_stopped)
    services.extras["tasks"] = tasks
    return services, tasks, stop


async def wait_for_redis(redis: aioredis.Redis, timeout_s: float) -> None:
    """Return once Redis answers a PING; raise StoreError after ``timeout_s``.

    A server process must not fail its start because Redis is restarting: under ``--workers N``
    uvicorn's supervisor takes a worker that fails before it serves for a broken app and stops
    the whole server -- a worker restarted during a Redis restart would take every other worker
    down with it."""
    deadline = time.monotonic() + timeout_s
    pause, said = STARTUP_RETRY_S[0], 0.0
    while True:
        try:
            await redis.ping()
            return
        except (RedisError, OSError) as exc:
            now = time.monotonic()
            if now + pause > deadline:
                raise StoreError(f"redis did not answer within {timeout_s:g} s: {exc}") from exc
            if now - said >= 5.0:
                said = now
                log.warning("waiting for redis before serving: %s", exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, STARTUP_RETRY_S[1])


def _report_stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s stopped", task.get_name(), exc_info=task.exception())


def create_app(
    settings: Settings, *, redis_url: str, keyspace: Keyspace | None = None
) -> Starlette:
    """Build the app. ``redis_url`` is the server to use (embedded or external)."""
    keys = keyspace or Keyspace(settings.redis.key_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services, tasks, stop = await start_services(settings, redis_url, keys)
        app.state.services = services
        gateway = Gateway(services)
        services.extras["gateway"] = gateway
        await gateway.start()
        for task in gateway.supervised():  # readiness reports them if they ever stop
            task.add_done_callback(_report_stopped)
        services.extras["tasks"] = [*tasks, *gateway.supervised()]
        relay = server_relay(services.redis, keys, settings, registry=services.registry)
        if relay is not None:
            services.extras["relay"] = relay
            relay.start()
        try:
            yield
        finally:
            services.draining = True
            await gateway.drain(settings.gateway.drain_s)
            if relay is not None:
                await relay.stop()
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.stop()
            await services.redis.aclose()

    routes: list[BaseRoute] = [
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        WebSocketRoute("/ws", ViewerEndpoint()),
        Mount("/api", routes=hostapi.routes()),
        *pages.routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and multi-worker runs: everything from the environment."""
    from livecommerce.core.config import load

    settings = load()
    if settings.redis.url is None:
        from livecommerce.core.errors import ConfigError

        raise ConfigError("LIVECOMMERCE_REDIS_URL", "required when workers are started separately")
    return create_app(settings, redis_url=settings.redis.url.reveal())
