"""Running a real app in-process with uvicorn on a free loopback port (API and browser tests).

:func:`serve` starts uvicorn in a task, waits on ``server.started`` (an event, not a sleep) and
stops it on exit. :func:`api_app` builds a small app with just the host API and pages on a
``Services`` of its own, so the API tests do not depend on the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from livecommerce.core.config import Settings
from livecommerce.store.embedded import free_port
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.services import Services
from livecommerce.web import hostapi

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium (``.ci/run`` installs it); playwright drives it, no browser is downloaded."""
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PHONE = {"width": 390, "height": 844}


def require_chromium() -> None:
    """Called at the top of a browser test module: skip it when chromium is missing (under CI,
    fail instead), and let playwright's assertions wait up to 15 s (a loaded CI machine renders
    and delivers slower than a laptop: a bound on waiting, not a timing)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); set CI=1 to make "
                    "this fail", allow_module_level=True)  # fmt: skip
    from playwright.async_api import expect

    expect.set_options(timeout=15_000)


@dataclass
class Running:
    url: str
    app: Starlette
    server: uvicorn.Server

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[Running]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    # server.started flips after startup; poll it via the loop rather than a fixed sleep.
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn exited during startup")
        await asyncio.sleep(0)
    try:
        yield Running(url=f"http://127.0.0.1:{port}", app=app, server=server)
    finally:
        services = getattr(app.state, "services", None)
        if services is not None:
            services.draining = True
        server.should_exit = True
        await task


def api_app(settings: Settings, redis_url: str, keyspace: Keyspace) -> Starlette:
    """Host API only, on its own Services (no gateway, no scheduler)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = aioredis.Redis.from_url(redis_url, max_connections=64)
        inventory = Inventory(redis, keyspace, settings)
        await inventory.load()
        app.state.services = Services(
            settings=settings, redis=redis, keys=keyspace, inventory=inventory,
            redis_url=redis_url,
        )  # fmt: skip
        try:
            yield
        finally:
            await redis.aclose()

    return Starlette(routes=[Mount("/api", routes=hostapi.routes())], lifespan=lifespan)
