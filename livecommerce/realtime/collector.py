"""When a gateway process collects its cyclic garbage: not in the middle of a burst.

CPython's full collection (generation 2) walks every object the collector tracks, and a
gateway with a few thousand viewers holds several hundred thousand of them (each connection's
protocol, parser, session, task and buffers). On the 2-core test machine one such pass took
200-600 ms, with the event loop stopped; in the 5k-viewer spike they landed at the drop's
opening and in the middle of its sales (docs/burst.md, "Garbage collection waits for a quiet
moment"). CPython starts a full pass on its own schedule, and a burst allocates fast: that
schedule falls inside bursts.

So, with ``LIVECOMMERCE_GC_QUIET`` > 0 (the default), a gateway process:

- freezes what exists once it has started (modules, classes, settings: never garbage), so no
  pass walks it again (:func:`gc.freeze`);
- leaves the young generations (0 and 1) to CPython as they are: they are small and cheap, and
  most of a burst's garbage dies there;
- turns CPython's own full passes off and runs them itself (:class:`QuietCollector`): once the
  young generations have been collected as often as CPython waits for before a full pass,
  and no buy attempt has arrived for ``LIVECOMMERCE_GC_QUIET`` seconds, at most once per
  :data:`MIN_INTERVAL_S`; and in any case after :data:`MAX_INTERVAL_S`, so a process that is
  never quiet still frees its old cycles.

The decision (:meth:`QuietCollector.due`) is plain code with the clock handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("livecommerce.gc")

MIN_INTERVAL_S = 30.0
"""Fewest seconds between two full passes started because the process was quiet."""
MAX_INTERVAL_S = 120.0
"""Most seconds a full pass waits for a quiet moment once one is due: in a process that is never
quiet, old cycles (some of what closed connections leave) are not freed meanwhile."""
TICK_S = 0.5
YOUNG_PASSES = 10
"""Generation-1 passes since the last full one before a full one is due: CPython's own default
third threshold, which it compares with the same count (``gc.get_count()[2]``)."""
_AUTO_OFF = 1 << 30
"""A third threshold CPython never reaches: its automatic full passes are off."""

_installed = 0
_saved: tuple[int, int, int] | None = None


def install() -> None:
    """Freeze what exists and turn CPython's automatic full passes off (nested calls count)."""
    global _installed, _saved
    if _installed == 0:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(_saved[0], _saved[1], _AUTO_OFF)
    _installed += 1


def uninstall() -> None:
    """Undo the last :func:`install`; the first one's thresholds come back with the last."""
    global _installed, _saved
    if _installed == 0:
        return
    _installed -= 1
    if _installed == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        gc.unfreeze()
        _saved = None


class QuietCollector:
    """Runs the full passes of a process whose automatic ones are off (:func:`install`).

    ``activity`` returns a number that changes whenever a buy attempt arrives (the gateway's
    attempt count): the process is quiet when it has not changed for ``quiet_s`` seconds.
    """

    def __init__(
        self,
        activity: Callable[[], int],
        quiet_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        young_passes: Callable[[], int] = lambda: gc.get_count()[2],
        collect: Callable[[], object] = lambda: gc.collect(2),
        observe: Callable[[float], None] = lambda _s: None,
    ) -> None:
        self.activity = activity
        self.quiet_s = quiet_s
        self.clock = clock
        self.young_passes = young_passes
        self.collect = collect
        self.observe = observe
        now = clock()
        self.last_full = now
        self._seen = activity()
        self._busy_at = now
        self.passes = 0

    def due(self, now: float) -> bool:
        """Whether a full pass should run now (and note the activity seen since the last call)."""
        seen = self.activity()
        if seen != self._seen:
            self._seen, self._busy_at = seen, now
        if self.young_passes() < YOUNG_PASSES:
            return False
        since = now - self.last_full
        if since >= MAX_INTERVAL_S:
            return True
        return since >= MIN_INTERVAL_S and now - self._busy_at >= self.quiet_s

    def tick(self) -> bool:
        """Run a full pass if one is due; True when it ran."""
        now = self.clock()
        if not self.due(now):
            return False
        started = time.perf_counter()
        self.collect()
        took = time.perf_counter() - started
        self.last_full = self.clock()
        self.passes += 1
        self.observe(took)
        log.debug("full garbage collection: %.1f ms", took * 1000)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set."""
        while not stop.is_set():
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_S)
