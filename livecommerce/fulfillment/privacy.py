"""Privacy access: everything the service holds about one viewer, found in every place.

:data:`PLACES` names every key of :class:`~livecommerce.store.keys.Keyspace` (and every
per-drop key of :class:`~livecommerce.store.keys.DropKeys`) and says whether it can hold a
viewer's personal data and how :func:`export` finds it there, or why it cannot. A test walks
``keys.py`` and fails for a key that is missing here, so a new kind of key has to be classified
before it ships.

What identifies a viewer: the viewer id (the token's ``sub``) and, in orders, the payment
reference the viewer's platform gave at checkout. Addresses are never stored in Redis (they
only reach the access log of the proxy in front, see docs/privacy.md).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.core.model import valid_id
from livecommerce.fulfillment import chatdata
from livecommerce.store.keys import Keyspace

VIEWER_DATA = "viewer"

PLACES: dict[str, str] = {
    # per show
    "base": "not a key (the common prefix of a show's keys)",
    "show": "no: show record (title, host, video URL, state)",
    "drops": "no: drop ids of a show",
    "seq": VIEWER_DATA,  # b:<viewer> marks a buyer of the show (buyers counter)
    "orders": VIEWER_DATA,  # the outbox: viewer and payment reference of each order
    "events": "no: show and drop events only (drop views, never a viewer or an order)",
    "channel": "no: pub/sub channel, nothing stored",
    "blocks": VIEWER_DATA,  # a host blocked this viewer (or an address) in a show
    "erased": "no: pseudonymised copies of erased outbox entries (kept for accounting)",
    "viewers": "no: gateway process id -> viewer count",
    "request": VIEWER_DATA,  # B:req:<viewer>:<rid> idempotency records (the hold or order)
    # per show chat (ChatKeys; see chatdata.py)
    "chat": "not a key (the show's chat keys, below)",
    "chat.history": VIEWER_DATA,  # each message: viewer id, display name, text, question flag
    "chat.settings": VIEWER_DATA,  # the pinned message (with its viewer and name)
    "chat.words": "no: the host's word filter",
    "chat.mutes": VIEWER_DATA,  # viewer -> muted until
    "chat.mods": VIEWER_DATA,  # viewer ids the host named moderators
    "chat.questions": VIEWER_DATA,  # open questions: ids of the viewer's messages
    "chat.slow_prefix": VIEWER_DATA,  # B:chat:slow:<viewer> slow-mode marker
    "chat.slow": "same key as chat.slow_prefix",
    "chat.request": VIEWER_DATA,  # B:chat:req:<viewer>:<rid> a post's request id
    "chat.channel": "same channel as the show's channel (pub/sub, nothing stored)",
    # per drop (DropKeys)
    "drop.drop": "no: drop record and counters",
    "drop.holds": "no: hold numbers scored by expiry (the records are in holdrec)",
    "drop.holdrec": VIEWER_DATA,
    "drop.held": VIEWER_DATA,
    "drop.bought": VIEWER_DATA,
    "drop.orders_index": "no: order id -> units",
    "drop.payers": "no: one-way hash of (drop, payment reference) -> units; names no viewer",
    "drop.orders": "same key as the show's orders stream",
    "drop.events": "same key as the show's event log",
    "drop.seq": "same key as the show's seq hash",
    "xfers": "no: stock transfer id -> applied or its refusal",
    "returns": "no: settlement id -> units returned / sold, per drop",
    "line": "no: a drop's waiting-line counters (tickets taken, answered)",
    # per SKU stock pool (SkuKeys)
    "sku": "not a key (the SKU's keys, below)",
    "sku.pool": "no: the pool's ledger (on hand, allocated, sold)",
    "sku.xfer": "no: pending allocations (transfer id -> units)",
    "sku.credited": "no: settlement ids",
    "sku.drops": "no: drops that allocated from the pool",
    "sku.deliveries": "no: inbound delivery ids",
    "sku.adjusted": "no: inventory.adjusted outbox (SKU, show, drop, units)",
    # global
    "shows": "no: show ids",
    "pools": "no: SKUs with a stock pool",
    "pending_xfers": "no: SKUs with pending transfers",
    "pooled": "no: pooled drops not yet settled",
    "sync_items": "no: a stock source's item id -> SKU",
    "schedule": "no: drops scored by their next transition",
    "active": "no: drops that may hold stock",
    "products": "no: the hosts' catalogue",
    "host_keys": "no: hashes of host keys",
    "operator_keys": "no: hashes of operator keys",
    "aof_barrier": "no: a counter",
    "dead_letters": VIEWER_DATA,  # orders the relay gave up on, with their outbox fields
    "sink_prefix": "not a key (the reference sink's prefix)",
    "sink_received": VIEWER_DATA,  # the reference sink's copy of each delivered order
    "sink_arrivals": "no: webhook ids (msg_<order id>) in arrival order",
    "sink_stats": "no: counters",
    "sink_fail": "no: the injected failure mode",
    "sink_erased": "no: order id -> pseudonym of orders the sink was told are erased",
}
"""Every key name of keys.py -> ``"viewer"`` when it can hold a viewer's data, else why not."""

SCAN_PAGE = 500


def check_viewer(viewer: object) -> str:
    if not valid_id(viewer):
        raise ValidationError("viewer", "1-64 characters of A-Z a-z 0-9 _ -")
    return str(viewer)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


async def stream_entries(
    redis: aioredis.Redis, stream: str, page: int = 1000
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Every entry of a stream, oldest first, a page at a time."""
    start = "-"
    while True:
        rows: Any = await redis.xrange(stream, min=start, max="+", count=page)
        for entry_id, fields in rows:
            yield _s(entry_id), _fields(fields)
        if len(rows) < page:
            return
        start = "(" + _s(rows[-1][0])


async def show_ids(redis: aioredis.Redis, keyspace: Keyspace) -> list[str]:
    return [_s(s) for s in await redis.zrange(keyspace.shows, 0, -1)]


async def request_keys(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, viewer: str
) -> list[str]:
    """The viewer's idempotency records in one show (ids never contain glob characters)."""
    pattern = keyspace.request(show, viewer, "*")
    return sorted({_s(k) async for k in redis.scan_iter(match=pattern, count=SCAN_PAGE)})


async def _show_part(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, viewer: str
) -> dict[str, Any]:
    drops = [_s(d) for d in await redis.zrange(keyspace.drops(show), 0, -1)]
    part: dict[str, Any] = {}
    if await redis.hexists(keyspace.seq(show), f"b:{viewer}"):
        part["buyer"] = True
    block = await redis.hget(keyspace.blocks(show), f"viewer:{viewer}")
    if block is not None:
        part["blocked"] = orjson.loads(block)
    per_drop: dict[str, Any] = {}
    for drop in drops:
        k = keyspace.drop(show, drop)
        pipe = redis.pipeline(transaction=False)
        pipe.hget(k.held, viewer)
        pipe.hget(k.bought, viewer)
        pipe.hgetall(k.holdrec)
        held, bought, holdrec = await pipe.execute()
        entry: dict[str, Any] = {}
        if held is not None:
            entry["held"] = int(held)
        if bought is not None:
            entry["bought"] = int(bought)
        holds = []
        for n, raw in sorted(holdrec.items(), key=lambda kv: int(kv[0])):
            rec = orjson.loads(raw)
            if rec.get("v") == viewer:
                holds.append({"id": f"{drop}.{_s(n)}", **rec})
        if holds:
            entry["holds"] = holds
        if entry:
            per_drop[drop] = entry
    if per_drop:
        part["drops"] = per_drop
    orders = [
        {"stream_id": eid, **fields}
        async for eid, fields in stream_entries(redis, keyspace.orders(show))
        if fields.get("viewer") == viewer
    ]
    if orders:
        part["orders"] = orders
    requests = []
    for key in await request_keys(redis, keyspace, show, viewer):
        raw = await redis.get(key)
        if raw is None:
            continue  # expired since the scan
        _fingerprint, _, result = _s(raw).partition("\n")
        requests.append({"request_id": key.rsplit(":", 1)[1], "result": orjson.loads(result)})
    if requests:
        part["requests"] = requests
    chat = await chatdata.export_show(redis, keyspace.chat(show), viewer)
    if chat:
        part["chat"] = chat
    return part


async def export(redis: aioredis.Redis, keyspace: Keyspace, viewer: str) -> dict[str, Any]:
    """One JSON-ready document of everything stored about ``viewer``, with ``found`` listing
    the :data:`PLACES` it was found in."""
    viewer = check_viewer(viewer)
    try:
        return await _export(redis, keyspace, viewer)
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc


async def _export(redis: aioredis.Redis, keyspace: Keyspace, viewer: str) -> dict[str, Any]:
    found: set[str] = set()
    shows: dict[str, Any] = {}
    for show in await show_ids(redis, keyspace):
        part = await _show_part(redis, keyspace, show, viewer)
        if not part:
            continue
        shows[show] = part
        if part.get("buyer"):
            found.add("seq")
        if "blocked" in part:
            found.add("blocks")
        if "orders" in part:
            found.add("orders")
        if "requests" in part:
            found.add("request")
        found.update(f"chat.{place}" for place in chatdata.places(part.get("chat", {})))
        for entry in part.get("drops", {}).values():
            found.update(
                f"drop.{name}" for name, key in
                (("held", "held"), ("bought", "bought"), ("holdrec", "holds")) if key in entry
            )  # fmt: skip
    dead = [
        {"id": eid, **fields}
        async for eid, fields in stream_entries(redis, keyspace.dead_letters)
        if fields.get("viewer") == viewer
    ]
    if dead:
        found.add("dead_letters")
    sink = []
    async for _field, raw in redis.hscan_iter(keyspace.sink_received, count=SCAN_PAGE):
        record = orjson.loads(raw)
        if isinstance(record.get("order"), dict) and record["order"].get("viewer") == viewer:
            sink.append(record)
    if sink:
        found.add("sink_received")
        sink.sort(key=lambda r: str(r.get("webhook_id")))
    return {
        "viewer": viewer,
        "generated_at": int(time.time() * 1000),
        "found": sorted(found),
        "shows": shows,
        "dead_letters": dead,
        "fulfillment_sink": sink,
    }
