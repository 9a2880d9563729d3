"""Edge refusals, pure: what the gateway's live view of a drop refuses, and what it never does."""

from __future__ import annotations

from typing import Any

from livecommerce.core.model import Reason
from livecommerce.realtime.edge import CLOCK_MARGIN_MS, EdgeView


def view(state: str, reason: str = "", opens_at: int = 1000, **kw: Any) -> dict[str, Any]:
    return {"id": "d1", "state": state, "reason": reason, "opens_at": opens_at, **kw}


def refusal(edge: EdgeView, viewer: str = "bob", now: int = 5000, err: float = 1.0) -> Any:
    return edge.refusal("s1", "d1", viewer, now_ms=now, uncertainty_ms=err)


def closed_with_buyers(edge: EdgeView, reason: str = "sold_out", ts: int = 100) -> None:
    load = edge.observe("s1", "drop_closed", view("closed", reason), ts)
    assert load is not None
    assert edge.set_buyers("s1", *load, ["alice"])


def test_unknown_drop_or_show_goes_to_the_store() -> None:
    edge = EdgeView()
    assert refusal(edge) is None
    edge.observe("s1", "drop_opened", view("open"), 10)
    assert edge.refusal("s1", "d2", "bob", now_ms=0, uncertainty_ms=0) is None
    assert edge.refusal("s2", "d1", "bob", now_ms=0, uncertainty_ms=0) is None


def test_open_drops_are_never_refused_even_with_nothing_left() -> None:
    edge = EdgeView()
    edge.observe("s1", "sold_out", view("open", remaining=0, held=3), 10)
    assert refusal(edge) is None  # holds may expire or be cancelled: only the store knows


def test_closed_drop_is_refused_only_once_its_buyers_are_known() -> None:
    edge = EdgeView()
    load = edge.observe("s1", "drop_closed", view("closed", "sold_out"), 10)
    assert load == ("d1", 1)
    assert refusal(edge) is None  # buyers not loaded yet
    assert edge.observe("s1", "drop_closed", view("closed", "sold_out"), 11) is None  # loading
    assert edge.set_buyers("s1", "d1", 1, ["alice"])
    r = refusal(edge)
    assert r is not None and r.reason is Reason.SOLD_OUT and r.detail == {}
    # A buyer's retry may replay a success: the store answers it.
    assert refusal(edge, viewer="alice") is None


def test_a_fresh_attempt_on_a_closed_drop_is_refused_whoever_sends_it() -> None:
    """A request id the client never sent before cannot be the retry of a success: refused
    before the buyers are loaded, and for a buyer too. Never on an open drop."""
    edge = EdgeView()
    edge.observe("s1", "sold_out", view("open", remaining=0, held=3), 10)
    assert edge.refusal("s1", "d1", "bob", now_ms=5000, uncertainty_ms=1, fresh=True) is None
    load = edge.observe("s1", "drop_closed", view("closed", "sold_out"), 11)
    assert load is not None
    assert refusal(edge) is None  # buyers not loaded: unsaid may be a retry
    r = edge.refusal("s1", "d1", "bob", now_ms=5000, uncertainty_ms=1, fresh=True)
    assert r is not None and r.reason is Reason.SOLD_OUT
    assert edge.set_buyers("s1", *load, ["alice"])
    assert refusal(edge, viewer="alice") is None
    r = edge.refusal("s1", "d1", "alice", now_ms=5000, uncertainty_ms=1, fresh=True)
    assert r is not None and r.reason is Reason.SOLD_OUT


def test_closed_reason_is_the_stores() -> None:
    edge = EdgeView()
    closed_with_buyers(edge, "host")
    r = refusal(edge)
    assert r is not None and r.reason is Reason.CLOSED and r.detail == {"closed_reason": "host"}


def test_restock_and_window_change_stop_refusals_at_once() -> None:
    for kind in ("restocked", "window_changed"):
        edge = EdgeView()
        closed_with_buyers(edge)
        # The script emits this with the drop still closed, then opens it.
        assert edge.observe("s1", kind, view("closed", "sold_out", remaining=5), 200) is None
        assert refusal(edge) is None
        edge.observe("s1", "drop_opened", view("open"), 200)
        assert refusal(edge) is None


def test_a_load_started_before_a_change_is_discarded() -> None:
    edge = EdgeView()
    load = edge.observe("s1", "drop_closed", view("closed", "sold_out"), 10)
    assert load is not None
    edge.observe("s1", "restocked", view("closed", "sold_out"), 20)
    edge.observe("s1", "drop_opened", view("open"), 20)
    again = edge.observe("s1", "drop_closed", view("closed", "sold_out"), 30)
    assert again is not None and again[1] != load[1]
    assert not edge.set_buyers("s1", *load, [])  # stale: bob may have bought in between
    assert refusal(edge) is None
    assert edge.set_buyers("s1", *again, ["bob"])
    assert refusal(edge, viewer="bob") is None and refusal(edge, viewer="carol") is not None


def test_failed_load_is_asked_again() -> None:
    edge = EdgeView()
    load = edge.observe("s1", "drop_closed", view("closed", "host"), 10)
    assert load is not None
    edge.load_failed("s1", *load)
    assert edge.observe_drops("s1", [view("closed", "host")], 20) == [load]


def test_older_snapshot_does_not_undo_a_newer_event() -> None:
    edge = EdgeView()
    closed_with_buyers(edge, ts=100)
    assert edge.observe_drops("s1", [view("open")], 99) == []
    assert refusal(edge) is not None
    edge.observe_drops("s1", [view("open")], 100)
    assert refusal(edge) is None


def test_not_open_needs_the_clock_to_be_surely_early() -> None:
    edge = EdgeView()
    edge.observe_drops("s1", [view("scheduled", opens_at=10_000)], 1)
    r = refusal(edge, now=9_000, err=10)
    assert r is not None and r.reason is Reason.NOT_OPEN and r.detail == {"opens_at": 10_000}
    # Within the clock's uncertainty (plus the margin) of the opening: the store decides.
    assert refusal(edge, now=10_000 - CLOCK_MARGIN_MS - 10, err=10) is None
    assert refusal(edge, now=9_000, err=2_000) is None
    assert refusal(edge, now=9_000, err=float("inf")) is None  # clock never measured
    assert refusal(edge, now=10_001, err=0) is None


def test_forget_clear_and_disabled() -> None:
    edge = EdgeView()
    closed_with_buyers(edge)
    edge.forget("s1")
    assert refusal(edge) is None
    closed_with_buyers(edge)
    edge.clear()
    assert refusal(edge) is None
    off = EdgeView(enabled=False)
    closed_with_buyers(off)
    assert refusal(off) is None


def test_malformed_events_change_nothing() -> None:
    edge = EdgeView()
    closed_with_buyers(edge)
    for kind, data in [("drop_opened", None), ("drop_opened", {"id": 3, "state": "open"}),
                       ("drop_opened", {"id": "d1"}), ("show_ended", view("open")),
                       ("drop_opened", "text")]:  # fmt: skip
        assert edge.observe("s1", kind, data, 500) is None
    assert refusal(edge) is not None
