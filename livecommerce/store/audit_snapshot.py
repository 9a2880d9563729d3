"""What the audit reads and what it reports: one drop's and one show's keys as read in one
MULTI/EXEC (a consistent instant), and the :class:`AuditReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AuditReport:
    """What the audit found. ``ok`` is False as soon as one invariant is violated."""

    shows: int = 0
    drops: int = 0
    orders: int = 0
    units_sold: int = 0
    holds: int = 0
    """Active holds (in the holds sets) at the instant of the snapshot."""
    units_held: int = 0
    units_remaining: int = 0
    stream_entries: int = 0
    """Entries present in the orders streams (fewer than ``orders`` once the relay trimmed)."""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def merge(self, other: AuditReport) -> None:
        for name in ("shows", "drops", "orders", "units_sold", "holds", "units_held",
                     "units_remaining", "stream_entries"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.violations.extend(other.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "shows": self.shows,
            "drops": self.drops,
            "orders": self.orders,
            "units_sold": self.units_sold,
            "holds": self.holds,
            "units_held": self.units_held,
            "units_remaining": self.units_remaining,
            "stream_entries": self.stream_entries,
            "violations": list(self.violations),
        }

    def summary(self) -> str:
        head = "OK" if self.ok else f"{len(self.violations)} VIOLATION(S)"
        lines = [
            f"audit {head}: {self.shows} show(s), {self.drops} drop(s), {self.orders} order(s), "
            f"{self.units_sold} unit(s) sold, {self.holds} active hold(s) "
            f"({self.units_held} unit(s)), {self.units_remaining} unit(s) remaining, "
            f"{self.stream_entries} stream entries"
        ]
        lines.extend(f"  - {v}" for v in self.violations)
        return "\n".join(lines)


@dataclass
class DropSnapshot:
    id: str
    record: dict[str, str]
    holds: dict[str, float]
    holdrec: dict[str, str]
    held: dict[str, str]
    bought: dict[str, str]
    orders_index: dict[str, str]


@dataclass
class ShowSnapshot:
    show: str
    drop_ids: list[str]
    drops: dict[str, DropSnapshot]
    seq: dict[str, str]
    stream: list[tuple[str, dict[str, str]]] | None
    """Orders stream entries, None when the stream does not exist."""
    stream_info: dict[str, Any] | None


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def text_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}
