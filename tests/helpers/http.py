"""Helpers of the relay and sink tests: real HTTP servers on loopback for the relay to POST to."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

from helpers.gateway import free_port, running_server


@contextlib.asynccontextmanager
async def http_server(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` under an in-process uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False,
        timeout_graceful_shutdown=2,
    )  # fmt: skip
    async with running_server(config):
        yield f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts requests and never answers (for timeouts); yields its URL."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        server.close()
        await server.wait_closed()
