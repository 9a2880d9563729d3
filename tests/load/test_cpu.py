"""loadtests/cpu.py: CPU seconds by role between two snapshots."""

from __future__ import annotations

import os

from loadtests.cpu import Sample, snapshot, usage

ME = 100
SERVE = "/venv/bin/python -m livecommerce serve --host 127.0.0.1 --port 8000 --workers 2"
WORKER = "/venv/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main()"


def machine(cpu: dict[int, float]) -> dict[int, Sample]:
    layout = {
        ME: (1, "python scripts/spike.py --local"),
        101: (ME, SERVE),
        102: (101, WORKER),  # a gateway worker: its parent is the server
        103: (101, WORKER),
        104: (ME, "valkey-server 127.0.0.1:7000"),
        105: (ME, "python -m livecommerce.ops.cli_fulfillment relay"),
        106: (ME, "python -m livecommerce sink --port 9000"),  # how the local stack starts it
        107: (ME, WORKER),  # a viewer process of the fleet
        108: (1, "postgres: checkpointer"),
    }
    return {pid: Sample(ppid, cmd, cpu[pid]) for pid, (ppid, cmd) in layout.items() if pid in cpu}


def test_usage_sums_each_role_between_the_snapshots() -> None:
    before = machine({ME: 1, 101: 1, 102: 5, 103: 5, 104: 2, 105: 1, 106: 1, 107: 3, 108: 50})
    after = machine({ME: 1.5, 101: 1, 102: 8, 103: 9, 104: 3, 105: 1.5, 106: 2, 107: 10, 108: 51})
    assert usage(before, after, me=ME) == {
        "gateway": 7.0, "viewers": 7.0, "valkey": 1.0, "sink": 1.0, "spike": 0.5,
        "relay": 0.5, "other": 1.0,
    }  # fmt: skip


def test_a_process_born_during_the_phase_counts_from_zero() -> None:
    before = machine({ME: 1})
    after = machine({ME: 1, 101: 0, 102: 2.5, 107: 4})  # a restarted worker, a new viewer
    assert usage(before, after, me=ME) == {"viewers": 4.0, "gateway": 2.5}


def test_snapshot_reads_this_process() -> None:
    mine = snapshot()[os.getpid()]
    assert mine.ppid == os.getppid() and mine.cpu_s >= 0 and "python" in mine.cmdline
