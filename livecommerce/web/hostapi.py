"""The host API (JSON over HTTP, mounted at ``/api``): products, shows, drops and timed offers,
live stats, and a server-sent-events stream for the control panel's dashboard.

Every route but ``/openapi.json`` needs ``Authorization: Bearer lch_...`` (a host API key, see
:mod:`livecommerce.web.hostkeys`); a key acts only on its own host's shows and products. Viewer
tokens (JWTs) are refused with 401. Errors are RFC 9457 problem details
(:mod:`livecommerce.web.problems`); a request refused for bad input changes nothing, because every
field is checked before the first write.

Routes are declared once in :data:`OPERATIONS`; the Starlette routes and the OpenAPI document
(:mod:`livecommerce.web.openapi`) are both generated from that table, so neither can miss a route.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from livecommerce.core.errors import (
    LivecommerceError,
)
from livecommerce.web.api_drops import (
    change_window,
    close_drop,
    create_drop,
    get_drop,
    list_drops,
    open_drop,
    restock_drop,
)
from livecommerce.web.api_products import (
    create_product,
    delete_product,
    get_product,
    list_products,
    patch_product,
    replace_product,
)
from livecommerce.web.api_shows import (
    create_show,
    end_show,
    get_show,
    list_shows,
    start_show,
    update_show,
)
from livecommerce.web.api_stats import (
    get_drop_stats,
    get_show_stats,
    list_orders,
    live,
)
from livecommerce.web.hostkeys import HostKey, HostKeys
from livecommerce.web.openapi import document
from livecommerce.web.operation import (
    Ctx,
    JSONResponse,
    Operation,
    bearer,
    owned_show,
    read_body,
    services_of,
)
from livecommerce.web.problems import from_error, problem

log = logging.getLogger("livecommerce.hostapi")


# -- handlers: identity and time ----------------------------------------------------------------
async def get_me(request: Request, ctx: Ctx) -> Response:
    server_time = await ctx.services.inventory.server_time_ms()
    return JSONResponse({"host": ctx.host, "key": ctx.key.public(), "server_time": server_time})


async def get_openapi(request: Request, ctx: Ctx) -> Response:
    return JSONResponse(document(OPERATIONS))


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
                key = await HostKeys(services.redis, services.keys).verify(bearer(request))
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
