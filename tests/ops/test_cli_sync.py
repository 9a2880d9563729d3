"""``livecommerce sync FILE|URL`` on real Valkey: an export reconciles the SKU pools and the
catalog, a second run changes nothing, a malformed export changes nothing, and
``livecommerce audit`` checks the pools too."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from livecommerce.core import config
from livecommerce.core.model import DropSpec
from livecommerce.ops.cli import main as run_cli
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.web.products import Catalog

EXPORT = {
    "levels": [
        {"sku": "TEE-1", "on_hand": 30, "version": 100},
        {"sku": "MUG-1", "on_hand": 4, "version": 100},
    ],
    "products": [{"sku": "TEE-1", "version": 100, "title": "Tee (synced)"}],
}


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/export.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def setup(url: str, keyspace: Keyspace) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await Catalog(client, keyspace).create(
            "alice", "TEE-1", {"title": "Tee", "prices": {"EUR": 900}}
        )
    finally:
        await client.aclose()


async def state(url: str, keyspace: Keyspace) -> tuple[int | None, int | None, str]:
    client = aioredis.Redis.from_url(url)
    try:
        inv = Inventory(client, keyspace, config.load({}))
        tee, mug = await inv.pools.ledger("TEE-1"), await inv.pools.ledger("MUG-1")
        product = await Catalog(client, keyspace).get("alice", "TEE-1")
        return (tee.pool if tee else None), (mug.pool if mug else None), product.title
    finally:
        await client.aclose()


async def sell_from_pool(url: str, keyspace: Keyspace) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        inv = Inventory(client, keyspace, config.load({}))
        await inv.load()
        await inv.create_show("s1", title="Show")
        await inv.create_drop(
            "s1",
            DropSpec(id="d1", sku="TEE-1", title="Tee", quantity=10, limit=5, prices={"EUR": 900}),
        )
        assert (await inv.buy_now("s1", "d1", "v", 2, "r", "pay")).ok
        await inv.close("s1", "d1")
    finally:
        await client.aclose()


def test_sync_from_a_file_and_a_url(
    redis_url: str,
    keyspace: Keyspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LIVECOMMERCE_REDIS_URL", redis_url)
    monkeypatch.setenv("LIVECOMMERCE_KEY_PREFIX", keyspace.prefix)
    asyncio.run(setup(redis_url, keyspace))
    bad = tmp_path / "bad.json"
    bad.write_bytes(
        orjson.dumps(
            {
                "levels": [
                    {"sku": "TEE-1", "on_hand": 3, "version": 1},
                    {"sku": "MUG-1", "on_hand": "x", "version": 1},
                ]
            }
        )
    )
    assert run_cli(["sync", str(bad)]) == 2
    assert "levels[1].on_hand" in capsys.readouterr().err
    assert asyncio.run(state(redis_url, keyspace)) == (None, None, "Tee")  # nothing applied

    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps(EXPORT))
    assert run_cli(["sync", str(export), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["levels"] == {"created": 2} and out["products"] == {"applied": 1}
    assert asyncio.run(state(redis_url, keyspace)) == (30, 4, "Tee (synced)")
    assert run_cli(["sync", str(export), "--json"]) == 0  # twice: nothing changes
    out = json.loads(capsys.readouterr().out)
    assert out["levels"] == {"stale": 2} and out["products"] == {"stale": 1}

    asyncio.run(sell_from_pool(redis_url, keyspace))  # 2 sold, 8 back in the pool
    newer = {"levels": [{"sku": "TEE-1", "on_hand": 28, "version": 101}]}
    with serving(orjson.dumps(newer)) as url:
        assert run_cli(["sync", url]) == 0
    assert "levels {'applied': 1}" in capsys.readouterr().out
    assert asyncio.run(state(redis_url, keyspace))[0] == 28
    assert run_cli(["audit", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
