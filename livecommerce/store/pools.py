"""Stock pools per SKU: drops allocate from the pool the store backend's on-hand level feeds.

The pool lives in the SKU's own hash tag, the drops in their show's, so allocating is a
cross-slot move in three idempotent steps (debit + intent in the SKU slot, apply in the show
slot, settle in the SKU slot) and giving back is another (settle the drop, credit the pool,
forget the record). :meth:`Pools.recover` replays whatever a crash left half-done. The design,
the ledger and the audit equation are in ``docs/stock-sync.md``.

A SKU without a reported on-hand level has no pool: its drops behave exactly as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import ConflictError, StoreError, ValidationError
from livecommerce.core.model import valid_id
from livecommerce.store.keys import Keyspace, drop_member, parse_drop_member
from livecommerce.store.scriptrunner import ScriptRunner


class PoolHost(Protocol):
    """What the pools need of the inventory that owns them (kept as a seam: no import circle)."""

    redis: aioredis.Redis
    keys: Keyspace
    runner: ScriptRunner

    def _common(self, show: str) -> list[str]: ...

    def _admin_result(self, raw: bytes, show: str, drop: str) -> dict[str, Any]: ...

    async def _index(self, show: str, drop: str, next_due: int) -> None: ...

    async def server_time_ms(self) -> int: ...


MAX_ON_HAND = 10**9
MAX_VERSION = 2**53
DELIVERY_RETENTION_MS = 86_400_000
"""How long an inbound delivery id is remembered (a redelivery after that is judged by version)."""


class Shortfall(StrEnum):
    """What happens to open drops when the backend reports less than the shows allocated."""

    REDUCE = "reduce"
    CLOSE = "close"
    KEEP = "keep"


@dataclass(frozen=True)
class Ledger:
    """One SKU's pool ledger (docs/stock-sync.md)."""

    sku: str
    on_hand: int
    version: int
    pool: int
    out: int
    back: int
    sold: int
    adjust: int
    short: int

    @property
    def allocated(self) -> int:
        """Units in drops: remaining or held (sold units not yet settled count here too)."""
        return self.out - self.back - self.sold

    def public(self) -> dict[str, int | str]:
        return {
            "sku": self.sku,
            "on_hand": self.on_hand,
            "version": self.version,
            "pool": self.pool,
            "allocated": self.allocated,
            "sold": self.sold,
            "adjust": self.adjust,
            "short": self.short,
        }

    @classmethod
    def parse(cls, sku: str, raw: dict[Any, Any]) -> Ledger:
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        names = ("on_hand", "version", "pool", "out", "back", "sold", "adjust", "short")
        return cls(sku, **{n: int(d.get(n) or 0) for n in names})


@dataclass(frozen=True)
class Update:
    """The result of applying one reported on-hand level."""

    sku: str
    status: str
    """``created`` (first level of the SKU), ``applied``, ``stale`` (older version) or
    ``duplicate`` (delivery id seen before): the last two changed nothing."""
    ledger: Ledger | None
    reduced: int = 0
    """Units taken back from open drops because the level fell below what they allocated."""


def check_level(sku: object, on_hand: object, version: object) -> tuple[str, int, int]:
    if not valid_id(sku):
        raise ValidationError("sku", "1-64 characters of A-Z a-z 0-9 _ -")
    for name, value, high in (("on_hand", on_hand, MAX_ON_HAND), ("version", version, MAX_VERSION)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
            raise ValidationError(name, f"expected an integer 0..{high}")
    return str(sku), int(on_hand), int(version)  # type: ignore[call-overload]


class Pools:
    """The SKU pools of one key prefix, driven through the inventory's script runner."""

    def __init__(self, inventory: PoolHost, shortfall: Shortfall = Shortfall.REDUCE) -> None:
        self.inv = inventory
        self.redis = inventory.redis
        self.keys = inventory.keys
        self.runner = inventory.runner
        self.shortfall = shortfall

    async def _r(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    # -- reading --------------------------------------------------------------------------------
    async def has_pool(self, sku: str) -> bool:
        return bool(await self._r(self.redis.exists(self.keys.sku(sku).pool)))

    async def ledger(self, sku: str) -> Ledger | None:
        if not valid_id(sku):
            return None
        raw = await self._r(self.redis.hgetall(self.keys.sku(sku).pool))
        return Ledger.parse(sku, raw) if raw else None

    async def ledgers(self, skus: list[str]) -> dict[str, Ledger]:
        wanted = [s for s in skus if valid_id(s)]
        if not wanted:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for sku in wanted:
            pipe.hgetall(self.keys.sku(sku).pool)
        raws = await self._r(pipe.execute())
        return {s: Ledger.parse(s, raw) for s, raw in zip(wanted, raws, strict=True) if raw}

    # -- inbound levels -------------------------------------------------------------------------
    async def report(
        self, sku: object, on_hand: object, version: object, *, delivery: str = "",
        source: str = "",
    ) -> Update:  # fmt: skip
        """Apply one on-hand level reported by the backend (one atomic step), then take units
        back from open drops when it fell below what they allocated (``self.shortfall``)."""
        sku, level, ver = check_level(sku, on_hand, version)
        k = self.keys.sku(sku)
        await self._r(self.redis.sadd(self.keys.pools, sku))  # write-ahead: the audit finds it
        raw = await self.runner.call(
            "pool_update",
            [k.pool, k.deliveries],
            [level, ver, delivery, DELIVERY_RETENTION_MS, source],
        )
        result = orjson.loads(raw)
        ledger = Ledger.parse(sku, result["ledger"]) if result.get("ledger") else None
        update = Update(sku, result["status"], ledger)
        if ledger is not None and ledger.short > 0 and update.status in ("applied", "created"):
            reduced, ledger = await self.cover_shortfall(sku)
            update = Update(sku, update.status, ledger, reduced)
        return update

    async def cover_shortfall(self, sku: str) -> tuple[int, Ledger | None]:
        """Take back unsold units from the SKU's open drops until the shortfall is covered."""
        ledger = await self.ledger(sku)
        if self.shortfall is Shortfall.KEEP or ledger is None or ledger.short == 0:
            return 0, ledger
        mode = "close" if self.shortfall is Shortfall.CLOSE else "reduce"
        taken = 0
        members = sorted(
            m.decode() for m in await self._r(self.redis.smembers(self.keys.sku(sku).drops))
        )
        for member in members:
            if ledger is None or ledger.short == 0:
                break
            show, drop = parse_drop_member(member)
            got, after = await self.settle_drop(show, drop, mode=mode, most=ledger.short)
            taken += got
            ledger = after or await self.ledger(sku)
        return taken, ledger

    # -- allocation: debit, apply, settle -------------------------------------------------------
    async def create_drop(self, show: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Create a drop whose ``quantity`` is allocated from its SKU's pool."""
        intent = {"kind": "create", "show": show, "drop": fields["id"], "sku": fields["sku"],
                  "units": fields["quantity"], "fields": fields}  # fmt: skip
        return await self._move(intent)

    async def restock(self, show: str, drop: str, sku: str, units: int) -> dict[str, Any]:
        """Add ``units`` from the pool to a pooled drop."""
        intent = {"kind": "restock", "show": show, "drop": drop, "sku": sku, "units": units}
        return await self._move(intent)

    async def _move(self, intent: dict[str, Any]) -> dict[str, Any]:
        tid = uuid.uuid4().hex
        intent = {**intent, "tid": tid, "at": await self.inv.server_time_ms()}
        await self.debit(intent)
        outcome, result = await self.apply(intent)
        await self.settle(intent["sku"], tid, outcome)
        if result is None:
            raise StoreError(f"transfer {tid}: the drop script gave no answer")
        return self.inv._admin_result(result, intent["show"], intent["drop"])["drop"]  # type: ignore[no-any-return]

    async def debit(self, intent: dict[str, Any]) -> None:
        """Step 1: units out of the pool, intent recorded (refusals raise, nothing changed)."""
        sku, show, drop = intent["sku"], intent["show"], intent["drop"]
        k = self.keys.sku(sku)
        member = drop_member(show, drop)
        pipe = self.redis.pipeline(transaction=False)  # write-ahead worklists
        pipe.sadd(self.keys.pending_xfers, sku)
        pipe.sadd(self.keys.pooled, member)
        await self._r(pipe.execute())
        raw = await self.runner.call(
            "pool_debit",
            [k.pool, k.xfer, k.drops],
            [intent["tid"], intent["units"], orjson.dumps(intent), member],
        )
        result = orjson.loads(raw)
        if not result["ok"]:
            reason = result["reason"]
            if reason == "insufficient_stock":
                raise ConflictError(
                    "insufficient_stock",
                    f"sku {sku}: {result['available']} unit(s) left in its pool, "
                    f"{intent['units']} asked",
                )
            raise ConflictError(reason, f"sku {sku}: {reason.replace('_', ' ')}")

    async def apply(self, intent: dict[str, Any]) -> tuple[str, bytes | None]:
        """Step 2: create or restock the drop under the transfer id (idempotent). Returns the
        recorded outcome (``applied`` or the refusal) and the script's reply."""
        show, drop, tid = intent["show"], intent["drop"], intent["tid"]
        dk = self.keys.drop(show, drop).as_list()
        common = self.inv._common(show)
        if intent["kind"] == "create":
            keys = [*dk, self.keys.drops(show), self.keys.show(show), self.keys.xfers(show)]
            args = [*common, orjson.dumps(intent["fields"]), tid]
            raw = await self.runner.call("drop_create", keys, args)
        else:
            keys = [*dk, self.keys.xfers(show)]
            raw = await self.runner.call("drop_restock", keys, [*common, intent["units"], tid])
        result = orjson.loads(raw)
        if result["ok"]:
            # Back on the worklists *before* the intent is settled (see docs/stock-sync.md).
            await self._r(self.redis.sadd(self.keys.pooled, drop_member(show, drop)))
            await self.inv._index(show, drop, int(result["next_due"]))
            return "applied", raw
        return str(result["reason"]), raw

    async def settle(self, sku: str, tid: str, outcome: str) -> None:
        """Step 3: forget the intent; a refused transfer's units go back to the pool."""
        k = self.keys.sku(sku)
        await self.runner.call("pool_settle", [k.pool, k.xfer], [tid, outcome])

    # -- giving back: settle the drop, credit the pool ------------------------------------------
    async def is_pooled(self, show: str, drop: str) -> tuple[bool, str]:
        pooled, sku = await self._r(
            self.redis.hmget(self.keys.drop(show, drop).drop, ["pooled", "sku"])
        )
        return pooled == b"1", (sku or b"").decode()

    async def after_close(self, show: str, drop: str) -> None:
        """Give a pooled drop's unsold units back right away (the recovery pass would too)."""
        if (await self.is_pooled(show, drop))[0]:
            await self.settle_drop(show, drop)

    async def settle_drop(
        self, show: str, drop: str, *, mode: str = "settle", most: int = 0
    ) -> tuple[int, Ledger | None]:
        """Settle a pooled drop: what it returned and sold is credited to its SKU's pool.
        Returns (units taken back by this call, the ledger after the credits)."""
        dk = self.keys.drop(show, drop)
        raw = await self.runner.call(
            "drop_settle",
            [*dk.as_list(), self.keys.returns(show, drop)],
            [*self.inv._common(show), mode, most],
        )
        result = orjson.loads(raw)
        if not result["ok"]:
            # Listed ahead of an allocation that was refused (or not applied yet): off the
            # worklist. A step 2 that does apply adds it back before its intent is settled.
            await self._r(self.redis.srem(self.keys.pooled, drop_member(show, drop)))
            return 0, None
        view = result["drop"]
        sku = view["sku"]
        k = self.keys.sku(sku)
        ledger: Ledger | None = None
        pending = result["pending"] if isinstance(result["pending"], list) else []
        credited = 0
        for sid, returned, sold in pending:
            credit = orjson.loads(
                await self.runner.call(
                    "pool_credit",
                    [k.pool, k.credited, k.adjusted],
                    [sid, returned, sold, sku, show, drop],
                )
            )
            if credit["ok"]:
                ledger = Ledger.parse(sku, credit["ledger"])
                await self._r(self.redis.hdel(self.keys.returns(show, drop), sid))
                credited += 1
        if result["idle"] and credited == len(pending):
            await self._retire(show, drop)
        elif result["taken"] and view["state"] == "closed":
            await self.inv._index(show, drop, 0)
        return int(result["taken"]), ledger

    async def _retire(self, show: str, drop: str) -> None:
        member = drop_member(show, drop)
        await self._r(self.redis.srem(self.keys.pooled, member))
        # A restock may have landed meanwhile: it re-adds the member after its step 2, but
        # check once more so the drop is never left off the worklist with units in it.
        again = orjson.loads(
            await self.runner.call(
                "drop_settle",
                [*self.keys.drop(show, drop).as_list(), self.keys.returns(show, drop)],
                [*self.inv._common(show), "settle", 0],
            )
        )
        if again["ok"] and not again["finished"]:
            await self._r(self.redis.sadd(self.keys.pooled, member))

    # -- recovery -------------------------------------------------------------------------------
    async def recover(self, grace_ms: int = 2000) -> tuple[int, int]:
        """Finish every move a crash (or a slow caller) left half-done, and settle every pooled
        drop. Safe with any number of processes at once. Returns (transfers, settlements)."""
        now = await self.inv.server_time_ms()
        transfers = 0
        for raw_sku in await self._r(self.redis.smembers(self.keys.pending_xfers)):
            sku = raw_sku.decode()
            k = self.keys.sku(sku)
            intents = await self._r(self.redis.hgetall(k.xfer))
            for tid, raw in intents.items():
                intent = orjson.loads(raw)
                if now - int(intent.get("at", 0)) < grace_ms:
                    continue
                outcome, _ = await self.apply(intent)
                await self.settle(sku, tid.decode(), outcome)
                transfers += 1
            if not intents:
                await self._r(self.redis.srem(self.keys.pending_xfers, sku))
                if await self._r(self.redis.hlen(k.xfer)):  # a debit landed meanwhile
                    await self._r(self.redis.sadd(self.keys.pending_xfers, sku))
        settled = 0
        for member in await self._r(self.redis.smembers(self.keys.pooled)):
            show, drop = parse_drop_member(member.decode())
            await self.settle_drop(show, drop)
            settled += 1
        # A shortfall left when the open drops had nothing unsold (all held): holds released
        # since then are taken back now.
        if self.shortfall is not Shortfall.KEEP:
            skus = sorted(m.decode() for m in await self._r(self.redis.smembers(self.keys.pools)))
            for sku, ledger in (await self.ledgers(skus)).items():
                if ledger.short > 0:
                    await self.cover_shortfall(sku)
        return transfers, settled
