"""The chaos spike: its pure parts (schedule, gap check, per-wave rows), and a short real run
(``scripts/spike.py --local --chaos``: a few hundred viewers, two gateway processes, every fault
once) whose report must show the invariants held -- never its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadtests.chaos import (  # noqa: E402
    FAULTS,
    ChaosPlan,
    Step,
    gap_check,
    schedule,
    units_per_wave,
    wave_rows,
)
from loadtests.common import SpikePlan  # noqa: E402
from loadtests.viewers import wave_attempts  # noqa: E402


# -- pure -----------------------------------------------------------------------------------------
def test_the_schedule_is_seeded_and_has_every_fault_once_after_a_quiet_wave() -> None:
    plan = ChaosPlan(seed=7, burst_s=2.0)
    steps = schedule(plan)
    assert steps == schedule(ChaosPlan(seed=7, burst_s=2.0))
    assert steps != schedule(ChaosPlan(seed=8, burst_s=2.0))
    assert steps[0] == Step(0, "none", 0.0)
    assert sorted(s.fault for s in steps[1:]) == sorted(FAULTS)
    assert [s.wave for s in steps] == list(range(len(FAULTS) + 1))
    assert all(0 <= s.at_s <= 0.2 for s in steps[1:])  # while the wave's units sell
    with pytest.raises(ValueError, match="unknown fault"):
        schedule(ChaosPlan(faults=("meteor",)))


def test_units_and_attempts_are_split_over_waves_exactly() -> None:
    assert units_per_wave(1000, 7) == [143] * 6 + [142]
    assert sum(units_per_wave(40, 7)) == 40
    plan = SpikePlan(viewers=13, attempts=1000)
    per_wave = [sum(wave_attempts(plan, 7, w, i) for i in range(13)) for w in range(7)]
    assert sum(per_wave) == 1000 and max(per_wave) - min(per_wave) <= 1
    per_viewer = [sum(wave_attempts(plan, 7, w, i) for w in range(7)) for i in range(13)]
    assert max(per_viewer) - min(per_viewer) <= 2  # the extra attempts rotate


def test_the_gap_check_finds_a_missing_event_and_forgives_what_a_snapshot_replaced() -> None:
    log = ["100-0", "200-0", "300-0", "400-0"]
    tracks = {
        "complete": {"first": "100-0", "seen": ["200-0", "300-0", "400-0"], "at_end": True},
        "resynced": {"first": "100-0", "resync": "300-0", "seen": ["400-0"], "at_end": True},
        "gap": {"first": "100-0", "seen": ["200-0", "400-0"], "at_end": True},
        "left": {"first": "100-0", "seen": [], "at_end": False},
        "late": {"first": "300-0", "seen": ["400-0"], "at_end": True},
    }
    result = gap_check(log, tracks)
    assert result["with_gap"] == 1 and not result["ok"]
    assert result["examples"] == [{"viewer": "gap", "since": "100-0", "missing": ["300-0"]}]
    assert (result["complete_by_events"], result["complete_after_snapshot"]) == (2, 1)
    assert result["not_connected_at_end"] == 1
    del tracks["gap"]
    assert gap_check(log, tracks)["ok"]
    assert not gap_check(["100-10"], {"v": {"first": "100-9", "seen": [], "at_end": True}})["ok"]


def test_wave_rows_sum_the_workers_and_take_the_deltas_of_the_sink() -> None:
    steps = [Step(0, "none", 0.0), Step(1, "sink_down", 0.5)]
    workers = [
        {"0": {"attempts": 3, "ok": 2}, "1": {"attempts": 4, "unavailable": 2, "retried": 1}},
        {"1": {"attempts": 1, "ok": 1, "rejoin_resumed": 5}},
    ]
    ends = [
        {"fulfillment": {"confirmed": 2, "received": 2, "duplicates_rejected": 0}},
        {"fulfillment": {"confirmed": 3, "received": 3, "duplicates_rejected": 4},
         "recover_s": 61.5, "recovery": "sink has every order"},
    ]  # fmt: skip
    rows = wave_rows(steps, [2, 1], workers, ends)
    assert rows[0]["attempts"] == 3 and rows[0]["acknowledged_orders"] == 2
    assert rows[1]["attempts"] == 5 and rows[1]["acknowledged_orders"] == 1
    assert (rows[1]["unavailable_answers"], rows[1]["retried_same_id"]) == (2, 1)
    assert rows[1]["rejoins_resumed"] == 5
    assert (rows[1]["received_this_wave"], rows[1]["duplicates_rejected"]) == (1, 4)
    assert rows[1]["recover_s"] == 61.5


# -- a real chaos run -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_chaos_spike_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "spike.py"), "--local", "--chaos", "--seed", "3",
        "--viewers", "300", "--stock", "70", "--limit", "2", "--attempts", "1400",
        "--ramp", "3", "--buy-window", "2", "--processes", "2", "--sink-down", "5",
        "--slow-for", "4", "--valkey-down", "1", "--out", str(out), "--no-plots", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    detail = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, detail
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["audit"]["ok"], detail
    chaos = report["chaos"]
    waves = chaos["waves"]
    assert sorted(w["fault"] for w in waves) == sorted([*FAULTS, "none"])
    assert all("error" not in w and "NOT" not in w["recovery"] for w in waves), detail

    # Nothing sold twice, every acknowledged order in the store, the stream and the sink.
    audit = report["audit"]
    acknowledged = sum(w["acknowledged_orders"] for w in waves)
    assert acknowledged == audit["viewers"]["told_orders"] == audit["inventory"]["orders"]
    assert audit["drop"]["sold"] <= 70
    e2e = audit["fulfillment"]
    assert e2e["confirmed"] == e2e["received"] == audit["inventory"]["orders"]
    assert e2e["dead_lettered"] == 0 and not e2e["missing"] and not e2e["lost_from_stream"]
    assert chaos["sink_dedup"]["ok"] and chaos["sink_dedup"]["orders"] == e2e["received"]

    # The viewers of the killed gateway came back and resumed; no viewer has a gap.
    by_fault = {w["fault"]: w for w in waves}
    assert (
        by_fault["gateway_kill"]["rejoins_resumed"] + by_fault["gateway_kill"]["rejoins_snapshot"]
        > 0
    ), detail
    assert chaos["gaps"]["ok"] and chaos["gaps"]["with_gap"] == 0, detail
    assert chaos["gaps"]["viewers_checked"] > 0
    # Every attempt was answered (after retries with the same id where the store was away).
    assert report["buy"]["attempts_sent"] == report["buy"]["answered"], detail
    assert "CHAOS PASSED" in done.stdout and "AUDIT PASSED" in done.stdout
