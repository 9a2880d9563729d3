"""Seeding a viewer into every place that can hold their data (privacy export/erase tests)."""

from __future__ import annotations

import time
import uuid

import httpx
import redis.asyncio as aioredis

from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.sink import WEBHOOK_PATH, create_app
from livecommerce.fulfillment.webhooks import Signer, generate_secret, order_message
from livecommerce.realtime.chatstore import Chat
from livecommerce.store.blocks import Blocks
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOWS = ("p1", "p2")
SLOW_MS = 600_000


def display_name(viewer: str) -> str:
    """The display name a viewer's token carries in these tests."""
    return f"{viewer.capitalize()} Display"


async def seed_chat(redis: aioredis.Redis, keyspace: Keyspace, viewer: str, tag: str) -> None:
    """The viewer in every chat place of every show, through the real chat code: two messages
    (one a question), a third under slow mode (its marker), then a mute and a moderator seat;
    the first viewer seeded also has their question pinned in the first show."""
    chat = Chat(redis, keyspace)
    name = display_name(viewer)
    for show in SHOWS:
        await chat.configure(show, slow_ms=0)
        said = await chat.post(show, viewer, name, f"hello from {name}", False,
                               request_id=f"c1-{tag}")  # fmt: skip
        asked = await chat.post(show, viewer, name, "does it come in blue?", True,
                                request_id=f"c2-{tag}")  # fmt: skip
        await chat.configure(show, slow_ms=SLOW_MS)
        slow = await chat.post(show, viewer, name, "one more", False, request_id=f"c3-{tag}")
        assert said.ok and asked.ok and slow.ok, (said, asked, slow)
        if show == SHOWS[0] and not await redis.hexists(keyspace.chat(show).settings, "pinned"):
            await chat.pin(show, asked.id)
        await chat.mute(show, viewer, -1)
        mods = {m.decode() for m in await redis.smembers(keyspace.chat(show).mods)}
        await chat.set_moderators(show, sorted(mods | {viewer}))


async def seed(redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory,
               viewer: str) -> dict[str, int]:  # fmt: skip
    """Holds, a confirmed hold, one-tap orders in two shows, chat (:func:`seed_chat`), a dead
    letter and a sink record.

    Returns units bought per show (what accounting must keep after an erasure)."""
    bought: dict[str, int] = {}
    tag = uuid.uuid4().hex[:8]  # request ids are the client's random tokens, not personal data
    for show in SHOWS:
        if await inventory.get_show(show) is None:
            await inventory.create_show(show, title="Privacy show")
            for drop in ("a", "b"):
                spec = DropSpec(id=drop, sku=f"SKU-{drop}", title=f"Item {drop}", quantity=50,
                                limit=5, prices={"EUR": 700})  # fmt: skip
                await inventory.create_drop(show, spec)
        held = await inventory.reserve(show, "a", viewer, 1, f"r1-{tag}")
        assert held.ok and held.hold is not None, held
        confirmed = await inventory.confirm(show, held.hold.id, viewer, f"card-{viewer}")
        assert confirmed.ok, confirmed
        live = await inventory.reserve(show, "a", viewer, 1, f"r2-{tag}")
        assert live.ok, live
        sold = await inventory.buy_now(show, "b", viewer, 2, f"r3-{tag}", f"card-{viewer}")
        assert sold.ok, sold
        bought[show] = 3
    await seed_chat(redis, keyspace, viewer, tag)
    # A host blocked the viewer in one show.
    await Blocks(redis, keyspace).block(SHOWS[1], "viewer", viewer, by="host1", reason="resale")
    # A dead letter: the relay gave up on one of the viewer's orders.
    entry_id, fields = (await redis.xrange(keyspace.orders(SHOWS[0])))[-1]
    own = [f for _i, f in await redis.xrange(keyspace.orders(SHOWS[0]))
           if f[b"viewer"] == viewer.encode()]  # fmt: skip
    await deadletters.add(redis, keyspace, stream=keyspace.orders(SHOWS[0]),
                          entry_id=entry_id.decode(), fields=own[-1], error="503",
                          attempts=3)  # fmt: skip
    del fields
    # The reference sink received one of them.
    secret = generate_secret()
    app = create_app(redis, keyspace, [secret])
    message = order_message(own[0])
    headers = Signer([secret]).headers(message.id, int(time.time()), message.body)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        r = await client.post(WEBHOOK_PATH, content=message.body, headers=headers)
        assert r.status_code == 200, r.text
    return bought
