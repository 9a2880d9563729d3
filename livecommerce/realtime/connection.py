"""One viewer's connection as the gateway holds it: the socket, its encoding, its bounded outbox,
its protocol session, the show it joined, and the frames read ahead while an attempt waited in
a drop's line.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket

from livecommerce.realtime.codec import Encoding, Frame
from livecommerce.realtime.outbox import Outbox
from livecommerce.realtime.protocol import (
    Session,
)


class Connection:
    __slots__ = (
        "address",
        "buffered",
        "closing",
        "encoding",
        "idle",
        "next_receive",
        "outbox",
        "session",
        "show",
        "viewer",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, encoding: Encoding, outbox: Outbox,
                 session: Session) -> None:  # fmt: skip
        self.websocket = websocket
        self.encoding = encoding
        self.outbox = outbox
        self.session = session
        self.show: str | None = None
        self.closing = False
        self.address = ""
        """The client address limits and blocks apply to (realtime.admission)."""
        self.viewer = ""
        """The viewer id counted against the per-viewer connection limit, once joined."""
        self.buffered: list[MutableMapping[str, Any]] = []
        """Frames received while an attempt waited in line, not yet handled (at most
        ``linedesk.MAX_BUFFERED``: a list, which empty is a tenth of a deque's size)."""
        self.next_receive: asyncio.Future[MutableMapping[str, Any]] | None = None
        self.idle = False
        """The connection's task waits for the next frame with nothing read ahead: a frame may
        be answered where it arrives (the gateway's fast lane) without changing any order."""

    async def receive(self) -> MutableMapping[str, Any]:
        if self.buffered:
            return self.buffered.pop(0)
        if self.next_receive is not None:
            pending, self.next_receive = self.next_receive, None
            return await pending
        self.idle = True
        try:
            return await self.websocket.receive()
        finally:
            self.idle = False

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.push(Frame(message))
