"""Edge refusals: answer in the gateway the buy attempts whose answer is already certain.

Every gateway process receives each drop's durable events (``drop_opened``, ``sold_out``,
``drop_closed``, ``restocked``, ``window_changed``...: each carries the drop's full view) on the
show's channel, and reads the drops in every join snapshot. :class:`EdgeView` keeps, per drop,
the latest state seen and refuses, without a round trip to Redis, a ``reserve``/``buy_now`` that
the store would refuse anyway:

- the drop is **closed** (by the host, its window, the show's end, or because it **sold out with
  nothing held**) -> ``closed`` with ``closed_reason``, or ``sold_out``;
- the drop is **scheduled** and the server clock (estimated, minus its uncertainty) is before
  ``opens_at`` -> ``not_open`` with ``opens_at``.

It never sells: an open drop always goes to the store's atomic script, so the no-oversell proof
is the store's alone. The reply is the one the store would give (same reason and detail; the
store would also set ``replay`` for a repeated request id, see below).

Idempotent retries: a request id that once succeeded replays its result from the store, even on
a closed drop. So a closed drop is refused at the edge only for viewers who never had a sale or
a hold in it: its buyers (the ``bought`` hash and every hold record) are loaded once when the
drop is seen closed; until they are loaded, everything goes to the store. An attempt the client
marks ``fresh`` (a request id it never sent before) cannot be such a retry: it is refused on a
closed drop whoever sent it, buyers loaded or not.

Staleness: the view is the store as of the last message delivered on the show's channel. An
edge refusal can be wrong only while a change that would accept the attempt (a restock of a
sold-out drop, a window extended, an earlier opening) has been committed but its event is not
yet delivered here: bounded by the delivery of that one event. A view is dropped when the
pub/sub link breaks and when the process stops following the show, and re-read from the next
join snapshot. No I/O here; the clock is handed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from livecommerce.core.model import Reason

CLOCK_MARGIN_MS = 50
"""Added to the clock uncertainty before a ``not_open`` is decided at the edge."""


REOPENING = frozenset({"restocked", "window_changed"})
"""Events a script emits with the drop still closed right before it may reopen it."""


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: dict[str, Any]


@dataclass
class DropState:
    state: str
    reason: str
    opens_at: int
    ts: int
    """Server time (ms) of the message this state comes from."""
    generation: int = 0
    """Bumped on every change of state: a buyer load started before it is discarded."""
    buyers: frozenset[str] | None = None
    """Viewers with a sale or a hold in this drop (closed drops only; None = not loaded)."""
    loading: bool = False
    """A buyer load is under way."""
    refusal: Refusal | None = None
    """The closed drop's refusal, built once."""


@dataclass
class EdgeView:
    """Latest known state of every drop of the shows this process follows."""

    enabled: bool = True
    shows: dict[str, dict[str, DropState]] = field(default_factory=dict)

    # -- feeding ------------------------------------------------------------------------------
    def observe(self, show: str, kind: str, data: Any, ts: int) -> tuple[str, int] | None:
        """One durable event from the show's channel. Returns ``(drop, generation)`` when the
        drop's buyers should now be loaded (:meth:`set_buyers`), else None."""
        if not isinstance(data, dict) or kind.startswith("show_"):
            return None
        drop = data.get("id")
        state = data.get("state")
        if not isinstance(drop, str) or not isinstance(state, str):
            return None
        if kind in REOPENING and state == "closed":
            # Emitted just before the same script may open the drop again: until the event that
            # follows says which, nothing about it is certain.
            data = {**data, "state": "reopening"}
        return self._apply(show, drop, data, ts)

    def observe_drops(self, show: str, drops: Iterable[dict[str, Any]],
                      ts: int) -> list[tuple[str, int]]:  # fmt: skip
        """Drops read from the store at server time ``ts`` (a join snapshot or a resume)."""
        loads = []
        for view in drops:
            drop = view.get("id")
            if isinstance(drop, str) and isinstance(view.get("state"), str):
                load = self._apply(show, drop, view, ts)
                if load is not None:
                    loads.append(load)
        return loads

    def _apply(self, show: str, drop: str, data: dict[str, Any],
               ts: int) -> tuple[str, int] | None:  # fmt: skip
        drops = self.shows.setdefault(show, {})
        state, reason = str(data["state"]), str(data.get("reason") or "")
        opens_at = _int(data.get("opens_at"))
        current = drops.get(drop)
        if current is not None and ts < current.ts:
            return None  # older than what we know (a snapshot read after this was published)
        if current is None:
            current = drops[drop] = DropState(state, reason, opens_at, ts)
            changed = True
        else:
            changed = (current.state, current.reason) != (state, reason)
            current.state, current.reason, current.opens_at, current.ts = (
                state, reason, opens_at, ts,
            )  # fmt: skip
        if changed:
            current.generation += 1
            current.buyers = None
            current.refusal = None
            current.loading = False
        if state == "closed" and current.buyers is None and not current.loading:
            current.loading = True
            return drop, current.generation
        return None

    def set_buyers(self, show: str, drop: str, generation: int, buyers: Iterable[str]) -> bool:
        """Buyers loaded after the drop was seen closed at ``generation``; False if stale."""
        current = self.shows.get(show, {}).get(drop)
        if current is None or current.generation != generation or current.state != "closed":
            return False
        current.buyers = frozenset(buyers)
        current.loading = False
        return True

    def load_failed(self, show: str, drop: str, generation: int) -> None:
        """The buyer load failed: the next event or snapshot of the drop asks again."""
        current = self.shows.get(show, {}).get(drop)
        if current is not None and current.generation == generation:
            current.loading = False

    def forget(self, show: str) -> None:
        """This process no longer follows the show: its events stop arriving."""
        self.shows.pop(show, None)

    def clear(self) -> None:
        """The pub/sub link broke: events may have been missed."""
        self.shows.clear()

    # -- deciding -----------------------------------------------------------------------------
    def refusal(self, show: str, drop: str, viewer: str, *, now_ms: int,
                uncertainty_ms: float, fresh: bool = False) -> Refusal | None:  # fmt: skip
        """The store's certain refusal of a reserve/buy_now of ``drop`` now, or None (ask it).

        ``now_ms`` is this process's estimate of the server clock, off by at most
        ``uncertainty_ms``. ``fresh``: the client never sent the attempt's request id before.
        """
        if not self.enabled:
            return None
        current = self.shows.get(show, {}).get(drop)
        if current is None:
            return None
        if current.state == "closed":
            if not fresh and (current.buyers is None or viewer in current.buyers):
                return None  # may be a retry of a request that succeeded: the store replays it
            if current.refusal is None:
                current.refusal = (
                    Refusal(Reason.SOLD_OUT, {}) if current.reason == "sold_out"
                    else Refusal(Reason.CLOSED, {"closed_reason": current.reason})
                )  # fmt: skip
            return current.refusal
        early = now_ms + uncertainty_ms + CLOCK_MARGIN_MS < current.opens_at
        if current.state == "scheduled" and early:
            return Refusal(Reason.NOT_OPEN, {"opens_at": current.opens_at})
        return None

    def closed(self, show: str, drop: str) -> bool:
        """The drop is closed as far as this view knows: nothing can be sold in it until an
        event says otherwise (an attempt can only be refused or replay its success)."""
        current = self.shows.get(show, {}).get(drop)
        return current is not None and current.state == "closed"

    def state_of(self, show: str, drop: str) -> DropState | None:
        return self.shows.get(show, {}).get(drop)


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0
