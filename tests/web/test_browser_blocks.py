"""Blocking from the panel in real headless Chromium: the host blocks a viewer id for the show,
the gateway refuses that viewer's join (4011) while others watch on; unblocking lets them in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from helpers.browser import ARGS, CHROMIUM, Running, require_chromium, serve

from livecommerce.core.config import GatewaySettings, Secret, Settings
from livecommerce.ops.app import create_app
from livecommerce.realtime import admission, tokens
from livecommerce.realtime.client import Client, ClientClosed
from livecommerce.store.keys import Keyspace
from livecommerce.web.hostkeys import HostKeys

SECRET = "browser-test-secret-" + "x" * 24

pytestmark = pytest.mark.browser

require_chromium()

from playwright.async_api import async_playwright, expect  # noqa: E402


@pytest.fixture
async def app_server(redis_url: str, keyspace: Keyspace) -> AsyncIterator[Running]:
    settings = Settings(
        gateway=GatewaySettings(
            token_secret=Secret(SECRET), stock_interval_s=0.0, drain_s=1.0, demo=False
        )
    )
    async with serve(create_app(settings, redis_url=redis_url, keyspace=keyspace)) as running:
        yield running


async def test_the_host_blocks_a_viewer_from_the_panel(
    app_server: Running, redis: aioredis.Redis, keyspace: Keyspace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(admission, "BLOCKS_REFRESH_S", 0.0)
    host_key, _ = await HostKeys(redis, keyspace).create("blocker", "browser test")
    await app_server.services.inventory.create_show("night", title="Night", host="blocker")
    ws_url = app_server.url.replace("http://", "ws://") + "/ws"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})
                          ).new_page()  # fmt: skip
            await page.goto(f"{app_server.url}/panel")
            await page.get_by_test_id("key-input").fill(host_key)
            await page.get_by_test_id("sign-in").click()
            await expect(page.get_by_test_id("signed-in")).to_have_text("host blocker")
            await expect(page.get_by_test_id("blocks")).to_be_visible()
            await page.get_by_test_id("block-value").fill("bot9")
            await page.get_by_test_id("block-button").click()
            await expect(page.get_by_test_id("block-viewer-bot9")).to_be_visible()
            with pytest.raises(ClientClosed) as closed:
                async with Client(ws_url, "night", token=tokens.mint(SECRET, "bot9", 600)):
                    pass
            assert closed.value.code == 4011
            async with Client(ws_url, "night", token=tokens.mint(SECRET, "fan", 600)):
                pass  # another viewer joins
            await page.get_by_test_id("block-viewer-bot9").get_by_test_id("unblock").click()
            await expect(page.get_by_test_id("block-viewer-bot9")).to_have_count(0)
            async with Client(ws_url, "night", token=tokens.mint(SECRET, "bot9", 600)):
                pass
        finally:
            await browser.close()
