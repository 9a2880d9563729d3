"""Privacy access: the export finds a viewer in every place keys.py declares, over the API (an
operator key only) and the command line, on real Valkey."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from helpers.browser import Running, api_app, serve
from helpers.privacy import SHOWS, display_name, seed

from livecommerce.core.config import Settings
from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.fulfillment import privacy
from livecommerce.realtime import tokens
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import ChatKeys, DropKeys, Keyspace, SkuKeys
from livecommerce.web.hostkeys import HostKeys
from livecommerce.web.operatorkeys import OperatorKeys

VIEWER_PLACES = {name for name, why in privacy.PLACES.items() if why == privacy.VIEWER_DATA}


def keyspace_names() -> set[str]:
    """Every key name keys.py can produce: Keyspace members, DropKeys and SkuKeys fields,
    ChatKeys fields and methods."""
    names = {
        name for name, member in vars(Keyspace).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }  # fmt: skip
    names |= {f"drop.{f.name}" for f in dataclasses.fields(DropKeys)}
    names |= {f"sku.{f.name}" for f in dataclasses.fields(SkuKeys)}
    names |= {f"chat.{f.name}" for f in dataclasses.fields(ChatKeys)}
    names |= {
        f"chat.{name}" for name, member in vars(ChatKeys).items()
        if not name.startswith("_") and callable(member)
    }  # fmt: skip
    return names - {"drop"}


def test_every_key_of_keys_py_is_classified() -> None:
    """A new key in keys.py fails here until PLACES says whether it holds viewer data."""
    names = keyspace_names()
    assert names - set(privacy.PLACES) == set(), "classify these keys in privacy.PLACES"
    assert set(privacy.PLACES) - names == set(), "PLACES names keys keys.py no longer has"


@pytest.fixture
async def inventory(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inv = Inventory(redis, keyspace, Settings())
    await inv.load()
    return inv


async def test_export_finds_the_viewer_in_every_place(
    redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    await seed(redis, keyspace, inventory, "alice")
    await seed(redis, keyspace, inventory, "bob")
    doc = await privacy.export(redis, keyspace, "alice")
    assert set(doc["found"]) == VIEWER_PLACES
    assert set(doc["shows"]) == {"p1", "p2"}
    for part in doc["shows"].values():
        assert part["buyer"] is True
        assert part["drops"]["a"]["held"] == 1 and part["drops"]["a"]["bought"] == 1
        assert part["drops"]["b"]["bought"] == 2
        assert [h["s"] for h in part["drops"]["a"]["holds"]] == ["confirmed", "held"]
        assert sorted(o["quantity"] for o in part["orders"]) == ["1", "2"]
        assert {o["payment_reference"] for o in part["orders"]} == {"card-alice"}
        assert len(part["requests"]) == 3
        chat = part["chat"]
        assert [(m["name"], m["question"]) for m in chat["messages"]] == [
            (display_name("alice"), False), (display_name("alice"), True),
            (display_name("alice"), False),
        ]  # fmt: skip
        assert chat["messages"][0]["text"] == "hello from Alice Display"
        assert chat["open_questions"] == [chat["messages"][1]["id"]]
        assert chat["muted_until"] == -1 and chat["moderator"] is True
        assert chat["slow_mode"] is True and len(chat["requests"]) == 3
    pinned = doc["shows"][SHOWS[0]]["chat"]["pinned"]
    assert pinned["viewer"] == "alice" and pinned["text"] == "does it come in blue?"
    assert [d["viewer"] for d in doc["dead_letters"]] == ["alice"]
    assert [r["order"]["viewer"] for r in doc["fulfillment_sink"]] == ["alice"]
    assert b"bob" not in orjson.dumps(doc)  # nothing of another viewer's
    nobody = await privacy.export(redis, keyspace, "nobody")
    assert nobody["found"] == [] and nobody["shows"] == {}
    with pytest.raises(ValidationError):
        await privacy.export(redis, keyspace, "bad viewer")


@pytest.fixture
async def server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    async with serve(api_app(Settings(), redis_url, keyspace)) as running:
        yield running


async def test_the_route_takes_an_operator_key_only(
    server: Running, redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    await seed(redis, keyspace, inventory, "alice")
    operator, record = await OperatorKeys(redis, keyspace).create("dpo", "privacy desk")
    assert operator.startswith("lco_")
    stored = await redis.hgetall(keyspace.operator_keys)
    assert operator.encode() not in b"".join(stored.values())  # hashed, like host keys
    host, _ = await HostKeys(redis, keyspace).create("alice-host")
    async with httpx.AsyncClient(base_url=server.url + "/api") as client:
        url = "/privacy/viewers/alice"
        ok = await client.get(url, headers={"Authorization": f"Bearer {operator}"})
        assert ok.status_code == 200, ok.text
        assert set(ok.json()["found"]) == VIEWER_PLACES
        for wrong in (host, tokens.mint("s" * 32, "alice", 60), "lco_unknown"):
            r = await client.get(url, headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, r.text
        # ...and an operator key is no host key.
        r = await client.get("/shows", headers={"Authorization": f"Bearer {operator}"})
        assert r.status_code == 401
        r = await client.get("/privacy/viewers/not%20valid",
                             headers={"Authorization": f"Bearer {operator}"})  # fmt: skip
        assert r.status_code == 422 and r.json()["field"] == "viewer"
        await OperatorKeys(redis, keyspace).revoke(record.prefix)
        r = await client.get(url, headers={"Authorization": f"Bearer {operator}"})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
    with pytest.raises(AuthError):
        await HostKeys(redis, keyspace).verify(operator)


def run_cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "livecommerce", "privacy", *args],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout


async def test_cli_export_and_operator_keys(
    redis_url: str, redis: aioredis.Redis, keyspace: Keyspace, inventory: Inventory
) -> None:
    await seed(redis, keyspace, inventory, "alice")
    env = {**os.environ, "LIVECOMMERCE_REDIS_URL": redis_url,
           "LIVECOMMERCE_KEY_PREFIX": keyspace.prefix}  # fmt: skip
    doc = orjson.loads(run_cli("export", "alice", "--json", env=env))
    assert set(doc["found"]) == VIEWER_PLACES
    created = orjson.loads(run_cli("key", "create", "--name", "dpo", "--json", env=env))
    assert created["key"].startswith("lco_")
    assert (await OperatorKeys(redis, keyspace).verify(created["key"])).host == "dpo"
    assert orjson.loads(run_cli("key", "list", "--json", env=env))[0]["host"] == "dpo"
    assert run_cli("key", "revoke", created["prefix"], env=env).startswith("revoked:")
