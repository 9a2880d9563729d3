"""The WebSocket server protocol under uvicorn: uvicorn's websockets-sansio implementation with
one conformance fix to the ``websockets`` state machine.

RFC 6455 section 5.4 lets control frames arrive between the fragments of a message, and section
5.5.1 says a close frame ends the conversation: whatever follows it is ignored, and the endpoint
answers with a close frame, typically echoing the code. ``websockets`` instead fails the
connection with 1002 (protocol error, "incomplete fragmented message") when the close arrives
while a fragmented message is unfinished (Autobahn case 7.1.5 expects the 1000 echoed). Here the
unfinished message is dropped and the close handled as any other: the viewer's session never saw
the partial message, so nothing is lost.

Pass :data:`WS_PROTOCOL` as uvicorn's ``ws`` setting (``runner.uvicorn_config`` does).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol


class ConformingServerProtocol(ServerProtocol):
    """``websockets``' server protocol; a close frame inside a fragmented message closes cleanly."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is abandoned with the connection
        super().recv_frame(frame)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol driving :class:`ConformingServerProtocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = self.conn
        self.conn = ConformingServerProtocol(
            extensions=conn.available_extensions,
            max_size=(conn.max_message_size, conn.max_fragment_size),
            logger=conn.logger,
        )


WS_PROTOCOL = WebSocketProtocol
