"""Helpers of the gateway tests: an in-process uvicorn on a free port, settings, show setup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette

from livecommerce.core.config import GatewaySettings, InventorySettings, Secret, Settings
from livecommerce.core.model import DropSpec
from livecommerce.ops.app import create_app
from livecommerce.realtime.gateway import Gateway
from livecommerce.realtime.wsprotocol import WS_PROTOCOL
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SECRET = "test-secret-0123456789abcdef0123456789"


def settings(**gateway: Any) -> Settings:
    inv = gateway.pop("inventory", {})
    base = GatewaySettings(token_secret=Secret(SECRET), demo=False, stock_interval_s=0.05)
    return Settings(
        gateway=dataclasses.replace(base, **gateway),
        inventory=dataclasses.replace(InventorySettings(reap_interval_s=0.05), **inv),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server(uvicorn.Server):
    """uvicorn.Server that says when it is listening (no polling)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclasses.dataclass
class Running:
    app: Starlette
    server: Server
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.services.extras["gateway"]
        return gateway


@contextlib.asynccontextmanager
async def running_server(config: uvicorn.Config) -> AsyncIterator[Server]:
    """An in-process uvicorn for the block: started (listening) on entry, stopped on exit."""
    server = Server(config)
    task = asyncio.create_task(server.serve())
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task
        raise RuntimeError("server did not start")
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve(cfg: Settings, redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    app = create_app(cfg, redis_url=redis_url, keyspace=keyspace)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False,
        ws=WS_PROTOCOL, ws_max_size=cfg.gateway.max_frame_bytes, ws_per_message_deflate=False,
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    async with running_server(config) as server:
        yield Running(app, server, port)


def drop(ident: str = "d1", **kw: Any) -> DropSpec:
    spec: dict[str, Any] = {
        "id": ident, "sku": f"SKU-{ident}", "title": f"Product {ident}", "quantity": 10,
        "limit": 2, "prices": {"EUR": 1999},
    }  # fmt: skip
    spec.update(kw)
    return DropSpec(**spec)


@contextlib.asynccontextmanager
async def live_show(redis: aioredis.Redis, keyspace: Keyspace) -> AsyncIterator[Inventory]:
    """Show ``s1`` of host ``h1``, live, for the block; the audit must pass at its end."""
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one", host="h1")
    await inventory.start_show("s1")
    yield inventory
    report = await audit(redis, keyspace)
    assert report.ok, report.summary()
