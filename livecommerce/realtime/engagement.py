"""The gateway's side of live engagement: carries out the chat actions of
:mod:`livecommerce.realtime.chat` against :class:`~livecommerce.realtime.chatstore.Chat`,
gives the chat state for ``snapshot`` and ``resumed``, and aggregates reactions.

Reactions cost a few frames per second whatever the number of taps: each process sums its own
viewers' taps and publishes one ``reaction_tally`` per show per interval on the show's channel;
every process sums the tallies it receives (its own included) and pushes one ``reactions`` frame
per show per interval to its viewers (encoded once per encoding by the hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from redis.exceptions import RedisError

from livecommerce.core.errors import NotFoundError, StoreError
from livecommerce.realtime.chat import (
    BATCHED,
    REACTION_INTERVAL_S,
    ChatAction,
    ChatError,
    ModAction,
    Moderate,
    Post,
    React,
    ReactionTally,
)
from livecommerce.realtime.chatstore import Chat, chat_of
from livecommerce.realtime.codec import Frame
from livecommerce.realtime.hub import Hub, Topic
from livecommerce.realtime.protocol import ErrorCode, error
from livecommerce.store.services import Services


class Connection(Protocol):
    """What this module needs of a gateway connection."""

    show: str | None

    def send(self, message: dict[str, Any]) -> None: ...


log = logging.getLogger("livecommerce.engagement")

MESSAGES = {
    ChatError.CHAT_OFF: "the host turned chat off",
    ChatError.MUTED: "you are muted in this show",
    ChatError.SLOW_MODE: "slow mode: wait before sending again",
    ChatError.FILTERED: "this message contains a word the host does not allow",
    ChatError.NOT_MODERATOR: "only the host and the moderators the host named may moderate",
    ChatError.UNKNOWN_MESSAGE: "no such chat message in this show",
}


class Engagement:
    def __init__(self, services: Services, hub: Hub, server_time: Callable[[], int], *,
                 interval_s: float = REACTION_INTERVAL_S) -> None:  # fmt: skip
        self.services = services
        self.interval_s = interval_s or REACTION_INTERVAL_S
        self.hub = hub
        self.server_time = server_time
        self.chat: Chat = chat_of(services)
        self.outgoing: dict[str, ReactionTally] = {}
        """Taps of this process's viewers, per show, not yet published."""
        self.incoming: dict[str, ReactionTally] = {}
        """Tallies received from every process, per show, not yet pushed to viewers."""
        self.posts = Counter(
            "livecommerce_chat_messages_total", "Chat messages by outcome",
            ["outcome"], registry=services.registry,
        )  # fmt: skip
        self.taps = Counter(
            "livecommerce_reaction_taps_total", "Reaction taps received from viewers here",
            registry=services.registry,
        )  # fmt: skip
        self.reaction_frames = Counter(
            "livecommerce_reaction_pushes_total", "reactions messages pushed (per show, per "
            "interval; each one is one frame per viewer)", registry=services.registry,
        )  # fmt: skip
        hub.handlers["reaction_tally"] = self._tally
        hub.deferred.update(BATCHED)

    # -- reactions ----------------------------------------------------------------------------
    def _tally(self, topic: Topic, message: dict[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, dict):
            self.incoming.setdefault(topic.show, ReactionTally()).merge(data.get("counts"))

    async def run(self, stop: asyncio.Event) -> None:
        """Every interval: publish this process's taps, push the received sums."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            try:
                await self.flush()
            except (StoreError, RedisError, OSError) as exc:
                log.warning("reaction flush failed: %s", exc)

    async def flush(self) -> None:
        incoming, self.incoming = self.incoming, {}
        now = self.server_time()
        for show, tally in incoming.items():
            topic = self.hub.topics.get(show)
            if topic is not None and tally:
                counts = tally.take()
                self.hub.defer(topic, Frame(
                    {"type": "reactions", "ts": now, "data": {"counts": counts}}))  # fmt: skip
                self.reaction_frames.inc()
        outgoing, self.outgoing = self.outgoing, {}
        busy = [(show, t.take()) for show, t in outgoing.items() if t]
        if not busy:
            return
        pipe = self.services.redis.pipeline(transaction=False)
        for show, counts in busy:
            pipe.publish(self.services.keys.channel(show), orjson.dumps(
                {"type": "reaction_tally", "ts": now, "data": {"counts": counts}}))  # fmt: skip
        await pipe.execute()

    # -- actions ------------------------------------------------------------------------------
    async def chat_state(self, show: str) -> dict[str, Any]:
        """The chat as it is now: the ``chat`` field of ``snapshot`` and ``resumed`` (read after
        the hub holds live frames, so no message falls between it and the live stream)."""
        return (await self.chat.state(show)).public()

    async def handle(self, conn: Connection, action: ChatAction) -> None:
        show = conn.show
        assert show is not None
        if isinstance(action, React):
            self.taps.inc(action.count)
            self.outgoing.setdefault(show, ReactionTally()).add(action.reaction, action.count)
            return
        try:
            if isinstance(action, Post):
                await self._post(conn, show, action)
            else:
                await self._moderate(conn, show, action)
        except StoreError as exc:
            log.warning("chat on show %s failed: %s", show, exc)
            conn.send(error(ErrorCode.UNAVAILABLE, "store unavailable; nothing was done",
                            request_id=action.request_id).message)  # fmt: skip

    async def _post(self, conn: Connection, show: str, post: Post) -> None:
        posted = await self.chat.post(show, post.viewer, post.name, post.text, post.question,
                                      request_id=post.request_id)  # fmt: skip
        if posted.ok:
            self.posts.labels("ok").inc()
            conn.send({"type": "chat_ack", "id": post.request_id, "message": posted.id,
                       "server_time": posted.ts})  # fmt: skip
            return
        assert posted.error is not None
        self.posts.labels(str(posted.error)).inc()
        extra: dict[str, Any] = {}
        if posted.error is ChatError.MUTED and isinstance(posted.detail, int):
            extra["until"] = posted.detail
        if posted.error is ChatError.SLOW_MODE and isinstance(posted.detail, int):
            extra["retry_after_ms"] = posted.detail
        conn.send(_refusal(posted.error, post.request_id, **extra))

    async def _moderate(self, conn: Connection, show: str, mod: Moderate) -> None:
        if not await self.chat.is_moderator(show, mod.moderator):
            conn.send(_refusal(ChatError.NOT_MODERATOR, mod.request_id))
            return
        try:
            if mod.action is ModAction.DELETE:
                await self.chat.delete(show, mod.message)
            elif mod.action is ModAction.MUTE:
                until = -1 if mod.duration_s == 0 else self.server_time() + mod.duration_s * 1000
                await self.chat.mute(show, mod.viewer, until)
            else:
                await self.chat.unmute(show, mod.viewer)
        except NotFoundError:
            conn.send(_refusal(ChatError.UNKNOWN_MESSAGE, mod.request_id))
            return
        conn.send({"type": "moderated", "id": mod.request_id, "action": str(mod.action),
                   "server_time": self.server_time()})  # fmt: skip


def _refusal(code: ChatError, request_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "error", "code": str(code), "message": MESSAGES[code],
                            "id": request_id, **extra}  # fmt: skip
    return body
