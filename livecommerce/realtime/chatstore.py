"""A show's chat in Redis: the bounded history, the rules the host sets, mutes, moderators,
questions and the pin. Every change that viewers must see is published on the show's channel in
the same step (a Lua script, or one MULTI), so every gateway process relays it.

Keys are in :class:`livecommerce.store.keys.ChatKeys`; the check-then-write steps are the scripts
``chat_post.lua``, ``chat_moderate.lua`` and ``chat_configure.lua``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import NotFoundError, StoreError
from livecommerce.realtime.chat import HISTORY_SIZE, ChatError, ChatState, message_from_entry
from livecommerce.store.keys import Keyspace
from livecommerce.store.scriptrunner import ScriptRunner, build, read_source

SCRIPTS = ("chat_post", "chat_moderate", "chat_configure")
REQUEST_TTL_MS = 10 * 60 * 1000
"""How long a chat post's request id is remembered (a resend within it is not posted again)."""
T = TypeVar("T")


@dataclass(frozen=True)
class Posted:
    """The outcome of a post: ``ok`` with the message id and server time, or a refusal
    (``error`` a :class:`ChatError`, ``until`` / ``retry_after_ms`` / ``word`` as it applies)."""

    ok: bool
    id: str = ""
    ts: int = 0
    error: ChatError | None = None
    detail: int | str | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Chat:
    def __init__(self, redis: aioredis.Redis, keys: Keyspace, *, history: int = HISTORY_SIZE):
        self.redis = redis
        self.keys = keys
        self.history_size = history
        self.runner = ScriptRunner(redis, {n: build(n, read_source(n, lib="")) for n in SCRIPTS})

    async def _redis(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    # -- viewers ------------------------------------------------------------------------------
    async def post(self, show: str, viewer: str, name: str, text: str, question: bool, *,
                   request_id: str) -> Posted:  # fmt: skip
        k = self.keys.chat(show)
        keys = [k.history, k.settings, k.words, k.mutes, k.slow(viewer), k.questions,
                k.request(viewer, request_id)]  # fmt: skip
        folded = " ".join(text.casefold().split())  # the filter sees single spaces
        args = [k.channel, viewer, name, text, folded, "1" if question else "0",
                str(self.history_size), str(REQUEST_TTL_MS)]  # fmt: skip
        reply = await self._redis(self.runner.call("chat_post", keys, args))
        status = _text(reply[0])
        if status == "ok":
            return Posted(True, id=_text(reply[1]), ts=int(reply[2]))
        detail: int | str | None = None
        if len(reply) > 1:
            detail = reply[1] if isinstance(reply[1], int) else _text(reply[1])
        return Posted(False, error=ChatError(status), detail=detail)

    async def state(self, show: str) -> ChatState:
        """The last messages (oldest first), the pin and the rules, read in one MULTI."""
        k = self.keys.chat(show)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xrevrange(k.history, count=self.history_size)
        pipe.hgetall(k.settings)
        entries, settings = await self._redis(pipe.execute())
        raw = {_text(a): _text(b) for a, b in settings.items()}
        messages = [
            message_from_entry(_text(i), {_text(a): _text(b) for a, b in f.items()})
            for i, f in reversed(entries)
        ]
        pinned = orjson.loads(raw["pinned"]) if raw.get("pinned") else None
        return ChatState(messages, pinned, raw.get("enabled") != "0",
                         int(raw.get("slow_ms") or 0) / 1000)  # fmt: skip

    async def is_moderator(self, show: str, viewer: str) -> bool:
        return bool(await self._redis(self.redis.sismember(self.keys.chat(show).mods, viewer)))

    # -- moderation ---------------------------------------------------------------------------
    async def _moderate(self, show: str, action: str, message: str) -> dict[str, Any] | None:
        k = self.keys.chat(show)
        reply = await self._redis(self.runner.call(
            "chat_moderate", [k.history, k.settings, k.questions], [k.channel, action, message]
        ))  # fmt: skip
        if _text(reply[0]) != "ok":
            raise NotFoundError("chat message", message)
        body = _text(reply[1])
        result: dict[str, Any] | None = orjson.loads(body) if body else None
        return result

    async def delete(self, show: str, message: str) -> None:
        """Remove a message for everyone, and from the history."""
        await self._moderate(show, "delete", message)

    async def pin(self, show: str, message: str) -> dict[str, Any]:
        pinned = await self._moderate(show, "pin", message)
        assert pinned is not None
        return pinned

    async def unpin(self, show: str) -> None:
        await self._moderate(show, "unpin", "")

    async def answer(self, show: str, message: str) -> None:
        await self._moderate(show, "answer", message)

    def _publish(self, pipe: Any, show: str, kind: str, data: dict[str, Any]) -> None:
        pipe.publish(self.keys.channel(show), orjson.dumps({"type": kind, "data": data}))

    async def mute(self, show: str, viewer: str, until_ms: int) -> None:
        """Mute ``viewer`` until ``until_ms`` (server clock), or for the show when -1."""
        k = self.keys.chat(show)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(k.mutes, viewer, str(until_ms))
        self._publish(pipe, show, "chat_muted", {"viewer": viewer, "until": until_ms})
        await self._redis(pipe.execute())

    async def unmute(self, show: str, viewer: str) -> bool:
        k = self.keys.chat(show)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(k.mutes, viewer)
        self._publish(pipe, show, "chat_muted", {"viewer": viewer, "until": 0})
        removed, _ = await self._redis(pipe.execute())
        return bool(removed)

    async def configure(
        self, show: str, *, enabled: bool | None = None, slow_ms: int | None = None,
        words: list[str] | None = None,
    ) -> None:  # fmt: skip
        """Change the rules; viewers get the rules now in force (``chat_settings``) in the
        same step."""
        k = self.keys.chat(show)
        args = [k.channel, "" if enabled is None else ("1" if enabled else "0"),
                "" if slow_ms is None else str(slow_ms), "0" if words is None else "1",
                *(words or [])]  # fmt: skip
        await self._redis(self.runner.call("chat_configure", [k.settings, k.words], args))

    async def set_moderators(self, show: str, viewers: list[str]) -> None:
        k = self.keys.chat(show)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(k.mods)
        if viewers:
            pipe.sadd(k.mods, *viewers)
        await self._redis(pipe.execute())

    async def overview(self, show: str, now_ms: int) -> dict[str, Any]:
        """Everything the host panel shows: rules, moderators, mutes in force, open questions,
        the pin and the recent messages."""
        k = self.keys.chat(show)
        state = await self.state(show)
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(k.words)
        pipe.smembers(k.mods)
        pipe.hgetall(k.mutes)
        pipe.zrange(k.questions, 0, -1)
        words, mods, mutes, questions = await self._redis(pipe.execute())
        by_id = {m["id"]: m for m in state.messages}
        ids = [_text(q) for q in questions]
        missing = [i for i in ids if i not in by_id]
        if missing:  # older than the history the viewers get: read them one by one
            pipe = self.redis.pipeline(transaction=False)
            for i in missing:
                pipe.xrange(k.history, i, i)
            for entries in await self._redis(pipe.execute()):
                for entry_id, f in entries:
                    by_id[_text(entry_id)] = message_from_entry(
                        _text(entry_id), {_text(a): _text(b) for a, b in f.items()})  # fmt: skip
        in_force = {}
        for viewer, until in mutes.items():
            until_ms = int(until)
            if until_ms == -1 or until_ms > now_ms:
                in_force[_text(viewer)] = until_ms
        return {
            "enabled": state.enabled,
            "slow_mode_s": state.slow_mode_s,
            "words": sorted(_text(w) for w in words),
            "moderators": sorted(_text(m) for m in mods),
            "mutes": in_force,
            "questions": [by_id[i] for i in ids if i in by_id],
            "pinned": state.pinned,
            "messages": state.messages,
        }


def chat_of(services: Any) -> Chat:
    """The app's :class:`Chat` (one per :class:`~livecommerce.store.services.Services`)."""
    chat = services.extras.get("chat")
    if chat is None:
        chat = services.extras["chat"] = Chat(services.redis, services.keys)
    assert isinstance(chat, Chat)
    return chat
