"""The first-run demo: a host key, a few products, a live show with one open drop, and the URLs
to open (``livecommerce serve`` prints :meth:`DemoInfo.describe`).

Seeding is idempotent on the same data directory: products and the show are reused, the
previous demo host key is revoked and a fresh one printed (secrets are never stored, so an old
key cannot be shown again). Viewer links carry a dev viewer token in the URL *fragment*
(``#token=...``), which browsers never send to servers; the panel link carries the host key the
same way.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field

from livecommerce.core.errors import ConflictError
from livecommerce.core.model import DropSpec
from livecommerce.realtime import tokens
from livecommerce.store.services import Services
from livecommerce.web.hostkeys import HostKeys
from livecommerce.web.products import Catalog

HOST = "demo-host"
SHOW = "demo"
LABEL = "livecommerce serve demo"
VIEWERS = ("viewer-1", "viewer-2")
DEMO_TOKEN_TTL_S = 12 * 3600
PRODUCTS = (
    ("sneaker-red", "Red runner sneakers", "Limited run, sizes 38-46.", "sneaker",
     {"EUR": 8900, "USD": 9900, "GBP": 7900}),
    ("mug-blue", "Studio mug", "The mug on the host's desk, 350 ml.", "mug",
     {"EUR": 1500, "USD": 1700}),
    ("hoodie-green", "Backstage hoodie", "Heavy cotton, embroidered logo.", "hoodie",
     {"EUR": 4900, "USD": 5500, "GBP": 4400}),
    ("cap-orange", "Crew cap", "One size.", "cap", {"EUR": 2500, "USD": 2900, "JPY": 3900}),
)  # fmt: skip


@dataclass(frozen=True)
class DemoInfo:
    base_url: str
    show: str
    host: str
    host_key: str
    panel_url: str
    viewer_urls: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            "",
            "Demo ready. Open these (two viewers and the panel, side by side):",
            f"  Host panel:  {self.panel_url}",
            f"  Host key:    {self.host_key}   (host {self.host!r}; sign in with it if asked)",
        ]
        lines += [f"  Viewer {i}:    {url}" for i, url in enumerate(self.viewer_urls, 1)]
        lines += [
            f"  API docs:    {self.base_url}/api/openapi.json",
            "In the panel: drop a product (Qty, Limit, Drop), buy it on a viewer page,",
            "and watch the order arrive on the dashboard.",
            "",
        ]
        return "\n".join(lines)


async def _reset_demo_keys(keys: HostKeys) -> None:
    for record in await keys.list():
        if record.host == HOST and record.label == LABEL and not record.revoked:
            await keys.revoke(record.id)


async def seed(services: Services, *, base_url: str = "") -> DemoInfo:
    """Create (or reuse) the demo data and return where to click."""
    base = (base_url or services.settings.gateway.public_url or "").rstrip("/")
    keys = HostKeys(services.redis, services.keys)
    await _reset_demo_keys(keys)
    host_key, _ = await keys.create(HOST, LABEL)

    catalog = Catalog(services.redis, services.keys)
    for sku, title, description, image, prices in PRODUCTS:
        data = {"title": title, "description": description,
                "image_url": f"/static/demo/{image}.svg", "prices": prices}  # fmt: skip
        # Seeded by an earlier run: keep what the host may have changed since.
        with contextlib.suppress(ConflictError):
            await catalog.create(HOST, sku, data)

    inventory = services.inventory
    show = SHOW
    record = await inventory.get_show(show)
    if record is not None and (record.get("host") != HOST or record.get("state") == "ended"):
        show = f"{SHOW}-{secrets.token_hex(3)}"
        record = None
    if record is None:
        await inventory.create_show(
            show, title="Sneaker night (demo)", host=HOST, video_url="/static/demo-stream.html"
        )
        record = await inventory.get_show(show)
    if record is not None and record.get("state") == "scheduled":
        await inventory.start_show(show)
    if not await inventory.drop_ids(show):
        sku, title, description, image, prices = PRODUCTS[1]
        await inventory.create_drop(show, DropSpec(
            id="mug-1", sku=sku, title=title, description=description, quantity=25, limit=2,
            prices=prices, image_url=f"/static/demo/{image}.svg",
        ))  # fmt: skip

    viewer_urls = []
    secret = services.settings.gateway.token_secret
    for viewer in VIEWERS:
        url = f"{base}/watch/{show}"
        if secret:
            ttl = max(services.settings.gateway.token_ttl_s, DEMO_TOKEN_TTL_S)
            url += "#token=" + tokens.mint(secret.reveal(), viewer, ttl)
        viewer_urls.append(url)
    return DemoInfo(
        base_url=base,
        show=show,
        host=HOST,
        host_key=host_key,
        panel_url=f"{base}/panel?show={show}#key={host_key}",
        viewer_urls=viewer_urls,
    )
