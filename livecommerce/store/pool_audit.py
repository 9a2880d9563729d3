"""The audit of the SKU stock pools, beside the inventory audit (docs/stock-sync.md).

Per SKU, on one snapshot of its own slot::

    pool + out - back == on_hand + adjust       pool >= 0, short >= 0, pool == 0 or short == 0

and across slots, with every pooled drop of the SKU read after the ledger (the drops of one show
with its transfer log in one atomic read, ``audit_read.lua``)::

    pool + allocated to open drops + sold == reported on-hand + adjustments

where *allocated* is the drops' ``remaining + held``, plus settlements not yet credited, plus
transfers debited and not yet applied; *sold* is the drops' ``sold``. Also the ledger's ``sold``
equals what the drops settled. A cross-slot sum can see a move half-way between two reads, so a
mismatch is read again a few times before it is reported. ``livecommerce audit`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import StoreError
from livecommerce.store.keys import Keyspace, parse_drop_member
from livecommerce.store.scriptrunner import ScriptRunner, build, read_source

_ATTEMPTS = 5
_LEDGER = ("on_hand", "version", "pool", "out", "back", "sold", "adjust", "short")


@dataclass
class PoolAuditReport:
    skus: int = 0
    violations: list[str] = field(default_factory=list)
    ledgers: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per SKU: the ledger and the cross-slot sums the audit computed."""

    @property
    def ok(self) -> bool:
        return not self.violations


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return -(2**62)  # surfaces as a violation below, never as a crash


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


async def _check_sku(
    runner: ScriptRunner, keys: Keyspace, sku: str
) -> tuple[list[str], dict[str, int]]:
    k = keys.sku(sku)
    raw_ledger, raw_xfer, raw_members, raw_credited = await runner.call(
        "audit_read", [k.pool, k.xfer, k.drops, k.credited], []
    )
    raw_ledger, raw_xfer = _pairs(raw_ledger), _pairs(raw_xfer)
    problems: list[str] = []
    where = f"sku {sku}"
    if not raw_ledger:
        return [], {}  # left by a write-ahead SADD whose first level never landed
    ledger = {n: _int(raw_ledger.get(n)) for n in _LEDGER}
    pool, out, back = ledger["pool"], ledger["out"], ledger["back"]
    on_hand, adjust, short = ledger["on_hand"], ledger["adjust"], ledger["short"]
    if pool < 0:
        problems.append(f"{where}: pool={pool} is negative")
    if short < 0:
        problems.append(f"{where}: short={short} is negative")
    if pool > 0 and short > 0:
        problems.append(f"{where}: pool={pool} while short={short}")
    if pool + out - back != on_hand + adjust:
        problems.append(
            f"{where}: ledger pool {pool} + out {out} - back {back} = {pool + out - back} "
            f"!= on_hand {on_hand} + adjust {adjust} = {on_hand + adjust}"
        )
    intents = {_s(t): orjson.loads(v) for t, v in raw_xfer.items()}
    credited = {_s(m) for m in raw_credited}
    members = {_s(m) for m in raw_members}
    shows = {parse_drop_member(m)[0] for m in members} | {i["show"] for i in intents.values()}

    in_drops = sold = uncredited = uncredited_sold = settled_sold = 0
    xfers: dict[str, dict[str, str]] = {}
    for show in sorted(shows):
        wanted = sorted(d for s, d in map(parse_drop_member, members) if s == show)
        read = [keys.xfers(show)]
        for drop in wanted:
            read += [keys.drop(show, drop).drop, keys.returns(show, drop)]
        raw_xfers, *per_drop = await runner.call("audit_read", read, [])
        xfers[show] = _pairs(raw_xfers)
        for i in range(len(wanted)):
            rec, returns = _pairs(per_drop[2 * i]), _pairs(per_drop[2 * i + 1])
            if rec.get("pooled") != "1" or rec.get("sku") != sku:
                continue  # a refused transfer named a drop that is not this pool's
            in_drops += _int(rec.get("remaining")) + _int(rec.get("held"))
            sold += _int(rec.get("sold"))
            settled_sold += _int(rec.get("settled_sold"))
            for sid, raw in returns.items():
                if sid not in credited:
                    entry = orjson.loads(raw)
                    uncredited += int(entry["r"])
                    uncredited_sold += int(entry["s"])
    in_flight = sum(
        int(i["units"]) for t, i in intents.items() if xfers.get(i["show"], {}).get(t) != "applied"
    )
    allocated = in_drops + uncredited + in_flight
    if pool + allocated + sold != on_hand + adjust:
        problems.append(
            f"{where}: pool {pool} + allocated {allocated} (in drops {in_drops}, returning "
            f"{uncredited}, in flight {in_flight}) + sold {sold} = {pool + allocated + sold} "
            f"!= on_hand {on_hand} + adjustments {adjust} = {on_hand + adjust}"
        )
    if ledger["sold"] != settled_sold - uncredited_sold:
        problems.append(
            f"{where}: ledger sold {ledger['sold']} != settled by the drops "
            f"{settled_sold - uncredited_sold}"
        )
    sums = {**ledger, "allocated": allocated, "in_flight": in_flight, "drops_sold": sold}
    return problems, sums


async def audit_pools(
    redis: aioredis.Redis, keyspace: Keyspace, sku: str | None = None
) -> PoolAuditReport:
    """Check every SKU pool under the prefix (or one)."""
    report = PoolAuditReport()
    runner = ScriptRunner(redis, {"audit_read": build("audit_read", read_source("audit_read"))})
    try:
        members = await redis.smembers(keyspace.pools) if sku is None else [sku]
        skus = sorted(_s(s) for s in members)
        for one in skus:
            report.skus += 1
            problems: list[str] = []
            sums: dict[str, int] = {}
            for _ in range(_ATTEMPTS):
                problems, sums = await _check_sku(runner, keyspace, one)
                if not problems:
                    break
            report.violations.extend(problems)
            report.ledgers[one] = sums
    except (RedisError, StoreError) as exc:
        raise StoreError(f"pool audit: {exc}") from exc
    return report
