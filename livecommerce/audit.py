"""The audit: checks every stock and order invariant on a consistent snapshot of Redis.

Each show is read in one MULTI/EXEC transaction (all of a show's keys share one hash tag), so
the snapshot is one instant between two scripts. The invariants, per drop::

    remaining + held + sold == quantity + restocked         (no unit made or lost)
    remaining >= 0, held >= 0, sold >= 0                      (no oversell)
    held == sum of the active holds (holds zset <-> hold records in state "held")
    held[v] == the viewer's active holds, bought[v] summed == sold
    held[v] + bought[v] <= limit                              (per-viewer limit)
    sold == sum of the orders index, one index entry per order number issued
    a confirmed hold's order is in the orders index with the hold's quantity

and per show, on the orders stream (the outbox)::

    every entry's order id appears once, in an entry whose order is in its drop's orders
    index with the same quantity (no order without its decrement);
    entries-added (XINFO STREAM; counts trimmed entries too) == orders across the show's drops;
    entries are only ever removed from the front (the relay trims acknowledged orders);
    while nothing was trimmed, every indexed order has its entry (exactly once).

An erasure (:mod:`livecommerce.erasure`) deletes a viewer's entries from the stream and keeps
their pseudonymised copies in the show's erasure ledger under the same entry ids: the checks
read stream and ledger together, and count ``order.erased`` entries apart (``erasures``).

``livecommerce audit [--show S] [--json]`` runs it and exits 1 when anything is violated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from livecommerce.errors import StoreError
from livecommerce.keys import Keyspace

log = logging.getLogger("livecommerce.audit")

HOLD_STATES = ("held", "confirmed", "cancelled", "expired")
DROP_STATES = ("scheduled", "open", "closed")
_SNAPSHOT_ATTEMPTS = 5
ERASED_TYPE = "order.erased"
"""``type`` of an outbox entry announcing an erasure (livecommerce.erasure), not a sale."""


@dataclass
class AuditReport:
    """What the audit found. ``ok`` is False as soon as one invariant is violated."""

    shows: int = 0
    drops: int = 0
    orders: int = 0
    units_sold: int = 0
    holds: int = 0
    """Active holds (in the holds sets) at the instant of the snapshot."""
    units_held: int = 0
    units_remaining: int = 0
    stream_entries: int = 0
    """Entries present in the orders streams (fewer than ``orders`` once the relay trimmed)."""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def merge(self, other: AuditReport) -> None:
        for name in ("shows", "drops", "orders", "units_sold", "holds", "units_held",
                     "units_remaining", "stream_entries"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.violations.extend(other.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "shows": self.shows,
            "drops": self.drops,
            "orders": self.orders,
            "units_sold": self.units_sold,
            "holds": self.holds,
            "units_held": self.units_held,
            "units_remaining": self.units_remaining,
            "stream_entries": self.stream_entries,
            "violations": list(self.violations),
        }

    def summary(self) -> str:
        head = "OK" if self.ok else f"{len(self.violations)} VIOLATION(S)"
        lines = [
            f"audit {head}: {self.shows} show(s), {self.drops} drop(s), {self.orders} order(s), "
            f"{self.units_sold} unit(s) sold, {self.holds} active hold(s) "
            f"({self.units_held} unit(s)), {self.units_remaining} unit(s) remaining, "
            f"{self.stream_entries} stream entries"
        ]
        lines.extend(f"  - {v}" for v in self.violations)
        return "\n".join(lines)


# -- snapshot ---------------------------------------------------------------------------------


@dataclass
class _DropSnapshot:
    id: str
    record: dict[str, str]
    holds: dict[str, float]
    holdrec: dict[str, str]
    held: dict[str, str]
    bought: dict[str, str]
    orders_index: dict[str, str]


@dataclass
class _ShowSnapshot:
    show: str
    drop_ids: list[str]
    drops: dict[str, _DropSnapshot]
    seq: dict[str, str]
    stream: list[tuple[str, dict[str, str]]] | None
    """Orders stream entries, None when the stream does not exist."""
    stream_info: dict[str, Any] | None
    ledger: dict[str, str] = field(default_factory=dict)
    """Erasure ledger: entry id -> pseudonymised copy of an outbox entry erasure deleted."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _map(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


async def _snapshot(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, only: str | None
) -> _ShowSnapshot:
    """Every key of the show's drops (or of one drop) read in one MULTI/EXEC."""
    for _ in range(_SNAPSHOT_ATTEMPTS):
        drop_ids = [_s(d) for d in await redis.zrange(keyspace.drops(show), 0, -1)]
        wanted = [only] if only is not None else drop_ids
        pipe = redis.pipeline(transaction=True)
        pipe.zrange(keyspace.drops(show), 0, -1)
        pipe.hgetall(keyspace.seq(show))
        pipe.xrange(keyspace.orders(show))
        pipe.xinfo_stream(keyspace.orders(show))
        pipe.hgetall(keyspace.erased(show))
        for drop in wanted:
            k = keyspace.drop(show, drop)
            pipe.hgetall(k.drop)
            pipe.zrange(k.holds, 0, -1, withscores=True)
            pipe.hgetall(k.holdrec)
            pipe.hgetall(k.held)
            pipe.hgetall(k.bought)
            pipe.hgetall(k.orders_index)
        results = await pipe.execute(raise_on_error=False)
        ids_now, seq, entries, info, ledger, *per_drop = results
        if isinstance(ids_now, Exception) or [_s(d) for d in ids_now] != drop_ids:
            continue  # a drop was created between the two reads: take the snapshot again
        for r in (seq, entries, ledger, *per_drop):
            if isinstance(r, Exception):
                raise StoreError(f"audit snapshot of show {show}: {r}") from r
        stream: list[tuple[str, dict[str, str]]] | None = None
        stream_info: dict[str, Any] | None = None
        if isinstance(info, ResponseError):
            if entries:  # pragma: no cover - XINFO failed on an existing stream
                raise StoreError(f"audit: XINFO STREAM failed: {info}") from info
        elif isinstance(info, Exception):  # pragma: no cover
            raise StoreError(f"audit: XINFO STREAM failed: {info}") from info
        else:
            stream = [(_s(eid), _map(fields)) for eid, fields in entries]
            stream_info = {_s(k): v for k, v in info.items()}
        drops: dict[str, _DropSnapshot] = {}
        for i, drop in enumerate(wanted):
            rec, holds, holdrec, held, bought, orders_index = per_drop[i * 6 : i * 6 + 6]
            drops[drop] = _DropSnapshot(
                id=drop,
                record=_map(rec),
                holds={_s(m): float(score) for m, score in holds},
                holdrec=_map(holdrec),
                held=_map(held),
                bought=_map(bought),
                orders_index=_map(orders_index),
            )
        return _ShowSnapshot(show, drop_ids, drops, _map(seq), stream, stream_info, _map(ledger))
    raise StoreError(f"audit: show {show} kept changing its drops; try again")


# -- checks -----------------------------------------------------------------------------------


def _ledger_entries(ledger: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    out = []
    for eid, raw in ledger.items():
        try:
            fields = orjson.loads(raw)
        except orjson.JSONDecodeError:
            fields = {}
        out.append((eid, {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict)
                     else {}))  # fmt: skip
    return sorted(out, key=lambda e: _stream_id(e[0]))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream_id(value: Any) -> tuple[int, int]:
    ms, _, seq = _s(value).partition("-")
    return int(ms), int(seq or 0)


class _Checker:
    def __init__(self, show: str, report: AuditReport) -> None:
        self.show = show
        self.report = report

    def fail(self, where: str, message: str) -> None:
        self.report.violations.append(f"show {self.show} {where}: {message}")

    def drop(self, snap: _DropSnapshot, seq: dict[str, str]) -> None:
        """Every per-drop invariant; adds to the report's counts."""
        where = f"drop {snap.id}"
        rec = snap.record
        if not rec:
            self.fail(where, "listed in the show's drops but has no drop record")
            return
        self.report.drops += 1
        counters: dict[str, int] = {}
        for name in ("quantity", "restocked", "remaining", "held", "sold", "limit"):
            value = _int(rec.get(name))
            if value is None:
                self.fail(where, f"counter {name}={rec.get(name)!r} is not an integer")
                return
            counters[name] = value
        quantity, restocked = counters["quantity"], counters["restocked"]
        remaining, held, sold, limit = (
            counters["remaining"], counters["held"], counters["sold"], counters["limit"]
        )  # fmt: skip
        self.report.units_sold += sold
        self.report.units_held += held
        self.report.units_remaining += remaining
        if rec.get("state") not in DROP_STATES:
            self.fail(where, f"unknown state {rec.get('state')!r}")
        if remaining < 0:
            self.fail(where, f"remaining={remaining} is negative: oversold by {-remaining}")
        if held < 0:
            self.fail(where, f"held={held} is negative")
        if sold < 0:
            self.fail(where, f"sold={sold} is negative")
        if restocked < 0:
            self.fail(where, f"restocked={restocked} is negative")
        if remaining + held + sold != quantity + restocked:
            self.fail(
                where,
                f"remaining {remaining} + held {held} + sold {sold} = "
                f"{remaining + held + sold} != quantity {quantity} + restocked {restocked} = "
                f"{quantity + restocked}",
            )
        if sold > quantity + restocked:
            self.fail(where, f"sold {sold} units of {quantity + restocked} in stock: oversold")
        if rec.get("state") == "scheduled" and (held or sold):
            self.fail(where, f"scheduled (not open) but held={held} sold={sold}")

        # Hold records and the active-holds set.
        records: dict[str, dict[str, Any]] = {}
        for n, raw in snap.holdrec.items():
            try:
                hold = orjson.loads(raw)
                int(hold["q"])
                str(hold["v"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.fail(where, f"hold {n}: unreadable hold record {raw[:80]!r}")
                continue
            if hold.get("s") not in HOLD_STATES:
                self.fail(where, f"hold {n}: unknown state {hold.get('s')!r}")
            records[n] = hold
        active_units = 0
        held_by_viewer: Counter[str] = Counter()
        for n, score in snap.holds.items():
            hold_rec = records.get(n)
            if hold_rec is None:
                self.fail(where, f"hold {n} is in the holds set but has no hold record")
                continue
            if hold_rec.get("s") != "held":
                self.fail(where, f"hold {n} is in the holds set but is {hold_rec.get('s')}")
                continue
            if int(score) != int(hold_rec.get("x", -1)):
                self.fail(where, f"hold {n}: set expiry {int(score)} != record {hold_rec.get('x')}")
            active_units += int(hold_rec["q"])
            held_by_viewer[str(hold_rec["v"])] += int(hold_rec["q"])
        for n, hold_rec in records.items():
            if hold_rec.get("s") == "held" and n not in snap.holds:
                self.fail(where, f"hold {n} is 'held' but not in the holds set: stock stranded")
        self.report.holds += len(snap.holds)
        if active_units != held:
            self.fail(where, f"held={held} but the active holds add up to {active_units}")
        hold_seq = _int(seq.get(f"h:{snap.id}")) or 0
        if len(records) != hold_seq:
            self.fail(where, f"{hold_seq} hold numbers issued but {len(records)} hold records")

        # Per viewer.
        held_hash: dict[str, int] = {}
        for viewer, raw_units in snap.held.items():
            units = _int(raw_units)
            if units is None or units <= 0:
                self.fail(where, f"viewer {viewer}: held entry {raw_units!r} is not positive")
            held_hash[viewer] = units or 0
        for viewer in set(held_hash) | set(held_by_viewer):
            if held_hash.get(viewer, 0) != held_by_viewer.get(viewer, 0):
                self.fail(
                    where,
                    f"viewer {viewer}: held={held_hash.get(viewer, 0)} but active holds add "
                    f"up to {held_by_viewer.get(viewer, 0)}",
                )
        bought: dict[str, int] = {}
        for viewer, raw_units in snap.bought.items():
            units = _int(raw_units)
            if units is None or units < 0:
                self.fail(where, f"viewer {viewer}: bought entry {raw_units!r} is not >= 0")
            bought[viewer] = units or 0
        if sum(bought.values()) != sold:
            self.fail(where, f"sold={sold} but viewers bought {sum(bought.values())}")
        for viewer in sorted(set(held_hash) | set(bought)):
            used = held_hash.get(viewer, 0) + bought.get(viewer, 0)
            if used > limit:
                self.fail(
                    where,
                    f"viewer {viewer}: held {held_hash.get(viewer, 0)} + bought "
                    f"{bought.get(viewer, 0)} = {used} > limit {limit}",
                )

        # Orders index.
        index_units = 0
        for order_id, raw_units in snap.orders_index.items():
            units = _int(raw_units)
            if units is None or units <= 0:
                self.fail(where, f"order {order_id}: {raw_units!r} units is not positive")
            index_units += units or 0
            if not order_id.startswith(f"{self.show}.{snap.id}."):
                self.fail(where, f"order {order_id} does not belong to this drop")
        self.report.orders += len(snap.orders_index)
        if index_units != sold:
            self.fail(where, f"sold={sold} but the orders index adds up to {index_units} units")
        order_seq = _int(seq.get(f"o:{snap.id}")) or 0
        if len(snap.orders_index) != order_seq:
            self.fail(
                where, f"{order_seq} order numbers issued but {len(snap.orders_index)} orders"
            )
        for n, hold_rec in records.items():
            if hold_rec.get("s") != "confirmed":
                continue
            order_id = str(hold_rec.get("o") or "")
            if not order_id or order_id not in snap.orders_index:
                self.fail(where, f"hold {n} is confirmed but its order {order_id} is not indexed")
            elif _int(snap.orders_index[order_id]) != int(hold_rec["q"]):
                self.fail(
                    where,
                    f"hold {n}: order {order_id} has {snap.orders_index[order_id]} units, "
                    f"the hold {hold_rec['q']}",
                )

    def stream(self, snap: _ShowSnapshot, whole_show: bool) -> None:
        """The outbox: each order exactly once, each entry backed by its drop's orders index."""
        indexed: dict[str, tuple[str, int]] = {}
        for dsnap in snap.drops.values():
            for order_id, units in dsnap.orders_index.items():
                indexed[order_id] = (dsnap.id, _int(units) or 0)
        if snap.stream is None or snap.stream_info is None:
            if indexed:
                self.fail("orders stream", f"missing, but {len(indexed)} order(s) are indexed")
            return
        info = snap.stream_info
        self.report.stream_entries += sum(1 for _e, f in snap.stream if f.get("drop") in snap.drops)
        # Entries an erasure deleted count as present, in their pseudonymised copy: same order,
        # same quantity and amount (livecommerce.erasure).
        ledger = _ledger_entries(snap.ledger)
        merged = sorted([*snap.stream, *ledger], key=lambda e: _stream_id(e[0]))
        entries = [(eid, f) for eid, f in merged if f.get("drop") in snap.drops]
        erasures_seen = 0
        seen: Counter[str] = Counter()
        stream_bought: dict[tuple[str, str], int] = defaultdict(int)
        replays_seen = 0
        for eid, f in merged if whole_show else entries:
            order_id = f.get("order_id") or ""
            if f.get("type") == ERASED_TYPE:
                erasures_seen += 1
                if order_id not in indexed:
                    self.fail(f"orders stream entry {eid}", f"erases unknown order {order_id}")
                continue
            if f.get("replay_of"):
                # A dead letter put back for delivery: the same order again, not a second sale.
                replays_seen += 1
                if order_id not in indexed:
                    self.fail(f"orders stream entry {eid}", f"replays unknown order {order_id}")
                continue
            seen[order_id] += 1
            where = f"orders stream entry {eid} (order {order_id or '?'})"
            if f.get("show") != self.show:
                self.fail(where, f"belongs to show {f.get('show')!r}")
            drop = f.get("drop") or ""
            if drop not in snap.drops:
                self.fail(where, f"names drop {drop!r}, which the show does not have")
                continue
            quantity = _int(f.get("quantity"))
            if order_id not in indexed:
                self.fail(where, f"order not in drop {drop}'s orders index: sold without decrement")
            elif indexed[order_id][0] != drop or indexed[order_id][1] != quantity:
                self.fail(
                    where,
                    f"drop {drop} x{quantity} but the index has drop {indexed[order_id][0]} "
                    f"x{indexed[order_id][1]}",
                )
            unit, amount = _int(f.get("unit_price")), _int(f.get("amount"))
            if quantity is None or unit is None or amount != quantity * unit:
                self.fail(where, f"amount {amount} != quantity {quantity} x unit price {unit}")
            stream_bought[(drop, f.get("viewer") or "")] += quantity or 0
        for order_id, count in seen.items():
            if count > 1:
                self.fail("orders stream", f"order {order_id} appears {count} times")

        length = int(info.get("length", 0))
        added = int(info.get("entries-added", length))
        erased_entries = _int(snap.seq.get("erased_entries")) or 0
        if len(ledger) != erased_entries:
            self.fail(
                "erasure ledger",
                f"{erased_entries} entries erased from the stream but {len(ledger)} copies kept",
            )
        trimmed = length + erased_entries < added  # erased entries are gone, not trimmed
        if length:
            first = _stream_id(snap.stream[0][0])
            max_deleted = _stream_id(info.get("max-deleted-entry-id", b"0-0"))
            if max_deleted >= first and _s(info["max-deleted-entry-id"]) not in snap.ledger:
                self.fail(
                    "orders stream",
                    f"entries deleted from the middle (up to {_s(info['max-deleted-entry-id'])}, "
                    f"first kept {snap.stream[0][0]}): orders lost from the outbox",
                )
        replays = _int(snap.seq.get("replays")) or 0
        erasures = _int(snap.seq.get("erasures")) or 0
        if whole_show and added != len(indexed) + replays + erasures:
            self.fail(
                "orders stream",
                f"{added} entries ever added but {len(indexed)} orders indexed across the "
                f"show's drops, {replays} replays and {erasures} erasure events (each order "
                f"must be appended exactly once)",
            )
        if whole_show and not trimmed and erasures_seen != erasures:
            self.fail("orders stream", f"{erasures_seen} erasure entries but {erasures} counted")
        if replays_seen > replays:
            self.fail("orders stream", f"{replays_seen} replay entries but {replays} counted")
        if not trimmed:
            missing = sorted(set(indexed) - set(seen))
            for order_id in missing[:20]:
                self.fail("orders stream", f"order {order_id} is indexed but has no entry")
            if len(missing) > 20:
                self.fail("orders stream", f"... and {len(missing) - 20} more orders missing")
            for dsnap in snap.drops.values():
                for viewer, raw in dsnap.bought.items():
                    in_stream = stream_bought.get((dsnap.id, viewer), 0)
                    if (_int(raw) or 0) != in_stream:
                        self.fail(
                            f"drop {dsnap.id}",
                            f"viewer {viewer}: bought={raw} but the stream has {in_stream} unit(s)",
                        )
        else:
            # Trimmed from the front: an order whose entry id is not below the first kept entry
            # must still be there.
            first = _stream_id(snap.stream[0][0]) if snap.stream else (1 << 62, 0)
            for dsnap in snap.drops.values():
                for n, raw in dsnap.holdrec.items():
                    try:
                        rec = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue  # reported by the drop check
                    order = rec.get("order")
                    if rec.get("s") != "confirmed" or not isinstance(order, dict):
                        continue
                    if _stream_id(order["stream_id"]) >= first and order["id"] not in seen:
                        self.fail(
                            f"drop {dsnap.id}",
                            f"hold {n}: order {order['id']} ({order['stream_id']}) is missing "
                            f"from the stream",
                        )


async def audit_drop(
    redis: aioredis.Redis, keyspace: Keyspace, show: str, drop: str
) -> AuditReport:
    """Check one drop's invariants (and its entries in the show's orders stream)."""
    report = AuditReport(shows=1)
    try:
        snap = await _snapshot(redis, keyspace, show, drop)
    except RedisError as exc:
        raise StoreError(f"audit: {exc}") from exc
    checker = _Checker(show, report)
    if drop not in snap.drop_ids:
        checker.fail(f"drop {drop}", "is not one of the show's drops")
    checker.drop(snap.drops[drop], snap.seq)
    checker.stream(snap, whole_show=False)
    return report


async def audit_show(redis: aioredis.Redis, keyspace: Keyspace, show: str) -> AuditReport:
    """Check every drop of one show and the show's orders stream, on one snapshot."""
    report = AuditReport(shows=1)
    try:
        snap = await _snapshot(redis, keyspace, show, None)
    except RedisError as exc:
        raise StoreError(f"audit: {exc}") from exc
    checker = _Checker(show, report)
    for drop in snap.drop_ids:
        checker.drop(snap.drops[drop], snap.seq)
    checker.stream(snap, whole_show=True)
    return report


async def audit(redis: aioredis.Redis, keyspace: Keyspace, show: str | None = None) -> AuditReport:
    """Check every show under the key prefix (or just ``show``). Each show is one snapshot."""
    if show is None:
        try:
            shows = [_s(s) for s in await redis.zrange(keyspace.shows, 0, -1)]
        except RedisError as exc:
            raise StoreError(f"audit: {exc}") from exc
    else:
        shows = [show]
    report = AuditReport()
    for one in shows:
        report.merge(await audit_show(redis, keyspace, one))
    return report


# -- command line -------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``livecommerce audit`` to the CLI."""
    p = subparsers.add_parser(
        "audit",
        help="check every stock and order invariant (exit 1 on a violation)",
        description=(
            "Check stock, holds and orders of every show (or one) on a consistent snapshot. "
            "Uses LIVECOMMERCE_REDIS_URL; when unset it starts the embedded Valkey on "
            "LIVECOMMERCE_DATA_DIR for the time of the audit, which must not be in use by a "
            "running `livecommerce serve` (stop the server first, or point at its Redis URL)."
        ),
    )
    p.add_argument("--show", help="audit only this show")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--redis-url", help="LIVECOMMERCE_REDIS_URL (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="LIVECOMMERCE_DATA_DIR (.livecommerce)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    import os

    from livecommerce.config import load
    from livecommerce.embedded import EmbeddedValkey

    for name, value in (("REDIS_URL", args.redis_url), ("DATA_DIR", args.data_dir)):
        if value is not None:
            os.environ["LIVECOMMERCE_" + name] = str(value)
    settings = load()
    keyspace = Keyspace(settings.redis.key_prefix)
    server: EmbeddedValkey | None = None
    if settings.redis.url is not None:
        url = settings.redis.url.reveal()
    else:
        if not (settings.redis.data_dir / "appendonly").exists():
            print(f"livecommerce audit: no data in {settings.redis.data_dir}", file=sys.stderr)
            return 2
        print(
            f"livecommerce audit: starting the embedded Valkey on {settings.redis.data_dir} "
            "(it must not be running elsewhere)",
            file=sys.stderr,
        )
        # No RDB snapshot on our shutdown: the audit only reads.
        server = EmbeddedValkey(settings.redis.data_dir, extra_args=("--save", "")).start()
        url = server.url
    try:
        report = asyncio.run(_run(url, keyspace, args.show))
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


async def _run(url: str, keyspace: Keyspace, show: str | None) -> AuditReport:
    client = aioredis.Redis.from_url(url, decode_responses=False)
    try:
        return await audit(client, keyspace, show)
    finally:
        await client.aclose()
