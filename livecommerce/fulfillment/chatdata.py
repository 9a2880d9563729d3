"""A viewer's data in one show's chat (:class:`~livecommerce.store.keys.ChatKeys`): export and
erasure, used by :mod:`livecommerce.fulfillment.privacy` and :mod:`.erasure`.

Where chat holds a viewer (docs/privacy.md, "Chat"): their messages in the history (viewer id,
display name, text, question flag), the pin when it is one of theirs, their open questions, a
mute, a moderator seat, their slow-mode marker and the request ids of their posts.

Erasure (``lua/privacy_erase_chat.lua``, one atomic step per show, safe during a live show):
the viewer's messages are **deleted** from the history, the open questions and the pin, each with
the same ``chat_deleted`` (and ``chat_pinned``) push a moderator's delete sends, so live viewers
drop them too; free text is not pseudonymised because it is personal data itself. The mute
moves to the pseudonym (the host still sees that someone was muted, the viewer id is gone);
the moderator seat, the slow-mode marker and the request ids are deleted. Idempotent: a second
run finds nothing under the viewer id, changes nothing and pushes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from livecommerce.store import scriptrunner as scripts
from livecommerce.store.keys import ChatKeys

SCAN_PAGE = 500

ERASE_CHAT_SCRIPT = scripts.build(
    "privacy_erase_chat", (scripts.LUA_DIR / "privacy_erase_chat.lua").read_text("utf-8")
)

PLACE_OF = {
    "messages": "history",
    "pinned": "settings",
    "open_questions": "questions",
    "muted_until": "mutes",
    "moderator": "mods",
    "slow_mode": "slow_prefix",
    "requests": "request",
}
"""Field of a show's ``chat`` export -> the ChatKeys place it was found in."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def places(part: dict[str, Any]) -> list[str]:
    """The ChatKeys names (``history``, ``mutes`` ...) a show's ``chat`` export found."""
    return [PLACE_OF[field] for field in part if field in PLACE_OF]


async def viewer_messages(
    redis: aioredis.Redis, keys: ChatKeys, viewer: str
) -> list[dict[str, Any]]:
    """The viewer's messages still in the (count-bounded) history, oldest first."""
    rows: Any = await redis.xrange(keys.history, min="-", max="+")
    out = []
    for entry_id, raw in rows:
        f = {_s(a): _s(b) for a, b in raw.items()}
        if f.get("viewer") == viewer:
            out.append({"id": _s(entry_id), "name": f.get("name", ""), "text": f.get("text", ""),
                        "question": f.get("q") == "1", "ts": int(f.get("ts") or 0)})  # fmt: skip
    return out


async def request_keys(redis: aioredis.Redis, keys: ChatKeys, viewer: str) -> list[str]:
    """The request-id records of the viewer's posts (viewer ids never hold glob characters)."""
    pattern = keys.request(viewer, "*")
    return sorted({_s(k) async for k in redis.scan_iter(match=pattern, count=SCAN_PAGE)})


async def export_show(redis: aioredis.Redis, keys: ChatKeys, viewer: str) -> dict[str, Any]:
    """Everything one show's chat holds about ``viewer`` (empty when nothing)."""
    part: dict[str, Any] = {}
    messages = await viewer_messages(redis, keys, viewer)
    if messages:
        part["messages"] = messages
    pipe = redis.pipeline(transaction=True)
    pipe.hget(keys.settings, "pinned")
    pipe.zrange(keys.questions, 0, -1)
    pipe.hget(keys.mutes, viewer)
    pipe.sismember(keys.mods, viewer)
    pipe.pttl(keys.slow(viewer))
    pinned, questions, muted, moderator, slow_ttl = await pipe.execute()
    if pinned:
        message = orjson.loads(pinned)
        if isinstance(message, dict) and message.get("viewer") == viewer:
            part["pinned"] = message
    mine = {m["id"] for m in messages}
    open_questions = [_s(q) for q in questions if _s(q) in mine]
    if open_questions:
        part["open_questions"] = open_questions
    if muted is not None:
        part["muted_until"] = int(muted)
    if moderator:
        part["moderator"] = True
    if int(slow_ttl) > 0:
        part["slow_mode"] = True  # a marker with a PX expiry: the viewer posted recently
    requests = await request_keys(redis, keys, viewer)
    if requests:
        part["requests"] = [key.rsplit(":", 1)[1] for key in requests]
    return part


async def erase_show(
    runner: scripts.ScriptRunner, redis: aioredis.Redis, keys: ChatKeys, viewer: str,
    pseudonym: str,
) -> dict[str, int]:  # fmt: skip
    """One atomic step: the viewer leaves this show's chat (see the module docstring).

    Returns ``chat_messages`` (messages deleted) and ``chat_records`` (pin, mute, moderator
    seat, slow-mode marker, request ids removed or moved)."""
    requests = await request_keys(redis, keys, viewer)
    script_keys = [keys.history, keys.settings, keys.mutes, keys.mods, keys.questions,
                   keys.slow(viewer), *requests]  # fmt: skip
    reply = await runner.call(
        ERASE_CHAT_SCRIPT.name, script_keys, [keys.channel, viewer, pseudonym]
    )
    counts: dict[str, int] = orjson.loads(reply)
    return counts


async def expire(redis: aioredis.Redis, keys: ChatKeys, cutoff_ms: int) -> int:
    """Retention: messages older than ``cutoff_ms`` (server clock) leave the history, their
    open questions too, and a pin older than that is cleared (only if still the same pin).
    Viewers are not told: a message that old is long out of their view. Returns messages
    trimmed."""
    pipe = redis.pipeline(transaction=True)
    pipe.xtrim(keys.history, minid=cutoff_ms)
    pipe.zremrangebyscore(keys.questions, "-inf", f"({cutoff_ms}")
    trimmed, _ = await pipe.execute()
    async with redis.pipeline(transaction=True) as watched:
        try:
            await watched.watch(keys.settings)
            raw = await watched.hget(keys.settings, "pinned")
            pinned = orjson.loads(raw) if raw else None
            if isinstance(pinned, dict) and int(pinned.get("ts") or 0) < cutoff_ms:
                watched.multi()  # type: ignore[no-untyped-call]
                watched.hdel(keys.settings, "pinned")
                await watched.execute()
        except WatchError:
            pass  # re-pinned meanwhile: the new pin is younger; the next sweep looks again
    return int(trimmed)
