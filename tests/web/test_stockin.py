"""Stock and catalog in, over real HTTP (uvicorn in-process, httpx, real Valkey): signed generic
updates (Standard Webhooks), the Shopify adapter with payloads shaped as Shopify documents them,
the bulk import and the stock view. A forged, missing or stale signature, or a malformed body,
is refused with nothing changed; late and duplicate updates change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from helpers.browser import Running, api_app, serve

from livecommerce.core.config import InventorySettings, Secret, Settings
from livecommerce.fulfillment.webhooks import Signer, generate_secret
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from livecommerce.store.pool_audit import audit_pools
from livecommerce.web.hostkeys import HostKeys

ERP_SECRET = generate_secret()
SHOPIFY_SECRET = "shpss_test_client_secret_0123456789"

# Shopify's documented inventory_levels/update payload (webhook reference example).
SHOPIFY_LEVEL = {
    "inventory_item_id": 271878346596884015,
    "location_id": 24826418,
    "available": 10,
    "updated_at": "2021-12-31T19:00:00-05:00",
    "admin_graphql_api_id": "gid://shopify/InventoryLevel/24826418?inventory_item_id=271878346596884015",
}


def shopify_product(sku: str | None, item: int | None, updated_at: str) -> dict[str, Any]:
    """Shopify's documented products/update sample, with one variant's sku and item set."""
    variant = {
        "admin_graphql_api_id": "gid://shopify/ProductVariant/642667041472713922",
        "barcode": None,
        "compare_at_price": "24.99",
        "created_at": "2021-12-29T19:00:00-05:00",
        "id": 642667041472713922,
        "inventory_policy": "deny",
        "position": 1,
        "price": "19.99",
        "product_id": 788032119674292922,
        "sku": sku,
        "taxable": True,
        "title": "Small",
        "updated_at": "2021-12-30T19:00:00-05:00",
        "option1": "Small",
        "option2": None,
        "option3": None,
        "image_id": None,
        "inventory_item_id": item,
        "inventory_quantity": 75,
        "old_inventory_quantity": 75,
    }
    return {
        "admin_graphql_api_id": "gid://shopify/Product/788032119674292922",
        "body_html": "An example T-Shirt",
        "created_at": None,
        "handle": "example-t-shirt",
        "id": 788032119674292922,
        "product_type": "Shirts",
        "published_at": "2021-12-31T19:00:00-05:00",
        "template_suffix": None,
        "title": "Example T-Shirt",
        "updated_at": updated_at,
        "vendor": "Acme",
        "status": "active",
        "published_scope": "web",
        "tags": "example, mens, t-shirt",
        "variants": [variant],
        "options": [],
        "images": [],
        "image": None,
        "media": [],
    }


def shopify_headers(
    body: bytes, topic: str, webhook_id: str, secret: str = SHOPIFY_SECRET
) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Shop-Domain": "example.myshopify.com",
        "X-Shopify-Webhook-Id": webhook_id,
        "X-Shopify-API-Version": "2025-10",
        "Content-Type": "application/json",
    }


def signed(
    body: dict[str, Any], msg_id: str, secret: str = ERP_SECRET
) -> tuple[bytes, dict[str, str]]:
    raw = orjson.dumps(body)
    return raw, Signer([secret]).headers(msg_id, int(time.time()), raw)


def levels_message(*levels: tuple[str, int, int]) -> dict[str, Any]:
    return {
        "type": "inventory.levels",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"levels": [{"sku": s, "on_hand": n, "version": v} for s, n, v in levels]},
    }


@pytest.fixture
async def server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    sources = Secret(f"erp={ERP_SECRET},shop={SHOPIFY_SECRET}")
    settings = Settings(inventory=InventorySettings(sync_secrets=sources))
    async with serve(api_app(settings, redis_url, keyspace)) as running:
        yield running


@pytest.fixture
async def api(
    server: Running, redis: aioredis.Redis, keyspace: Keyspace
) -> AsyncIterator[httpx.AsyncClient]:
    secret, _ = await HostKeys(redis, keyspace).create("alice")
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=server.url + "/api", headers=headers) as client:
        for sku in ("TEE-1", "MUG-1"):
            r = await client.post(
                "/products", json={"sku": sku, "title": sku, "prices": {"EUR": 1500}}
            )
            assert r.status_code == 201
        yield client


async def stock(api: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    r = await api.get(f"/products/{sku}/stock")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_signed_levels_apply_once_in_version_order(api: httpx.AsyncClient) -> None:
    assert (await stock(api, "TEE-1"))["pooled"] is False
    raw, headers = signed(levels_message(("TEE-1", 40, 7), ("MUG-1", 5, 3)), "msg_1")
    r = await api.post("/sync/erp", content=raw, headers=headers)
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["created", "created"]
    assert (await stock(api, "TEE-1"))["pool"] == 40
    # The same delivery again, and an older version later: nothing changes.
    r = await api.post("/sync/erp", content=raw, headers=headers)
    assert [x["status"] for x in r.json()["results"]] == ["duplicate", "duplicate"]
    raw, headers = signed(levels_message(("TEE-1", 99, 6)), "msg_2")
    assert (await api.post("/sync/erp", content=raw, headers=headers)).json()["results"][0][
        "status"
    ] == "stale"
    raw, headers = signed(levels_message(("TEE-1", 35, 8)), "msg_3")
    assert (await api.post("/sync/erp", content=raw, headers=headers)).status_code == 200
    view = await stock(api, "TEE-1")
    assert (view["on_hand"], view["pool"], view["version"]) == (35, 35, 8)


async def test_forged_missing_and_stale_signatures_change_nothing(
    api: httpx.AsyncClient,
) -> None:
    raw, headers = signed(levels_message(("TEE-1", 40, 1)), "msg_1", secret=generate_secret())
    r = await api.post("/sync/erp", content=raw, headers=headers)
    assert r.status_code == 401
    raw, good = signed(levels_message(("TEE-1", 40, 1)), "msg_1")
    tampered = raw.replace(b"40", b"99")
    assert (await api.post("/sync/erp", content=tampered, headers=good)).status_code == 401
    no_sig = {k: v for k, v in good.items() if k != "webhook-signature"}
    assert (await api.post("/sync/erp", content=raw, headers=no_sig)).status_code == 401
    old = {**good, "webhook-timestamp": str(int(time.time()) - 3600)}
    assert (await api.post("/sync/erp", content=raw, headers=old)).status_code == 401
    assert (await api.post("/sync/nobody", content=raw, headers=good)).status_code == 401
    # A valid signature on a malformed body: 422, nothing applied either.
    bad, headers = signed(
        {
            "type": "inventory.levels",
            "data": {
                "levels": [
                    {"sku": "TEE-1", "on_hand": 5, "version": 1},
                    {"sku": "MUG-1", "on_hand": -1, "version": 1},
                ]
            },
        },
        "msg_bad",
    )
    r = await api.post("/sync/erp", content=bad, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "data.levels[1].on_hand"
    assert (await stock(api, "TEE-1"))["pooled"] is False
    assert (await stock(api, "MUG-1"))["pooled"] is False


async def test_signed_product_update_changes_the_catalog_in_order(api: httpx.AsyncClient) -> None:
    change = {
        "type": "product.updated",
        "data": {"sku": "TEE-1", "version": 5, "title": "Tee v5", "prices": {"EUR": 1999}},
    }
    raw, headers = signed(change, "msg_p5")
    r = await api.post("/sync/erp", content=raw, headers=headers)
    assert r.json()["results"] == [{"sku": "TEE-1", "status": "applied"}]
    stale = {"type": "product.updated", "data": {"sku": "TEE-1", "version": 4, "title": "Old"}}
    raw, headers = signed(stale, "msg_p4")
    assert (await api.post("/sync/erp", content=raw, headers=headers)).json()["results"][0][
        "status"
    ] == "stale"
    product = (await api.get("/products/TEE-1")).json()
    assert (product["title"], product["prices"]) == ("Tee v5", {"EUR": 1999})
    unknown = {"type": "product.updated", "data": {"sku": "NOPE", "version": 1, "title": "x"}}
    raw, headers = signed(unknown, "msg_u")
    assert (await api.post("/sync/erp", content=raw, headers=headers)).json()["results"][0][
        "status"
    ] == "unknown_product"
    assert (await api.get("/products/NOPE")).status_code == 404


async def test_shopify_documented_payloads(api: httpx.AsyncClient) -> None:
    # The documented sample as is (variants without a sku): nothing to map, nothing changed.
    raw = orjson.dumps(shopify_product(None, None, "2021-12-31T19:00:00-05:00"))
    r = await api.post(
        "/sync/shop/shopify", content=raw, headers=shopify_headers(raw, "products/update", "w-0")
    )
    assert r.status_code == 200 and r.json()["results"] == []
    # A level before its item is known is acknowledged and ignored.
    level = orjson.dumps(SHOPIFY_LEVEL)
    r = await api.post(
        "/sync/shop/shopify",
        content=level,
        headers=shopify_headers(level, "inventory_levels/update", "w-1"),
    )
    assert r.json()["ignored"] == "unmapped_item"
    # products/update maps the variant's inventory item to our sku and updates the catalog.
    raw = orjson.dumps(shopify_product("TEE-1", 271878346596884015, "2021-12-31T19:00:00-05:00"))
    r = await api.post(
        "/sync/shop/shopify?currency=EUR",
        content=raw,
        headers=shopify_headers(raw, "products/update", "w-2"),
    )
    assert r.json()["results"] == [{"sku": "TEE-1", "status": "applied"}]
    product = (await api.get("/products/TEE-1")).json()
    assert product["title"] == "Example T-Shirt - Small"
    assert product["prices"] == {"EUR": 1999}
    assert product["description"] == "An example T-Shirt"
    # Now the documented level applies: 10 available.
    r = await api.post(
        "/sync/shop/shopify?location=24826418",
        content=level,
        headers=shopify_headers(level, "inventory_levels/update", "w-3"),
    )
    assert r.json()["results"][0]["status"] == "created", r.text
    assert (await stock(api, "TEE-1"))["pool"] == 10
    # Redelivered (same webhook id), another location, an older level: nothing changes.
    r = await api.post(
        "/sync/shop/shopify",
        content=level,
        headers=shopify_headers(level, "inventory_levels/update", "w-3"),
    )
    assert r.json()["results"][0]["status"] == "duplicate"
    other = orjson.dumps(
        {
            **SHOPIFY_LEVEL,
            "location_id": 1,
            "available": 99,
            "updated_at": "2022-01-01T00:00:00-05:00",
        }
    )
    r = await api.post(
        "/sync/shop/shopify?location=24826418",
        content=other,
        headers=shopify_headers(other, "inventory_levels/update", "w-4"),
    )
    assert r.json()["ignored"] == "other_location"
    older = orjson.dumps(
        {**SHOPIFY_LEVEL, "available": 99, "updated_at": "2021-12-31T18:59:59-05:00"}
    )
    r = await api.post(
        "/sync/shop/shopify",
        content=older,
        headers=shopify_headers(older, "inventory_levels/update", "w-5"),
    )
    assert r.json()["results"][0]["status"] == "stale"
    newer = orjson.dumps(
        {**SHOPIFY_LEVEL, "available": 7, "updated_at": "2022-01-01T00:00:00-05:00"}
    )
    r = await api.post(
        "/sync/shop/shopify",
        content=newer,
        headers=shopify_headers(newer, "inventory_levels/update", "w-6"),
    )
    assert r.json()["results"][0]["status"] == "applied"
    assert (await stock(api, "TEE-1"))["pool"] == 7


async def test_shopify_forged_or_missing_hmac_changes_nothing(api: httpx.AsyncClient) -> None:
    raw = orjson.dumps(shopify_product("TEE-1", 271878346596884015, "2021-12-31T19:00:00-05:00"))
    forged = shopify_headers(raw, "products/update", "w-1", secret="not-the-secret")
    assert (await api.post("/sync/shop/shopify", content=raw, headers=forged)).status_code == 401
    missing = {k: v for k, v in forged.items() if k != "X-Shopify-Hmac-Sha256"}
    assert (await api.post("/sync/shop/shopify", content=raw, headers=missing)).status_code == 401
    good = shopify_headers(raw, "products/update", "w-1")
    tampered = raw.replace(b"Example T-Shirt", b"Hacked T-Shirt!")
    r = await api.post("/sync/shop/shopify", content=tampered, headers=good)
    assert r.status_code == 401
    # The ERP's Standard Webhooks secret does not open the Shopify door of another source.
    assert (await api.post("/sync/erp/shopify", content=raw, headers=good)).status_code == 401
    assert (await api.get("/products/TEE-1")).json()["title"] == "TEE-1"
    level = orjson.dumps(SHOPIFY_LEVEL)
    r = await api.post(
        "/sync/shop/shopify",
        content=level,
        headers=shopify_headers(level, "inventory_levels/update", "w-2", secret="nope"),
    )
    assert r.status_code == 401
    assert (await stock(api, "TEE-1"))["pooled"] is False


async def test_bulk_import_and_the_stock_view(
    api: httpx.AsyncClient, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    r = await api.post(
        "/stock",
        json={
            "levels": [
                {"sku": "TEE-1", "on_hand": 12, "version": 1},
                {"sku": "NOT-MINE", "on_hand": 1, "version": 1},
            ]
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "levels[1].sku"
    assert (await stock(api, "TEE-1"))["pooled"] is False  # nothing applied
    r = await api.post(
        "/stock",
        json={"levels": [{"sku": "TEE-1", "on_hand": 12, "version": 1}], "delivery": "first-sync"},
    )
    assert r.status_code == 200 and r.json()["results"][0]["pool"] == 12
    await api.post("/shows", json={"id": "s1", "title": "Show", "start": True})
    r = await api.post("/shows/s1/drops", json={"id": "d1", "sku": "TEE-1", "quantity": 5})
    assert r.status_code == 201, r.text
    r = await api.post("/shows/s1/drops", json={"id": "d2", "sku": "TEE-1", "quantity": 8})
    assert r.status_code == 409 and "7 unit(s) left" in r.json()["detail"]
    listing = {s["sku"]: s for s in (await api.get("/stock")).json()["stock"]}
    assert (
        listing["TEE-1"]["on_hand"],
        listing["TEE-1"]["pool"],
        listing["TEE-1"]["allocated"],
    ) == (12, 7, 5)
    assert listing["MUG-1"]["pooled"] is False
    assert (await api.post("/shows/s1/drops/d1/restock", json={"quantity": 7})).status_code == 200
    assert (await stock(api, "TEE-1"))["pool"] == 0
    inv = Inventory(redis, keyspace, Settings())
    await inv.load()
    assert (await audit_pools(redis, keyspace)).ok
