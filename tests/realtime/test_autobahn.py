"""Autobahn conformance in CI: the fast cases (everything but the 9.* performance and 12/13.*
compression groups) against our WebSocket stack, and the no-echo cases against the real /ws.
The script exits 1 on any non-pass that docs/conformance.md does not explain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "conformance.py"


@pytest.mark.parametrize(
    ("target", "cases"),
    [
        ("stack", ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]),
        ("endpoint", ["2.*", "3.*", "4.*", "7.*"]),
    ],
)
def test_autobahn_cases_pass_or_are_explained(target: str, cases: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--target", target, "--cases", *cases],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert f"{target}: " in run.stdout and "UNEXPLAINED" not in run.stdout
