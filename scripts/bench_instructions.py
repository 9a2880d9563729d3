"""Instructions per buy attempt of the gateway, counted by valgrind's callgrind, as JSON on stdout.

A deterministic companion to ``bench_commands.py --scenarios``: that one reads the gateway's CPU
time per attempt from /proc, which moves by ±15 % from round to round on a shared machine; an
instruction count does not depend on the machine's load, so a 10 % change shows.

Starts its own embedded Valkey, then two gateways (``python -m livecommerce serve --no-demo``,
the environment of ``bench_commands.start_gateway``) under ``valgrind --tool=callgrind
--instr-atstart=no``: ``before`` (``--before-src DIR``: that tree with its defaults, on
PYTHONPATH; else this tree with ``LIVECOMMERCE_EDGE_REFUSALS=false``) and ``after`` (this tree).
K viewers join each. Per scenario (``sale``: ``buy_now`` on an open drop; ``edge_refusal``: on a
sold-out drop; ``store_refusal``: over the viewer's limit) and round, each viewer first sends
``--warmup`` attempts uninstrumented (the interpreter's caches and specialisations settle), then
``callgrind_control -i on`` and ``--zero``, then N attempts each, closed loop (the next after the
reply), then ``--dump``: ``ir_per_attempt`` = the dump's Ir / (K·N).

What is counted: user-space instructions (Ir) of the gateway process, all its threads -- the
interpreter, C extensions, libc. Kernel time is not (socket reads and writes, epoll: the system
share ``bench_commands`` reports). Work the gateway does per second rather than per attempt
(the scheduler, the viewer count, reactions: some 25 Redis commands a second) lands in the window
too. Under valgrind the attempts run ~50x slower and those timers do not, so that work weighs ~50x
more than natively (~15 % of a window rather than a fraction of a per cent), and the window's
length is set by the machine's load: that part is not deterministic. Each gateway's idle rate is
measured (``idle_ir_per_s``: viewers joined, no attempts), each round says what share of its
count that rate would explain (``idle_share``), and ``ir_per_attempt_net`` takes it off (an
estimate: timers run late while the loop is busy, so it can take off too much).
``*_spread`` is (max - min) / median over the rounds: how much a count moves between repeats.
Python runs ~50x slower under callgrind, hence small K and N (about 3 minutes)::

    .venv/bin/python scripts/bench_instructions.py --scenarios edge_refusal,sale \\
        --viewers 16 --attempts 100 --rounds 2 --before-src /tmp/lc-main
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_commands as bc

SCENARIOS = ("sale", "edge_refusal", "store_refusal")


# -- pure helpers ---------------------------------------------------------------------------------
def callgrind_totals(text: str) -> dict[str, int]:
    """Event totals of a callgrind dump: ``{"Ir": 123, ...}`` from its ``events:`` line and its
    ``summary:`` line (``totals:`` where a dump has no summary)."""
    events: list[str] = []
    found: dict[str, list[int]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "events":
            events = value.split()
        elif key in ("summary", "totals"):
            found.setdefault(key, [int(v) for v in value.split()])
    counts = found.get("summary") or found.get("totals")
    if not events or counts is None:
        raise ValueError("not a callgrind dump: no events/summary lines")
    # A cost line may leave out trailing zero counts.
    return {e: counts[i] if i < len(counts) else 0 for i, e in enumerate(events)}


def spread(values: list[float]) -> float:
    """(max - min) / median: how far repeats of one measurement lie apart."""
    if len(values) < 2:
        return 0.0
    return round((max(values) - min(values)) / statistics.median(values), 4)


def latest_dump(out_file: Path) -> Path:
    """callgrind names its dumps ``<out file>.1``, ``.2``, ...: the newest one."""
    dumps = [p for p in out_file.parent.glob(out_file.name + ".*") if p.suffix[1:].isdigit()]
    if not dumps:
        raise FileNotFoundError(f"no callgrind dump next to {out_file}")
    return max(dumps, key=lambda p: int(p.suffix[1:]))


# -- callgrind control ----------------------------------------------------------------------------
class Callgrind:
    """One gateway under callgrind, steered through ``callgrind_control`` (vgdb)."""

    def __init__(self, pid: int, out_file: Path) -> None:
        self.pid, self.out_file = pid, out_file

    async def control(self, *flags: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "callgrind_control", *flags, str(self.pid),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        if proc.returncode != 0 or b"Error" in out:
            raise RuntimeError(f"callgrind_control {' '.join(flags)}: {out.decode()[-500:]}")

    async def start(self) -> None:
        await self.control("--instr=on")
        await self.control("--zero")

    async def stop(self, label: str) -> dict[str, int]:
        await self.control(f"--dump={label}")
        await self.control("--instr=off")
        return callgrind_totals(latest_dump(self.out_file).read_text())


# -- viewers --------------------------------------------------------------------------------------
async def join(url: str, count: int) -> list[Any]:
    """``count`` viewers ``v0..`` joined to the show (the ids the store_refusal setup used)."""
    import orjson
    from websockets.asyncio.client import connect

    from livecommerce.realtime import tokens

    async def one(i: int) -> Any:
        ws = await connect(url, subprotocols=["livecommerce.v1.json"],  # type: ignore[list-item]
                           ping_interval=None, open_timeout=300, max_queue=None)  # fmt: skip
        token = tokens.mint(bc.SECRET, f"v{i}", 3600)
        await ws.send(orjson.dumps({"type": "join", "show": bc.SHOW, "token": token}).decode())
        while orjson.loads(await ws.recv())["type"] != "snapshot":
            pass
        return ws

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def attempts(sockets: list[Any], drop: str, n: int, tag: str) -> int:
    """``n`` buy_now attempts per viewer, each sent once the reply to the previous one is in.
    Returns how many were accepted."""
    accepted = 0

    async def run(c: int, ws: Any) -> None:
        nonlocal accepted
        for i in range(n):
            rid = f"{tag}-{c}-{i}"
            await ws.send(f'{{"type":"buy_now","id":"{rid}","drop":"{drop}","quantity":1,'
                          f'"payment_reference":"bench","currency":"EUR"}}')  # fmt: skip
            marker = f'"id":"{rid}"'
            while marker not in (frame := await ws.recv()):
                pass
            accepted += '"ok":true' in frame

    await asyncio.wait_for(asyncio.gather(*(run(c, ws) for c, ws in enumerate(sockets))), 1800)
    return accepted


# -- the run --------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(f"bench: {message} ...", file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace, scenarios: list[str], tmp: Path) -> dict[str, Any]:
    from livecommerce.store.embedded import EmbeddedValkey, free_port

    valkey = EmbeddedValkey(tmp / "valkey").start()
    prefix = f"bi{os.getpid()}"
    k, n = args.viewers, args.attempts
    gateways: dict[str, tuple[subprocess.Popen[bytes], int, Callgrind]] = {}
    sockets: dict[str, list[Any]] = {}
    try:
        await bc.create_drops(valkey.url, prefix, [])
        drops = {(s, v, r): f"{s}-{v}-{r}" for s in scenarios for v in bc.VARIANTS
                 for r in range(args.rounds)}  # fmt: skip
        for (scenario, _, _), drop in drops.items():  # before any viewer joins, as bench_commands
            if scenario == "sale":
                await bc.create_drops(valkey.url, prefix, [drop])
            else:
                await bc.create_scenario_drop(valkey.url, prefix, scenario, drop, k)
        for variant, variant_env in bc.VARIANTS.items():
            src = bc.ROOT
            if variant == "before" and args.before_src:  # that tree as it is, its defaults
                variant_env, src = {}, Path(args.before_src)
            env = {**variant_env, "PYTHONHASHSEED": "0"}  # the same str hashes in every run
            port, out_file = free_port(), tmp / f"callgrind-{variant}.out"
            valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={out_file}"]  # fmt: skip
            proc = bc.start_gateway(valkey.url, prefix, port, tmp / f"{variant}.log", env,
                                    wrapper=valgrind, src=src)  # fmt: skip
            gateways[variant] = (proc, port, Callgrind(proc.pid, out_file))
        log("gateways starting under valgrind")
        for proc, port, _ in gateways.values():
            await asyncio.to_thread(bc.wait_ready, port, proc, args.ready_timeout)
        for variant, (_, port, _) in gateways.items():
            log(f"{k} viewers joining {variant}")
            sockets[variant] = await join(f"ws://127.0.0.1:{port}/ws", k)
        idle: dict[str, float] = {}
        for variant, (_, _, cg) in gateways.items():
            log(f"{variant} idle for {args.idle_seconds} s")
            await cg.start()
            t0 = time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            ir = (await cg.stop(f"idle-{variant}"))["Ir"]
            idle[variant] = round(ir / (time.monotonic() - t0))
        results: dict[str, Any] = {}
        for scenario in scenarios:
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in gateways}
            for r in range(args.rounds):
                for variant, (_, _, cg) in gateways.items():
                    drop, ws = drops[scenario, variant, r], sockets[variant]
                    log(f"{scenario} {variant}, round {r + 1}")
                    await attempts(ws, drop, args.warmup, f"w{variant}{r}")
                    await cg.start()
                    t0 = time.monotonic()
                    accepted = await attempts(ws, drop, n, f"m{variant}{r}")
                    window = time.monotonic() - t0
                    ir = (await cg.stop(f"{scenario}-{variant}-{r}"))["Ir"]
                    runs[variant].append({
                        "ir_per_attempt": round(ir / (k * n)),
                        "ir_per_attempt_net": round((ir - idle[variant] * window) / (k * n)),
                        "ir": ir,
                        "accepted": accepted,
                        "window_s": round(window, 1),
                        "idle_share": round(idle[variant] * window / ir, 4),
                    })  # fmt: skip
            out: dict[str, Any] = {}
            for variant, rows in runs.items():
                out[variant] = {}
                for key in ("ir_per_attempt", "ir_per_attempt_net"):
                    per = [row[key] for row in rows]
                    out[variant] |= {key: statistics.median(per), f"{key}_spread": spread(per)}
                out[variant]["rounds"] = rows
            for key in ("ir_per_attempt", "ir_per_attempt_net"):
                out[f"ratio_{key}"] = round(out["after"][key] / out["before"][key], 3)
            results[scenario] = out
        return {"idle_ir_per_s": idle, "results": results}
    finally:
        for ws_list in sockets.values():
            await asyncio.gather(*(ws.close() for ws in ws_list), return_exceptions=True)
        for proc, _, _ in gateways.values():
            bc.stop_process(proc, 60)  # under valgrind a gateway takes long to stop
        valkey.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="sale,edge_refusal,store_refusal",
                        help=f"comma list of {','.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--viewers", type=int, default=16, help="K: joined viewers")
    parser.add_argument("--attempts", type=int, default=100, help="N: counted attempts each")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted attempts each first")
    parser.add_argument("--rounds", type=int, default=2, help="repeats per scenario and variant")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--before-src", default="",
                        help="run 'before' from this source tree with its defaults (else this "
                        "tree with edge refusals off)")  # fmt: skip
    parser.add_argument("--keep", help="keep the callgrind dumps and gateway logs in this dir")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if args.before_src:
        args.before_src = str(Path(args.before_src).resolve())
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.attempts + args.warmup > 1000:  # MAX_QUANTITY: a sale viewer's limit on one drop
        raise SystemExit("--attempts + --warmup must stay within 1000")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("needs valgrind and callgrind_control on PATH (apt install valgrind)")
    bc.raise_fd_limit()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-instr-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        measured = asyncio.run(measure(args, scenarios, tmp))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    import orjson

    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "valgrind": version.strip()},
        "counted": "user-space instructions (Ir) of the gateway process; kernel time is not",
        "viewers": args.viewers, "attempts_per_viewer": args.attempts, "warmup": args.warmup,
        "rounds": args.rounds,
        "before": args.before_src or "this tree, LIVECOMMERCE_EDGE_REFUSALS=false",
        **measured,
    }  # fmt: skip
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
