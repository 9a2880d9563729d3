"""End to end in real headless Chromium (Debian's ``chromium``, driven by Playwright).

The whole app runs in-process (uvicorn on a free loopback port, the embedded Valkey). A host
signs in to the panel, creates a show and a product, drops it; a viewer on a phone-sized page
reserves and pays, and sees the confirmation; the dashboard shows the sale and the stock change;
a second viewer sees "Sold out"; a restock reopens the drop and the second viewer buys with one
tap. Screenshots of both pages at each step go to ``test-output/screenshots/``.

Waiting is done with Playwright's auto-waiting assertions (they wait for the DOM to change),
never with sleeps.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers.browser import Running, serve

from livecommerce.core.config import GatewaySettings, Secret, Settings
from livecommerce.ops.app import create_app
from livecommerce.realtime import tokens
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
SECRET = "browser-test-secret-" + "x" * 24
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
    pytest.skip(
        f"{CHROMIUM} not installed (apt-get install chromium); set CI=1 to make this fail",
        allow_module_level=True,
    )

from playwright.async_api import Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def app_server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    settings = Settings(
        gateway=GatewaySettings(token_secret=Secret(SECRET), stock_interval_s=0.0, drain_s=1.0)
    )
    async with serve(create_app(settings, redis_url=redis_url, keyspace=keyspace)) as running:
        yield running


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_drop_buy_sold_out_in_real_browsers(
    app_server: Running, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    host_key, _ = await HostKeys(redis, keyspace).create("e2e-host", "browser test")
    base = app_server.url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            host_ctx = await browser.new_context(viewport={"width": 1280, "height": 900},
                                                 locale="en-US")  # fmt: skip
            panel = await host_ctx.new_page()

            # -- the host signs in, creates a show, goes live, adds a product ---------------
            await panel.goto(f"{base}/panel")
            await panel.get_by_test_id("key-input").fill(host_key)
            await panel.get_by_test_id("sign-in").click()
            await expect(panel.get_by_test_id("signed-in")).to_have_text("host e2e-host")
            await panel.get_by_text("New show").click()
            await panel.get_by_test_id("show-title").fill("E2E night")
            await panel.get_by_test_id("create-show").click()
            await expect(panel.get_by_test_id("show-state")).to_have_text("scheduled")
            await panel.get_by_test_id("start-show").click()
            await expect(panel.get_by_test_id("show-state")).to_have_text("live")
            await expect(panel.get_by_test_id("live-state")).to_have_text("real time")
            show = await panel.get_by_test_id("viewer-link").get_attribute("href") or ""
            show = show.rsplit("/", 1)[1]

            await panel.get_by_test_id("product-sku").fill("e2e-sneaker")
            await panel.get_by_test_id("product-title").fill("E2E sneaker")
            await panel.get_by_test_id("product-price").fill("49.90")
            await panel.get_by_test_id("add-product").click()
            row = panel.get_by_test_id("product-e2e-sneaker")
            await expect(row).to_contain_text("€49.90")
            await shot(panel, "01-panel-catalog")

            # -- two viewers on phones, before the drop -------------------------------------
            viewers = []
            for name, locale in (("ana", "de-DE"), ("ben", "en-US")):
                ctx = await browser.new_context(viewport=PHONE, locale=locale, is_mobile=True,
                                                has_touch=True)  # fmt: skip
                page = await ctx.new_page()
                token = tokens.mint(SECRET, name, 600)
                await page.goto(f"{base}/watch/{show}#token={token}")
                await expect(page.get_by_test_id("waiting")).to_be_visible()
                viewers.append(page)
            ana, ben = viewers
            assert "#token" not in ana.url  # the token leaves the address bar
            await shot(ana, "02-viewer-waiting")

            # -- the host drops 1 unit, limit 1 ----------------------------------------------
            await row.get_by_test_id("drop-quantity").fill("1")
            await row.get_by_test_id("drop-limit").fill("1")
            await row.get_by_test_id("drop-button").click()
            card = ana.get_by_test_id("drop-card")
            await expect(card.get_by_test_id("drop-title")).to_have_text("E2E sneaker")
            await expect(card.get_by_test_id("price")).to_have_text(re.compile(r"49,90\s€"))
            await expect(card.get_by_test_id("stock")).to_contain_text("1 left")
            await expect(ben.get_by_test_id("price")).to_have_text("€49.90")
            await shot(ana, "03-viewer-drop-open")

            # -- viewer 1 reserves, the dashboard shows the hold, then pays -------------------
            await card.get_by_test_id("reserve").click()
            await expect(ana.get_by_test_id("hold")).to_contain_text("Reserved 1")
            drop_row = panel.locator("tr[data-testid^=drop-]")
            await expect(drop_row.get_by_test_id("drop-held")).to_have_text("1")
            await expect(drop_row.get_by_test_id("drop-remaining")).to_have_text("0")
            await shot(ana, "04-viewer-reserved")
            await ana.get_by_test_id("confirm").click()
            confirmation = ana.get_by_test_id("order-confirmation")
            await expect(confirmation).to_contain_text("Order confirmed")
            await expect(confirmation).to_contain_text("49,90")
            await shot(ana, "05-viewer-order-confirmed")

            # -- the dashboard shows the sale and the stock change ----------------------------
            await expect(panel.get_by_test_id("order-feed")).to_contain_text("E2E sneaker")
            await expect(panel.get_by_test_id("order-feed")).to_contain_text("ana")
            await expect(panel.get_by_test_id("stat-orders")).to_have_text("1")
            await expect(panel.get_by_test_id("stat-revenue")).to_have_text("€49.90")
            await expect(drop_row.get_by_test_id("drop-sold")).to_have_text("1")
            await expect(drop_row.get_by_test_id("drop-held")).to_have_text("0")
            await expect(drop_row.get_by_test_id("drop-status")).to_contain_text("sold out")
            await expect(panel.get_by_test_id("stat-viewers")).to_have_text("2")
            await shot(panel, "06-panel-sale")

            # -- the second viewer sees "Sold out" ------------------------------------------
            await expect(ben.get_by_test_id("status")).to_have_text("Sold out")
            await expect(ben.get_by_test_id("buy-now")).to_be_disabled()
            await shot(ben, "07-viewer2-sold-out")

            # -- a restock reopens it; the second viewer buys with one tap -------------------
            await drop_row.get_by_test_id("restock-quantity").fill("1")
            await drop_row.get_by_test_id("restock").click()
            await expect(ben.get_by_test_id("status")).to_have_text("Live now")
            await ben.get_by_test_id("buy-now").click()
            await expect(ben.get_by_test_id("order-confirmation")).to_contain_text("€49.90")
            await expect(ana.get_by_test_id("status")).to_have_text("Sold out")
            await expect(panel.get_by_test_id("stat-orders")).to_have_text("2")
            await expect(panel.get_by_test_id("stat-revenue")).to_have_text("€99.80")
            await expect(panel.get_by_test_id("stat-conversion")).to_have_text("100.0 %")
            await shot(ben, "08-viewer2-bought-after-restock")
            await shot(panel, "09-panel-two-orders")
            for page in (ana, ben, panel):
                await page.context.close()
        finally:
            await browser.close()
