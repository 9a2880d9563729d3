"""The locustfile, run headless for a few seconds against a real local deployment (embedded Valkey,
server, sink, relay as processes): the CSV shows WebSocket joins and buys, and the audit passed.

Locust and gevent run in a subprocess, so their monkey-patching and warnings stay out of pytest.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadtests.stack import LocalStack  # noqa: E402

pytestmark = pytest.mark.slow

LOCUST = Path(sys.executable).with_name("locust")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "stack") as running:
        yield running


def run_locust(stack: LocalStack, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LIVECOMMERCE_", "LC_"))},
        "LC_HOST_KEY": stack.host_key,
        "LIVECOMMERCE_TOKEN_SECRET": stack.token_secret,
        "LC_REDIS_URL": stack.redis_url,
        "LIVECOMMERCE_KEY_PREFIX": stack.key_prefix,
    }
    cmd = [
        str(LOCUST), "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "--host", stack.url, "--csv", str(out / "run"), "--only-summary", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def stats_rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "run_stats.csv").open() as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def test_locust_spike_joins_buys_and_audits(stack: LocalStack, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_locust(
        stack, out, "-u", "9", "-r", "9", "-t", "20s",
        "--stock", "10", "--limit", "2", "--attempts-per-viewer", "4", "--buy-window", "1",
    )  # fmt: skip
    detail = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, detail
    rows = stats_rows(out)

    def count(kind: str, name: str) -> tuple[int, int]:
        row = rows.get((kind, name))
        return (int(row["Request Count"]), int(row["Failure Count"])) if row else (0, 0)

    assert count("WS", "connect") == (8, 0), detail
    assert count("WS", "join") == (8, 0), detail
    assert count("WSR", "drop_opened") == (8, 0), detail  # fan-out to every viewer
    ok, ok_failed = count("WS", "buy_now ok")
    assert ok == 10 and ok_failed == 0, detail  # 32 attempts on 10 units: all sold, none more
    answered = sum(
        int(row["Request Count"])
        for (kind, name), row in rows.items()
        if kind == "WS" and name.startswith("buy_now ")
    )
    assert answered == 32, detail
    assert count("WS", "drop") == (0, 0), detail
    assert count("POST", "host: drop") == (1, 0), detail

    audit = json.loads((out / "run_audit.json").read_text())
    assert audit["ok"], audit
    assert audit["drop"]["sold"] == 10
    assert audit["fulfillment"]["confirmed"] == audit["fulfillment"]["received"] == 10
    assert audit["viewers"]["told_orders"] == 10
    assert "AUDIT PASSED" in done.stdout


def test_locust_run_exits_non_zero_when_the_audit_fails(tmp_path: Path) -> None:
    """No relay: orders are confirmed but never reach the sink, so the end-to-end check cannot
    balance and the run exits 1 (locust's own verdict would have been 0: no request failed)."""
    with LocalStack(tmp_path / "stack", relay=False) as no_relay:
        out = tmp_path / "out"
        done = run_locust(
            no_relay, out, "-u", "5", "-r", "5", "-t", "20s", "--stock", "3",
            "--attempts-per-viewer", "2", "--sink-wait", "1",
        )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:]
    assert "AUDIT FAILED" in done.stdout
    audit = json.loads((out / "run_audit.json").read_text())
    assert not audit["ok"]
    assert audit["inventory"]["ok"]  # the stock itself is fine
    assert audit["fulfillment"]["confirmed"] == 3 and audit["fulfillment"]["received"] == 0
