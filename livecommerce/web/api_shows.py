"""Host API handlers of shows (``/api/shows``): create, read, update, start, end."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from livecommerce.core.errors import (
    ConflictError,
    ValidationError,
)
from livecommerce.core.model import (
    MAX_TEXT,
    check_text,
    valid_id,
)
from livecommerce.web.operation import (
    Ctx,
    JSONResponse,
    new_id,
    owned_show,
)
from livecommerce.web.products import check_url


def show_public(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(record)
    for k in ("created_at", "started_at", "ended_at"):
        out[k] = int(record.get(k) or 0)
    out["viewer_path"] = f"/watch/{record['id']}"
    return out


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
