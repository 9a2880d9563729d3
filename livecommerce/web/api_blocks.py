"""Host API handlers of blocks (``/api/shows/{show}/blocks``): a host refuses a viewer id or a
client address in one of its shows; the gateway refuses their ``join`` and buy attempts at the
edge (docs/fraud.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from livecommerce.store.blocks import Blocks
from livecommerce.web.operation import Ctx, JSONResponse

BLOCK_FIELDS = ("kind", "value", "reason")


def _blocks(ctx: Ctx) -> Blocks:
    return Blocks(ctx.services.redis, ctx.services.keys)


async def list_blocks(request: Request, ctx: Ctx) -> Response:
    blocks = await _blocks(ctx).list(request.path_params["show"])
    return JSONResponse({"blocks": [b.public() for b in blocks]})


async def block(request: Request, ctx: Ctx) -> Response:
    body = ctx.body
    record = await _blocks(ctx).block(
        request.path_params["show"], body.get("kind"), body.get("value"), by=ctx.host,
        reason=body.get("reason", ""),
    )  # fmt: skip
    return JSONResponse(record.public(), status_code=201)


async def unblock(request: Request, ctx: Ctx) -> Response:
    removed = await _blocks(ctx).unblock(
        request.path_params["show"], ctx.body.get("kind"), ctx.body.get("value")
    )
    return JSONResponse({"removed": removed})
