"""Retention on real Valkey, and logs that never carry tokens or payment references."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, serve, settings
from helpers.privacy import SHOWS, seed

from livecommerce.core import logs
from livecommerce.core.config import PrivacySettings, Settings
from livecommerce.core.model import DropSpec
from livecommerce.fulfillment import retention
from livecommerce.fulfillment.webhooks import generate_secret
from livecommerce.realtime.client import Client, ClientClosed
from livecommerce.realtime.tokens import mint
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

DAY_MS = retention.DAY_MS


async def test_sweep_expires_events_dead_letters_and_ended_hold_records(
    redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    inventory = Inventory(redis, keyspace, Settings())
    await inventory.load()
    await seed(redis, keyspace, inventory, "alice")
    policy = PrivacySettings()
    now = await retention.server_ms(redis)
    # Nothing is old yet: a sweep now removes nothing.
    assert await retention.sweep(redis, keyspace, policy) == {
        "events": 0, "dead_letters": 0, "holds": 0, "chat": 0,
    }  # fmt: skip
    later = now + 31 * DAY_MS  # past every default schedule
    done = await retention.sweep(redis, keyspace, policy, now_ms=later)
    assert done["dead_letters"] == 1 and done["events"] > 0
    assert done["holds"] == len(SHOWS)  # the confirmed hold of each show; live ones stay
    assert done["chat"] == 3 * len(SHOWS)  # the seeded chat is past RETAIN_CHAT_HOURS
    assert await redis.xlen(keyspace.dead_letters) == 0
    for show in SHOWS:
        assert await redis.xlen(keyspace.events(show)) == 0
        records = [orjson.loads(v) for v in
                   (await redis.hgetall(keyspace.drop(show, "a").holdrec)).values()]  # fmt: skip
        by_state = {r["s"]: r for r in records}
        assert by_state["confirmed"]["v"] == "" and by_state["held"]["v"] == "alice"
        assert by_state["confirmed"]["order"]["payment_reference"] == ""
        assert by_state["confirmed"]["q"] == 1  # the numbers stay
        chat = keyspace.chat(show)
        assert await redis.xlen(chat.history) == 0 and await redis.zcard(chat.questions) == 0
        assert await redis.hget(chat.settings, "pinned") is None
    report = await audit(redis, keyspace)
    assert report.ok, report.summary()
    again = await retention.sweep(redis, keyspace, policy, now_ms=later)
    assert again == {"events": 0, "dead_letters": 0, "holds": 0, "chat": 0}  # idempotent


def test_redact_masks_tokens_keys_secrets_and_payment_references() -> None:
    token = mint(SECRET, "alice", 60)
    secret = generate_secret()
    line = (f"join with {token} key lch_abcdefghijklmnop lco_ABCDEFGHIJKLMNOP {secret} "
            f"{{'payment_reference': 'card-4242'}} payment_reference=tok_99 "
            f'"payment_reference":"pm_1"')  # fmt: skip
    out = logs.redact(line)
    for leaked in (token, "lch_abcdefghijklmnop", "lco_ABCDEFGHIJKLMNOP", secret, "card-4242",
                   "tok_99", "pm_1"):  # fmt: skip
        assert leaked not in out, leaked
    assert out.count(logs.MASK) == 7
    assert logs.redact("viewer alice bought 2") == "viewer alice bought 2"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every record of the process formatted as the server formats it, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_a_session_leaves_no_token_or_payment_reference_in_the_logs(
    redis_url: str, redis: aioredis.Redis, keyspace: Keyspace, json_logs: io.StringIO
) -> None:
    cfg = settings()
    cfg = dataclasses.replace(cfg, gateway=dataclasses.replace(cfg.gateway, log_level="debug"))
    host_key, _ = await HostKeys(redis, keyspace).create("h1")
    token = mint(SECRET, "alice", 600)
    async with serve(cfg, redis_url, keyspace) as gw:
        inv: Inventory = gw.app.state.services.inventory
        await inv.create_show("s1", title="Show")
        await inv.create_drop("s1", DropSpec(id="d1", sku="k", title="Cap", quantity=3, limit=1,
                                             prices={"EUR": 100}))  # fmt: skip
        async with Client(gw.url, "s1", token=token) as alice:
            bought = await alice.buy_now("d1", 1, "card-4242-secret", request_id="r1")
            assert bought["ok"], bought
            over = await alice.buy_now("d1", 1, "card-4242-secret", request_id="r2")
            assert over["reason"] == "limit_exceeded"
        with pytest.raises(ClientClosed):  # a refused join, too
            async with Client(gw.url, "s1", token=token + "x"):
                pass
    text = json_logs.getvalue()
    assert text  # something was logged
    for leaked in (token, token[-12:], "card-4242-secret", host_key):
        assert leaked not in text, leaked
    assert logs.MASK in text  # the debug frame logs were there, masked
