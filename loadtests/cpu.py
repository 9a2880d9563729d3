"""CPU seconds by role over a phase of a load run: where the machine's cores went.

A local spike runs everything on one machine: the gateway workers, Valkey, the relay, the sink
and the viewer processes that play the crowd. When the viewers alone take most of the cores, a
faster gateway cannot answer sooner, and the spike's figures say more about the load generator
than about the server. :func:`snapshot` reads every process's user + system CPU time from
Linux ``/proc``; :func:`usage` turns two snapshots into CPU seconds per role:

- ``gateway``: ``livecommerce serve`` and its worker processes;
- ``valkey``: ``valkey-server`` / ``redis-server``;
- ``relay``, ``sink``: the fulfillment relay and the reference sink;
- ``viewers``: other children of the measuring process (the viewer fleet);
- ``spike``: the measuring process itself;
- ``other``: everything else on the machine.

Processes that ended during the phase are not counted (their time is gone from ``/proc``).
Elsewhere than Linux both functions return empty results.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Sample:
    ppid: int
    cmdline: str
    cpu_s: float


def _read(pid: int, tick: float) -> Sample | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return Sample(int(fields[1]), cmdline, (int(fields[11]) + int(fields[12])) / tick)


def snapshot() -> dict[int, Sample]:
    """Every process's parent, command line and CPU seconds so far."""
    if not PROC.is_dir():
        return {}
    tick = float(os.sysconf("SC_CLK_TCK"))
    out: dict[int, Sample] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (sample := _read(int(entry.name), tick)) is not None:
            out[int(entry.name)] = sample
    return out


_FULFILLMENT = re.compile(r"livecommerce(?:\.ops\.cli_fulfillment)? (relay|sink)\b")


def role_of(pid: int, sample: Sample, samples: dict[int, Sample], me: int) -> str:
    cmd = sample.cmdline
    parent = samples.get(sample.ppid)
    if pid == me:
        return "spike"
    if "valkey-server" in cmd or "redis-server" in cmd:
        return "valkey"
    if "livecommerce serve" in cmd or (parent and "livecommerce serve" in parent.cmdline):
        return "gateway"
    fulfillment = _FULFILLMENT.search(cmd)  # `livecommerce relay` or the module's own name
    if fulfillment is not None:
        return fulfillment.group(1)
    if sample.ppid == me:
        return "viewers"
    return "other"


def usage(before: dict[int, Sample], after: dict[int, Sample], me: int | None = None
          ) -> dict[str, float]:  # fmt: skip
    """CPU seconds per role between two snapshots (a process born in between counts from 0)."""
    me = os.getpid() if me is None else me
    out: dict[str, float] = {}
    for pid, sample in after.items():
        start = before.get(pid)
        spent = sample.cpu_s - (start.cpu_s if start is not None else 0.0)
        if spent > 0:
            role = role_of(pid, sample, after, me)
            out[role] = round(out.get(role, 0.0) + spent, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
