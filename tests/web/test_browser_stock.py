"""The control panel shows each product's stock as the store reports it, live, in real
headless Chromium: on-hand, pool and allocated per product, and the drop form says how many
units can be allocated. A drop moves units from pool to allocated; a lower level reported by
the backend shows up without a reload. Waiting is Playwright's auto-waiting, never a sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers.browser import ARGS, CHROMIUM, Running, require_chromium, serve

from livecommerce.core.config import GatewaySettings, Secret, Settings
from livecommerce.ops.app import create_app
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys
from livecommerce.web.products import Catalog

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"

pytestmark = pytest.mark.browser

require_chromium()

from playwright.async_api import async_playwright, expect  # noqa: E402


@pytest.fixture
async def app_server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    settings = Settings(gateway=GatewaySettings(token_secret=Secret("s" * 40), drain_s=1.0))
    async with serve(create_app(settings, redis_url=redis_url, keyspace=keyspace)) as running:
        yield running


async def test_panel_shows_on_hand_pool_and_allocated_live(
    app_server: Running, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    host_key, _ = await HostKeys(redis, keyspace).create("stock-host")
    catalog = Catalog(redis, keyspace)
    await catalog.create("stock-host", "tee", {"title": "Tee", "prices": {"EUR": 1500}})
    await catalog.create("stock-host", "mug", {"title": "Mug", "prices": {"EUR": 900}})
    inventory = app_server.services.inventory
    await inventory.pools.report("tee", 12, 1)
    await inventory.create_show("night", title="Night", host="stock-host")
    await inventory.start_show("night")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})
                          ).new_page()  # fmt: skip
            await page.goto(f"{app_server.url}/panel")
            await page.get_by_test_id("key-input").fill(host_key)
            await page.get_by_test_id("sign-in").click()
            tee = page.get_by_test_id("product-tee")
            await expect(tee.get_by_test_id("stock-on-hand")).to_have_text("12")
            await expect(tee.get_by_test_id("stock-pool")).to_have_text("12")
            await expect(tee.get_by_test_id("stock-allocated")).to_have_text("0")
            await expect(tee.get_by_test_id("drop-available")).to_have_text("can allocate 12")
            mug = page.get_by_test_id("product-mug")
            await expect(mug.get_by_test_id("stock-manual")).to_have_text("typed in")
            await expect(mug.get_by_test_id("drop-available")).to_have_count(0)

            await tee.get_by_test_id("drop-quantity").fill("5")
            await tee.get_by_test_id("drop-button").click()
            await expect(tee.get_by_test_id("stock-pool")).to_have_text("7")
            await expect(tee.get_by_test_id("stock-allocated")).to_have_text("5")
            await expect(tee.get_by_test_id("drop-available")).to_have_text("can allocate 7")
            assert await tee.get_by_test_id("drop-quantity").get_attribute("max") == "7"

            # The backend reports fewer on hand: the panel follows without a reload.
            await inventory.pools.report("tee", 9, 2)
            await expect(tee.get_by_test_id("stock-on-hand")).to_have_text("9", timeout=15_000)
            await expect(tee.get_by_test_id("stock-pool")).to_have_text("4")
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "panel-stock.png"), full_page=True)
        finally:
            await browser.close()
