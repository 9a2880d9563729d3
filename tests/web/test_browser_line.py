"""The waiting line as the viewers and the host see it, in real headless Chromium (Debian's
``chromium``, driven by Playwright), on the whole app in-process with the embedded Valkey.

The gateway lets one attempt of a drop at the store at a time (``line_in_flight=1``) and keeps
one waiting attempt per drop (``line_size=1``). The attempts ahead of a viewer are tickets the
test takes in Redis itself (``Inventory.take_tickets``: another gateway's buyers, one at the
store and the rest waiting there); the line moves when the test counts them answered
(``Inventory.tickets_done``, which tells every gateway). So a viewer's tap waits in line at a
known position for as long as the test wants, with no sleep and no timing: the page says
"You're in line (#2)", then "#1", then the outcome (the order confirmation; later "sold out"
for another viewer while a third is told ``busy``). The panel shows how many are in line.
Waiting is Playwright's auto-waiting, never a sleep.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from helpers.browser import ARGS, CHROMIUM, PHONE, Running, require_chromium, serve

from livecommerce.core.config import GatewaySettings, Secret, Settings
from livecommerce.core.model import DropSpec
from livecommerce.ops.app import create_app
from livecommerce.realtime import tokens
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
SECRET = "browser-line-secret-" + "x" * 24

pytestmark = pytest.mark.browser

require_chromium()

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest.fixture
async def app_server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    gateway = GatewaySettings(
        token_secret=Secret(SECRET), stock_interval_s=0.0, drain_s=1.0,
        line_in_flight=1, line_size=1,
        line_stall_s=3600,  # only answers move the line: the test's tickets are never skipped
    )  # fmt: skip
    async with serve(create_app(Settings(gateway=gateway), redis_url=redis_url,
                                keyspace=keyspace)) as running:  # fmt: skip
        yield running


async def viewer_page(browser: Browser, base: str, name: str) -> Page:
    ctx = await browser.new_context(viewport=PHONE, locale="en-US", is_mobile=True, has_touch=True)
    page = await ctx.new_page()
    await page.goto(f"{base}/watch/night#token={tokens.mint(SECRET, name, 600)}")
    await expect(page.get_by_test_id("buy-now")).to_be_enabled()  # joined, the drop open
    return page


async def test_viewers_see_their_place_in_line_then_the_outcome(
    app_server: Running, redis: aioredis.Redis, keyspace: Keyspace
) -> None:
    host_key, _ = await HostKeys(redis, keyspace).create("line-host")
    inventory = app_server.services.inventory
    await inventory.create_show("night", title="Night", host="line-host")
    await inventory.start_show("night")
    await inventory.create_drop("night", DropSpec(
        id="tee", sku="tee", title="Tee", quantity=2, limit=1, prices={"EUR": 1500}))  # fmt: skip
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            panel = await (await browser.new_context(viewport={"width": 1280, "height": 900},
                                                     locale="en-US")).new_page()  # fmt: skip
            await panel.goto(f"{app_server.url}/panel")
            await panel.get_by_test_id("key-input").fill(host_key)
            await panel.get_by_test_id("sign-in").click()
            await expect(panel.get_by_test_id("live-state")).to_have_text("real time")
            row = panel.get_by_test_id("drop-tee")
            await expect(row.get_by_test_id("drop-status")).to_have_text("open")
            await expect(row.get_by_test_id("drop-line")).to_have_count(0)
            ana = await viewer_page(browser, app_server.url, "ana")

            # -- two attempts ahead of ana: one at the store, one waiting for it -------------
            assert await inventory.take_tickets("night", "tee", 2) == (2, 0)
            await ana.get_by_test_id("buy-now").click()
            notice = ana.get_by_test_id("notice")
            await expect(notice).to_have_text("You're in line (#2)")
            await expect(notice).to_have_attribute("data-reason", "queued")
            await expect(ana.get_by_test_id("buy-now")).to_have_text("Buying...")
            await expect(ana.get_by_test_id("buy-now")).to_be_disabled()
            await shot(ana, "line-01-viewer-in-line")

            # -- the one at the store is answered: ana is next, told so ----------------------
            await inventory.tickets_done("night", "tee", 1)
            await expect(notice).to_have_text("You're in line (#1)")
            await expect(row.get_by_test_id("drop-line")).to_have_text("2 in line")
            await shot(panel, "line-02-panel-in-line")
            # A panel opened while attempts wait shows the line at once (its first snapshot).
            await panel.reload()
            await expect(panel.get_by_test_id("live-state")).to_have_text("real time")
            await expect(row.get_by_test_id("drop-line")).to_have_text("2 in line")

            # -- the next one too: ana goes to the store and buys; the line is empty ---------
            await inventory.tickets_done("night", "tee", 1)
            confirmation = ana.get_by_test_id("order-confirmation")
            await expect(confirmation).to_contain_text("Order confirmed")
            await expect(confirmation).to_contain_text("€15.00")
            await expect(notice).to_have_count(0)  # the line's notice is gone with the answer
            await expect(row.get_by_test_id("drop-sold")).to_have_text("1")
            await expect(row.get_by_test_id("drop-line")).to_have_count(0)
            await shot(ana, "line-03-viewer-bought")

            # -- one unit left, two attempts ahead again: ben waits, cleo finds the line full -
            ben = await viewer_page(browser, app_server.url, "ben")
            cleo = await viewer_page(browser, app_server.url, "cleo")
            assert await inventory.take_tickets("night", "tee", 2) == (5, 3)
            await ben.get_by_test_id("buy-now").click()
            await expect(ben.get_by_test_id("notice")).to_have_text("You're in line (#2)")
            await cleo.get_by_test_id("buy-now").click()  # line_size=1: ben fills it
            await expect(cleo.get_by_test_id("notice")).to_have_text(
                re.compile(r"^So many people are buying - try again in \d+ s\.$"))  # fmt: skip
            await expect(cleo.get_by_test_id("buy-now")).to_be_enabled()
            # cleo's attempt was answered (busy): one ticket fewer ahead of ben
            await expect(ben.get_by_test_id("notice")).to_have_text("You're in line (#1)")
            await shot(cleo, "line-04-viewer-busy")

            # -- the attempt at the store sells the last unit: ben's wait ends in "sold out" --
            assert (await inventory.buy_now("night", "tee", "zed", 1, "z1", "pay")).ok
            await expect(ben.get_by_test_id("notice")).to_have_text(
                "Sold out - every unit is gone.")  # fmt: skip
            await expect(ben.get_by_test_id("notice")).to_have_attribute("data-reason", "sold_out")
            await expect(ben.get_by_test_id("status")).to_have_text("Sold out")
            await expect(ben.get_by_test_id("buy-now")).to_be_disabled()
            await shot(ben, "line-05-viewer-sold-out-in-line")
            await inventory.tickets_done("night", "tee", 2)  # the other gateway's two answered
            await expect(row.get_by_test_id("drop-line")).to_have_count(0)
            await expect(row.get_by_test_id("drop-status")).to_have_text("closed (sold out)")
            await expect(row.get_by_test_id("drop-sold")).to_have_text("2")
            assert app_server.services.extras["gateway"].lines.lines[("night", "tee")].waiting == []
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
