"""What the locust run and the spike tool share: the spike plan, the host API calls that set a
spike up, viewer naming, and the figures computed from raw samples.

Plain code only -- no asyncio, no gevent, no I/O -- so the gevent-based locustfile and the
asyncio-based spike tool can both import it.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PERCENTILES = (50, 90, 95, 99, 99.9)
BUY_REASONS = (
    "ok", "sold_out", "limit_exceeded", "insufficient_stock", "not_open", "closed",
    "unknown_drop", "invalid_quantity",
)  # fmt: skip
"""Refusal reasons a buy can get (docs/protocol.md), plus ``ok``; others are counted as-is."""


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass(frozen=True)
class SpikePlan:
    """The phases of one spike: ramp viewers into a show, drop, everybody buys."""

    viewers: int = 1000
    stock: int = 100
    limit: int = 2
    attempts: int = 4000
    """Buy attempts over all viewers (spread evenly; the first viewers get one more)."""
    ramp_s: float = 10.0
    """Seconds over which viewers connect and join, evenly spaced."""
    buy_window_s: float = 1.0
    """Every viewer's attempts fall uniformly at random in this window after it sees the drop."""
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    """Run id: names the show, drop, product and viewers, so runs never collide."""
    currency: str = "EUR"
    price: int = 1999

    @property
    def show(self) -> str:
        return f"spike-{self.run}"

    @property
    def drop(self) -> str:
        return f"drop-{self.run}"

    @property
    def sku(self) -> str:
        return f"SPIKE-{self.run}"

    def viewer(self, index: int) -> str:
        return f"v{self.run}-{index}"

    def attempts_of(self, index: int) -> int:
        """Buy attempts of viewer ``index`` (0-based): ``attempts`` spread over all viewers."""
        if self.viewers <= 0:
            return 0
        base, extra = divmod(self.attempts, self.viewers)
        return base + (1 if index < extra else 0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "show": self.show, "drop": self.drop, "sku": self.sku}


# -- host API: the requests that set a spike up (method, path, JSON body) ----------------------
def product_request(plan: SpikePlan) -> tuple[str, str, dict[str, Any]]:
    body = {"sku": plan.sku, "title": f"Spike {plan.run}", "prices": {plan.currency: plan.price}}
    return "POST", "/api/products", body


def show_request(plan: SpikePlan) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/api/shows", {"id": plan.show, "title": f"Spike {plan.run}", "start": True}


def drop_request(plan: SpikePlan) -> tuple[str, str, dict[str, Any]]:
    """Drop the product now: the server emits ``drop_opened`` to every viewer of the show."""
    body = {"id": plan.drop, "sku": plan.sku, "quantity": plan.stock, "limit": plan.limit}
    return "POST", f"/api/shows/{plan.show}/drops", body


def drop_stats_path(plan: SpikePlan) -> str:
    return f"/api/shows/{plan.show}/drops/{plan.drop}/stats"


def ws_url(base: str) -> str:
    """``http(s)://host[:port]`` (or a ws URL) -> the gateway's ``ws(s)://.../ws``."""
    base = base.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base if base.endswith("/ws") else base + "/ws"


def http_url(base: str) -> str:
    base = base.rstrip("/")
    if base.startswith("wss://"):
        base = "https://" + base[len("wss://") :]
    elif base.startswith("ws://"):
        base = "http://" + base[len("ws://") :]
    return base.removesuffix("/ws")


# -- figures ------------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """Count, mean, percentiles and max of latencies in ms (rounded to 0.1 ms)."""
    ordered = sorted(values)
    out: dict[str, float | int] = {"count": len(ordered)}
    if not ordered:
        return out
    out["mean"] = round(sum(ordered) / len(ordered), 1)
    out["min"] = round(ordered[0], 1)
    for p in PERCENTILES:
        out[f"p{p:g}"] = round(percentile(ordered, p), 1)
    out["max"] = round(ordered[-1], 1)
    return out


def per_second(times_ms: Iterable[float], origin_ms: float) -> list[int]:
    """How many of ``times_ms`` fall in each whole second after ``origin_ms``."""
    counts: list[int] = []
    for t in times_ms:
        second = int((t - origin_ms) // 1000)
        if second < 0:
            continue
        while len(counts) <= second:
            counts.append(0)
        counts[second] += 1
    return counts


def client_checks(
    plan: SpikePlan, units_by_viewer: dict[str, int], orders_seen: Sequence[str]
) -> list[str]:
    """Invariants visible from the viewers' side alone: what they were told they bought."""
    problems: list[str] = []
    total = sum(units_by_viewer.values())
    if total > plan.stock:
        problems.append(f"viewers were told they bought {total} units of a stock of {plan.stock}")
    over = {v: n for v, n in units_by_viewer.items() if n > plan.limit}
    if over:
        sample = ", ".join(f"{v}={n}" for v, n in sorted(over.items())[:5])
        problems.append(f"{len(over)} viewer(s) bought more than the limit {plan.limit}: {sample}")
    if len(set(orders_seen)) != len(orders_seen):
        problems.append("the same order id was confirmed to two buy attempts")
    return problems
