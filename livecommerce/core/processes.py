"""Stopping a child process the one way every part does it: SIGTERM, a bounded wait, then
SIGKILL (the embedded Valkey, the load tools' local stack, the test harnesses)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM ``proc`` and wait up to ``timeout`` s for it, else SIGKILL it (and wait 5 s
    more); its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
