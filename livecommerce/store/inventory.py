"""Stock, holds and orders: every operation one atomic Lua step on Redis.

``reserve`` takes units into a hold that expires; ``confirm`` turns a hold into an order and
appends it to the show's orders stream (the outbox) in the same step; ``cancel`` and expiry
return the units; ``buy_now`` reserves and confirms at once. A refusal is a result, not an
exception: :class:`Outcome` with ``ok=False`` and a :class:`Reason`.

Idempotency: ``reserve``/``buy_now`` remember the first result of a (viewer, request id) for
``idempotency_ttl_s``; ``confirm``/``cancel`` are idempotent by hold. Windows are judged by the
server's clock. Bad input raises :class:`~livecommerce.core.errors.ValidationError` before anything
is sent to Redis (quantities are refused with ``invalid_quantity`` instead, as the protocol
promises).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from livecommerce.core.config import Settings
from livecommerce.core.errors import ConflictError, NotFoundError, StoreError, ValidationError
from livecommerce.core.model import (
    CURRENCY,
    MAX_QUANTITY,
    MAX_STOCK,
    MAX_TEXT,
    REQUEST_ID,
    DropSpec,
    Outcome,
    Reason,
    check_id,
    check_int,
    check_text,
    drop_view,
    parse_hold_id,
    valid_id,
)
from livecommerce.store.durability import AofBarrier
from livecommerce.store.keys import Keyspace, drop_member, parse_drop_member
from livecommerce.store.scriptrunner import ScriptRunner, load_all


class Inventory:
    """Stock operations for every show under one key prefix."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keyspace: Keyspace,
        settings: Settings,
        *,
        script_overrides: dict[str, str] | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keyspace
        self.settings = settings
        self.runner = ScriptRunner(redis, load_all(script_overrides))
        self.durability = AofBarrier(redis, keyspace.aof_barrier, enabled=settings.redis.wait_aof)
        self._active_batch: set[str] = set()
        self._active_flush: asyncio.Task[None] | None = None
        inv = settings.inventory
        self._hold_ttl_ms = inv.hold_ttl_s * 1000
        self._common_tail = (str(inv.event_log_size), str(inv.ending_soon_s * 1000))

    async def load(self) -> None:
        """Load the scripts and find out what durability the server offers."""
        await self.runner.load()
        await self.durability.detect()

    # -- helpers -----------------------------------------------------------------------------
    def _common(self, show: str) -> list[str]:
        return [self.keys.channel(show), *self._common_tail]

    async def _drop_call(self, name: str, show: str, drop: str, *extra: Any) -> Any:
        keys = self.keys.drop(show, drop).as_list()
        return await self.runner.call(name, keys, [*self._common(show), *extra])

    async def _redis(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    # -- shows --------------------------------------------------------------------------------
    async def _show_update(self, show: str, action: str, fields: dict[str, str]) -> dict[str, Any]:
        raw = await self.runner.call(
            "show_update",
            [self.keys.show(show), self.keys.events(show)],
            [
                self.keys.channel(show),
                str(self.settings.inventory.event_log_size),
                action,
                orjson.dumps(fields),
            ],
        )
        result: dict[str, Any] = orjson.loads(raw)
        if not result["ok"]:
            reason = result["reason"]
            if reason == "unknown_show":
                raise NotFoundError("show", show)
            raise ConflictError(reason, f"show {show}: {reason.replace('_', ' ')}")
        show_record: dict[str, Any] = result["show"]
        return show_record

    async def create_show(
        self, show: str, *, title: str, host: str = "", video_url: str = ""
    ) -> dict[str, Any]:
        check_id("id", show)
        check_text("title", title, MAX_TEXT, required=True)
        check_text("host", host, 64)
        check_text("video_url", video_url, 2048)
        record = await self._show_update(
            show, "create", {"id": show, "title": title, "host": host, "video_url": video_url}
        )
        # The relay's consumer group exists from the first moment, at id 0: no order is missed
        # and the stream is never trimmed past what the group has not acknowledged.
        try:
            await self.redis.xgroup_create(
                self.keys.orders(show), self.settings.relay.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreError(f"redis: {exc}") from exc
        await self._redis(self.redis.zadd(self.keys.shows, {show: int(record["created_at"])}))
        return record

    async def update_show(self, show: str, *, title: str | None = None,
                          video_url: str | None = None) -> dict[str, Any]:  # fmt: skip
        fields: dict[str, str] = {}
        if title is not None:
            check_text("title", title, MAX_TEXT, required=True)
            fields["title"] = title
        if video_url is not None:
            check_text("video_url", video_url, 2048)
            fields["video_url"] = video_url
        return await self._show_update(check_id("id", show), "update", fields)

    async def start_show(self, show: str) -> dict[str, Any]:
        return await self._show_update(check_id("id", show), "start", {})

    async def end_show(self, show: str) -> dict[str, Any]:
        """End the show and close every drop of it for good (no restock, no new window).

        Drops are closed before the show ends and once more after (a drop created in between),
        and a retry after a failure part-way finishes the job instead of stopping at
        ``show_ended``.
        """
        check_id("id", show)
        await self._close_all(show)
        try:
            record = await self._show_update(show, "end", {})
        except ConflictError as exc:
            if exc.code != "show_ended":
                raise
            await self._close_all(show)  # finish what an earlier, interrupted call began
            raise
        await self._close_all(show)
        return record

    async def _close_all(self, show: str) -> None:
        for drop in await self.drop_ids(show):
            result = self._admin_result(
                await self._drop_call("drop_close", show, drop, "final"), show, drop
            )
            await self._index(show, drop, int(result["next_due"]))

    async def get_show(self, show: str) -> dict[str, Any] | None:
        if not valid_id(show):
            return None
        raw = await self._redis(self.redis.hgetall(self.keys.show(show)))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def show_ids(self) -> list[str]:
        return [s.decode() for s in await self._redis(self.redis.zrange(self.keys.shows, 0, -1))]

    # -- drops --------------------------------------------------------------------------------
    async def create_drop(self, show: str, spec: DropSpec) -> dict[str, Any]:
        check_id("show", show)
        spec = spec.validated()
        fields = {
            "id": spec.id,
            "show": show,
            "sku": spec.sku,
            "title": spec.title,
            "kind": str(spec.kind),
            "description": spec.description,
            "image_url": spec.image_url,
            "quantity": spec.quantity,
            "limit": spec.limit,
            "prices": spec.prices,
            "currency": spec.currency,
            "opens_at": spec.opens_at,
            "closes_at": spec.closes_at,
            "duration_ms": spec.duration_ms,
        }
        keys = [
            *self.keys.drop(show, spec.id).as_list(),
            self.keys.drops(show),
            self.keys.show(show),
        ]
        raw = await self.runner.call(
            "drop_create", keys, [*self._common(show), orjson.dumps(fields)]
        )
        result = self._admin_result(raw, show, spec.id)
        await self._index(show, spec.id, int(result["next_due"]))
        drop: dict[str, Any] = result["drop"]
        return drop

    def _admin_result(self, raw: bytes, show: str, drop: str) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(raw)
        if result["ok"]:
            return result
        reason = result["reason"]
        if reason == "unknown_drop":
            raise NotFoundError("drop", drop)
        if reason == "unknown_show":
            raise NotFoundError("show", show)
        if reason == "invalid_quantity":
            raise ValidationError("quantity", f"expected 1..{MAX_STOCK}")
        if reason == "invalid_window":
            raise ValidationError("closes_at", "must be in the future, after the opening")
        detail = f" ({result['closed_reason']})" if result.get("closed_reason") else ""
        raise ConflictError(reason, f"drop {drop}: {reason.replace('_', ' ')}{detail}")

    async def _index(self, show: str, drop: str, next_due: int) -> None:
        """Keep the cross-slot worklists of the scheduler and reaper up to date."""
        member = drop_member(show, drop)
        pipe = self.redis.pipeline(transaction=False)
        if next_due > 0:
            pipe.zadd(self.keys.schedule, {member: next_due})
        else:
            pipe.zrem(self.keys.schedule, member)
        pipe.sadd(self.keys.active, member)
        await self._redis(pipe.execute())

    async def restock(self, show: str, drop: str, units: int) -> dict[str, Any]:
        check_id("show", show)
        check_id("drop", drop)
        check_int("quantity", units, 1, MAX_STOCK)
        result = self._admin_result(
            await self._drop_call("drop_restock", show, drop, units), show, drop
        )
        await self._index(show, drop, int(result["next_due"]))
        view: dict[str, Any] = result["drop"]
        return view

    async def close(self, show: str, drop: str) -> dict[str, Any]:
        check_id("show", show)
        check_id("drop", drop)
        result = self._admin_result(await self._drop_call("drop_close", show, drop), show, drop)
        await self._index(show, drop, 0)
        view: dict[str, Any] = result["drop"]
        return view

    async def change_window(
        self, show: str, drop: str, *, closes_at: int, opens_at: int | None = None
    ) -> dict[str, Any]:
        """Extend or shorten the window (absolute server-clock ms; closes_at 0 = no end)."""
        check_id("show", show)
        check_id("drop", drop)
        check_int("closes_at", closes_at, 0, 2**53)
        if opens_at is not None:
            check_int("opens_at", opens_at, 0, 2**53)
        raw = await self._drop_call(
            "drop_window", show, drop, closes_at, -1 if opens_at is None else opens_at
        )
        result = self._admin_result(raw, show, drop)
        await self._index(show, drop, int(result["next_due"]))
        view: dict[str, Any] = result["drop"]
        return view

    async def get_drop(self, show: str, drop: str) -> dict[str, Any] | None:
        if not (valid_id(show) and valid_id(drop)):
            return None
        raw = await self._redis(self.redis.hgetall(self.keys.drop(show, drop).drop))
        return drop_view(raw) if raw else None

    async def drop_ids(self, show: str) -> list[str]:
        if not valid_id(show):
            return []
        ids = await self._redis(self.redis.zrange(self.keys.drops(show), 0, -1))
        return [d.decode() for d in ids]

    async def list_drops(self, show: str) -> list[dict[str, Any]]:
        ids = await self.drop_ids(show)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for drop in ids:
            pipe.hgetall(self.keys.drop(show, drop).drop)
        raws = await self._redis(pipe.execute())
        return [drop_view(raw) for raw in raws if raw]

    async def sales(self, show: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Sales counters of a show and of each of its drops, kept by the sale scripts.

        Keys: ``orders``, ``buyers``, ``units``, ``rev:<CUR>`` (minor units), ``ord:<CUR>``
        (orders in that currency). Exact even after the relay trimmed the orders stream.
        """
        ids = await self.drop_ids(show)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.seq(show))
        for drop in ids:
            pipe.hgetall(self.keys.drop(show, drop).drop)
        raws = await self._redis(pipe.execute())

        def counters(raw: dict[bytes, bytes]) -> dict[str, int]:
            out = {"orders": 0, "buyers": 0, "units": 0}
            for k, v in raw.items():
                name = k.decode()
                if name in ("orders", "buyers", "units") or name.startswith(("rev:", "ord:")):
                    out[name] = int(v)
            return out

        per_drop = {}
        for drop, raw in zip(ids, raws[1:], strict=True):
            per_drop[drop] = {**counters(raw), "units": int(raw.get(b"sold", 0))}
        return counters(raws[0]), per_drop

    async def server_time_ms(self) -> int:
        sec, usec = await self._redis(self.redis.time())
        return int(sec) * 1000 + int(usec) // 1000

    # -- buying -------------------------------------------------------------------------------
    def _buy_args(
        self, show: str, drop: str, viewer: str, quantity: object, request_id: str,
        currency: str | None, payment_reference: str,
    ) -> Outcome | None:  # fmt: skip
        check_id("show", show)
        check_id("viewer", viewer)
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise ValidationError("request_id", "1-64 characters of A-Z a-z 0-9 _ . : -")
        if currency is not None and (
            not isinstance(currency, str) or not CURRENCY.fullmatch(currency)
        ):
            raise ValidationError("currency", "an ISO 4217 code like EUR")
        check_text("payment_reference", payment_reference, 128)
        if not valid_id(drop):
            return Outcome(ok=False, now_ms=0, reason=Reason.UNKNOWN_DROP)
        if (
            not isinstance(quantity, int)
            or isinstance(quantity, bool)
            or not 1 <= quantity <= MAX_QUANTITY
        ):
            return Outcome(ok=False, now_ms=0, reason=Reason.INVALID_QUANTITY,
                           detail={"max": MAX_QUANTITY})  # fmt: skip
        return None

    async def _reserve(
        self, mode: str, show: str, drop: str, viewer: str, quantity: int, request_id: str,
        currency: str | None, payment_reference: str,
    ) -> Outcome:  # fmt: skip
        early = self._buy_args(
            show, drop, viewer, quantity, request_id, currency, payment_reference
        )
        if early is not None:
            return early
        keys = [*self.keys.drop(show, drop).as_list(), self.keys.request(show, viewer, request_id)]
        args = [
            *self._common(show),
            viewer,
            quantity,
            request_id,
            self._hold_ttl_ms,
            currency or "",
            mode,
            payment_reference,
            self.settings.inventory.idempotency_ttl_s,
        ]
        outcome = Outcome.parse(await self.runner.call("drop_reserve", keys, args))
        if outcome.ok and not outcome.replay and outcome.hold is not None:
            # Only a hold needs the reaper; a sale (buy mode) leaves nothing to expire.
            await self._mark_active(drop_member(show, drop))
        return await self._durable(outcome)

    async def _mark_active(self, member: str) -> None:
        """SADD to the reaper's worklist. Concurrent reserves share one round trip: one SADD per
        burst instead of one pool connection per reserve (a burst of hundreds of holds would
        otherwise exhaust the pool and fail reserves that had already succeeded)."""
        self._active_batch.add(member)
        if self._active_flush is None or self._active_flush.done():
            self._active_flush = asyncio.create_task(self._flush_active())
        await asyncio.shield(self._active_flush)

    async def _flush_active(self) -> None:
        while self._active_batch:  # members added while a SADD is in flight go in the next one
            members, self._active_batch = self._active_batch, set()
            await self._redis(self.redis.sadd(self.keys.active, *members))

    async def _durable(self, outcome: Outcome) -> Outcome:
        if outcome.order is None:
            return outcome
        durable = await self.durability.wait()
        return Outcome(**{**outcome.__dict__, "durable": durable})

    async def reserve(
        self, show: str, drop: str, viewer: str, quantity: int, request_id: str,
        *, currency: str | None = None,
    ) -> Outcome:  # fmt: skip
        """Hold ``quantity`` units for ``viewer`` until the hold expires."""
        return await self._reserve(
            "reserve", show, drop, viewer, quantity, request_id, currency, ""
        )

    async def buy_now(
        self, show: str, drop: str, viewer: str, quantity: int, request_id: str,
        payment_reference: str, *, currency: str | None = None,
    ) -> Outcome:  # fmt: skip
        """Reserve and confirm in one step (one-tap checkout with saved payment details)."""
        return await self._reserve(
            "buy", show, drop, viewer, quantity, request_id, currency, payment_reference
        )

    async def confirm(
        self, show: str, hold_id: str, viewer: str, payment_reference: str
    ) -> Outcome:
        """Turn a live hold into an order (and its outbox entry). Idempotent per hold."""
        check_id("show", show)
        check_id("viewer", viewer)
        check_text("payment_reference", payment_reference, 128)
        drop, n = parse_hold_id(hold_id)
        raw = await self._drop_call("hold_confirm", show, drop, n, viewer, payment_reference)
        return await self._durable(Outcome.parse(raw))

    async def cancel(self, show: str, hold_id: str, viewer: str) -> Outcome:
        """Give a hold's units back. Idempotent per hold."""
        check_id("show", show)
        check_id("viewer", viewer)
        drop, n = parse_hold_id(hold_id)
        return Outcome.parse(await self._drop_call("hold_cancel", show, drop, n, viewer))

    # -- time ---------------------------------------------------------------------------------
    async def tick(self, show: str, drop: str, batch: int = 1000) -> tuple[int, int, int]:
        """Apply due transitions and release expired holds of one drop.

        Returns (holds released, next due ms or 0, active holds left).
        """
        reply = await self._drop_call("holds_reap", show, drop, batch)
        released, next_due, active = (int(x) for x in reply)
        return released, next_due, active

    async def next_due_ms(self) -> int | None:
        """Server-clock ms of the earliest scheduled transition of any drop, or None."""
        first = await self._redis(self.redis.zrange(self.keys.schedule, 0, 0, withscores=True))
        return int(first[0][1]) if first else None

    async def run_due(self, limit: int = 500) -> int:
        """One pass of the scheduler and the reaper over every drop that may need it.

        Safe with any number of processes doing the same: each transition and each release
        happens once, inside a script. Returns how many holds were released.
        """
        now = await self.server_time_ms()
        due = await self._redis(
            self.redis.zrangebyscore(self.keys.schedule, "-inf", now, start=0, num=limit)
        )
        active = await self._redis(self.redis.srandmember(self.keys.active, limit))
        released = 0
        for member in {m.decode() for m in (*due, *(active or []))}:
            show, drop = parse_drop_member(member)
            freed, next_due, holds_left = await self.tick(show, drop)
            released += freed
            view = await self.get_drop(show, drop)
            pipe = self.redis.pipeline(transaction=False)
            if next_due > 0:
                pipe.zadd(self.keys.schedule, {member: next_due})
            else:
                pipe.zrem(self.keys.schedule, member)
            if holds_left == 0 and (view is None or view["state"] == "closed"):
                pipe.srem(self.keys.active, member)
            await self._redis(pipe.execute())
            if holds_left == 0:
                # A restock and a reserve may have landed since the tick: never leave a drop
                # with live holds off the reaper's worklist.
                holds = await self._redis(self.redis.zcard(self.keys.drop(show, drop).holds))
                if holds:
                    await self._redis(self.redis.sadd(self.keys.active, member))
        return released
