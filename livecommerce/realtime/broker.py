"""Brokers carry a show's live messages between gateway processes.

:class:`Broker` is the seam; :class:`RedisBroker` (pub/sub, one subscription per show per
process, subscribing waits for the server's confirmation) is the real one and
:class:`MemoryBroker` serves unit tests.

The Redis pub/sub client never retries by itself: a retried reconnect would re-subscribe quietly
(redis-py's ``on_connect``), and what was published before the new subscription took effect
would be lost without anyone knowing. Every loss reaches ``on_lost`` instead, and the hub has
its viewers resume from the event log.

Messages are read straight off the subscribed connection (``read_response`` with no deadline:
an idle show sends nothing for minutes), not through ``PubSub.get_message``, which wraps every
message in a retry policy, a one-second timeout and a dict: in a burst every sale is one
message to every gateway process, and that path cost several times the message's own work.

What one read brought is handed over in one call (``on_messages``): the message waited for and
every later one the parser already holds. The messages one store step publishes (a last sale's
``sold_out``, ``drop_closed`` and stock level) so reach the hub together, and it sends them to
each viewer as one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from livecommerce.store.keys import Keyspace
from livecommerce.store.parsed import NOTHING, next_parsed

log = logging.getLogger("livecommerce.hub")

OnMessages = Callable[[list[tuple[str, bytes]]], None]
"""Receives (show, raw message) pairs, in the order they were published."""


class Broker(Protocol):
    """Carries a show's live messages between gateway processes."""

    async def start(self, on_messages: OnMessages, on_lost: Callable[[], None]) -> None: ...
    async def subscribe(self, show: str) -> None:
        """Returns once messages published from now on will be delivered."""

    async def unsubscribe(self, show: str) -> None: ...
    async def stop(self) -> None: ...


class MemoryBroker:
    """In-process broker for unit tests: ``publish`` delivers to this process only."""

    def __init__(self) -> None:
        self.shows: set[str] = set()
        self._on_messages: OnMessages | None = None

    async def start(self, on_messages: OnMessages, on_lost: Callable[[], None]) -> None:
        self._on_messages = on_messages

    async def subscribe(self, show: str) -> None:
        self.shows.add(show)

    async def unsubscribe(self, show: str) -> None:
        self.shows.discard(show)

    async def stop(self) -> None:
        self.shows.clear()

    def publish(self, show: str, *messages: dict[str, Any]) -> None:
        """Deliver ``messages`` as one read of the Redis broker would: together."""
        if show in self.shows and self._on_messages is not None:
            self._on_messages([(show, orjson.dumps(m)) for m in messages])


async def _as_is(reply: Any) -> Any:
    """The subscribed connection's push handler: the reply as it came (redis-py's default one
    formats every message into a debug line, logged or not)."""
    return reply


class RedisBroker:
    """One pub/sub connection per process; one channel per show with viewers here."""

    def __init__(self, redis_url: str, keys: Keyspace) -> None:
        self.redis_url = redis_url
        self.keys = keys
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._channels: dict[str, str] = {}
        self._subscribed = asyncio.Event()
        self._on_messages: OnMessages | None = None
        self._on_lost: Callable[[], None] | None = None

    async def start(self, on_messages: OnMessages, on_lost: Callable[[], None]) -> None:
        self._on_messages = on_messages
        self._on_lost = on_lost
        self._client = aioredis.Redis.from_url(self.redis_url, retry=Retry(NoBackoff(), 0))
        self._pubsub = self._client.pubsub(push_handler_func=_as_is)
        self._task = asyncio.create_task(self._listen(), name="hub-pubsub")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The listener, for supervision (it only ends when stopped)."""
        return self._task

    async def subscribe(self, show: str) -> None:
        channel = self.keys.channel(show)
        self._channels[channel] = show
        waiter = asyncio.get_running_loop().create_future()
        self._confirm[channel] = waiter
        await self._pubsub.subscribe(channel)
        self._subscribed.set()
        await asyncio.wait_for(waiter, timeout=10.0)

    async def unsubscribe(self, show: str) -> None:
        channel = self.keys.channel(show)
        self._channels.pop(channel, None)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        while True:
            await self._subscribed.wait()
            try:
                connection = self._pubsub.connection
                if connection is None:
                    raise ConnectionError("pub/sub connection closed")
                reply = await connection.read_response(timeout=math.inf, push_request=True)
                replies = [reply]
                while (more := next_parsed(connection)) is not NOTHING:
                    replies.append(more)
            except (RedisError, OSError, RuntimeError, KeyError, TypeError) as exc:
                # KeyError/TypeError: a reply redis-py could not parse; the stream is suspect.
                log.warning("pub/sub connection lost: %s", exc)
                # The new PubSub first: a recovery that subscribes while the old one closes
                # must not reconnect the old one (redis-py 8.2 closes it in a task of its own,
                # which then takes the connection away from under that subscribe).
                broken = self._pubsub
                assert self._client is not None
                self._pubsub = self._client.pubsub(push_handler_func=_as_is)
                self._subscribed.clear()
                self._lost()
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await broken.aclose()
                continue
            messages: list[tuple[str, bytes]] = []
            for reply in replies:
                self._received(reply, messages)
            if messages and self._on_messages is not None:
                self._on_messages(messages)

    def _received(self, reply: Any, messages: list[tuple[str, bytes]]) -> None:
        """One reply of the subscribed connection: ``[kind, channel, data or count]``; a
        message of a show followed here is added to ``messages``."""
        if not isinstance(reply, list) or len(reply) != 3:
            return  # a pong, or nothing this broker asked for
        kind, channel = reply[0], reply[1]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if kind == b"message":
            show = self._channels.get(channel)
            if show is not None:
                messages.append((show, reply[2]))
        elif kind == b"subscribe":
            waiter = self._confirm.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _lost(self) -> None:
        for waiter in self._confirm.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("pub/sub connection lost"))
        self._confirm.clear()
        self._channels.clear()
        if self._on_lost is not None:
            self._on_lost()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()
