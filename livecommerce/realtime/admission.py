"""Admission at the gateway: the address and viewer limits (:mod:`.guard`) and host blocks
(:mod:`livecommerce.store.blocks`), each answered with a documented code (docs/fraud.md).

Blocks are cached per show for :data:`BLOCKS_REFRESH_S` so a burst of buy attempts costs no
extra Redis round trip; a new block takes effect within that time. The cache is read again in
the background once it is half that old, so in a steady stream of attempts none waits for the
read (in a burst, thousands would otherwise wait for it at once, every second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.websockets import WebSocket

from livecommerce.core.config import FraudSettings
from livecommerce.core.model import Outcome, Reason
from livecommerce.realtime.guard import Guard
from livecommerce.realtime.protocol import CloseCode, Command, ErrorCode, Op
from livecommerce.store.blocks import BlockKind, Blocks, field_of

log = logging.getLogger("livecommerce.admission")

BLOCKS_REFRESH_S = 1.0
LIMITED_OPS = frozenset({Op.RESERVE, Op.BUY_NOW, Op.CONFIRM})
"""Buy attempts; a cancel gives stock back and is never limited."""


class Admission:
    def __init__(self, settings: FraudSettings, blocks: Blocks,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.clock = clock
        """Ages the blocks cache (handed in by tests)."""
        self.guard = Guard(settings)
        self.blocks = blocks
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._fetching: dict[str, asyncio.Future[frozenset[str]]] = {}
        self._ahead: dict[str, asyncio.Task[None]] = {}

    # -- handshake ---------------------------------------------------------------------------
    def address_of(self, websocket: WebSocket) -> str:
        peer = websocket.client.host if websocket.client is not None else ""
        return self.guard.client_address(peer, websocket.headers.get("x-forwarded-for"))

    async def refuse_handshake(self, websocket: WebSocket, reason: str, wait_s: float) -> None:
        """429 with Retry-After before the upgrade (403 where the server cannot say 429)."""
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            retry = str(max(1, round(wait_s + 0.4999)))
            await websocket.send_denial_response(
                Response(reason, status_code=429, headers={"retry-after": retry})
            )
        else:  # pragma: no cover - servers without the denial-response extension
            await websocket.close(code=1008)

    # -- blocks ------------------------------------------------------------------------------
    async def blocked(self, show: str, viewer: str, address: str) -> bool:
        now = self.clock()
        cached = self._cache.get(show)
        if cached is None or now - cached[0] > BLOCKS_REFRESH_S:
            fields = await self._refresh(show, now)
        else:
            fields = cached[1]
            if now - cached[0] > BLOCKS_REFRESH_S / 2 and show not in self._ahead:
                self._refresh_ahead(show, now)
        if not fields:
            return False
        return (bool(viewer) and field_of(BlockKind.VIEWER, viewer) in fields) or (
            bool(address) and field_of(BlockKind.ADDRESS, address) in fields
        )

    async def _refresh(self, show: str, now: float) -> frozenset[str]:
        """One read of a show's blocks at a time, however many attempts wait for it (a burst
        arriving as the cache expires costs one round trip, not one per attempt)."""
        pending = self._fetching.get(show)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._fetching[show] = future
        try:
            fields = await self.blocks.fields(show)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._fetching.pop(show, None)
        future.set_result(fields)
        self._cache[show] = (now, fields)
        return fields

    def _refresh_ahead(self, show: str, now: float) -> None:
        """Read the blocks again in the background while the cached ones still hold."""

        async def read() -> None:
            try:
                await self._refresh(show, now)
            except Exception as exc:  # the next attempt past the cache's age reads again
                log.debug("blocks of %s not read ahead: %s", show, exc)

        task = asyncio.create_task(read())
        self._ahead[show] = task
        task.add_done_callback(lambda _: self._ahead.pop(show, None))

    # -- join --------------------------------------------------------------------------------
    async def refuse_join(
        self, show: str, viewer: str, address: str
    ) -> tuple[ErrorCode, CloseCode] | None:
        """None when the viewer may join (then counted: call ``guard.part`` on close)."""
        if await self.blocked(show, viewer, address):
            return ErrorCode.BLOCKED, CloseCode.BLOCKED
        if viewer and not self.guard.join(viewer):
            return ErrorCode.TOO_MANY_CONNECTIONS, CloseCode.TOO_MANY_CONNECTIONS
        return None

    # -- commands ----------------------------------------------------------------------------
    async def refuse_command(self, show: str, address: str, cmd: Command) -> Outcome | None:
        """None to go ahead, else the refusal: ``blocked`` or ``too_many_attempts``."""
        if cmd.op not in LIMITED_OPS:
            return None
        now_ms = int(time.time() * 1000)
        if await self.blocked(show, cmd.viewer, address):
            return Outcome(ok=False, now_ms=now_ms, reason=Reason.BLOCKED)
        drop = cmd.drop or cmd.hold.partition(".")[0]
        wait_ms = self.guard.attempt(cmd.viewer, drop, time.monotonic())
        if wait_ms:
            detail: dict[str, Any] = {"retry_after_ms": wait_ms}
            return Outcome(ok=False, now_ms=now_ms, reason=Reason.TOO_MANY_ATTEMPTS, detail=detail)
        return None
