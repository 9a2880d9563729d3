"""Host API handlers of the stock sync: the signed inbound endpoints of each source, the bulk
import, and the stock view of the control panel (routes in ``web.hostapi.OPERATIONS``).

- ``POST /api/sync/{source}``: a Standard Webhooks message from one source (``stocksync``).
- ``POST /api/sync/{source}/shopify``: a Shopify webhook (``shopify``), same effect.
- ``POST /api/stock``: a host's bulk import of on-hand levels (first sync), its products only.
- ``GET /api/stock``, ``GET /api/products/{sku}/stock``: on-hand, pool, allocated, sold.

The signed endpoints take no host key: the signature is the credential. A missing or forged
signature is 401 and a malformed body 422, in both cases before anything is written.
Formats and curl examples: ``docs/stock-in.md``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from livecommerce.core.errors import AuthError, ForbiddenError, NotFoundError, ValidationError
from livecommerce.core.model import CURRENCY
from livecommerce.store.pools import Ledger
from livecommerce.web import shopify
from livecommerce.web.operation import Ctx
from livecommerce.web.problems import MalformedBody
from livecommerce.web.stockin import StockIn
from livecommerce.web.stocksync import (
    ProductChange,
    Source,
    parse_levels,
    parse_message,
    parse_sources,
    verify_standard,
)

MAX_SIGNED_BODY = 256 * 1024
LOCATION = re.compile(r"^[0-9]{1,20}$")


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _source(ctx: Ctx, name: str) -> Source:
    configured = ctx.services.settings.inventory.sync_secrets
    sources = parse_sources(configured.reveal()) if configured else {}
    source = sources.get(name)
    if source is None:
        raise AuthError("unknown source, or a signature that does not match")
    return source


async def _raw(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SIGNED_BODY:
        raise MalformedBody("body", f"at most {MAX_SIGNED_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_SIGNED_BODY:
        raise MalformedBody("body", f"at most {MAX_SIGNED_BODY} bytes")
    return body


async def receive(request: Request, ctx: Ctx) -> Response:
    """A generic, Standard-Webhooks-signed update from one source."""
    source = _source(ctx, request.path_params["source"])
    body = await _raw(request)
    msg_id = verify_standard(source, request.headers, body, int(time.time()))
    parsed = parse_message(body)
    stockin = StockIn(ctx.services.inventory)
    if isinstance(parsed, ProductChange):
        results = [await stockin.product(parsed)]
    else:
        results = await stockin.levels(parsed, delivery=msg_id, source=source.name)
    return _json({"id": msg_id, "results": results})


async def receive_shopify(request: Request, ctx: Ctx) -> Response:
    """A Shopify webhook (``inventory_levels/update``, ``products/update``)."""
    source = _source(ctx, request.path_params["source"])
    body = await _raw(request)
    shopify.verify(source, request.headers.get("x-shopify-hmac-sha256", ""), body)
    topic = request.headers.get("x-shopify-topic", "")
    delivery = request.headers.get("x-shopify-webhook-id", "")[:256]
    triggered = request.headers.get("x-shopify-triggered-at", "")
    location = request.query_params.get("location", "")
    currency = request.query_params.get("currency", "")
    if location and not LOCATION.fullmatch(location):
        raise ValidationError("location", "a Shopify location id (digits)")
    if currency and not CURRENCY.fullmatch(currency):
        raise ValidationError("currency", "an ISO 4217 code like EUR")
    stockin = StockIn(ctx.services.inventory)
    reply: dict[str, Any] = {"topic": topic, "id": delivery}
    if topic == "inventory_levels/update":
        update = shopify.inventory_level(body, triggered)
        sku = await stockin.sku_of_item(source.name, update.inventory_item_id)
        level = update.level(sku) if sku is not None else None
        if location and update.location_id != location:
            reply["ignored"] = "other_location"
        elif sku is None:
            reply["ignored"] = "unmapped_item"  # products/update teaches the item's sku
        elif level is None:
            reply["ignored"] = "untracked"
        else:
            reply["results"] = await stockin.levels([level], delivery=delivery, source=source.name)
    elif topic == "products/update":
        update_p = shopify.product_update(body, currency, triggered)
        await stockin.learn_items(source.name, update_p.items)
        reply["results"] = [await stockin.product(change) for change in update_p.changes]
        reply["items"] = len(update_p.items)
    else:
        reply["ignored"] = "topic"  # 200: Shopify would retry anything else, for nothing
    return _json(reply)


async def import_levels(request: Request, ctx: Ctx) -> Response:
    """Bulk import of on-hand levels (a first sync) for the host's own products."""
    levels = parse_levels(ctx.body.get("levels"))
    delivery = ctx.body.get("delivery", "")
    if not isinstance(delivery, str) or len(delivery) > 256:
        raise ValidationError("delivery", "a string of at most 256 characters")
    for i, level in enumerate(levels):  # every sku checked before the first write
        try:
            await ctx.catalog.get(ctx.host, level.sku)
        except (NotFoundError, ForbiddenError) as exc:
            raise ValidationError(f"levels[{i}].sku", "not a product of your catalog") from exc
    results = await StockIn(ctx.services.inventory).levels(
        levels, delivery=delivery, source=f"import:{ctx.host}"
    )
    return _json({"results": results})


def stock_view(sku: str, title: str, ledger: Ledger | None) -> dict[str, Any]:
    if ledger is None:
        return {"sku": sku, "title": title, "pooled": False, "on_hand": None, "pool": None,
                "allocated": None, "sold": None, "short": None}  # fmt: skip
    view = ledger.public()
    view.pop("adjust", None)
    return {**view, "title": title, "pooled": True}


async def list_stock(request: Request, ctx: Ctx) -> Response:
    products = await ctx.catalog.list(ctx.host)
    ledgers = await ctx.services.inventory.pools.ledgers([p.sku for p in products])
    return _json({"stock": [stock_view(p.sku, p.title, ledgers.get(p.sku)) for p in products]})


async def get_stock(request: Request, ctx: Ctx) -> Response:
    product = await ctx.catalog.get(ctx.host, request.path_params["sku"])
    ledger = await ctx.services.inventory.pools.ledger(product.sku)
    return _json(stock_view(product.sku, product.title, ledger))
