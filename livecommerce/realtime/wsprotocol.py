"""The WebSocket server protocol under uvicorn: uvicorn's websockets-sansio implementation with
two conformance fixes to the ``websockets`` state machine, and one quiet line per failed
connection.

A close frame inside a fragmented message. RFC 6455 section 5.4 lets control frames arrive
between the fragments of a message, and section 5.5.1 says a close frame ends the conversation:
whatever follows it is ignored, and the endpoint answers with a close frame, typically echoing
the code. ``websockets`` instead fails the connection with 1002 (protocol error, "incomplete
fragmented message") when the close arrives while a fragmented message is unfinished (Autobahn
case 7.1.5 expects the 1000 echoed). Here the unfinished message is dropped and the close
handled as any other: the viewer's session never saw the partial message, so nothing is lost.

Invalid UTF-8 in a text message. Section 8.1: an endpoint that finds a text message is not UTF-8
MUST fail the connection, with 1007 (section 7.4.1). The sans-I/O ``websockets`` protocol leaves
text payloads to its caller, and uvicorn decodes them itself and logs every bad one at error
level with a full traceback ("Invalid UTF-8 sequence received from client.") before closing
with 1007: one hostile client could fill the log. Here the state machine checks each text
fragment as it arrives (an incremental decoder: a character may straddle two fragments) and a
bad one fails the connection inside the parser, as every other malformed frame does, so uvicorn
never meets undecodable text.

A connection failed for the client's fault (a malformed frame, invalid UTF-8, a frame over the
size limit) is logged as one INFO line on ``livecommerce.gateway`` with the close code and
reason. An unexpected error in the parser stays what ``websockets`` makes of it: an error with
its traceback, closed with 1011.

Pass :data:`WS_PROTOCOL` as uvicorn's ``ws`` setting (``runner.uvicorn_config`` does).
"""

from __future__ import annotations

import codecs
import logging
from typing import Any

from uvicorn.protocols.utils import get_client_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

log = logging.getLogger("livecommerce.gateway")

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

CLIENT_FAULTS = (ProtocolError, UnicodeDecodeError, PayloadTooBig)
"""What the parser fails a connection with when the client sent something wrong."""


class ConformingServerProtocol(ServerProtocol):
    """``websockets``' server protocol; a close frame inside a fragmented message closes cleanly,
    and a text message that is not UTF-8 fails the connection with 1007."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._text: codecs.IncrementalDecoder | None = None  # of the fragmented text message

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            self.current_size = None  # the unfinished message is abandoned with the connection
            self._text = None
        elif self.close_sent is None:  # after our close, messages are discarded unread
            self._check_text(frame)
        super().recv_frame(frame)

    def _check_text(self, frame: Frame) -> None:
        """Raise UnicodeDecodeError if ``frame`` is (part of) a text message that is not UTF-8;
        ``parse`` turns it into a 1007 close."""
        if frame.opcode is Opcode.TEXT and self.current_size is None:
            if frame.fin:
                str(frame.data, "utf-8")
            else:
                self._text = _Utf8Decoder()
                self._text.decode(frame.data)
        elif frame.opcode is Opcode.CONT and self._text is not None:
            self._text.decode(frame.data, final=frame.fin)  # final: no character left unfinished
            if frame.fin:
                self._text = None


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

    def handle_parser_exception(self) -> None:
        """One INFO line (uvicorn's "[accepted]" line names the same client) when the client's
        frame failed the connection; then uvicorn sends the close frame and closes."""
        close = self.conn.close_sent
        if isinstance(self.conn.parser_exc, CLIENT_FAULTS) and close is not None:
            scope = self.scope
            log.info('%s - "WebSocket %s" failed %d: %s',
                     get_client_addr(scope), scope["path"], close.code, close.reason)  # fmt: skip
        super().handle_parser_exception()


WS_PROTOCOL = WebSocketProtocol
