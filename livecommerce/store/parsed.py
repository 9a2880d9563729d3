"""Replies that redis-py's hiredis parser has already read off a connection, taken at once.

redis-py's ``read_response`` wraps every reply in a timeout context (a timer scheduled and
cancelled), also when the reply is already in the parser's buffer and there is nothing to wait
for. The script runner (the replies of a batch) and the pub/sub broker (the messages that came
in one read) take what is buffered here, and wait with ``read_response`` only when nothing is.
Without redis-py's hiredis parser nothing is taken here and every reply goes through
``read_response``.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

try:  # redis-py's hiredis parser and its "no complete reply yet" marker
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser as _HiredisParser
except ImportError:  # pragma: no cover - another redis-py: every reply through read_response
    _NOT_ENOUGH_DATA = object()
    _HiredisParser = None  # type: ignore[assignment, misc]

NOTHING: Any = object()
"""What :func:`next_parsed` returns when no whole reply is buffered."""


def next_parsed(conn: Any) -> Any:
    """The next reply already parsed in ``conn``'s buffer, as ``read_response`` would give it
    (a connection error raised), or :data:`NOTHING`: none buffered, not connected (then
    ``read_response`` raises), or no hiredis parser."""
    parser = getattr(conn, "_parser", None)
    if _HiredisParser is None or not isinstance(parser, _HiredisParser):
        return NOTHING
    reader = parser._reader
    if reader is None or not parser._connected:
        return NOTHING
    reply = reader.gets()
    if reply is _NOT_ENOUGH_DATA:
        return NOTHING
    if isinstance(reply, RedisConnectionError):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]
    return reply
