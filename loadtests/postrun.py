"""The audit after every load run: inventory invariants, the end-to-end order check, and what the
viewers were told, in one report.

1. **Inventory** -- :func:`livecommerce.store.audit.audit` on the spike's show: no unit made or
lost,
   sold <= stock, every viewer within the limit, one order per decrement.
2. **End to end** -- :func:`livecommerce.fulfillment.audit.audit`: orders confirmed == orders in
   the stream == orders received by the fulfillment sink after de-duplication. The relay needs a
   moment to deliver the last orders, so this waits (bounded) until the sink caught up.
3. **Viewers** -- every order a viewer was told about exists in the store, nobody was told more
   than the limit, the told total is <= stock (:func:`loadtests.common.client_checks`).

As a command (the locustfile runs it in a subprocess, away from gevent)::

    python loadtests/postrun.py --redis-url URL --key-prefix lc --show S --drop D \\
        --stock 100 --limit 2 [--client-json seen.json] [--out audit.json] [--no-sink]

exits 1 when an invariant is broken, 2 when the audit could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

if __package__ in (None, ""):  # run as a script: make ``loadtests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livecommerce.fulfillment import audit as fulfillment_audit
from livecommerce.store import audit as inventory_audit
from livecommerce.store.keys import Keyspace
from loadtests.common import SpikePlan, client_checks


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _wait_for_sink(
    redis: aioredis.Redis, keyspace: Keyspace, wait_s: float
) -> fulfillment_audit.AuditReport:
    """The end-to-end report once the sink received every confirmed order (or after wait_s)."""
    deadline = time.monotonic() + wait_s
    while True:
        report = await fulfillment_audit.audit(redis, keyspace)
        settled = report.received + report.dead_lettered >= report.confirmed
        if settled or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(0.25)


async def run_audit(
    redis_url: str,
    key_prefix: str,
    plan: SpikePlan,
    *,
    units_by_viewer: dict[str, int] | None = None,
    orders_seen: Sequence[str] = (),
    check_sink: bool = True,
    sink_wait_s: float = 60.0,
) -> dict[str, Any]:
    """Run the three checks; ``result["ok"]`` is False when any invariant is broken."""
    keyspace = Keyspace(key_prefix)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=False)
    violations: list[str] = []
    out: dict[str, Any] = {}
    try:
        inv = await inventory_audit.audit(redis, keyspace, plan.show)
        out["inventory"] = inv.to_dict()
        violations.extend(f"inventory: {v}" for v in inv.violations)

        drop_keys = keyspace.drop(plan.show, plan.drop)
        raw = await redis.hgetall(drop_keys.drop)
        fields = {_s(k): _s(v) for k, v in raw.items()}
        sold = int(fields.get("sold") or 0)
        quantity = int(fields.get("quantity") or 0) + int(fields.get("restocked") or 0)
        confirmed = {_s(k) for k in await redis.hkeys(drop_keys.orders_index)}
        out["drop"] = {
            "exists": bool(fields),
            "quantity": quantity,
            "sold": sold,
            "remaining": int(fields.get("remaining") or 0),
            "held": int(fields.get("held") or 0),
            "orders": len(confirmed),
            "state": fields.get("state", ""),
        }
        if fields and sold > plan.stock:
            violations.append(f"drop: sold {sold} > stock {plan.stock}")

        if check_sink:
            e2e = await _wait_for_sink(redis, keyspace, sink_wait_s)
            out["fulfillment"] = e2e.as_dict()
            if not e2e.ok:
                violations.append(
                    f"end-to-end: confirmed {e2e.confirmed}, in stream {e2e.in_stream}, "
                    f"received {e2e.received}, dead-lettered {e2e.dead_lettered}, "
                    f"missing {len(e2e.missing)}, unexpected {len(e2e.unexpected)}, "
                    f"lost from stream {len(e2e.lost_from_stream)}"
                )
        else:
            out["fulfillment"] = {"skipped": "no fulfillment sink to compare with"}

        seen = list(orders_seen)
        problems = client_checks(plan, units_by_viewer or {}, seen)
        unknown = sorted(set(seen) - confirmed)
        if unknown:
            problems.append(f"{len(unknown)} order(s) told to viewers are not in the store")
        out["viewers"] = {
            "told_orders": len(seen),
            "told_units": sum((units_by_viewer or {}).values()),
            "buyers": len(units_by_viewer or {}),
            "unknown_orders": unknown[:20],
            "violations": problems,
        }
        violations.extend(f"viewers: {p}" for p in problems)
    finally:
        await redis.aclose()
    out["violations"] = violations
    out["ok"] = not violations
    return out


def describe(result: dict[str, Any]) -> str:
    """The audit as a few human lines, for the end of a run's output."""
    lines = [f"AUDIT {'PASSED' if result.get('ok') else 'FAILED'}"]
    if "error" in result:
        lines.append(f"  could not run: {result['error']}")
    inv = result.get("inventory")
    if inv:
        lines.append(
            f"  inventory: {'ok' if inv['ok'] else 'VIOLATED'} -- {inv['orders']} orders, "
            f"{inv['units_sold']} sold, {inv['units_held']} held, {inv['units_remaining']} left"
        )
    drop = result.get("drop")
    if drop:
        lines.append(
            f"  drop: sold {drop['sold']} of {drop['quantity']} ({drop['state']}), "
            f"{drop['orders']} orders"
        )
    e2e = result.get("fulfillment")
    if e2e and "skipped" in e2e:
        lines.append(f"  end-to-end: skipped ({e2e['skipped']})")
    elif e2e:
        lines.append(
            f"  end-to-end: {'ok' if e2e['ok'] else 'BROKEN'} -- confirmed {e2e['confirmed']} "
            f"== received {e2e['received']} (after dedup; {e2e['duplicates_rejected']} "
            f"duplicates rejected), {e2e['in_stream']} still in stream, "
            f"{e2e['dead_lettered']} dead-lettered"
        )
    viewers = result.get("viewers")
    if viewers:
        lines.append(
            f"  viewers: told {viewers['told_orders']} orders / {viewers['told_units']} units "
            f"to {viewers['buyers']} buyers"
        )
    lines.extend(f"  - {v}" for v in result.get("violations", []))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--key-prefix", default="lc")
    p.add_argument("--run", required=True, help="the spike's run id (names show and drop)")
    p.add_argument("--stock", type=int, required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--client-json", type=Path, help="what viewers saw: units_by_viewer, orders")
    p.add_argument("--out", type=Path, help="write the result here as JSON")
    p.add_argument("--no-sink", action="store_true", help="skip the end-to-end sink comparison")
    p.add_argument("--sink-wait", type=float, default=60.0, help="seconds to wait for the relay")
    args = p.parse_args(argv)
    plan = SpikePlan(stock=args.stock, limit=args.limit, run=args.run)
    seen: dict[str, Any] = {}
    if args.client_json is not None:
        seen = json.loads(args.client_json.read_text())
    try:
        result = asyncio.run(
            run_audit(
                args.redis_url,
                args.key_prefix,
                plan,
                units_by_viewer=seen.get("units_by_viewer", {}),
                orders_seen=seen.get("orders", []),
                check_sink=not args.no_sink,
                sink_wait_s=args.sink_wait,
            )
        )
    except Exception as exc:  # reported, not raised: the run's output must say why
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "violations": []}
        code = 2
    else:
        code = 0 if result["ok"] else 1
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    print(describe(result))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
