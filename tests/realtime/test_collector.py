"""The gateway's garbage-collection policy (realtime/collector.py): CPython's own full passes
are off while a gateway runs, and it runs them itself when no buy attempt has arrived for a
while, or after MAX_INTERVAL_S in any case. The decision runs on a clock handed in; the
mechanism is checked on the real collector, and the wiring on a real gateway."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, drop, live_show, serve, settings

from livecommerce.realtime import collector
from livecommerce.realtime.client import Client
from livecommerce.realtime.collector import MAX_INTERVAL_S, MIN_INTERVAL_S, YOUNG_PASSES
from livecommerce.realtime.tokens import mint
from livecommerce.store.keys import Keyspace


class World:
    """A clock, an attempt count and the young-generation count, all set by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.attempts = 0
        self.young = YOUNG_PASSES
        self.collected: list[float] = []

    def collector(self, quiet_s: float = 2.0) -> collector.QuietCollector:
        return collector.QuietCollector(
            lambda: self.attempts, quiet_s, clock=lambda: self.now,
            young_passes=lambda: self.young, collect=lambda: self.collected.append(self.now),
        )  # fmt: skip


def test_a_full_pass_waits_for_a_quiet_moment() -> None:
    w = World()
    quiet = w.collector()
    w.now += MIN_INTERVAL_S
    for _ in range(10):  # a burst: an attempt every half second
        w.attempts += 1
        w.now += 0.5
        assert not quiet.tick()
    w.now += 1.9
    assert not quiet.tick()  # 1.9 s without an attempt: not quiet yet
    w.now += 0.2
    assert quiet.tick()  # 2.1 s
    assert w.collected == [w.now] and quiet.passes == 1


def test_no_full_pass_before_the_young_generations_were_collected_often_enough() -> None:
    w = World()
    quiet = w.collector()
    w.young = YOUNG_PASSES - 1
    w.now += MAX_INTERVAL_S + MIN_INTERVAL_S
    assert not quiet.tick()  # nothing much promoted to the old generation: nothing to do
    w.young = YOUNG_PASSES
    assert quiet.tick()


def test_quiet_passes_are_at_least_min_interval_apart() -> None:
    w = World()
    quiet = w.collector()
    w.now += MIN_INTERVAL_S
    assert quiet.tick()
    w.now += MIN_INTERVAL_S - 1
    assert not quiet.tick()
    w.now += 1
    assert quiet.tick()
    assert len(w.collected) == 2


def test_a_process_that_is_never_quiet_still_collects_after_max_interval() -> None:
    w = World()
    quiet = w.collector()
    start = w.now
    while w.now - start < MAX_INTERVAL_S - 0.5:
        w.attempts += 1
        w.now += 0.5
        assert not quiet.tick()
    w.attempts += 1
    w.now += 0.5
    assert quiet.tick()
    assert w.collected == [start + MAX_INTERVAL_S]


@pytest.fixture
def installed() -> Iterator[None]:
    before = gc.get_threshold()
    collector.install()
    try:
        yield
    finally:
        collector.uninstall()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_installed_cpython_runs_no_full_pass_of_its_own(installed: None) -> None:
    assert gc.get_threshold()[2] > 1_000_000
    assert gc.get_freeze_count() > 0  # what existed at install is never walked again
    full = gc.get_stats()[2]["collections"]
    young = gc.get_stats()[0]["collections"]
    survivors = []
    for i in range(200_000):  # enough promotions for CPython to start several full passes
        survivors.append(Cycle())
        if i % 2:
            survivors.pop(0)
    assert gc.get_stats()[0]["collections"] > young + 100  # young passes still run
    assert gc.get_stats()[2]["collections"] == full
    old = Cycle()
    dead = weakref.ref(old)
    del old, survivors
    quiet = collector.QuietCollector(lambda: 0, 2.0, clock=lambda: 1e9,
                                     young_passes=lambda: YOUNG_PASSES)  # fmt: skip
    quiet.last_full = 0.0
    assert quiet.tick()  # the real full pass, run by the policy
    assert gc.get_stats()[2]["collections"] == full + 1
    assert dead() is None


def test_the_thresholds_come_back_after_the_last_of_nested_installs() -> None:
    before = gc.get_threshold()
    collector.install()
    collector.install()
    collector.uninstall()
    assert gc.get_threshold()[2] > 1_000_000  # one gateway of two still runs
    collector.uninstall()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    collector.uninstall()  # one too many: nothing changes
    assert gc.get_threshold() == before


async def test_a_gateway_runs_under_the_policy_and_counts_attempts(
    redis_url: str, keyspace: Keyspace, redis: aioredis.Redis
) -> None:
    before = gc.get_threshold()
    async with live_show(redis, keyspace) as inv:
        await inv.create_drop("s1", drop("d1", quantity=5))
        async with serve(settings(), redis_url, keyspace) as gw:
            assert gc.get_threshold()[2] > 1_000_000
            gateway = gw.gateway
            seen = gateway.attempts
            async with Client(gw.url, "s1", token=mint(SECRET, "ann", 600)) as ann:
                assert (await ann.buy_now("d1", 1, "pay", request_id="a1"))["ok"]
                assert (await ann.buy_now("d1", 9, "pay", request_id="a2"))["ok"] is False
            assert gateway.attempts >= seen + 2  # what the quiet collector watches
        async with serve(settings(gc_quiet_s=0.0), redis_url, keyspace):
            assert gc.get_threshold() == before  # 0: CPython's own schedule
    assert gc.get_threshold() == before
