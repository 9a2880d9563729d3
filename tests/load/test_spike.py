"""The spike tool: its figures (pure), and a small real run (a few hundred viewers against a local
deployment started by ``--local``) whose JSON report and audit are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadtests.common import (  # noqa: E402
    SpikePlan,
    client_checks,
    per_second,
    percentile,
    summarize,
    ws_url,
)


# -- pure -----------------------------------------------------------------------------------------
def test_attempts_are_spread_over_viewers_exactly() -> None:
    plan = SpikePlan(viewers=7, attempts=30)
    shares = [plan.attempts_of(i) for i in range(7)]
    assert sum(shares) == 30
    assert max(shares) - min(shares) <= 1


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
    s = summarize([3.0, 1.0, 2.0])
    assert (s["count"], s["p50"], s["max"], s["min"]) == (3, 2.0, 3.0, 1.0)


def test_per_second_bins_from_the_origin() -> None:
    assert per_second([1000.0, 1500.0, 2100.0, 4999.0, 500.0], origin_ms=1000.0) == [2, 1, 0, 1]


def test_ws_url_is_derived_from_the_http_url() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://live.example/") == "wss://live.example/ws"
    assert ws_url("ws://h/ws") == "ws://h/ws"


def test_client_checks_catch_oversell_limit_and_duplicate_orders() -> None:
    plan = SpikePlan(stock=3, limit=1)
    assert client_checks(plan, {"a": 1, "b": 1}, ["o1", "o2"]) == []
    problems = client_checks(plan, {"a": 2, "b": 1, "c": 1}, ["o1", "o1", "o2", "o3"])
    assert len(problems) == 3
    assert "4 units of a stock of 3" in problems[0]
    assert "more than the limit 1" in problems[1]
    assert "same order id" in problems[2]


# -- a real spike ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("client", ["lean", "product"])
def test_small_local_spike_reports_and_audits(tmp_path: Path, client: str) -> None:
    out = tmp_path / "spike"
    cmd = [
        sys.executable, str(ROOT / "scripts" / "spike.py"), "--local", "--viewers", "300",
        "--stock", "40", "--limit", "2", "--attempts", "1000", "--ramp", "3",
        "--buy-window", "1", "--processes", "2", "--out", str(out), "--quiet",
        "--client", client,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=100, cwd=ROOT)
    detail = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, detail
    report = json.loads((out / "report.json").read_text())

    assert report["ok"] and report["audit"]["ok"], detail
    assert report["client"] == client
    assert report["viewers"]["joined"] == 300
    assert report["viewers"]["failed"] == 0
    assert report["fanout_ms"]["received"] == 300  # every viewer saw the drop
    assert report["fanout_ms"]["p99"] >= report["fanout_ms"]["p50"] >= 0
    buy = report["buy"]
    assert buy["attempts_sent"] == buy["answered"] == 1000
    assert buy["outcomes"]["ok"] == 40  # everything sold, nothing more
    assert sum(buy["outcomes"].values()) == 1000
    assert set(buy["outcomes"]) <= {"ok", "sold_out", "limit_exceeded"}
    assert buy["answered_per_s"] > 0

    audit = report["audit"]
    assert audit["inventory"]["ok"] and audit["inventory"]["orders"] == 40
    assert audit["drop"]["sold"] == 40 <= report["plan"]["stock"]
    e2e = audit["fulfillment"]
    assert e2e["ok"] and e2e["confirmed"] == e2e["received"] == 40
    assert audit["viewers"]["told_orders"] == 40 and not audit["viewers"]["violations"]

    for name in ("latency.png", "sold.png", "viewers.png"):
        assert (out / name).stat().st_size > 1000
    assert "AUDIT PASSED" in done.stdout
