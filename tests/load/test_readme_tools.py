"""The README's load tools work for a new user: in a fresh copy of the project, ``bash scripts/run``
makes the venv (exactly as a new user gets it), then the README's spike command runs there (with a
small viewer count) and every script the README shows starts.

Slow: a fresh venv is a real ``pip install`` (~30 s with a warm wheel cache).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
COPIED = ("pyproject.toml", "README.md", "livecommerce", "scripts", "loadtests")


def readme_commands() -> list[str]:
    """Every ``python scripts/<name>.py ...`` the README shows (code blocks and tables)."""
    found = re.findall(r"(?:\.venv/bin/)?python (scripts/[a-z_]+\.py[^`\n\\#]*)", README)
    return [c.strip() for c in found]


def test_the_readme_shows_the_spike_command() -> None:
    commands = readme_commands()
    assert any(c.startswith("scripts/spike.py --local --viewers") for c in commands), commands


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project with the venv ``bash scripts/run`` makes (and nothing else)."""
    root = tmp_path_factory.mktemp("newuser") / "livecommerce"
    root.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".venv", "spike-out")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=ignore)
        else:
            shutil.copy2(src, root / name)
    # `scripts/run --help`: the venv is made exactly as for `bash scripts/run`, then the server's
    # --help exits at once instead of serving.
    done = subprocess.run(
        ["bash", "scripts/run", "--help"], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (root / ".venv" / "bin" / "python").exists()
    return root


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_spike_command_runs_after_scripts_run(fresh_copy: Path) -> None:
    readme = next(c for c in readme_commands() if c.startswith("scripts/spike.py --local"))
    args = readme.split()[1:]
    i = args.index("--viewers")
    args[i + 1] = "60"  # the README says 1000; a small spike proves the same imports and path
    out = fresh_copy / "spike-out"
    cmd = [str(fresh_copy / ".venv" / "bin" / "python"), "scripts/spike.py", *args,
           "--ramp", "1", "--buy-window", "1", "--out", str(out), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, cwd=fresh_copy, capture_output=True, text=True, timeout=300)
    detail = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, detail
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["audit"]["ok"], detail
    assert report["viewers"]["joined"] == 60
    assert (out / "latency.png").stat().st_size > 1000  # matplotlib is there too


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_readme_script_starts_after_scripts_run(fresh_copy: Path) -> None:
    scripts = sorted({c.split()[0] for c in readme_commands()})
    assert len(scripts) >= 4, scripts
    python = str(fresh_copy / ".venv" / "bin" / "python")
    for script in scripts:
        done = subprocess.run(
            [python, script, "--help"], cwd=fresh_copy, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{script}: {done.stderr[-2000:]}"
    # The modules the tools import inside their functions (plots, HTTP, locust) are installed.
    probe = "import httpx, matplotlib, locust, websocket, sniffio"
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
