"""The gateway through a Redis outage: a Valkey of this test's own, really stopped (SIGTERM and
SIGKILL) and started again on the same port and data directory, while viewers stay on -- on the
same socket: the gateway fills their gap from the event log itself (realtime/recovery.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, serve, settings
from websockets.asyncio.client import connect

from livecommerce.realtime.client import Client
from livecommerce.realtime.codec import Encoding, decode, encode
from livecommerce.realtime.tokens import mint
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

pytestmark = pytest.mark.slow

KEYS = Keyspace("outage")


@pytest.fixture
def valkey(data_dir: Path) -> AsyncIterator[EmbeddedValkey]:
    server = EmbeddedValkey(data_dir / "valkey", appendfsync="always").start()
    yield server  # type: ignore[misc]
    server.stop()


async def open_inventory(url: str) -> Inventory:
    inv = Inventory(aioredis.Redis.from_url(url), KEYS, settings())
    await inv.load()
    return inv


async def ready(gw: Running) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(gw.http + "/readyz", timeout=5)
    return response.status_code, response.json()


async def wait_ready(gw: Running, want: bool) -> dict[str, Any]:
    """Readiness polled until it says ``want`` (the server has no event to wait on)."""
    async with asyncio.timeout(30):
        while True:
            status, body = await ready(gw)
            if (status == 200) == want:
                return body
            await asyncio.sleep(0.05)


async def restock(inv: Inventory, amount: int) -> None:
    """Restock once Valkey answers again (commands fail while it loads)."""
    async with asyncio.timeout(30):
        while True:
            try:
                await inv.restock("s1", "d1", amount)
                return
            except Exception:  # any store error: not back yet
                await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("crash", "quick"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["sigterm", "sigkill", "sigterm-quick", "sigkill-quick"],
)
async def test_viewers_get_every_event_published_after_a_valkey_restart(
    valkey: EmbeddedValkey, crash: bool, quick: bool
) -> None:
    """``quick``: Valkey is back before anyone noticed it was gone (within redis-py's retry
    back-off, which would have re-subscribed quietly and lost what was published meanwhile)."""
    inv = await open_inventory(valkey.url)
    await inv.create_show("s1", title="Outage")
    await inv.start_show("s1")
    await inv.create_drop("s1", drop("d1", quantity=100, limit=100))
    async with (
        serve(settings(), valkey.url, KEYS) as gw,
        Client(
            gw.url, "s1", encoding=Encoding.MSGPACK, max_backoff_s=0.2, max_attempts=1000
        ) as viewer,  # fmt: skip
        connect(gw.url) as raw,
    ):
        await raw.send(encode(Encoding.JSON, {"type": "join", "show": "s1"}))
        assert decode(Encoding.JSON, await raw.recv())["type"] == "snapshot"
        await inv.restock("s1", "d1", 1)
        assert (await viewer.next_message(types=["restocked"]))["data"]["added"] == 1
        assert (await wait_ready(gw, True))["ready"] is True

        valkey.kill() if crash else valkey.stop()
        if not quick:
            down = await wait_ready(gw, False)
            assert down["reason"] == "redis unreachable"
        valkey.start()  # same port, same data directory
        for n in range(2, 12):
            await restock(inv, n)
        await wait_ready(gw, True)

        # Every event published after the restart reaches the viewer, in order, once.
        added = []
        while len(added) < 10:
            added.append((await viewer.next_message(types=["restocked"]))["data"]["added"])
        assert added == list(range(2, 12))
        # The hub's subscription is back: a live event arrives on the same socket.
        await inv.restock("s1", "d1", 50)
        assert (await viewer.next_message(types=["restocked"]))["data"]["added"] == 50
        assert viewer.connections == 1  # never closed: the gateway filled the gap itself
        # A buyer's command goes through again.
        buyer_token = mint(SECRET, "buyer", 600)
        async with Client(gw.url, "s1", token=buyer_token) as buyer:
            bought = await buyer.buy_now("d1", 1, "pay-1")
            assert bought["ok"], bought
        # A viewer without a reconnecting client got the same events, in order, once, on the
        # socket it had before the outage.
        raw_added = []
        async with asyncio.timeout(30):
            while len(raw_added) < 12:
                message = decode(Encoding.JSON, await raw.recv())
                for m in message.get("messages", [message]):
                    if m.get("type") == "restocked":
                        raw_added.append(m["data"]["added"])
        assert raw_added == [1, *range(2, 12), 50]
        assert not [t for t in gw.app.state.services.extras["tasks"] if t.done()]
    await inv.redis.aclose()


async def test_a_stopped_background_task_makes_the_process_unready(
    redis_url: str, keyspace: Keyspace
) -> None:
    async with serve(settings(), redis_url, keyspace) as gw:
        supervised = {t.get_name() for t in gw.gateway.supervised()}
        assert supervised == {"viewer-count", "hub-pubsub", "reactions", "gc"}
        assert (await wait_ready(gw, True))["ready"] is True
        listener = next(t for t in gw.gateway.supervised() if t.get_name() == "hub-pubsub")
        listener.cancel()
        body = await wait_ready(gw, False)
        assert body["reason"] == "background task stopped: hub-pubsub"


async def test_a_dropped_pubsub_connection_loses_nothing(valkey: EmbeddedValkey) -> None:
    """The pub/sub link alone breaks (CLIENT KILL) while Valkey stays up: a quiet reconnect would
    miss what is published before it re-subscribes; the gateway reads it from the log instead,
    and the viewer keeps its socket."""
    inv = await open_inventory(valkey.url)
    await inv.create_show("s1", title="Blip")
    await inv.start_show("s1")
    await inv.create_drop("s1", drop("d1", quantity=100, limit=100))
    async with (
        serve(settings(), valkey.url, KEYS) as gw,
        Client(gw.url, "s1", max_backoff_s=0.2, max_attempts=1000) as viewer,
    ):
        for n in range(1, 4):
            await inv.redis.client_kill_filter(_type="pubsub")
            await inv.restock("s1", "d1", n)  # published while nobody here is subscribed
            got = await viewer.next_message(types=["restocked"])
            assert got["data"]["added"] == n
        assert viewer.connections == 1
    await inv.redis.aclose()
