"""Stateful property test: the Redis inventory against a plain in-memory model.

Hypothesis drives random sequences of reserve / buy_now / confirm / cancel / restock / close
over two drops, a few viewers and a few request ids (so replays are frequent). After every step
the outcome must equal the model's, and so must every counter; at the end the audit must pass.
Expiry is not modelled here (the hold TTL is the default 120 s); test_inventory covers it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from livecommerce.core import config
from livecommerce.core.errors import ConflictError
from livecommerce.core.model import DropSpec, Outcome, Reason
from livecommerce.store.audit import audit
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace

SHOW = "m"
VIEWERS = ("ann", "ben", "cat")
REQUEST_IDS = ("r1", "r2", "r3", "r4")
INITIAL = {"d1": 4, "d2": 2}
LIMIT = 3
PRICE = 700


@dataclass
class ModelHold:
    drop: str
    viewer: str
    quantity: int
    state: str = "held"
    order: str = ""


@dataclass
class ModelDrop:
    id: str
    quantity: int
    restocked: int = 0
    remaining: int = 0
    held: int = 0
    sold: int = 0
    state: str = "open"
    reason: str = ""
    holds: int = 0
    orders: int = 0
    held_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bought_by: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def after_sale(self) -> None:
        if self.remaining == 0 and self.held == 0 and self.state != "closed":
            self.state, self.reason = "closed", "sold_out"


class Model:
    """What the inventory promises, written the plainest way."""

    def __init__(self) -> None:
        self.drops = {d: ModelDrop(d, q, remaining=q) for d, q in INITIAL.items()}
        self.holds: dict[str, ModelHold] = {}
        self.first: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.orders: list[str] = []

    def reserve(self, mode: str, drop: str, viewer: str, q: int, rid: str) -> tuple[Any, ...]:
        """Returns (ok, reason, hold id, order id, replay)."""
        if not 1 <= q <= 1000:
            return (False, Reason.INVALID_QUANTITY, None, None, False)
        if (viewer, rid) in self.first:  # per show; only the very same request replays
            asked, first = self.first[(viewer, rid)]
            if asked != (mode, drop, q):
                return (False, Reason.REQUEST_ID_REUSED, None, None, False)
            return (*first[:4], True)
        d = self.drops[drop]
        result: tuple[Any, ...]
        if d.state == "closed":
            reason = Reason.SOLD_OUT if d.reason == "sold_out" else Reason.CLOSED
            result = (False, reason, None, None, False)
        elif d.held_by[viewer] + d.bought_by[viewer] + q > LIMIT:
            result = (False, Reason.LIMIT_EXCEEDED, None, None, False)
        elif d.remaining == 0:
            result = (False, Reason.SOLD_OUT, None, None, False)
        elif q > d.remaining:
            result = (False, Reason.INSUFFICIENT_STOCK, None, None, False)
        elif mode == "buy":
            d.remaining -= q
            d.sold += q
            d.bought_by[viewer] += q
            d.orders += 1
            order = f"{SHOW}.{drop}.{d.orders}"
            self.orders.append(order)
            d.after_sale()
            result = (True, None, None, order, False)
        else:
            d.remaining -= q
            d.held += q
            d.held_by[viewer] += q
            d.holds += 1
            hold = f"{drop}.{d.holds}"
            self.holds[hold] = ModelHold(drop, viewer, q)
            d.after_sale()
            result = (True, None, hold, None, False)
        self.first[(viewer, rid)] = ((mode, drop, q), result)
        return result

    def confirm(self, hold_id: str, viewer: str) -> tuple[Any, ...]:
        """Returns (ok, reason, order id, replay)."""
        h = self.holds.get(hold_id)
        if h is None or h.viewer != viewer:
            return (False, Reason.UNKNOWN_HOLD, None, False)
        if h.state == "confirmed":
            return (True, None, h.order, True)
        if h.state == "cancelled":
            return (False, Reason.HOLD_CANCELLED, None, False)
        d = self.drops[h.drop]
        d.held -= h.quantity
        d.held_by[viewer] -= h.quantity
        d.sold += h.quantity
        d.bought_by[viewer] += h.quantity
        d.orders += 1
        h.state, h.order = "confirmed", f"{SHOW}.{h.drop}.{d.orders}"
        self.orders.append(h.order)
        d.after_sale()
        return (True, None, h.order, False)

    def cancel(self, hold_id: str, viewer: str) -> tuple[Any, ...]:
        """Returns (ok, reason, replay)."""
        h = self.holds.get(hold_id)
        if h is None or h.viewer != viewer:
            return (False, Reason.UNKNOWN_HOLD, False)
        if h.state == "cancelled":
            return (True, None, True)
        if h.state == "confirmed":
            return (False, Reason.HOLD_CONFIRMED, False)
        d = self.drops[h.drop]
        d.remaining += h.quantity
        d.held -= h.quantity
        d.held_by[viewer] -= h.quantity
        h.state = "cancelled"
        return (True, None, False)

    def restock(self, drop: str, units: int) -> bool:
        d = self.drops[drop]
        if d.state == "closed" and d.reason != "sold_out":
            return False
        d.restocked += units
        d.remaining += units
        if d.state == "closed":
            d.state, d.reason = "open", ""
        return True

    def close(self, drop: str) -> bool:
        d = self.drops[drop]
        if d.state == "closed":
            return False
        d.state, d.reason = "closed", "host"
        return True


class InventoryMachine(RuleBasedStateMachine):
    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(redis_url)
        self.keyspace = Keyspace("m" + uuid.uuid4().hex[:12])
        self.inv = Inventory(self.client, self.keyspace, config.load({}))
        self.model = Model()
        self.run(self._setup())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> None:
        await self.inv.load()
        await self.inv.create_show(SHOW, title="Model")
        for drop, quantity in INITIAL.items():
            spec = DropSpec(id=drop, sku=drop, title=drop, quantity=quantity, limit=LIMIT,
                            prices={"EUR": PRICE})  # fmt: skip
            await self.inv.create_drop(SHOW, spec)

    def teardown(self) -> None:
        try:
            report = self.run(audit(self.client, self.keyspace))
            assert report.ok, report.summary()
            assert report.orders == len(self.model.orders)
        finally:
            self.run(self._cleanup())
            self.loop.close()

    async def _cleanup(self) -> None:
        keys = [k async for k in self.client.scan_iter(match=f"{self.keyspace.prefix}:*")]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()

    # -- rules ------------------------------------------------------------------------------

    def _check_reserve(self, out: Outcome, expected: tuple[Any, ...]) -> None:
        ok, reason, hold, order, replay = expected
        got = (
            out.ok,
            out.reason,
            out.hold.id if out.hold else None,
            out.order.id if out.order else None,
            out.replay,
        )
        assert got == (ok, reason, hold, order, replay)
        if out.order is not None:
            assert out.order.amount == out.order.quantity * PRICE

    @rule(
        mode=st.sampled_from(["reserve", "buy"]),
        drop=st.sampled_from(sorted(INITIAL)),
        viewer=st.sampled_from(VIEWERS),
        quantity=st.integers(min_value=-1, max_value=4),
        rid=st.sampled_from(REQUEST_IDS),
    )
    def reserve(self, mode: str, drop: str, viewer: str, quantity: int, rid: str) -> None:
        if mode == "buy":
            out = self.run(self.inv.buy_now(SHOW, drop, viewer, quantity, rid, "pay"))
        else:
            out = self.run(self.inv.reserve(SHOW, drop, viewer, quantity, rid))
        self._check_reserve(out, self.model.reserve(mode, drop, viewer, quantity, rid))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), wrong_viewer=st.booleans())
    def confirm(self, data: st.DataObject, wrong_viewer: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        viewer = self.model.holds[hold_id].viewer
        if wrong_viewer:
            viewer = data.draw(st.sampled_from([v for v in VIEWERS if v != viewer]))
        out = self.run(self.inv.confirm(SHOW, hold_id, viewer, "pay"))
        ok, reason, order, replay = self.model.confirm(hold_id, viewer)
        assert (out.ok, out.reason, out.order.id if out.order else None, out.replay) == (
            ok, reason, order, replay,
        )  # fmt: skip

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), wrong_viewer=st.booleans())
    def cancel(self, data: st.DataObject, wrong_viewer: bool) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        viewer = self.model.holds[hold_id].viewer
        if wrong_viewer:
            viewer = data.draw(st.sampled_from([v for v in VIEWERS if v != viewer]))
        out = self.run(self.inv.cancel(SHOW, hold_id, viewer))
        assert (out.ok, out.reason, out.replay) == self.model.cancel(hold_id, viewer)

    @rule(drop=st.sampled_from(sorted(INITIAL)), units=st.integers(min_value=1, max_value=3))
    def restock(self, drop: str, units: int) -> None:
        expected = self.model.restock(drop, units)
        try:
            self.run(self.inv.restock(SHOW, drop, units))
            done = True
        except ConflictError as exc:
            assert exc.code == "closed"
            done = False
        assert done == expected

    @rule(drop=st.sampled_from(sorted(INITIAL)))
    def close(self, drop: str) -> None:
        expected = self.model.close(drop)
        try:
            self.run(self.inv.close(SHOW, drop))
            done = True
        except ConflictError:
            done = False
        assert done == expected

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def counters_match_the_model(self) -> None:
        for drop, m in self.model.drops.items():
            view = self.run(self.inv.get_drop(SHOW, drop))
            assert view is not None
            got = (view["remaining"], view["held"], view["sold"], view["quantity"])
            assert got == (m.remaining, m.held, m.sold, m.quantity + m.restocked)
            assert (view["state"], view["reason"]) == (m.state, m.reason)
            k = self.keyspace.drop(SHOW, drop)
            held = self.run(self.client.hgetall(k.held))
            bought = self.run(self.client.hgetall(k.bought))
            assert {v.decode(): int(n) for v, n in held.items()} == {
                v: n for v, n in m.held_by.items() if n
            }
            assert {v.decode(): int(n) for v, n in bought.items() if int(n)} == {
                v: n for v, n in m.bought_by.items() if n
            }


def test_inventory_matches_the_model(redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: InventoryMachine(redis_url),
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
