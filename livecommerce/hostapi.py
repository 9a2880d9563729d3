"""The host API (JSON over HTTP, mounted at ``/api``): products, shows, drops and timed offers,
live stats, and a server-sent-events stream for the control panel's dashboard.

Every route but ``/openapi.json`` needs ``Authorization: Bearer lch_...`` (a host API key, see
:mod:`livecommerce.hostkeys`); a key acts only on its own host's shows and products. Viewer
tokens (JWTs) are refused with 401. Errors are RFC 9457 problem details
(:mod:`livecommerce.problems`); a request refused for bad input changes nothing, because every
field is checked before the first write.

Routes are declared once in :data:`OPERATIONS`; the Starlette routes and the OpenAPI document
(:mod:`livecommerce.openapi`) are both generated from that table, so neither can miss a route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from livecommerce import api_privacy
from livecommerce.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    LivecommerceError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from livecommerce.hostkeys import HostKey, HostKeys
from livecommerce.inventory import (
    MAX_QUANTITY,
    MAX_STOCK,
    MAX_TEXT,
    DropKind,
    DropSpec,
    check_text,
)
from livecommerce.keys import valid_id
from livecommerce.operatorkeys import OperatorKeys
from livecommerce.problems import MalformedBody, from_error, problem
from livecommerce.products import Catalog, check_prices, check_url
from livecommerce.services import Services

log = logging.getLogger("livecommerce.hostapi")

MAX_BODY = 64 * 1024
MAX_MS = 2**53
HEARTBEAT_S = 2.0
"""Seconds between keep-alive comments (and viewer-count refreshes) on the live stream."""
VIEWERS_STALE_MS = 5_000
"""A gateway heartbeat older than this no longer counts (as in :mod:`livecommerce.gateway`)."""


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# -- request context -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Ctx:
    """What a handler gets: the app's services, the caller's key, and the parsed body."""

    services: Services
    key: HostKey
    body: dict[str, Any]

    @property
    def host(self) -> str:
        return self.key.host

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.services.redis, self.services.keys)


Handler = Callable[[Request, Ctx], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One route: method, path (under /api), handler, and what OpenAPI says about it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    body: str | None = None
    """Name of the request schema in :mod:`livecommerce.openapi` (None = no body)."""
    fields: tuple[str, ...] = ()
    """Body fields accepted; any other is refused (422 naming it)."""
    response: str = "Empty"
    status: int = 200
    auth: bool = True
    query: tuple[str, ...] = ()
    stream: bool = False
    role: str = "host"
    """Whose key the route takes: ``host`` (lch_) or ``operator`` (lco_, the privacy routes)."""


async def read_body(request: Request, op: Operation) -> dict[str, Any]:
    if op.body is None:
        return {}
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:  # refuse before reading it
        raise MalformedBody("body", f"at most {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise MalformedBody("body", f"at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody("body", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise MalformedBody("body", "expected a JSON object")
    for name in data:
        if name not in op.fields:
            raise ValidationError(name, "unknown field; expected one of " + ", ".join(op.fields))
    return data


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        raise AuthError("missing 'Authorization: Bearer lch_...' header")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("expected 'Authorization: Bearer lch_...'")
    return credentials.strip()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- small field readers (raise ValidationError naming the field) -------------------------------
def integer(
    body: dict[str, Any], name: str, low: int, high: int, default: int | None = None
) -> int:
    value = body.get(name, default)
    if value is None:
        raise ValidationError(name, "required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(name, "expected an integer")
    if not low <= value <= high:
        raise ValidationError(name, f"expected {low}..{high}")
    return value


def one_of(body: dict[str, Any], *names: str) -> str:
    given = [n for n in names if n in body]
    if len(given) != 1:
        raise ValidationError(names[0] if not given else given[1], "give exactly one of "
                              + ", ".join(names))  # fmt: skip
    return given[0]


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(4)


# -- stats: pure, fed with orders and drop views -------------------------------------------------
def order_from_stream(stream_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """An orders-stream entry (flat fields) as the order object of the API."""
    d = {k.decode(): v.decode() for k, v in fields.items()}
    order: dict[str, Any] = {"stream_id": stream_id, **d}
    order["id"] = order.pop("order_id", "")
    for k in ("quantity", "unit_price", "amount", "confirmed_at"):
        order[k] = int(d.get(k) or 0)
    return order


@dataclass
class Sales:
    """Sales counters of a show or of one drop (kept by the sale scripts, exact)."""

    orders: int = 0
    units: int = 0
    buyers: int = 0
    revenue: dict[str, int] = field(default_factory=dict)
    orders_by_currency: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_counters(cls, counters: dict[str, int]) -> Sales:
        return cls(
            orders=counters.get("orders", 0),
            units=counters.get("units", 0),
            buyers=counters.get("buyers", 0),
            revenue={k[4:]: v for k, v in counters.items() if k.startswith("rev:")},
            orders_by_currency={k[4:]: v for k, v in counters.items() if k.startswith("ord:")},
        )

    def public(self, viewers: int | None) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "units_sold": self.units,
            "buyers": self.buyers,
            "revenue": dict(sorted(self.revenue.items())),
            # Per currency, in minor units, rounded half up: amounts in different currencies
            # are never added together.
            "average_order_value": {
                cur: (2 * amount + n) // (2 * n)
                for cur, amount in sorted(self.revenue.items())
                if (n := self.orders_by_currency.get(cur, 0))
            },
            "conversion": round(self.buyers / viewers, 4) if viewers else None,
        }


def show_stats(
    show: str,
    drops: list[dict[str, Any]],
    sales: tuple[dict[str, int], dict[str, dict[str, int]]],
    viewers: int | None,
    now: int,
) -> dict[str, Any]:
    """Dashboard numbers: stock per drop from the drops, sales from the scripts' counters."""
    show_counters, drop_counters = sales
    drop_stats = []
    for d in drops:
        per_drop = Sales.from_counters(drop_counters.get(d["id"], {}))
        drop_stats.append({
            **{k: d[k] for k in ("id", "title", "sku", "kind", "state", "reason", "quantity",
                                 "remaining", "held", "sold", "limit", "opens_at", "closes_at",
                                 "currency", "prices")},
            **per_drop.public(viewers),
        })  # fmt: skip
    return {
        "show": show,
        "server_time": now,
        "viewers": viewers,
        **Sales.from_counters(show_counters).public(viewers),
        "drops": drop_stats,
    }


# -- ownership ----------------------------------------------------------------------------------
def show_public(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(record)
    for k in ("created_at", "started_at", "ended_at"):
        out[k] = int(record.get(k) or 0)
    out["viewer_path"] = f"/watch/{record['id']}"
    return out


async def owned_show(ctx: Ctx, show: str) -> dict[str, Any]:
    record = await ctx.services.inventory.get_show(show)
    if record is None:
        raise NotFoundError("show", show)
    if record.get("host") != ctx.host:
        raise ForbiddenError(f"show {show!r} belongs to another host")
    return record


async def owned_drop(ctx: Ctx, show: str, drop: str) -> dict[str, Any]:
    await owned_show(ctx, show)
    view = await ctx.services.inventory.get_drop(show, drop)
    if view is None:
        raise NotFoundError("drop", drop)
    return view


# -- handlers: identity and time ----------------------------------------------------------------
async def get_me(request: Request, ctx: Ctx) -> Response:
    server_time = await ctx.services.inventory.server_time_ms()
    return JSONResponse({"host": ctx.host, "key": ctx.key.public(), "server_time": server_time})


async def get_openapi(request: Request, ctx: Ctx) -> Response:
    from livecommerce.openapi import document

    return JSONResponse(document(OPERATIONS))


# -- handlers: products -------------------------------------------------------------------------
async def list_products(request: Request, ctx: Ctx) -> Response:
    products = await ctx.catalog.list(ctx.host)
    return JSONResponse({"products": [p.public() for p in products]})


async def create_product(request: Request, ctx: Ctx) -> Response:
    body = ctx.body
    product = await ctx.catalog.create(ctx.host, body.get("sku"), body)
    return JSONResponse(
        product.public(), status_code=201, headers={"Location": f"/api/products/{product.sku}"}
    )


async def get_product(request: Request, ctx: Ctx) -> Response:
    product = await ctx.catalog.get(ctx.host, request.path_params["sku"])
    return JSONResponse(product.public())


async def replace_product(request: Request, ctx: Ctx) -> Response:
    product = await ctx.catalog.update(
        ctx.host, request.path_params["sku"], ctx.body, partial=False
    )
    return JSONResponse(product.public())


async def patch_product(request: Request, ctx: Ctx) -> Response:
    product = await ctx.catalog.update(ctx.host, request.path_params["sku"], ctx.body, partial=True)
    return JSONResponse(product.public())


async def delete_product(request: Request, ctx: Ctx) -> Response:
    await ctx.catalog.delete(ctx.host, request.path_params["sku"])
    return Response(status_code=204)


# -- handlers: shows ----------------------------------------------------------------------------
async def list_shows(request: Request, ctx: Ctx) -> Response:
    inventory = ctx.services.inventory
    shows = []
    for show in await inventory.show_ids():
        record = await inventory.get_show(show)
        if record is not None and record.get("host") == ctx.host:
            shows.append(show_public(record))
    return JSONResponse({"shows": shows})


async def create_show(request: Request, ctx: Ctx) -> Response:
    body = ctx.body
    show = body.get("id", new_id("show-"))
    if not valid_id(show):
        raise ValidationError("id", "1-64 characters of A-Z a-z 0-9 _ -")
    title = check_text("title", body.get("title"), MAX_TEXT, required=True)
    video_url = check_url("video_url", body.get("video_url", ""))
    start = body.get("start", False)
    if not isinstance(start, bool):
        raise ValidationError("start", "expected true or false")
    inventory = ctx.services.inventory
    try:
        record = await inventory.create_show(show, title=title, host=ctx.host, video_url=video_url)
    except ConflictError as exc:
        raise ConflictError(exc.code, f"a show with id {show!r} exists already") from exc
    if start:
        record = await inventory.start_show(show)
    return JSONResponse(
        show_public(record), status_code=201, headers={"Location": f"/api/shows/{show}"}
    )


async def get_show(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    record = await owned_show(ctx, show)
    drops = await ctx.services.inventory.list_drops(show)
    return JSONResponse({**show_public(record), "drops": drops})


async def update_show(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    body = ctx.body
    title = None
    video_url = None
    if "title" in body:
        title = check_text("title", body["title"], MAX_TEXT, required=True)
    if "video_url" in body:
        video_url = check_url("video_url", body["video_url"])
    await owned_show(ctx, show)
    record = await ctx.services.inventory.update_show(show, title=title, video_url=video_url)
    return JSONResponse(show_public(record))


async def start_show(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    await owned_show(ctx, show)
    return JSONResponse(show_public(await ctx.services.inventory.start_show(show)))


async def end_show(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    await owned_show(ctx, show)
    return JSONResponse(show_public(await ctx.services.inventory.end_show(show)))


# -- handlers: drops ----------------------------------------------------------------------------
async def list_drops(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    await owned_show(ctx, show)
    drops = await ctx.services.inventory.list_drops(show)
    return JSONResponse(
        {"drops": drops, "server_time": await ctx.services.inventory.server_time_ms()}
    )


async def create_drop(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    body = ctx.body
    # Everything is checked before the first write; whose show it is, first of all.
    await owned_show(ctx, show)
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

    try:
        product = await ctx.catalog.get(ctx.host, sku)
    except (NotFoundError, ForbiddenError) as exc:
        raise ValidationError("sku", f"no product {sku!r} in your catalog") from exc
    prices = prices or product.prices
    if currency and currency not in prices:
        raise ValidationError("currency", f"{currency!r} has no price")
    inventory = ctx.services.inventory
    if opens_in:
        opens_at = await inventory.server_time_ms() + opens_in
    spec = DropSpec(
        id=drop_id,
        sku=sku,
        title=title if title is not None else product.title,
        quantity=quantity,
        limit=limit,
        prices=prices,
        currency=currency,
        kind=kind,
        opens_at=opens_at,
        closes_at=closes_at,
        duration_ms=duration,
        description=description if description is not None else product.description,
        image_url=image_url if image_url is not None else product.image_url,
    )
    view = await inventory.create_drop(show, spec)
    return JSONResponse(
        view, status_code=201, headers={"Location": f"/api/shows/{show}/drops/{drop_id}"}
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


# -- handlers: stats, orders, live stream -------------------------------------------------------
async def recent_orders(services: Services, show: str, n: int) -> tuple[list[dict[str, Any]], str]:
    """The newest ``n`` orders still in the show's orders stream (newest first), and the
    stream id to follow the stream from."""
    try:
        entries: Any = await services.redis.xrevrange(services.keys.orders(show), count=n)
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    orders = [order_from_stream(i.decode(), f) for i, f in entries]
    return orders, (entries[0][0].decode() if entries else "0-0")


async def viewer_count(services: Services, show: str, now: int) -> int:
    """Viewers connected now over every gateway process: the gateways' heartbeats in Redis."""
    try:
        raw: Any = await services.redis.hgetall(services.keys.viewers(show))
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    total = 0
    for value in raw.values():
        count, _, stamp = value.decode().partition(":")
        if count.isdigit() and stamp.isdigit() and now - int(stamp) < VIEWERS_STALE_MS:
            total += int(count)
    return total


async def stats_of(services: Services, show: str) -> dict[str, Any]:
    drops = await services.inventory.list_drops(show)
    sales = await services.inventory.sales(show)
    now = await services.inventory.server_time_ms()
    return show_stats(show, drops, sales, await viewer_count(services, show, now), now)


async def get_show_stats(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    await owned_show(ctx, show)
    return JSONResponse(await stats_of(ctx.services, show))


async def get_drop_stats(request: Request, ctx: Ctx) -> Response:
    p = request.path_params
    await owned_drop(ctx, p["show"], p["drop"])
    stats = await stats_of(ctx.services, p["show"])
    drop = next(d for d in stats["drops"] if d["id"] == p["drop"])
    return JSONResponse({**drop, "server_time": stats["server_time"],
                         "viewers": stats["viewers"]})  # fmt: skip


async def list_orders(request: Request, ctx: Ctx) -> Response:
    show = request.path_params["show"]
    raw_limit = request.query_params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise ValidationError("limit", "expected 1..1000")
    await owned_show(ctx, show)
    try:
        entries: Any = await ctx.services.redis.xrevrange(
            ctx.services.keys.orders(show), count=int(raw_limit)
        )
    except RedisError as exc:
        raise StoreError(f"redis: {exc}") from exc
    orders = [order_from_stream(i.decode(), f) for i, f in entries]
    return JSONResponse({"orders": orders})


def sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def live(request: Request, ctx: Ctx) -> Response:
    """Server-sent events for the dashboard: a snapshot, then every change as it happens.

    Events: ``snapshot`` (show, drops, stats, recent orders, server time), ``event`` (each live
    event of the show, as the viewers get it), ``order`` (each confirmed order, read from the
    orders stream with XREAD -- no consumer group, so the relay is not disturbed) and ``stats``
    (recomputed after changes, and with the viewer count every few seconds). Subscribing comes
    before the snapshot, and orders are read from the snapshot's last id: nothing is missed.
    """
    show = request.path_params["show"]
    record = await owned_show(ctx, show)
    services = ctx.services
    pubsub: Any = services.redis.pubsub()
    try:
        await pubsub.subscribe(services.keys.channel(show))
        orders, last_id = await recent_orders(services, show, 20)
        stats = await stats_of(services, show)
        drops = await services.inventory.list_drops(show)
    except (RedisError, StoreError) as exc:
        await pubsub.aclose()  # never leak the subscription's connection
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"redis: {exc}") from exc
    snapshot = {
        "show": show_public(record),
        "drops": drops,
        "stats": stats,
        "orders": orders,
        "server_time": stats["server_time"],
    }
    return StreamingResponse(
        _live_stream(services, show, pubsub, last_id, snapshot),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _live_stream(
    services: Services, show: str, pubsub: Any, last_id: str, snapshot: dict[str, Any],
) -> AsyncIterator[bytes]:  # fmt: skip
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=1000)

    async def events() -> None:
        async for message in pubsub.listen():
            if message.get("type") == "message":
                await queue.put(("event", orjson.loads(message["data"])))

    async def orders() -> None:
        nonlocal last_id
        key = services.keys.orders(show)
        while True:
            block = int(HEARTBEAT_S * 1000)
            reply: Any = await services.redis.xread({key: last_id}, block=block, count=100)
            for _stream, entries in reply or []:
                for stream_id, fields in entries:
                    last_id = stream_id.decode()
                    await queue.put(("order", order_from_stream(last_id, fields)))

    tasks = [asyncio.create_task(events()), asyncio.create_task(orders())]
    try:
        yield sse("snapshot", snapshot)
        last_stats = snapshot["stats"]
        while not services.draining:
            changed = False
            try:
                kind, data = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                kind, data = "", None
            batch = [] if kind == "" else [(kind, data)]
            while not queue.empty():
                batch.append(queue.get_nowait())
            for kind, data in batch:
                changed = True
                yield sse(kind, data)
            for task in tasks:
                if task.done():
                    return  # Redis went away: the panel reconnects and gets a fresh snapshot
            stats = await stats_of(services, show)
            if changed or stats["viewers"] != last_stats["viewers"]:
                last_stats = stats
                yield sse("stats", stats)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()


# -- the route table ----------------------------------------------------------------------------
PRODUCT_FIELDS = ("sku", "title", "description", "image_url", "prices")
DROP_FIELDS = (
    "id", "sku", "kind", "quantity", "limit", "opens_at", "opens_in_ms", "closes_at",
    "duration_ms", "prices", "currency", "title", "description", "image_url",
)  # fmt: skip
S = "/shows/{show}"
D = "/shows/{show}/drops/{drop}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/openapi.json", get_openapi, "getOpenApi", "This document", "meta",
              response="Any", auth=False),
    Operation("GET", "/me", get_me, "getMe", "The caller's host id and key", "meta",
              response="Me"),
    Operation("GET", "/products", list_products, "listProducts", "List your products",
              "products", response="ProductList"),
    Operation("POST", "/products", create_product, "createProduct", "Create a product",
              "products", body="ProductCreate", fields=PRODUCT_FIELDS, response="Product",
              status=201),
    Operation("GET", "/products/{sku}", get_product, "getProduct", "Get a product", "products",
              response="Product"),
    Operation("PUT", "/products/{sku}", replace_product, "replaceProduct",
              "Replace a product's title, description, image and prices", "products",
              body="ProductReplace", fields=PRODUCT_FIELDS[1:], response="Product"),
    Operation("PATCH", "/products/{sku}", patch_product, "updateProduct",
              "Change some fields of a product", "products", body="ProductPatch",
              fields=PRODUCT_FIELDS[1:], response="Product"),
    Operation("DELETE", "/products/{sku}", delete_product, "deleteProduct",
              "Delete a product (drops already made keep their copy)", "products", status=204),
    Operation("GET", "/shows", list_shows, "listShows", "List your shows", "shows",
              response="ShowList"),
    Operation("POST", "/shows", create_show, "createShow", "Create a show", "shows",
              body="ShowCreate", fields=("id", "title", "video_url", "start"), response="Show",
              status=201),
    Operation("GET", S, get_show, "getShow", "Get a show with its drops", "shows",
              response="ShowDetail"),
    Operation("PATCH", S, update_show, "updateShow", "Change a show's title or video URL",
              "shows", body="ShowPatch", fields=("title", "video_url"), response="Show"),
    Operation("POST", S + "/start", start_show, "startShow", "Go live", "shows",
              response="Show"),
    Operation("POST", S + "/end", end_show, "endShow", "End the show (closes every drop)",
              "shows", response="Show"),
    Operation("GET", S + "/stats", get_show_stats, "getShowStats", "Live stats of a show",
              "stats", response="ShowStats"),
    Operation("GET", S + "/orders", list_orders, "listOrders",
              "Most recent confirmed orders, newest first", "stats", response="OrderList",
              query=("limit",)),
    Operation("GET", S + "/live", live, "streamShow",
              "Server-sent events: snapshot, live events, orders, stats", "stats",
              response="EventStream", stream=True),
    Operation("GET", S + "/drops", list_drops, "listDrops", "List a show's drops", "drops",
              response="DropList"),
    Operation("POST", S + "/drops", create_drop, "createDrop",
              "Drop a product (now or scheduled), or start a timed offer", "drops",
              body="DropCreate", fields=DROP_FIELDS, response="Drop", status=201),
    Operation("GET", D, get_drop, "getDrop", "Get a drop", "drops", response="Drop"),
    Operation("POST", D + "/open", open_drop, "openDrop", "Open a scheduled drop now", "drops",
              response="Drop"),
    Operation("POST", D + "/close", close_drop, "closeDrop", "Close a drop early", "drops",
              response="Drop"),
    Operation("POST", D + "/restock", restock_drop, "restockDrop", "Add units to a drop",
              "drops", body="Restock", fields=("quantity",), response="Drop"),
    Operation("POST", D + "/window", change_window, "changeWindow",
              "Extend or shorten a drop's selling window", "drops", body="Window",
              fields=("closes_at", "closes_in_ms", "extend_ms"), response="Drop"),
    Operation("GET", D + "/stats", get_drop_stats, "getDropStats", "Live stats of one drop",
              "stats", response="DropStats"),
    Operation("GET", api_privacy.VIEWER, api_privacy.export_viewer, "exportViewer",
              "Everything stored about a viewer (operator key)", "privacy",
              response="PrivacyExport", role="operator"),
    Operation("DELETE", api_privacy.VIEWER, api_privacy.erase_viewer, "eraseViewer",
              "Erase a viewer's personal data (operator key)", "privacy",
              response="ErasureReport", role="operator"),
)  # fmt: skip


def _endpoint(ops: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
    allowed = ", ".join(sorted(ops))

    async def endpoint(request: Request) -> Response:
        op = ops.get(request.method)
        if op is None:
            return problem("method-not-allowed", 405, f"{request.method} is not allowed here",
                           headers={"Allow": allowed})  # fmt: skip
        try:
            services = services_of(request)
            if op.auth:
                verifier = OperatorKeys if op.role == "operator" else HostKeys
                key = await verifier(services.redis, services.keys).verify(bearer(request))
            else:
                key = HostKey(id="", host="", label="", prefix="", created_at=0)
            ctx = Ctx(services=services, key=key, body={})
            # Whose show or product it is comes before anything about the body: another host
            # learns nothing but 403 (404 for what does not exist), on every route.
            if op.auth and "show" in request.path_params:
                await owned_show(ctx, request.path_params["show"])
            if op.auth and "sku" in request.path_params:
                await ctx.catalog.get(ctx.host, request.path_params["sku"])
            body = await read_body(request, op)
            return await op.handler(request, Ctx(services=services, key=key, body=body))
        except LivecommerceError as exc:
            return from_error(exc)

    return endpoint


async def not_found(request: Request) -> Response:
    return problem("not-found", 404, f"no route {request.url.path}")


def routes() -> list[BaseRoute]:
    """The host API's routes, to be mounted at ``/api``."""
    by_path: dict[str, dict[str, Operation]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = op
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    table: list[BaseRoute] = [
        Route(path, _endpoint(ops), methods=methods, name=f"api:{path}")
        for path, ops in by_path.items()
    ]
    table.append(Route("/{rest:path}", not_found, methods=methods))
    return table
