"""The chaos spike (``scripts/spike.py --chaos``): faults injected on a seeded schedule during a
live burst on a local stack of two gateway processes, the relay and the sink, then one report per
fault and the audit.

A chaos run is a spike in **waves**. Wave 0 is the drop itself (no fault: the baseline); every
later wave restocks its share of the units and sends the viewers a ``burst`` (each makes its share
of the wave's attempts in the buy window), and one fault lands inside that burst, at a seeded
moment:

===============  =====================================================================
``gateway_kill`` SIGKILL of one gateway process; uvicorn's supervisor starts another, the
                 viewers reconnect (to either) and resume; their pending commands are sent
                 again with the same request ids.
``relay_kill``   the sink is made slow (it records, then answers late), the relay is
                 SIGKILLed while deliveries wait for their answers -- before its acks -- and
                 a new relay takes the pending orders over (``XAUTOCLAIM``).
``valkey_term``  Valkey stopped with SIGTERM (it fsyncs and exits) and started again on the
                 same data directory and port after ``valkey_down_s``.
``valkey_kill``  the same with SIGKILL: what the AOF holds is all that is left.
``sink_down``    the fulfillment sink down for ``sink_down_s`` (60 s), then back.
``sink_slow``    every sink response delayed by ``slow_delay_s`` for ``slow_for_s``.
===============  =====================================================================

Per wave the report gives: units, attempts, orders acknowledged to buyers, ``unavailable``
answers and the attempts sent again with the same request id (and how many of those sold),
viewer reconnects answered ``resumed`` (no gap) or ``snapshot``, the orders confirmed / still in
the stream / received by the sink after de-duplication / duplicates the sink rejected by the end
of the wave, and the time to recover. After the last wave the show ends (a last durable event
every viewer must receive), the viewers stop, and three checks run: the audit of
:mod:`loadtests.postrun` (no oversell, every confirmed order in the store, the stream and the
sink), the gap check (:func:`gap_check`: every viewer still connected received every durable
event of the show's log after its join, or after the snapshot of a rejoin that could not resume)
and the sink's own de-duplication (no order received under two webhook ids).

The pure parts (:func:`schedule`, :func:`gap_check`, :func:`wave_rows`) are tested without I/O.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis

from livecommerce.fulfillment import audit as fulfillment_audit
from livecommerce.fulfillment.sink import FailMode, set_fail_mode
from livecommerce.fulfillment.webhooks import order_id_of
from livecommerce.store.keys import Keyspace
from loadtests import common
from loadtests.common import SpikePlan
from loadtests.fleet import Fleet
from loadtests.stack import LocalStack

FAULTS = ("gateway_kill", "relay_kill", "valkey_term", "valkey_kill", "sink_down", "sink_slow")
STACK_ENV = {
    # A new relay takes over the dead one's pending orders after 5 s instead of 30 s.
    "LIVECOMMERCE_RELAY_CLAIM_IDLE": "5",
}
"""Settings of the chaos stack (on top of the spike's)."""
RELAY_GROUP = "fulfillment"
"""The relay's consumer group (LIVECOMMERCE_RELAY_GROUP's default; the stack does not set it)."""
RECOVER_TIMEOUT_S = 180.0
REPORT_MARGIN_MS = 1500.0
"""A worker report this much younger than a fault has seen its effect (reports: every 0.5 s)."""
WAVE_TIMEOUT_S = 120.0
FINAL_EVENT_WAIT_S = 5.0


@dataclass(frozen=True)
class ChaosPlan:
    seed: int = 1
    faults: tuple[str, ...] = FAULTS
    sink_down_s: float = 60.0
    slow_delay_s: float = 1.0
    slow_for_s: float = 15.0
    valkey_down_s: float = 2.0
    burst_s: float = 2.0
    """Each wave's buy window."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Step:
    wave: int
    fault: str
    """One of :data:`FAULTS`, or ``none`` (wave 0)."""
    at_s: float
    """Seconds after the wave's burst starts."""
    target: int = 0
    """For ``gateway_kill``: which gateway process (index in pid order)."""


def schedule(plan: ChaosPlan) -> list[Step]:
    """Wave 0 without a fault, then one wave per fault in a seeded order, each fault at a seeded
    moment in the first tenth of its burst: a wave's units sell within a fraction of a second,
    and the fault must land while they do (attempts in flight, orders being made)."""
    unknown = set(plan.faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
    rng = random.Random(plan.seed)
    order = list(plan.faults)
    rng.shuffle(order)
    steps = [Step(0, "none", 0.0)]
    for wave, fault in enumerate(order, 1):
        at_s = round(rng.uniform(0.0, 0.1) * plan.burst_s, 3)
        steps.append(Step(wave, fault, at_s, rng.randrange(2)))
    return steps


def units_per_wave(stock: int, waves: int) -> list[int]:
    base, extra = divmod(stock, waves)
    return [base + (1 if w < extra else 0) for w in range(waves)]


def _after(a: str, b: str | None) -> bool:
    """Stream id ``a`` > ``b`` (``None``: anything)."""
    if b is None:
        return True
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


def gap_check(log_ids: Sequence[str], tracks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Did every viewer connected at the end receive every durable event it should have?

    A viewer should have every id of the show's log after the ``last_event_id`` of its first
    join, or, when a rejoin was answered with a snapshot (state replaced, ``gap: true``), after
    that snapshot's. ``log_ids`` is the log as read after the run."""
    gapless = resynced = gaps = left = 0
    examples: list[dict[str, Any]] = []
    for viewer, track in tracks.items():
        if not track.get("at_end"):
            left += 1
            continue
        since = track.get("resync") or track.get("first")
        seen = set(track.get("seen", ()))
        missing = [i for i in log_ids if _after(i, since) and i not in seen]
        if missing:
            gaps += 1
            if len(examples) < 5:
                examples.append({"viewer": viewer, "since": since, "missing": missing[:5]})
        elif track.get("resync"):
            resynced += 1
        else:
            gapless += 1
    return {
        "viewers_checked": gapless + resynced + gaps,
        "complete_by_events": gapless,
        "complete_after_snapshot": resynced,
        "with_gap": gaps,
        "not_connected_at_end": left,
        "examples": examples,
        "ok": gaps == 0,
    }


def wave_rows(
    steps: Sequence[Step],
    units: Sequence[int],
    worker_waves: Sequence[dict[str, dict[str, int]]],
    ends: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One report row per wave: the workers' per-wave counters summed, plus what the controller
    measured (``ends``: the fulfillment counts at the end of the wave, recovery time)."""
    rows = []
    previous: dict[str, Any] = {}
    for step, unit, end in zip(steps, units, ends, strict=True):
        c: Counter[str] = Counter()
        for waves in worker_waves:
            c.update(waves.get(str(step.wave), {}))
        e2e = end.get("fulfillment", {})
        rows.append({
            "wave": step.wave,
            "fault": step.fault,
            "fault_at_s": step.at_s,
            "units": unit,
            "attempts": c["attempts"],
            "acknowledged_orders": c["ok"],
            "refused": c["refused"],
            "timeouts": c["timeout"],
            "timeouts_retried": c["timeout_retried"],
            "unavailable_answers": c["unavailable"],
            "retried_same_id": c["retried"],
            "retried_then_answered": c["retried_answered"],
            "retried_then_sold": c["retried_ok"],
            "resent_on_reconnect": c["resent"],
            "rejoins_resumed": c["rejoin_resumed"],
            "rejoins_snapshot": c["rejoin_snapshot"],
            "orders_confirmed": e2e.get("confirmed", 0),
            "orders_in_stream": e2e.get("in_stream", 0),
            "orders_received": e2e.get("received", 0),
            "received_this_wave": e2e.get("received", 0) - previous.get("received", 0),
            "duplicates_rejected": e2e.get("duplicates_rejected", 0)
            - previous.get("duplicates_rejected", 0),
            "dead_lettered": e2e.get("dead_lettered", 0),
            "recover_s": end.get("recover_s"),
            **({"unacked_at_kill": end["unacked_at_kill"]} if "unacked_at_kill" in end else {}),
            "recovery": end.get("recovery", ""),
            **({"error": end["error"]} if "error" in end else {}),
        })  # fmt: skip
        previous = e2e
    return rows


# -- the controller ---------------------------------------------------------------------------
def now_ms() -> float:
    return time.time() * 1000.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Chaos:
    """Runs the waves of one chaos spike against a :class:`LocalStack`."""

    def __init__(
        self,
        stack: LocalStack,
        plan: SpikePlan,
        chaos: ChaosPlan,
        http: httpx.AsyncClient,
        fleet: Fleet,
        say: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.plan = plan
        self.chaos = chaos
        self.http = http
        self.fleet = fleet
        self.say = say
        self.keyspace = Keyspace(stack.key_prefix)
        self.steps = schedule(chaos)
        self.units = units_per_wave(plan.stock, len(self.steps))
        self.ends: list[dict[str, Any]] = []

    async def _redis(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.stack.redis_url, socket_timeout=5)

    async def _fulfillment(self) -> dict[str, Any]:
        redis = await self._redis()
        try:
            report = await fulfillment_audit.audit(redis, self.keyspace)
        finally:
            await redis.aclose()
        return report.as_dict()

    async def _sink_caught_up(self) -> bool:
        e2e = await self._fulfillment()
        return int(e2e["received"]) + int(e2e["dead_lettered"]) >= int(e2e["confirmed"])

    async def _pending(self) -> int:
        """Orders handed to the relay and not acknowledged yet."""
        redis = await self._redis()
        try:
            pending = await redis.xpending(self.keyspace.orders(self.plan.show), RELAY_GROUP)
        finally:
            await redis.aclose()
        return int(pending["pending"])

    async def _delivered(self) -> bool:
        """The sink has every confirmed order and the relay acknowledged every one of them."""
        return await self._sink_caught_up() and await self._pending() == 0

    def _reconnected(self, connected: int, fault_ms: float, closed: int | None = None) -> bool:
        """Every viewer is connected: the workers reported after the fault (with a margin for
        their report interval) as many open connections as before -- and, given ``closed``, that
        connections were closed meanwhile (a killed gateway's viewers must have come back) --
        and the gateways are ready."""
        fleet = self.fleet
        fresh = all(float(p.get("at_ms", 0)) > fault_ms + REPORT_MARGIN_MS for p in fleet.last)
        return (
            fresh
            and (closed is None or fleet.total("closed") > closed)
            and fleet.total("connected") >= connected
            and _ready(self.stack.url)
        )

    async def _until(self, check: Callable[[], Any], timeout_s: float = RECOVER_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ok = check()
                if asyncio.iscoroutine(ok):
                    ok = await ok
            except Exception:
                ok = False
            if ok:
                return True
            await asyncio.sleep(0.25)
        return False

    async def _set_sink(self, mode: FailMode, **kw: Any) -> None:
        redis = await self._redis()
        try:
            await set_fail_mode(redis, self.keyspace, mode, **kw)
        finally:
            await redis.aclose()

    async def _host(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A host API call, retried (bounded) only where nothing was done: no connection, or a
        503 (the store unreachable). A restock is not idempotent: anything else is an error."""
        last = ""
        for _ in range(60):
            try:
                response = await self.http.request(method, path, json=body)
            except httpx.ConnectError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in (200, 201):
                    return response.json()
                last = f"{response.status_code} {response.text[:200]}"
                if response.status_code != 503:
                    break
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{method} {path}: {last}")

    async def run(self) -> list[dict[str, Any]]:
        drop_path = f"/api/shows/{self.plan.show}/drops/{self.plan.drop}"
        for step, units in zip(self.steps, self.units, strict=True):
            if step.wave > 0:
                await self._host("POST", f"{drop_path}/restock", {"quantity": units})
            self.say(f"wave {step.wave}: {units} units, fault {step.fault} at +{step.at_s} s")
            end = await self._wave(step)
            self.ends.append(end)
            self.say(f"wave {step.wave} done: {end.get('recovery', '')} "
                     f"({end.get('recover_s')} s); {self.fleet.line()}")  # fmt: skip
        # The show ends: a last durable event (show_ended) every viewer must receive.
        await self._host("POST", f"/api/shows/{self.plan.show}/end")
        await asyncio.sleep(FINAL_EVENT_WAIT_S)
        return self.ends

    async def _wave(self, step: Step) -> dict[str, Any]:
        fleet = self.fleet
        if step.fault == "relay_kill":
            await self._set_sink(FailMode.SLOW, delay_s=self.chaos.slow_delay_s)
        start_ms = time.time() * 1000 + 300
        fleet.send(("burst", {"wave": step.wave, "start_ms": start_ms}))
        await asyncio.sleep(max(0.0, start_ms / 1000 + step.at_s - time.time()))
        end: dict[str, Any] = {}
        if step.fault != "none":
            try:
                recovery, recover_s = await self._inject(step, end)
                end.update(recovery=recovery, recover_s=round(recover_s, 2))
            except Exception as exc:  # reported: the run goes on and the audit still runs
                end["error"] = f"{type(exc).__name__}: {exc}"
        joined = fleet.total("joined")

        def wave_over() -> bool:
            p = fleet.last
            return all(int(x.get("wave", -1)) >= step.wave for x in p) and (
                fleet.total("wave_done") >= fleet.total("wave_started") >= joined * 0.5
            )

        await fleet.wait_until(wave_over, time.monotonic() + WAVE_TIMEOUT_S)
        await self._until(self._delivered, RECOVER_TIMEOUT_S)
        end["fulfillment"] = await self._fulfillment()
        return end

    async def _inject(self, step: Step, end: dict[str, Any]) -> tuple[str, float]:
        """Inject the step's fault; wait until it is over; (what recovered, seconds)."""
        stack, fleet, chaos = self.stack, self.fleet, self.chaos
        t0 = time.monotonic()
        connected, closed, fault_ms = fleet.total("connected"), fleet.total("closed"), now_ms()
        if step.fault == "gateway_kill":
            pids = stack.gateway_pids()
            victim = pids[step.target % len(pids)]
            os.kill(victim, signal.SIGKILL)
            self.say(f"  SIGKILL gateway pid {victim} ({connected} viewers connected)")

            def back() -> bool:
                alive = stack.gateway_pids()
                return victim not in alive and len(alive) == stack.workers

            ok = await self._until(
                lambda: back() and self._reconnected(connected, fault_ms, closed)
            )
            return ("every viewer back" if ok else "NOT recovered"), time.monotonic() - t0
        if step.fault == "relay_kill":
            # Kill while deliveries wait for the slow sink's answers: some orders recorded by
            # the sink, not yet acknowledged (bounded wait).
            before = (await self._fulfillment())["received"]
            await self._until(lambda: self._received_over(before), 10.0)
            in_flight = min(16, max(1, self.units[step.wave] // 2))
            await self._until(lambda: self._pending_over(in_flight), 5.0)
            end["unacked_at_kill"] = await self._pending()
            stack.kill("relay", signal.SIGKILL)
            self.say(f"  SIGKILL relay with {end['unacked_at_kill']} orders not acknowledged")
            await self._set_sink(FailMode.NONE)
            stack.respawn("relay")
            ok = await self._until(self._delivered)
            return ("every order delivered and acked" if ok else "NOT recovered"), (
                time.monotonic() - t0
            )
        if step.fault in ("valkey_term", "valkey_kill"):
            kill = step.fault == "valkey_kill"
            stack.stop_valkey(kill=kill)
            self.say(f"  Valkey {'SIGKILL' if kill else 'SIGTERM'}; down {chaos.valkey_down_s} s")
            await asyncio.sleep(chaos.valkey_down_s)
            stack.start_valkey()
            ok = await self._until(lambda: self._reconnected(connected, fault_ms))
            return ("gateways ready, every viewer connected" if ok else "NOT recovered"), (
                time.monotonic() - t0
            )
        if step.fault == "sink_down":
            stack.kill("sink", signal.SIGKILL)
            self.say(f"  sink down for {chaos.sink_down_s} s")
            await asyncio.sleep(chaos.sink_down_s)
            stack.respawn("sink")
            t_back = time.monotonic()
            ok = await self._until(self._delivered)
            return (
                f"every order delivered and acked {time.monotonic() - t_back:.1f} s after the "
                "sink came back"
                if ok
                else "NOT recovered"
            ), time.monotonic() - t0
        if step.fault == "sink_slow":
            await self._set_sink(FailMode.SLOW, delay_s=chaos.slow_delay_s)
            self.say(f"  sink answers {chaos.slow_delay_s} s late for {chaos.slow_for_s} s")
            await asyncio.sleep(chaos.slow_for_s)
            await self._set_sink(FailMode.NONE)
            ok = await self._until(self._delivered)
            return ("every order delivered and acked" if ok else "NOT recovered"), (
                time.monotonic() - t0
            )
        raise ValueError(step.fault)

    async def _pending_over(self, count: int) -> bool:
        return await self._pending() >= count

    async def _received_over(self, count: int) -> bool:
        return int((await self._fulfillment())["received"]) > count

    # -- after the run ------------------------------------------------------------------------
    async def event_log(self) -> list[str]:
        redis = await self._redis()
        try:
            entries = await redis.xrange(self.keyspace.events(self.plan.show))
        finally:
            await redis.aclose()
        return [i.decode() if isinstance(i, bytes) else str(i) for i, _ in entries]

    async def sink_duplicates(self) -> dict[str, Any]:
        """Webhook ids the sink accepted twice, i.e. past its de-duplication (its arrivals list
        gets an id when the record is new)."""
        redis = await self._redis()
        try:
            arrivals = [k.decode() for k in await redis.lrange(self.keyspace.sink_arrivals, 0, -1)]
        finally:
            await redis.aclose()
        counts = Counter(arrivals)
        twice = sorted(i for i, n in counts.items() if n > 1)
        orders = {order_id_of(i) for i in counts}
        return {"accepted": len(arrivals), "orders": len(orders), "twice": twice[:20],
                "ok": not twice}  # fmt: skip


def report(
    chaos: Chaos, results: Sequence[dict[str, Any]], log_ids: Sequence[str],
    duplicates: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    tracks: dict[str, dict[str, Any]] = {}
    for r in results:
        tracks.update(r.get("tracks", {}))
    rows = wave_rows(chaos.steps, chaos.units, [r.get("waves", {}) for r in results], chaos.ends)
    gaps = gap_check(log_ids, tracks)
    return {
        "plan": chaos.chaos.as_dict(),
        "schedule": [dataclasses.asdict(s) for s in chaos.steps],
        "waves": rows,
        "gaps": gaps,
        "sink_dedup": duplicates,
        "ok": gaps["ok"] and duplicates["ok"] and not any("error" in r for r in rows),
    }


def describe(chaos_report: dict[str, Any]) -> str:
    """The per-fault table as text, for the end of the run's output."""
    head = ("wave", "fault", "acked", "unavail", "no_reply", "retried", "resent", "resumed",
            "snapshot", "confirmed", "received", "dups", "recover_s")  # fmt: skip
    keys = ("wave", "fault", "acknowledged_orders", "unavailable_answers", "timeouts_retried",
            "retried_same_id",
            "resent_on_reconnect", "rejoins_resumed", "rejoins_snapshot", "orders_confirmed",
            "orders_received",
            "duplicates_rejected", "recover_s")  # fmt: skip
    lines = [
        "CHAOS " + ("PASSED" if chaos_report["ok"] else "FAILED"),
        " ".join(f"{h:>10}" for h in head),
    ]
    for row in chaos_report["waves"]:
        lines.append(" ".join(f"{row.get(k)!s:>10}" for k in keys))
        if "error" in row:
            lines.append(f"  wave {row['wave']}: {row['error']}")
    g = chaos_report["gaps"]
    lines.append(
        f"gaps: {g['viewers_checked']} viewers checked: {g['complete_by_events']} complete by "
        f"events, {g['complete_after_snapshot']} after a snapshot, {g['with_gap']} with a gap "
        f"({g['not_connected_at_end']} not connected at the end)"
    )
    if "orders_not_told" in chaos_report:
        lines.append(f"orders made whose buyer got no answer (gave up): "
                     f"{chaos_report['orders_not_told']}")  # fmt: skip
    d = chaos_report["sink_dedup"]
    lines.append(f"sink: accepted {d['accepted']} webhooks ({d['orders']} orders); "
                 f"{len(d['twice'])} accepted twice")  # fmt: skip
    return "\n".join(lines)


def drop_body(plan: SpikePlan, units: int) -> tuple[str, str, dict[str, Any]]:
    """The drop of wave 0: the plan's drop with that wave's units."""
    method, path, body = common.drop_request(plan)
    return method, path, {**body, "quantity": units}
