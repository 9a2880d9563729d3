"""Live numbers for the host: show and drop stats (sales counters kept exact by the sale
scripts), the recent orders, and the server-sent-events stream of the control panel's
dashboard (``/api/shows/{show}/live``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from livecommerce.core.errors import (
    StoreError,
    ValidationError,
)
from livecommerce.store.services import Services
from livecommerce.web.api_shows import (
    show_public,
)
from livecommerce.web.operation import (
    Ctx,
    JSONResponse,
    owned_drop,
    owned_show,
)

HEARTBEAT_S = 2.0
"""Seconds between keep-alive comments (and viewer-count refreshes) on the live stream."""


VIEWERS_STALE_MS = 5_000
"""A gateway heartbeat older than this no longer counts (as in
:mod:`livecommerce.realtime.gateway`)."""


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
