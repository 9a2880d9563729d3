"""The viewer processes of one load run, seen from the parent: start them, follow their progress,
tell them things, stop them and collect their results.

Each process runs :func:`loadtests.viewers.worker_main` and talks over a pipe (see
:mod:`loadtests.viewers` for the messages). ``scripts/spike.py`` and :mod:`loadtests.chaos` both
drive their viewers through a :class:`Fleet`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from loadtests.viewers import WorkerConfig, worker_main

COLLECT_TIMEOUT_S = 60.0


class Fleet:
    """What the workers last reported, summed; their results once they stopped."""

    def __init__(self, configs: list[WorkerConfig]) -> None:
        self.configs = configs
        self.last: list[dict[str, Any]] = [{} for _ in configs]
        self.results: list[dict[str, Any] | None] = [None] * len(configs)
        self.changed = asyncio.Event()
        self._pipes: list[Connection] = []
        self._procs: list[BaseProcess] = []

    def start(self) -> Fleet:
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        for i, config in enumerate(self.configs):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(config, child_end), daemon=True)
            proc.start()
            child_end.close()
            self._pipes.append(parent_end)
            self._procs.append(proc)
            loop.add_reader(parent_end.fileno(), self._on_message, i, parent_end)
        return self

    def _on_message(self, i: int, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            kind, data = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if self.results[i] is None:
                self.results[i] = {"error": "viewer process died"}
            self.changed.set()
            return
        if kind == "progress":
            self.last[i] = data
        else:
            self.results[i] = data
            self.last[i] = {**self.last[i], **data}
            loop.remove_reader(conn.fileno())
        self.changed.set()

    def total(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.last)

    def done(self) -> bool:
        return all(r is not None for r in self.results)

    def send(self, message: Any) -> None:
        """Tell every worker (a ``("burst", ...)`` or ``"stop"``)."""
        for conn in self._pipes:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(message)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        deadline: float,
        say: Callable[[str], None] | None = None,
    ) -> bool:
        """Wait until ``predicate()`` (True), the monotonic ``deadline`` or every worker ended
        (False); ``say`` gets a progress line about once a second."""
        last_say = 0.0
        while not predicate():
            if time.monotonic() >= deadline or self.done():
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.5)
            if say is not None and time.monotonic() - last_say >= 1.0:
                last_say = time.monotonic()
                say(self.line())
        return True

    def line(self) -> str:
        t = self.total
        return (
            f"joined {t('joined')}, connected {t('connected')}, failed {t('failed')}, "
            f"saw drop {t('saw_drop')}, sent {t('sent')}, answered {t('answered')}, "
            f"ok {t('ok')}, unavailable {t('unavailable')}, timed out {t('unanswered')}"
        )

    async def stop(self) -> list[dict[str, Any]]:
        """Tell the workers to stop, collect their results (bounded), end the processes."""
        self.send("stop")
        await self.wait_until(self.done, time.monotonic() + COLLECT_TIMEOUT_S)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        return [r or {"error": "no result from viewer process"} for r in self.results]
