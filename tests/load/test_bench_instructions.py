"""The pure parts of ``scripts/bench_instructions.py``: reading a callgrind dump's totals, finding
the newest dump, the spread of repeats. (The benchmark itself needs valgrind and is not run here.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_instructions as bi

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 14696
part: 1

desc: Trigger: dump sale-after-0

positions: line
events: Ir
summary: 937830


fn=(326) 0x00000000049367a8
0 6
totals: 937860
"""


def test_totals_come_from_the_summary_line() -> None:
    assert bi.callgrind_totals(DUMP) == {"Ir": 937830}


def test_totals_line_when_there_is_no_summary_and_several_events() -> None:
    text = "events: Ir Dr Dw\ntotals: 100 40\n"  # a trailing zero count may be left out
    assert bi.callgrind_totals(text) == {"Ir": 100, "Dr": 40, "Dw": 0}


def test_a_file_that_is_no_dump_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a callgrind dump"):
        bi.callgrind_totals("events: Ir\n")  # an empty dump file has not even this


def test_the_newest_dump_is_the_highest_number(tmp_path: Path) -> None:
    out = tmp_path / "callgrind-after.out"
    for name in ("callgrind-after.out", "callgrind-after.out.2", "callgrind-after.out.10",
                 "callgrind-before.out.11", "callgrind-after.out.log"):  # fmt: skip
        (tmp_path / name).write_text("")
    assert bi.latest_dump(out).name == "callgrind-after.out.10"
    with pytest.raises(FileNotFoundError):
        bi.latest_dump(tmp_path / "other.out")


def test_spread_is_the_range_over_the_median() -> None:
    assert bi.spread([100.0]) == 0.0
    assert bi.spread([100.0, 110.0, 105.0]) == pytest.approx(10 / 105, abs=1e-4)
