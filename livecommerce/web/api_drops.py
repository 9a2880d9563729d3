"""Host API handlers of drops and timed offers (``/api/shows/{show}/drops``): create, open,
close, restock, change the window. Every field is checked before the first write.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from livecommerce.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from livecommerce.core.model import (
    MAX_QUANTITY,
    MAX_STOCK,
    MAX_TEXT,
    DropKind,
    DropSpec,
    check_text,
    valid_id,
)
from livecommerce.web.operation import (
    MAX_MS,
    Ctx,
    JSONResponse,
    integer,
    one_of,
    owned_drop,
    owned_show,
)
from livecommerce.web.products import Product, check_prices, check_url


# -- handlers: drops ----------------------------------------------------------------------------
async def list_drops(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    await owned_show(ctx, show)
    drops = await ctx.services.inventory.list_drops(show)
    return JSONResponse(
        {"drops": drops, "server_time": await ctx.services.inventory.server_time_ms()}
    )


@dataclass(frozen=True)
class DropRequest:
    """The fields of a create-drop body, each checked; the product fills what is left out."""

    sku: str
    id: str
    kind: DropKind
    quantity: int
    limit: int
    opens_at: int
    opens_in_ms: int
    closes_at: int
    duration_ms: int
    currency: str
    prices: dict[str, int] | None
    title: str | None
    description: str | None
    image_url: str | None


def read_drop_request(body: dict[str, Any]) -> DropRequest:
    """Every field of the body checked (ValidationError naming the first bad one)."""
    sku = body.get("sku")
    if not valid_id(sku):
        raise ValidationError("sku", "required: the sku of one of your products")
    assert isinstance(sku, str)
    drop_id = body.get("id", f"{sku[:50]}-{secrets.token_hex(3)}")
    if not valid_id(drop_id):
        raise ValidationError("id", "1-64 characters of A-Z a-z 0-9 _ -")
    kind_raw = body.get("kind", "drop")
    if kind_raw not in ("drop", "offer"):
        raise ValidationError("kind", "expected 'drop' or 'offer'")
    kind = DropKind(kind_raw)
    quantity = integer(body, "quantity", 1, MAX_STOCK)
    limit = integer(body, "limit", 1, MAX_QUANTITY, default=min(quantity, MAX_QUANTITY))
    if "opens_at" in body and "opens_in_ms" in body:
        raise ValidationError("opens_in_ms", "give opens_at or opens_in_ms, not both")
    opens_at = integer(body, "opens_at", 0, MAX_MS, default=0)
    opens_in = integer(body, "opens_in_ms", 0, MAX_MS, default=0)
    closes_at = integer(body, "closes_at", 0, MAX_MS, default=0)
    duration = integer(body, "duration_ms", 0, MAX_MS, default=0)
    if closes_at and duration:
        raise ValidationError("duration_ms", "give closes_at or duration_ms, not both")
    if kind is DropKind.OFFER and not (closes_at or duration):
        raise ValidationError("duration_ms", "a timed offer needs duration_ms or closes_at")
    prices = check_prices(body["prices"]) if "prices" in body else None
    currency = body.get("currency", "")
    if not isinstance(currency, str):
        raise ValidationError("currency", "expected an ISO 4217 code like EUR")
    title = check_text("title", body["title"], MAX_TEXT, required=True) if "title" in body else None
    description = (
        check_text("description", body["description"], 2000) if "description" in body else None
    )
    image_url = check_url("image_url", body["image_url"]) if "image_url" in body else None
    return DropRequest(
        sku=sku, id=drop_id, kind=kind, quantity=quantity, limit=limit, opens_at=opens_at,
        opens_in_ms=opens_in, closes_at=closes_at, duration_ms=duration, currency=currency,
        prices=prices, title=title, description=description, image_url=image_url,
    )  # fmt: skip


def drop_spec(req: DropRequest, product: Product, opens_at: int) -> DropSpec:
    """The drop to create: the request, with the product's prices and texts where it gave none."""
    prices = req.prices or product.prices
    if req.currency and req.currency not in prices:
        raise ValidationError("currency", f"{req.currency!r} has no price")
    return DropSpec(
        id=req.id,
        sku=req.sku,
        title=req.title if req.title is not None else product.title,
        quantity=req.quantity,
        limit=req.limit,
        prices=prices,
        currency=req.currency,
        kind=req.kind,
        opens_at=opens_at,
        closes_at=req.closes_at,
        duration_ms=req.duration_ms,
        description=req.description if req.description is not None else product.description,
        image_url=req.image_url if req.image_url is not None else product.image_url,
    )


async def create_drop(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    # Everything is checked before the first write; whose show it is, first of all.
    await owned_show(ctx, show)
    req = read_drop_request(ctx.body)
    try:
        product = await ctx.catalog.get(ctx.host, req.sku)
    except (NotFoundError, ForbiddenError) as exc:
        raise ValidationError("sku", f"no product {req.sku!r} in your catalog") from exc
    inventory = ctx.services.inventory
    opens_at = req.opens_at
    if req.opens_in_ms:
        opens_at = await inventory.server_time_ms() + req.opens_in_ms
    spec = drop_spec(req, product, opens_at)
    view = await inventory.create_drop(show, spec)
    return JSONResponse(
        view, status_code=201, headers={"Location": f"/api/shows/{show}/drops/{req.id}"}
    )


async def get_drop(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    return JSONResponse(await owned_drop(ctx, p["show"], p["drop"]))


async def open_drop(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    view = await owned_drop(ctx, p["show"], p["drop"])
    if view["state"] != "scheduled":
        raise ConflictError("already_open", f"drop {p['drop']} is {view['state']}, not scheduled")
    inventory = ctx.services.inventory
    now = await inventory.server_time_ms()
    closes_at = 0
    if view["closes_at"]:
        # Keep the window's length: a 60 s offer opened early still lasts 60 s.
        closes_at = now + max(view["closes_at"] - view["opens_at"], 1000)
    view = await inventory.change_window(p["show"], p["drop"], closes_at=closes_at, opens_at=now)
    return JSONResponse(view)


async def close_drop(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    await owned_drop(ctx, p["show"], p["drop"])
    return JSONResponse(await ctx.services.inventory.close(p["show"], p["drop"]))


async def restock_drop(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    units = integer(ctx.body, "quantity", 1, MAX_STOCK)
    await owned_drop(ctx, p["show"], p["drop"])
    return JSONResponse(await ctx.services.inventory.restock(p["show"], p["drop"], units))


async def change_window(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    body = ctx.body
    given = one_of(body, "closes_at", "closes_in_ms", "extend_ms")
    if given == "closes_at":
        value = integer(body, given, 0, MAX_MS)
    elif given == "closes_in_ms":
        value = integer(body, given, 1, MAX_MS)
    else:
        value = integer(body, given, -MAX_MS, MAX_MS)
        if value == 0:
            raise ValidationError(given, "must not be 0")
    view = await owned_drop(ctx, p["show"], p["drop"])
    inventory = ctx.services.inventory
    if given == "closes_at":
        closes_at = value
    elif given == "closes_in_ms":
        closes_at = await inventory.server_time_ms() + value
    else:
        if not view["closes_at"]:
            raise ValidationError(given, "the drop has no closing time; give closes_in_ms")
        closes_at = max(view["closes_at"] + value, 1)
    try:
        view = await inventory.change_window(p["show"], p["drop"], closes_at=closes_at)
    except ValidationError as exc:
        raise ValidationError(given, exc.message) from exc
    return JSONResponse(view)
