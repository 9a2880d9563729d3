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

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from helpers.browser import ARGS, CHROMIUM, PHONE, Running, require_chromium, serve

from livecommerce.core.config import GatewaySettings, Secret, Settings
from livecommerce.ops.app import create_app
from livecommerce.realtime import tokens
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
SECRET = "browser-test-secret-" + "x" * 24

pytestmark = pytest.mark.browser

require_chromium()

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

            # -- a fresh panel: the order feed agrees with the tiles from the first render ------
            await panel.reload()
            await expect(panel.get_by_test_id("stat-orders")).to_have_text("2")
            await expect(panel.get_by_test_id("order")).to_have_count(2)
            await expect(panel.get_by_test_id("order-feed")).not_to_contain_text("No order yet")

            # -- a second product priced in EUR and USD, dropped as a 2 min 30 s offer --------
            async with httpx.AsyncClient(base_url=base) as http:
                created = await http.post("/api/products", json={
                    "sku": "e2e-cap", "title": "E2E cap", "prices": {"EUR": 1900, "USD": 2100},
                }, headers={"Authorization": f"Bearer {host_key}"})  # fmt: skip
                assert created.status_code == 201, created.text
            await panel.reload()
            cap_row = panel.get_by_test_id("product-e2e-cap")
            await expect(cap_row.get_by_test_id("drop-duration")).to_contain_text("Offer length")
            await expect(cap_row.get_by_test_id("drop-opens-in")).to_contain_text("Opens in")
            await cap_row.get_by_test_id("drop-duration-min").fill("2")
            await cap_row.get_by_test_id("drop-duration-s").fill("30")
            await cap_row.get_by_test_id("drop-button").click()
            cap_drop = panel.locator("tr[data-testid^=drop-]", has_text="E2E cap")
            await expect(cap_drop.get_by_test_id("drop-status")).to_have_text("open")
            await expect(cap_drop).to_contain_text(re.compile(r"ends in 2:[0-2]\d"))

            # -- the earlier drop is still open: both are one tap apart, the newest first ------
            sneaker_drop = panel.locator("tr[data-testid^=drop-]", has_text="E2E sneaker")
            await sneaker_drop.get_by_test_id("restock").click()  # sneaker back on sale
            tabs = ben.get_by_test_id("drop-tab")
            await expect(tabs).to_have_count(2)
            await expect(tabs.first).to_have_text("E2E cap")
            await expect(ben.get_by_test_id("drop-title")).to_have_text("E2E cap")
            # en-US viewer, show priced in EUR: the show's currency, not the locale's
            await expect(ben.get_by_test_id("price")).to_have_text("€19.00")
            await tabs.nth(1).click()
            await expect(ben.get_by_test_id("drop-title")).to_have_text("E2E sneaker")
            await tabs.first.click()
            await ben.get_by_test_id("currency").select_option("USD")
            await expect(ben.get_by_test_id("price")).to_have_text("$21.00")
            await ben.reload()  # the choice is remembered
            await expect(ben.get_by_test_id("drop-title")).to_have_text("E2E cap")
            await expect(ben.get_by_test_id("price")).to_have_text("$21.00")
            await shot(ben, "10-viewer2-two-open-drops")
            await shot(panel, "11-panel-offer-form")

            # -- chat across two viewer pages: a question, a reaction burst, pin, delete, mute --
            await ana.get_by_test_id("chat-input").fill("Does it come in blue?")
            await ana.get_by_test_id("chat-question").check()
            await ana.get_by_test_id("chat-send").click()
            await ben.get_by_test_id("chat-input").fill("Nice cap!")
            await ben.get_by_test_id("chat-send").click()
            for page in (ana, ben):
                messages = page.get_by_test_id("chat-message")
                await expect(messages).to_have_count(2)
                await expect(messages.first).to_contain_text("ana")
                await expect(messages.first).to_contain_text("Does it come in blue?")
                await expect(messages.first).to_contain_text("question")
                await expect(messages.nth(1)).to_contain_text("Nice cap!")
            question = panel.get_by_test_id("question")
            await expect(question).to_have_count(1)
            await expect(question).to_contain_text("Does it come in blue?")
            for _ in range(5):
                await ben.get_by_test_id("react-heart").click()
            await expect(ana.get_by_test_id("reaction-count-heart")).to_have_text("5")
            await expect(ben.get_by_test_id("reaction-count-heart")).to_have_text("5")
            await expect(panel.get_by_test_id("stat-reactions")).to_have_text("5")
            await shot(ana, "12-viewer-chat-and-reactions")
            await question.get_by_test_id("pin-question").click()
            for page in (ana, ben):
                await expect(page.get_by_test_id("pinned-text")).to_have_text(
                    "Does it come in blue?"
                )
            await expect(panel.get_by_test_id("panel-pinned")).to_contain_text("blue")
            await shot(ben, "13-viewer2-pinned-question")
            nice = panel.get_by_test_id("panel-chat-message").filter(has_text="Nice cap!")
            await nice.get_by_test_id("delete-message").click()
            for page in (ana, ben):
                await expect(page.get_by_test_id("chat-message")).to_have_count(1)
                await expect(page.get_by_test_id("chat-list")).not_to_contain_text("Nice cap!")
            await question.get_by_test_id("answer-question").click()
            await expect(panel.get_by_test_id("question")).to_have_count(0)
            for page in (ana, ben):
                await expect(page.get_by_test_id("pinned")).to_be_hidden()
                await expect(page.get_by_test_id("chat-message").first).to_contain_text("answered")
            await (
                panel.get_by_test_id("panel-chat-message").first.get_by_test_id("mute-show").click()
            )  # mutes ana, the author of the only message left
            await expect(ana.get_by_test_id("chat-notice")).to_contain_text("muted")
            await ana.get_by_test_id("chat-input").fill("hello?")
            await ana.get_by_test_id("chat-send").click()
            await expect(ana.get_by_test_id("chat-notice")).to_contain_text("muted")
            await expect(ben.get_by_test_id("chat-message")).to_have_count(1)
            await shot(ana, "14-viewer-muted")
            await shot(panel, "15-panel-chat")
            for page in (ana, ben, panel):
                await page.context.close()
        finally:
            await browser.close()
