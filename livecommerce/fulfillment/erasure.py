"""Erasure: a viewer's personal data replaced by a pseudonym everywhere, amounts kept.

:func:`erase` runs ``lua/privacy_erase.lua`` once per show (one atomic step in the show's slot:
safe while the show is live, a sale lands before or after it), then rewrites the dead letters.
What each store keeps afterwards is in docs/privacy.md; in short:

* the orders stream (outbox): each of the viewer's entries is deleted, its pseudonymised copy
  kept in the show's erasure ledger (``keys.erased``) under the same entry id, so the audit still
  sees every order exactly once with its amount; an entry the relay had not yet handed over is
  appended again, pseudonymised, as a replay, so the backend still receives the order;
* an ``order.erased`` entry per order goes through the relay (same at-least-once delivery, its
  own stable ``webhook-id``) and tells the fulfillment backend to forget the viewer too -- the
  reference sink (:mod:`livecommerce.fulfillment.sink`) pseudonymises its record when it gets one;
* counters, holds and hold records move to the pseudonym; idempotency records are deleted;
* dead letters: each is appended again pseudonymised and the original deleted;
* chat (:mod:`livecommerce.fulfillment.chatdata`): the viewer's messages deleted (pushed as
  ``chat_deleted`` to live viewers), the mute moved to the pseudonym, the rest deleted.

Idempotent: a second run finds nothing under the viewer id and changes nothing. One pseudonym
per run (``erased-`` + 16 random hex digits): it cannot be derived from the viewer id.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.config import Settings
from livecommerce.core.errors import StoreError
from livecommerce.fulfillment import chatdata
from livecommerce.fulfillment.deadletters import text
from livecommerce.fulfillment.privacy import check_viewer, request_keys, show_ids, stream_entries
from livecommerce.store import scriptrunner as scripts
from livecommerce.store.keys import Keyspace

PSEUDONYM_PREFIX = "erased-"
ERASED_REFERENCE = "erased"
"""What replaces a payment reference."""

ERASE_SCRIPT = scripts.build(
    "privacy_erase", (scripts.LUA_DIR / "privacy_erase.lua").read_text("utf-8")
)


def new_pseudonym() -> str:
    return PSEUDONYM_PREFIX + secrets.token_hex(8)


async def erase(
    redis: aioredis.Redis, keyspace: Keyspace, settings: Settings, viewer: str
) -> dict[str, Any]:
    """Erase ``viewer`` from every show and the dead letters; returns what was replaced."""
    viewer = check_viewer(viewer)
    try:
        return await _erase(redis, keyspace, settings, viewer)
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc


async def _erase(
    redis: aioredis.Redis, keyspace: Keyspace, settings: Settings, viewer: str
) -> dict[str, Any]:
    pseudonym = new_pseudonym()
    runner = scripts.ScriptRunner(
        redis, {s.name: s for s in (ERASE_SCRIPT, chatdata.ERASE_CHAT_SCRIPT)}
    )
    shows: dict[str, Any] = {}
    for show in await show_ids(redis, keyspace):
        counts = await erase_show(redis, keyspace, settings, runner, show, viewer, pseudonym)
        if any(counts.values()):
            shows[show] = counts
    dead = await _erase_dead_letters(redis, keyspace, viewer, pseudonym)
    return {
        "viewer": viewer,
        "pseudonym": pseudonym if shows or dead else "",
        "erased": {"shows": shows, "dead_letters": dead},
    }


async def erase_show(
    redis: aioredis.Redis,
    keyspace: Keyspace,
    settings: Settings,
    runner: scripts.ScriptRunner,
    show: str,
    viewer: str,
    pseudonym: str,
) -> dict[str, int]:
    """One show: find the viewer's outbox entries, then one atomic script does the rest."""
    candidates: list[str] = []
    scanned_to = "0-0"
    async for entry_id, fields in stream_entries(redis, keyspace.orders(show)):
        scanned_to = entry_id
        if fields.get("viewer") == viewer:
            candidates.append(entry_id)
    drops = [text(d) for d in await redis.zrange(keyspace.drops(show), 0, -1)]
    requests = await request_keys(redis, keyspace, show, viewer)
    keys = [keyspace.seq(show), keyspace.orders(show), keyspace.erased(show), keyspace.blocks(show)]
    for drop in drops:
        k = keyspace.drop(show, drop)
        keys += [k.holdrec, k.held, k.bought]
    keys += requests
    args = [
        viewer, pseudonym, settings.relay.group, len(drops), len(requests), scanned_to,
        ERASED_REFERENCE, *candidates,
    ]  # fmt: skip
    counts: dict[str, int] = orjson.loads(await runner.call(ERASE_SCRIPT.name, keys, args))
    # The show's chat: its own atomic step (chatdata.py says what goes and what stays).
    counts.update(await chatdata.erase_show(runner, redis, keyspace.chat(show), viewer, pseudonym))
    return counts


async def _erase_dead_letters(
    redis: aioredis.Redis, keyspace: Keyspace, viewer: str, pseudonym: str
) -> int:
    """Dead letters are one stream outside any show's slot: copy pseudonymised, then delete
    (a crash in between leaves both, and a second run erases the original)."""
    erased = 0
    async for entry_id, fields in stream_entries(redis, keyspace.dead_letters):
        if fields.get("viewer") != viewer:
            continue
        copy = {**fields, "viewer": pseudonym, "payment_reference": ERASED_REFERENCE}
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(keyspace.dead_letters, copy)  # type: ignore[arg-type]
        pipe.xdel(keyspace.dead_letters, entry_id)
        await pipe.execute()
        erased += 1
    return erased
