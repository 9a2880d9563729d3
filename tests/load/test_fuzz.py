"""Fuzzing through real sockets against a real ``livecommerce serve`` process: hypothesis
generates the frames (loadtests/fuzz.py), loadtests/fuzz_run.py checks afterwards that the process
is alive and ready, that a viewer who watched all along still receives events, and that a full
dump of the store is unchanged except for what accepted commands wrote. The long run (100,000+
frames) is ``scripts/fuzz.py``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadtests.fuzz_run import STACK_ENV, run_campaign  # noqa: E402
from loadtests.stack import LocalStack  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "fuzz", relay=False, env=STACK_ENV) as running:
        yield running


def test_fuzzed_frames_change_nothing_but_what_was_accepted(stack: LocalStack) -> None:
    report = run_campaign(stack, examples=100)
    assert not report["problems"], report
    assert report["confirmed"] >= 100 and report["replies"].get("pong"), report
