#!/usr/bin/env python
"""Spike tool: thousands of viewers on WebSockets, a drop, everybody buys -- then the audit.

Locust on one small machine cannot hold 10k sockets; this tool spreads viewers over several
asyncio processes (the project's client, ``livecommerce.realtime.client``). Phases: viewers ramp
into a
live show over ``--ramp`` seconds; the host drops ``--stock`` units (limit ``--limit`` per viewer)
over the host API; every viewer makes its share of ``--attempts`` buy_now attempts at random
moments in the ``--buy-window``; then the inventory audit and the end-to-end order check run.

One command, everything local (embedded Valkey, server, sink, relay as processes)::

    .venv/bin/python scripts/spike.py --local --viewers 1000

Against a deployment (tokens are minted with its secret; the audit needs its Redis)::

    .venv/bin/python scripts/spike.py --url https://live.example --host-key lch_... \\
        --token-secret ... --redis-url redis://... --viewers 5000 --attempts 20000 --stock 1000

With faults during the burst -- a gateway, the relay and Valkey killed, the sink down and slow,
on a seeded schedule, a report per fault (loadtests/chaos.py, loadtests/README.md)::

    .venv/bin/python scripts/spike.py --local --chaos --viewers 5000 --attempts 20000 --stock 1000

Writes ``report.json`` (figures, audit), ``samples.json`` (raw samples) and PNG plots to
``--out``; exits 1 when an invariant is broken, 2 when the run could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from loadtests import bots, chaos, common, cpu  # noqa: E402
from loadtests.common import SpikePlan  # noqa: E402
from loadtests.fleet import Fleet  # noqa: E402
from loadtests.postrun import describe, run_audit  # noqa: E402
from loadtests.stack import LocalStack  # noqa: E402
from loadtests.viewers import WorkerConfig, raise_open_files_limit  # noqa: E402

JOIN_GRACE_S = 30.0
SETTLE_S = 5.0
MAX_BUY_PHASE_S = 180.0


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    where = p.add_argument_group("where")
    where.add_argument(
        "--local",
        action="store_true",
        help="start embedded Valkey, server, sink and relay for this run",
    )
    where.add_argument(
        "--workers",
        type=int,
        default=int(env("LC_SERVER_WORKERS", "1")),
        help="server processes with --local [LC_SERVER_WORKERS]",
    )
    where.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --local: a LIVECOMMERCE_* setting for the servers (repeatable), e.g. "
        "LIVECOMMERCE_EDGE_REFUSALS=false to measure without edge refusals",
    )
    where.add_argument(
        "--server-src",
        type=Path,
        metavar="DIR",
        help="with --local: run the servers from this source tree (another checkout, e.g. "
        "`git worktree add /tmp/before <rev>`) to measure it with this checkout's load tools",
    )
    where.add_argument(
        "--url", default=env("LC_URL", "http://127.0.0.1:8000"), help="server base URL [LC_URL]"
    )
    where.add_argument("--host-key", default=env("LC_HOST_KEY"), help="lch_... [LC_HOST_KEY]")
    where.add_argument(
        "--token-secret",
        default=env("LIVECOMMERCE_TOKEN_SECRET"),
        help="viewer-token secret [LIVECOMMERCE_TOKEN_SECRET]",
    )
    where.add_argument(
        "--redis-url",
        default=env("LC_REDIS_URL"),
        help="the server's Redis, for the audit [LC_REDIS_URL]",
    )
    where.add_argument(
        "--key-prefix",
        default=env("LIVECOMMERCE_KEY_PREFIX", "lc"),
        help="the server's key prefix [LIVECOMMERCE_KEY_PREFIX]",
    )
    where.add_argument(
        "--no-sink",
        action="store_true",
        help="skip the end-to-end check against the reference sink",
    )
    where.add_argument(
        "--sink-wait",
        type=float,
        default=60.0,
        help="seconds the audit waits for the relay to deliver",
    )
    spike = p.add_argument_group("spike")
    spike.add_argument("--viewers", type=int, default=int(env("LC_VIEWERS", "1000")))
    spike.add_argument(
        "--stock",
        type=int,
        default=int(env("LC_STOCK", "0")),
        help="units dropped (0 = viewers / 10)",
    )
    spike.add_argument(
        "--limit", type=int, default=int(env("LC_LIMIT", "2")), help="per-viewer limit"
    )
    spike.add_argument(
        "--attempts",
        type=int,
        default=int(env("LC_ATTEMPTS", "0")),
        help="total buy attempts (0 = viewers x --attempts-per-viewer)",
    )
    spike.add_argument(
        "--attempts-per-viewer", type=int, default=int(env("LC_ATTEMPTS_PER_VIEWER", "4"))
    )
    spike.add_argument(
        "--ramp",
        type=float,
        default=float(env("LC_RAMP", "10")),
        help="seconds to connect every viewer",
    )
    spike.add_argument(
        "--buy-window",
        type=float,
        default=float(env("LC_BUY_WINDOW", "1")),
        help="seconds in which the attempts fall",
    )
    spike.add_argument(
        "--processes",
        type=int,
        default=int(env("LC_PROCESSES", "0")),
        help="viewer processes (0 = one per 2500 viewers, at least 1)",
    )
    spike.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    spike.add_argument(
        "--client", choices=("lean", "product"), default="lean",
        help="viewer connection: lean (loadtests/wire.py, cheap enough that the spike measures "
        "the server) or the project's client (reconnects; --chaos always uses it)",
    )  # fmt: skip
    spike.add_argument(
        "--reply-timeout", type=float, default=10.0, help="seconds a buy waits for its reply"
    )
    spike.add_argument("--run-id", default=env("LC_RUN"), help="names show/drop/viewers")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(env("LC_OUT", "spike-out")),
        help="directory for report.json, samples.json and the plots",
    )
    bots.add_arguments(p)
    add_chaos_arguments(p)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)  # fmt: skip
    if args.viewers < 1:
        p.error("--viewers must be at least 1")
    if args.chaos and not args.local:
        p.error("--chaos needs --local: it kills and restarts the stack's processes")
    if args.chaos and args.workers < 2:
        args.workers = 2  # a gateway is killed: the viewers need another to go to
    return args


def add_chaos_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "chaos", "--chaos: faults on a seeded schedule during the spike (loadtests/chaos.py)"
    )
    g.add_argument("--chaos", action="store_true",
                   help="run in waves, one fault per wave, and report per fault")  # fmt: skip
    g.add_argument("--seed", type=int, default=1, help="the schedule's seed")
    g.add_argument("--faults", default=",".join(chaos.FAULTS),
                   help="comma-separated faults, each once")  # fmt: skip
    g.add_argument("--sink-down", type=float, default=60.0, help="seconds the sink stays down")
    g.add_argument("--slow-delay", type=float, default=1.0,
                   help="seconds each sink answer is delayed (slow sink, relay kill)")  # fmt: skip
    g.add_argument("--slow-for", type=float, default=15.0, help="seconds the sink stays slow")
    g.add_argument("--valkey-down", type=float, default=2.0,
                   help="seconds Valkey stays down when restarted")  # fmt: skip


def chaos_plan_of(args: argparse.Namespace) -> chaos.ChaosPlan:
    return chaos.ChaosPlan(
        seed=args.seed,
        faults=tuple(f.strip() for f in args.faults.split(",") if f.strip()),
        sink_down_s=args.sink_down,
        slow_delay_s=args.slow_delay,
        slow_for_s=args.slow_for,
        valkey_down_s=args.valkey_down,
        burst_s=args.buy_window,
    )


def plan_of(args: argparse.Namespace) -> SpikePlan:
    attempts = args.attempts or args.viewers * args.attempts_per_viewer
    extra = {"run": args.run_id} if args.run_id else {}
    return SpikePlan(
        viewers=args.viewers,
        stock=args.stock or max(args.viewers // 10, 1),
        limit=args.limit,
        attempts=attempts,
        ramp_s=args.ramp,
        buy_window_s=args.buy_window,
        **extra,
    )


def worker_config(
    args: argparse.Namespace, plan: SpikePlan, url: str, processes: int, index: int,
    start_ms: float, **extra: Any,
) -> WorkerConfig:  # fmt: skip
    return WorkerConfig(
        plan={k: v for k, v in plan.as_dict().items() if k not in ("show", "drop", "sku")},
        url=common.ws_url(url),
        token_secret=args.token_secret,
        processes=processes,
        index=index,
        start_ms=start_ms,
        encoding=args.encoding,
        reply_timeout_s=args.reply_timeout,
        client=args.client,
        bots=bots.plan_of(args).as_dict(),
        **extra,
    )


async def host_call(
    http: httpx.AsyncClient, request: tuple[str, str, dict[str, Any]]
) -> dict[str, Any]:
    method, path, body = request
    response = await http.request(method, path, json=body)
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    result: dict[str, Any] = response.json()
    return result


async def run_spike(args: argparse.Namespace, plan: SpikePlan, url: str) -> dict[str, Any]:
    """Set up, ramp, drop, buy, collect; returns the raw material of the report."""
    say = (lambda *_: None) if args.quiet else (lambda *a: print(*a, flush=True))
    processes = args.processes or max(1, -(-plan.viewers // 2500))
    headers = {"Authorization": f"Bearer {args.host_key}"}
    async with httpx.AsyncClient(
        base_url=common.http_url(url), headers=headers, timeout=30
    ) as http:
        await host_call(http, common.product_request(plan))
        await host_call(http, common.show_request(plan))
        say(f"show {plan.show} is live; {plan.viewers} viewers over {processes} process(es)")

        start_ms = time.time() * 1000 + 1500 + 300 * processes  # after the processes import
        fleet = Fleet(
            [worker_config(args, plan, url, processes, i, start_ms) for i in range(processes)]
        ).start()

        def progress(label: str) -> Callable[[str], None]:
            return lambda line: say(f"  {label}: {line}")

        started = time.monotonic()
        ramp_deadline = started + (start_ms / 1000 - time.time()) + plan.ramp_s + JOIN_GRACE_S
        await fleet.wait_until(
            lambda: fleet.total("joined") + fleet.total("failed") >= plan.viewers,
            ramp_deadline,
            progress("ramp"),
        )
        ramp_s = time.monotonic() - started
        say(f"ramp done in {ramp_s:.1f} s: {fleet.total('joined')} joined; dropping")
        cpu_before, cpu_t0 = cpu.snapshot(), time.monotonic()
        drop_sent_ms = time.time() * 1000
        drop_view = await host_call(http, common.drop_request(plan))
        drop_reply_ms = time.time() * 1000
        joined = fleet.total("joined")
        # Viewers tap one attempt after another, so a slow server stretches the phase: wait while
        # answers keep coming (bounded), stop when everyone is done or nothing moved for a while.
        hard_deadline = time.monotonic() + plan.buy_window_s + MAX_BUY_PHASE_S
        activity = {"count": -1, "at": time.monotonic()}

        def buying_over() -> bool:
            count = fleet.total("answered") + fleet.total("unanswered")
            now = time.monotonic()
            if count != activity["count"]:
                activity.update(count=count, at=now)
            if fleet.total("buyers_done") >= joined and fleet.total("saw_drop") >= joined:
                return True
            idle = now - activity["at"]
            return now - drop_started > plan.buy_window_s + SETTLE_S and (
                idle > args.reply_timeout + SETTLE_S
            )

        drop_started = time.monotonic()
        await fleet.wait_until(buying_over, hard_deadline, progress("buying"))
        burst_cpu = {"seconds": round(time.monotonic() - cpu_t0, 2),
                     "cpu_s": cpu.usage(cpu_before, cpu.snapshot())}  # fmt: skip
        say("stopping the viewers")
        results = await fleet.stop()
        stats = await http.get(common.drop_stats_path(plan))
    raw = raw_of(processes, start_ms, (drop_sent_ms, drop_reply_ms), drop_view, stats, results)
    raw["burst_cpu"] = burst_cpu
    return raw


def raw_of(
    processes: int, start_ms: float, drop_ms: tuple[float, float], drop_view: dict[str, Any],
    stats: httpx.Response, results: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The raw material of the report: what the run measured, before aggregation."""
    return {
        "processes": processes,
        "start_ms": start_ms,
        "drop_sent_ms": drop_ms[0],
        "drop_reply_ms": drop_ms[1],
        "drop_view": drop_view,
        "drop_stats": stats.json() if stats.status_code == 200 else {"status": stats.status_code},
        "results": results,
    }


async def run_chaos(args: argparse.Namespace, plan: SpikePlan, stack: LocalStack) -> dict[str, Any]:
    """The spike in waves with a fault in each (loadtests/chaos.py); the raw material of the
    report, as run_spike gives it, plus the chaos report."""
    say = (lambda *_: None) if args.quiet else (lambda *a: print(*a, flush=True))
    processes = args.processes or max(1, -(-plan.viewers // 2500))
    schedule = chaos.schedule(chaos_plan_of(args))
    units = chaos.units_per_wave(plan.stock, len(schedule))
    headers = {"Authorization": f"Bearer {args.host_key}"}
    async with httpx.AsyncClient(
        base_url=common.http_url(stack.url), headers=headers, timeout=30
    ) as http:
        await host_call(http, common.product_request(plan))
        await host_call(http, common.show_request(plan))
        start_ms = time.time() * 1000 + 1500 + 300 * processes
        fleet = Fleet([
            worker_config(args, plan, stack.url, processes, i, start_ms, waves=len(schedule))
            for i in range(processes)
        ]).start()  # fmt: skip
        say(f"chaos: {len(schedule)} waves: " + ", ".join(
            f"{s.wave}:{s.fault}@{s.at_s}s" for s in schedule))  # fmt: skip
        ramp_deadline = time.monotonic() + (start_ms / 1000 - time.time()) + plan.ramp_s
        await fleet.wait_until(
            lambda: fleet.total("joined") + fleet.total("failed") >= plan.viewers,
            ramp_deadline + JOIN_GRACE_S,
            lambda line: say(f"  ramp: {line}"),
        )
        drop_sent_ms = time.time() * 1000
        drop_view = await host_call(http, chaos.drop_body(plan, units[0]))
        drop_reply_ms = time.time() * 1000
        controller = chaos.Chaos(stack, plan, chaos_plan_of(args), http, fleet, say)
        await controller.run()
        say("stopping the viewers")
        results = await fleet.stop()
        log_ids = await controller.event_log()
        duplicates = await controller.sink_duplicates()
        stats = await http.get(common.drop_stats_path(plan))
    raw = raw_of(processes, start_ms, (drop_sent_ms, drop_reply_ms), drop_view, stats, results)
    raw["chaos"] = chaos.report(controller, results, log_ids, duplicates)
    return raw


def aggregate(plan: SpikePlan, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report figures, raw samples) from the workers' results."""
    results = raw["results"]

    def cat(key: str) -> list[Any]:
        return [x for r in results for x in r.get(key, [])]

    def add(key: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in results:
            total.update(r.get(key, {}))
        return total

    origin = raw["drop_sent_ms"]
    sent_at, answered_at, ok_at = cat("sent_at"), cat("answered_at"), cat("ok_at")
    outcomes = add("outcomes")
    answered = len(answered_at)
    span_s = (max(answered_at) - min(sent_at)) / 1000 if answered_at and sent_at else 0.0
    fanout = cat("fanout_ms")
    joined = sum(int(r.get("joined", 0)) for r in results)
    units: dict[str, int] = {}
    for r in results:
        units.update(r.get("units_by_viewer", {}))
    connected = _connected_timeline(results, raw["start_ms"])
    offsets = [
        (r.get("best_rtt_ms"), r.get("clock_offset_ms")) for r in results if r.get("best_rtt_ms")
    ]
    report = {
        "viewers": {
            "target": plan.viewers,
            "joined": joined,
            "failed": sum(int(r.get("failed", 0)) for r in results),
            "errors": dict(add("errors")),
            "dropped_close_codes": dict(add("close_codes")),
            "peak_connected": max((n for _, n in connected), default=0),
            "join_ms": common.summarize(cat("join_ms")),
        },
        "fanout_ms": {
            **common.summarize(fanout),
            "received": len(fanout),
            "missed": joined - len(fanout),
            "clock": {"offsets": offsets, "note": "server clock - ours, from min-RTT ping"},
        },
        "push_ms": common.summarize(cat("push_ms")),
        "burst_pushes": {  # pushes per viewer after it saw the drop open, by type
            kind: round(n / joined, 2) if joined else 0.0
            for kind, n in sorted(add("burst_pushes").items(), key=lambda kv: -kv[1])
        },
        "buy": {
            "attempts_planned": plan.attempts,
            "attempts_sent": len(sent_at),
            "answered": answered,
            "outcomes": dict(sorted(outcomes.items(), key=lambda kv: -kv[1])),
            "latency_ms": common.summarize(cat("buy_ms")),
            "answered_per_s": round(answered / span_s, 1) if span_s > 0 else 0.0,
            "first_attempt_to_last_answer_s": round(span_s, 3),
            "peak_answered_per_s": max(common.per_second(answered_at, origin), default=0),
            "sold_out_after_s": round((max(ok_at) - origin) / 1000, 3) if ok_at else None,
            "told_units": sum(units.values()),
        },
        "drop": {
            "sent_to_reply_ms": round(raw["drop_reply_ms"] - raw["drop_sent_ms"], 1),
            "stats_after": raw["drop_stats"],
        },
        "worker_errors": [r["error"] for r in results if "error" in r],
    }
    if "burst_cpu" in raw:  # where the machine's cores went from the drop to the last answer
        report["burst_cpu"] = raw["burst_cpu"]
    samples = {
        "origin_ms": origin,
        "start_ms": raw["start_ms"],
        "fanout_ms": fanout,
        "buy_ms": cat("buy_ms"),
        "answered_at": answered_at,
        "ok_at": sorted(ok_at),
        "connected": connected,
        "units_by_viewer": units,
        "orders": cat("orders"),
        "stock": plan.stock,
    }
    return report, samples


def _connected_timeline(results: list[dict[str, Any]], start_ms: float) -> list[tuple[float, int]]:
    """Sum of the processes' connected-viewer samples, on a 250 ms grid from ``start_ms``."""
    grid: dict[int, dict[int, int]] = {}
    for w, r in enumerate(results):
        for t, n in r.get("connected", []):
            grid.setdefault(int((t - start_ms) // 250), {})[w] = n
    out: list[tuple[float, int]] = []
    last: dict[int, int] = {}
    for slot in sorted(grid):
        last.update(grid[slot])
        out.append((start_ms + slot * 250, sum(last.values())))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_open_files_limit()
    plan = plan_of(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if limit < plan.viewers + 100:
        print(f"warning: open-files limit {limit} < viewers {plan.viewers}", file=sys.stderr)
    stack: LocalStack | None = None
    if args.local:
        stack_dir = Path(tempfile.mkdtemp(prefix="spike-stack-", dir=args.out))
        print(f"starting a local stack in {stack_dir} ({args.workers} server worker(s))")
        server_env = dict(item.partition("=")[::2] for item in args.server_env)
        chaos_env = chaos.STACK_ENV if args.chaos else {}
        stack = LocalStack(
            stack_dir, workers=args.workers,
            env={**bots.stack_env(args, plan.limit), **chaos_env, **server_env},
            src=args.server_src,
        ).start()  # fmt: skip
        args.host_key, args.token_secret = stack.host_key, stack.token_secret
        args.redis_url, args.key_prefix, url = stack.redis_url, stack.key_prefix, stack.url
    else:
        url = args.url
        if not args.host_key:
            print("give --host-key (LC_HOST_KEY) or use --local", file=sys.stderr)
            return 2
    print(f"spike {plan.run}: {json.dumps(plan.as_dict())}", flush=True)
    try:
        try:
            if args.chaos and stack is not None:
                raw = asyncio.run(run_chaos(args, plan, stack))
            else:
                raw = asyncio.run(run_spike(args, plan, url))
        except Exception as exc:
            print(f"spike failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if stack is not None:
                print(stack.log_tail("server"), file=sys.stderr)
            return 2
        report, samples = aggregate(plan, raw)
        bot_plan = bots.plan_of(args)
        if bot_plan.on:
            bot_outcomes: Counter[str] = Counter()
            for r in raw["results"]:
                bot_outcomes.update(r.get("bot_outcomes", {}))
            report["bots"] = bots.summary(
                bot_plan, plan.viewers, plan.stock, samples["units_by_viewer"], plan.viewer,
                dict(bot_outcomes),
            )  # fmt: skip
        audit: dict[str, Any]
        if args.redis_url:
            audit = asyncio.run(
                run_audit(
                    args.redis_url,
                    args.key_prefix,
                    plan,
                    units_by_viewer=samples["units_by_viewer"],
                    orders_seen=samples["orders"],
                    check_sink=not args.no_sink,
                    sink_wait_s=args.sink_wait,
                )
            )
        else:
            audit = {"ok": True, "skipped": "no --redis-url: server-side audit not run"}
            problems = common.client_checks(plan, samples["units_by_viewer"], samples["orders"])
            audit.update(ok=not problems, violations=problems)
    finally:
        if stack is not None:
            stack.stop()
    if "chaos" in raw and "inventory" in audit:
        # Orders the store made whose buyer never got the answer (gave up waiting): not lost --
        # they are in the store and the sink -- but a buyer who does not know it bought.
        raw["chaos"]["orders_not_told"] = (
            audit["inventory"]["orders"] - audit["viewers"]["told_orders"]
        )
    full = {
        "run": plan.run,
        "plan": plan.as_dict(),
        "target": url,
        "local": bool(args.local),
        "server_workers": args.workers if args.local else None,
        "server_src": str(args.server_src) if args.local and args.server_src else None,
        "client": "product" if args.chaos else args.client,
        "processes": raw["processes"],
        "machine": {"cpus": os.cpu_count(), "platform": sys.platform},
        **report,
        "audit": audit,
        **({"chaos": raw["chaos"]} if "chaos" in raw else {}),
        "ok": bool(audit.get("ok"))
        and not report["worker_errors"]
        and bool(raw.get("chaos", {}).get("ok", True)),
    }
    (args.out / "report.json").write_text(json.dumps(full, indent=2))
    (args.out / "samples.json").write_text(json.dumps(samples))
    if not args.no_plots:
        from spike_report import write_plots

        write_plots(full, samples, args.out)
    from spike_report import summary

    print(summary(full))
    if "bots" in full:
        b = full["bots"]
        print(f"bots: {b['bot_viewers']} bot viewers got {b['units_bots_obtained']} of "
              f"{plan.stock} units ({b['bot_share_of_stock']:.0%}); honest viewers got "
              f"{b['units_honest_viewers_obtained']}")  # fmt: skip
    if "chaos" in full:
        print(chaos.describe(full["chaos"]))
    print(describe(audit) if "skipped" not in audit else f"AUDIT: {audit['skipped']}")
    print(f"report: {args.out / 'report.json'}")
    if report["worker_errors"]:
        print(f"RUN INCOMPLETE: {report['worker_errors']}", file=sys.stderr)
        return 2
    return 0 if full["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
