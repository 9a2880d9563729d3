"""The risk check hook: a fraud-scoring endpoint asked before an order is confirmed.

With ``LIVECOMMERCE_RISK_URL`` set, every ``confirm`` and ``buy_now`` is first POSTed there as
JSON (``show``, ``op``, ``drop``, ``hold``, ``viewer``, ``quantity``, ``payment_reference``,
``request_id``) within a strict budget (``RISK_TIMEOUT_MS``, default 150 ms, connecting
included). The endpoint answers ``2xx`` with ``{"allow": true}`` or ``{"allow": false,
"reason": "..."}``:

* a veto refuses the command with ``risk_refused`` (``detail.risk`` = ``"veto"``) and, for a
  confirm, gives the hold back to stock at once;
* a timeout, a non-2xx answer or an unreadable body follows ``RISK_FAIL_OPEN``: confirm anyway
  (default) or refuse with ``risk_refused`` (``detail.risk`` = ``"timeout"`` or ``"error"``).

A replay (the request id already answered, or a hold already confirmed) is never asked again:
its first answer stands. Latency and outcomes are in ``/metrics``
(``livecommerce_risk_check_seconds``, ``livecommerce_risk_checks_total{outcome}``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram

from livecommerce.core.config import FraudSettings
from livecommerce.core.model import Outcome, Reason
from livecommerce.realtime.protocol import Command, Op
from livecommerce.store.inventory import Inventory

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


@dataclass(frozen=True)
class Verdict:
    """``allow`` and the outcome label: allow, veto, timeout, error."""

    allow: bool
    outcome: str
    reason: str = ""


class RiskMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "livecommerce_risk_check_seconds", "Latency of risk checks, timeouts included.",
            buckets=BUCKETS, registry=registry,
        )  # fmt: skip
        self.checks = Counter(
            "livecommerce_risk_checks", "Risk checks by outcome (allow, veto, timeout, error).",
            ["outcome"], registry=registry,
        )  # fmt: skip


class RiskCheck:
    """Asks the scoring endpoint; never raises, never waits longer than the budget."""

    def __init__(self, settings: FraudSettings, registry: CollectorRegistry) -> None:
        self.url = settings.risk_url
        self.budget_s = settings.risk_timeout_ms / 1000
        self.fail_open = settings.risk_fail_open
        self.metrics = RiskMetrics(registry)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                headers={"user-agent": "livecommerce-risk"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def judge(self, payload: dict[str, Any]) -> Verdict:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget_s):
                verdict = await self._ask(payload)
        except TimeoutError:
            verdict = Verdict(self.fail_open, "timeout")
        except (aiohttp.ClientError, OSError, ValueError):
            verdict = Verdict(self.fail_open, "error")
        self.metrics.seconds.observe(time.perf_counter() - started)
        self.metrics.checks.labels(verdict.outcome).inc()
        return verdict

    async def _ask(self, payload: dict[str, Any]) -> Verdict:
        async with self._open().post(
            self.url, data=orjson.dumps(payload), headers={"content-type": "application/json"}
        ) as response:
            body = await response.read()
        if not 200 <= response.status < 300:
            return Verdict(self.fail_open, "error")
        answer = orjson.loads(body)  # ValueError when unreadable: an error
        if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
            return Verdict(self.fail_open, "error")
        if answer["allow"]:
            return Verdict(True, "allow")
        return Verdict(False, "veto", str(answer.get("reason", ""))[:200])


def refusal(verdict: Verdict, now_ms: int) -> Outcome:
    """The ``risk_refused`` result of a command the check did not allow."""
    detail: dict[str, Any] = {"risk": verdict.outcome}
    if verdict.reason:
        detail["risk_reason"] = verdict.reason
    return Outcome(ok=False, now_ms=now_ms, reason=Reason.RISK_REFUSED, detail=detail)


async def screen(check: RiskCheck, inventory: Inventory, show: str, cmd: Command) -> Outcome | None:
    """Ask before a ``confirm`` or ``buy_now``: None to go ahead, or the refusal to answer."""
    if cmd.op is Op.BUY_NOW:
        key = inventory.keys.request(show, cmd.viewer, cmd.request_id)
        if await inventory.redis.exists(key):
            return None  # a replay: the first answer stands, whatever the endpoint says now
    elif cmd.op is not Op.CONFIRM:
        return None
    verdict = await check.judge({
        "show": show, "op": str(cmd.op), "drop": cmd.drop, "hold": cmd.hold,
        "viewer": cmd.viewer, "quantity": cmd.quantity,
        "payment_reference": cmd.payment_reference, "request_id": cmd.request_id,
    })  # fmt: skip
    if verdict.allow:
        return None
    now_ms = int(time.time() * 1000)
    if cmd.op is Op.CONFIRM:
        released = await inventory.cancel(show, cmd.hold, cmd.viewer)  # the hold back to stock
        if released.reason is Reason.HOLD_CONFIRMED:
            return None  # already an order: the confirm replays it
        now_ms = released.now_ms
    return refusal(verdict, now_ms)
