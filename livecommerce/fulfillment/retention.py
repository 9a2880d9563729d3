"""Retention: what the service keeps about viewers expires on a schedule (docs/privacy.md).

One :func:`sweep` (run every ``privacy.retention_interval_s`` by :class:`Retention`, in every
server process -- each step is idempotent, so several at once only repeat work):

* **event logs** (``B:events``): entries older than ``retain_events_h`` are trimmed
  (``XTRIM MINID``), on top of the ``EVENT_LOG_SIZE`` bound; they name no viewer anyway;
* **dead letters**: older than ``retain_dead_letters_d`` are trimmed -- replay them before;
* **ended hold records**: older than ``retain_holds_d`` lose viewer id and payment reference
  (``lua/privacy_retain.lua``); quantities and states stay, so the audit still adds up;
* **chat** (``B:chat``): on top of its count bound (``HISTORY_SIZE``), messages older than
  ``retain_chat_h`` are trimmed, with the open questions and a pin of that age
  (:func:`livecommerce.fulfillment.chatdata.expire`);
* **holds** themselves expire after ``HOLD_TTL`` and idempotency records after
  ``IDEMPOTENCY_TTL`` (Redis expiry); the outbox is trimmed by the relay once delivered.

Counters that enforce the per-viewer limit (``held``/``bought``) stay while the show exists:
erasure (:mod:`livecommerce.fulfillment.erasure`) is the way to remove a viewer from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.config import PrivacySettings
from livecommerce.fulfillment import chatdata
from livecommerce.fulfillment.deadletters import text
from livecommerce.store import scriptrunner as scripts
from livecommerce.store.keys import Keyspace

log = logging.getLogger("livecommerce.retention")

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BATCH = 200

RETAIN_SCRIPT = scripts.build(
    "privacy_retain", (scripts.LUA_DIR / "privacy_retain.lua").read_text("utf-8")
)


async def server_ms(redis: aioredis.Redis) -> int:
    sec, usec = await redis.time()
    return int(sec) * 1000 + int(usec) // 1000


async def sweep(
    redis: aioredis.Redis, keyspace: Keyspace, settings: PrivacySettings, now_ms: int | None = None
) -> dict[str, int]:
    """One retention pass over every show; returns how much it removed or cleared."""
    now = await server_ms(redis) if now_ms is None else now_ms
    runner = scripts.ScriptRunner(redis, {RETAIN_SCRIPT.name: RETAIN_SCRIPT})
    done = {"events": 0, "dead_letters": 0, "holds": 0, "chat": 0}
    done["dead_letters"] = int(
        await redis.xtrim(
            keyspace.dead_letters, minid=now - settings.retain_dead_letters_d * DAY_MS
        )
    )
    hold_cutoff = now - settings.retain_holds_d * DAY_MS
    for show_raw in await redis.zrange(keyspace.shows, 0, -1):
        show = text(show_raw)
        done["events"] += int(
            await redis.xtrim(keyspace.events(show), minid=now - settings.retain_events_h * HOUR_MS)
        )
        done["chat"] += await chatdata.expire(
            redis, keyspace.chat(show), now - settings.retain_chat_h * HOUR_MS
        )
        for drop_raw in await redis.zrange(keyspace.drops(show), 0, -1):
            holdrec = keyspace.drop(show, text(drop_raw)).holdrec
            due: list[str] = []
            async for n, raw in redis.hscan_iter(holdrec, count=BATCH):
                rec = orjson.loads(raw)
                if rec.get("s") != "held" and int(rec.get("ended_at") or 0) < hold_cutoff \
                        and rec.get("v") != "":  # fmt: skip
                    due.append(text(n))
            for i in range(0, len(due), BATCH):
                cleared = await runner.call(
                    RETAIN_SCRIPT.name, [holdrec], [hold_cutoff, *due[i : i + BATCH]]
                )
                done["holds"] += int(cleared)
    return done


class Retention:
    """The background loop of :func:`sweep` in a server process."""

    def __init__(self, redis: aioredis.Redis, keyspace: Keyspace, settings: PrivacySettings):
        self.redis = redis
        self.keys = keyspace
        self.settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.retention_interval_s
        if interval <= 0:
            await stop.wait()  # a finished task would turn /readyz red
            return
        while not stop.is_set():
            try:
                done = await sweep(self.redis, self.keys, self.settings)
                if any(done.values()):
                    log.info("retention: removed %(events)d events, %(dead_letters)d dead "
                             "letters, %(chat)d chat messages; cleared %(holds)d hold records",
                             done)  # fmt: skip
            except (RedisError, OSError) as exc:
                log.warning("retention sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
