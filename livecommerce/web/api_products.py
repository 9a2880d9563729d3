"""Host API handlers of the product catalog (``/api/products``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from livecommerce.web.operation import (
    Ctx,
    JSONResponse,
)


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
