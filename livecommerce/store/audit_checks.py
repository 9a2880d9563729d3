"""The invariants the audit checks, per drop and per show's orders stream, on one snapshot
(:mod:`livecommerce.store.audit` takes the snapshot and drives these checks).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import orjson

from livecommerce.store.audit_snapshot import AuditReport, DropSnapshot, ShowSnapshot, text

HOLD_STATES = ("held", "confirmed", "cancelled", "expired")


DROP_STATES = ("scheduled", "open", "closed")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream_id(value: Any) -> tuple[int, int]:
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)


class Checker:
    def __init__(self, show: str, report: AuditReport) -> None:
        self.show = show
        self.report = report

    def fail(self, where: str, message: str) -> None:
        self.report.violations.append(f"show {self.show} {where}: {message}")

    def drop(self, snap: DropSnapshot, seq: dict[str, str]) -> None:
        """Every per-drop invariant; adds to the report's counts."""
        where = f"drop {snap.id}"
        rec = snap.record
        if not rec:
            self.fail(where, "listed in the show's drops but has no drop record")
            return
        self.report.drops += 1
        counters: dict[str, int] = {}
        for name in ("quantity", "restocked", "remaining", "held", "sold", "limit"):
            value = _int(rec.get(name))
            if value is None:
                self.fail(where, f"counter {name}={rec.get(name)!r} is not an integer")
                return
            counters[name] = value
        self._stock(where, rec, counters)
        records, held_by_viewer = self._holds(where, snap, counters["held"], seq)
        self._viewers(where, snap, held_by_viewer, counters["sold"], counters["limit"])
        self._orders_index(where, snap, records, counters["sold"], seq)

    def _stock(self, where: str, rec: dict[str, str], counters: dict[str, int]) -> None:
        """No unit made or lost, none oversold; the counters agree with the drop's state."""
        quantity, restocked = counters["quantity"], counters["restocked"]
        remaining, held, sold = counters["remaining"], counters["held"], counters["sold"]
        self.report.units_sold += sold
        self.report.units_held += held
        self.report.units_remaining += remaining
        if rec.get("state") not in DROP_STATES:
            self.fail(where, f"unknown state {rec.get('state')!r}")
        if remaining < 0:
            self.fail(where, f"remaining={remaining} is negative: oversold by {-remaining}")
        if held < 0:
            self.fail(where, f"held={held} is negative")
        if sold < 0:
            self.fail(where, f"sold={sold} is negative")
        if restocked < 0:
            self.fail(where, f"restocked={restocked} is negative")
        if remaining + held + sold != quantity + restocked:
            self.fail(
                where,
                f"remaining {remaining} + held {held} + sold {sold} = "
                f"{remaining + held + sold} != quantity {quantity} + restocked {restocked} = "
                f"{quantity + restocked}",
            )
        if sold > quantity + restocked:
            self.fail(where, f"sold {sold} units of {quantity + restocked} in stock: oversold")
        if rec.get("state") == "scheduled" and (held or sold):
            self.fail(where, f"scheduled (not open) but held={held} sold={sold}")

    def _holds(
        self, where: str, snap: DropSnapshot, held: int, seq: dict[str, str]
    ) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
        """Hold records against the active-holds set; returns the records and units held per
        viewer."""
        records: dict[str, dict[str, Any]] = {}
        for n, raw in snap.holdrec.items():
            try:
                hold = orjson.loads(raw)
                int(hold["q"])
                str(hold["v"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self.fail(where, f"hold {n}: unreadable hold record {raw[:80]!r}")
                continue
            if hold.get("s") not in HOLD_STATES:
                self.fail(where, f"hold {n}: unknown state {hold.get('s')!r}")
            records[n] = hold
        active_units = 0
        held_by_viewer: Counter[str] = Counter()
        for n, score in snap.holds.items():
            hold_rec = records.get(n)
            if hold_rec is None:
                self.fail(where, f"hold {n} is in the holds set but has no hold record")
                continue
            if hold_rec.get("s") != "held":
                self.fail(where, f"hold {n} is in the holds set but is {hold_rec.get('s')}")
                continue
            if int(score) != int(hold_rec.get("x", -1)):
                self.fail(where, f"hold {n}: set expiry {int(score)} != record {hold_rec.get('x')}")
            active_units += int(hold_rec["q"])
            held_by_viewer[str(hold_rec["v"])] += int(hold_rec["q"])
        for n, hold_rec in records.items():
            if hold_rec.get("s") == "held" and n not in snap.holds:
                self.fail(where, f"hold {n} is 'held' but not in the holds set: stock stranded")
        self.report.holds += len(snap.holds)
        if active_units != held:
            self.fail(where, f"held={held} but the active holds add up to {active_units}")
        hold_seq = _int(seq.get(f"h:{snap.id}")) or 0
        if len(records) != hold_seq:
            self.fail(where, f"{hold_seq} hold numbers issued but {len(records)} hold records")
        return records, held_by_viewer

    def _viewers(
        self, where: str, snap: DropSnapshot, held_by_viewer: Counter[str], sold: int, limit: int
    ) -> None:
        """Per viewer: held matches the active holds, bought adds up to sold, the limit holds."""
        held_hash: dict[str, int] = {}
        for viewer, raw_units in snap.held.items():
            units = _int(raw_units)
            if units is None or units <= 0:
                self.fail(where, f"viewer {viewer}: held entry {raw_units!r} is not positive")
            held_hash[viewer] = units or 0
        for viewer in set(held_hash) | set(held_by_viewer):
            if held_hash.get(viewer, 0) != held_by_viewer.get(viewer, 0):
                self.fail(
                    where,
                    f"viewer {viewer}: held={held_hash.get(viewer, 0)} but active holds add "
                    f"up to {held_by_viewer.get(viewer, 0)}",
                )
        bought: dict[str, int] = {}
        for viewer, raw_units in snap.bought.items():
            units = _int(raw_units)
            if units is None or units < 0:
                self.fail(where, f"viewer {viewer}: bought entry {raw_units!r} is not >= 0")
            bought[viewer] = units or 0
        if sum(bought.values()) != sold:
            self.fail(where, f"sold={sold} but viewers bought {sum(bought.values())}")
        for viewer in sorted(set(held_hash) | set(bought)):
            used = held_hash.get(viewer, 0) + bought.get(viewer, 0)
            if used > limit:
                self.fail(
                    where,
                    f"viewer {viewer}: held {held_hash.get(viewer, 0)} + bought "
                    f"{bought.get(viewer, 0)} = {used} > limit {limit}",
                )

    def _orders_index(
        self,
        where: str,
        snap: DropSnapshot,
        records: dict[str, dict[str, Any]],
        sold: int,
        seq: dict[str, str],
    ) -> None:
        """One index entry per order number issued, adding up to sold; confirmed holds indexed."""
        index_units = 0
        for order_id, raw_units in snap.orders_index.items():
            units = _int(raw_units)
            if units is None or units <= 0:
                self.fail(where, f"order {order_id}: {raw_units!r} units is not positive")
            index_units += units or 0
            if not order_id.startswith(f"{self.show}.{snap.id}."):
                self.fail(where, f"order {order_id} does not belong to this drop")
        self.report.orders += len(snap.orders_index)
        if index_units != sold:
            self.fail(where, f"sold={sold} but the orders index adds up to {index_units} units")
        order_seq = _int(seq.get(f"o:{snap.id}")) or 0
        if len(snap.orders_index) != order_seq:
            self.fail(
                where, f"{order_seq} order numbers issued but {len(snap.orders_index)} orders"
            )
        for n, hold_rec in records.items():
            if hold_rec.get("s") != "confirmed":
                continue
            order_id = str(hold_rec.get("o") or "")
            if not order_id or order_id not in snap.orders_index:
                self.fail(where, f"hold {n} is confirmed but its order {order_id} is not indexed")
            elif _int(snap.orders_index[order_id]) != int(hold_rec["q"]):
                self.fail(
                    where,
                    f"hold {n}: order {order_id} has {snap.orders_index[order_id]} units, "
                    f"the hold {hold_rec['q']}",
                )

    def stream(self, snap: ShowSnapshot, whole_show: bool) -> None:
        """The outbox: each order exactly once, each entry backed by its drop's orders index."""
        indexed: dict[str, tuple[str, int]] = {}
        for dsnap in snap.drops.values():
            for order_id, units in dsnap.orders_index.items():
                indexed[order_id] = (dsnap.id, _int(units) or 0)
        if snap.stream is None or snap.stream_info is None:
            if indexed:
                self.fail("orders stream", f"missing, but {len(indexed)} order(s) are indexed")
            return
        info = snap.stream_info
        self.report.stream_entries += sum(1 for _, f in snap.stream if f.get("drop") in snap.drops)
        seen, stream_bought, replays_seen = self._entries(snap, whole_show, indexed)
        trimmed = self._stream_shape(snap, info, indexed, replays_seen, whole_show)
        if not trimmed:
            self._untrimmed_complete(snap, indexed, seen, stream_bought)
        else:
            self._trimmed_complete(snap, seen)

    def _entries(
        self, snap: ShowSnapshot, whole_show: bool, indexed: dict[str, tuple[str, int]]
    ) -> tuple[Counter[str], dict[tuple[str, str], int], int]:
        """Each entry backed by its drop's orders index, each order once; returns the orders
        seen, units per (drop, viewer) and the number of dead-letter replays."""
        assert snap.stream is not None
        entries = [(eid, f) for eid, f in snap.stream if f.get("drop") in snap.drops]
        seen: Counter[str] = Counter()
        stream_bought: dict[tuple[str, str], int] = defaultdict(int)
        replays_seen = 0
        for eid, f in snap.stream if whole_show else entries:
            order_id = f.get("order_id") or ""
            if f.get("replay_of"):
                # A dead letter put back for delivery: the same order again, not a second sale.
                replays_seen += 1
                if order_id not in indexed:
                    self.fail(f"orders stream entry {eid}", f"replays unknown order {order_id}")
                continue
            seen[order_id] += 1
            where = f"orders stream entry {eid} (order {order_id or '?'})"
            if f.get("show") != self.show:
                self.fail(where, f"belongs to show {f.get('show')!r}")
            drop = f.get("drop") or ""
            if drop not in snap.drops:
                self.fail(where, f"names drop {drop!r}, which the show does not have")
                continue
            quantity = _int(f.get("quantity"))
            if order_id not in indexed:
                self.fail(where, f"order not in drop {drop}'s orders index: sold without decrement")
            elif indexed[order_id][0] != drop or indexed[order_id][1] != quantity:
                self.fail(
                    where,
                    f"drop {drop} x{quantity} but the index has drop {indexed[order_id][0]} "
                    f"x{indexed[order_id][1]}",
                )
            unit, amount = _int(f.get("unit_price")), _int(f.get("amount"))
            if quantity is None or unit is None or amount != quantity * unit:
                self.fail(where, f"amount {amount} != quantity {quantity} x unit price {unit}")
            stream_bought[(drop, f.get("viewer") or "")] += quantity or 0
        for order_id, count in seen.items():
            if count > 1:
                self.fail("orders stream", f"order {order_id} appears {count} times")
        return seen, stream_bought, replays_seen

    def _stream_shape(
        self,
        snap: ShowSnapshot,
        info: dict[Any, Any],
        indexed: dict[str, tuple[str, int]],
        replays_seen: int,
        whole_show: bool,
    ) -> bool:
        """Trimmed only from the front; entries ever added == orders + replays. Returns whether
        the stream was trimmed."""
        assert snap.stream is not None
        length = int(info.get("length", 0))
        added = int(info.get("entries-added", length))
        trimmed = length < added
        if length:
            first = _stream_id(snap.stream[0][0])
            max_deleted = _stream_id(info.get("max-deleted-entry-id", b"0-0"))
            if max_deleted >= first:
                self.fail(
                    "orders stream",
                    f"entries deleted from the middle (up to {text(info['max-deleted-entry-id'])}, "
                    f"first kept {snap.stream[0][0]}): orders lost from the outbox",
                )
        replays = _int(snap.seq.get("replays")) or 0
        if whole_show and added != len(indexed) + replays:
            self.fail(
                "orders stream",
                f"{added} entries ever added but {len(indexed)} orders indexed across the "
                f"show's drops and {replays} dead-letter replays (each order must be appended "
                f"exactly once)",
            )
        if replays_seen > replays:
            self.fail("orders stream", f"{replays_seen} replay entries but {replays} counted")
        return trimmed

    def _untrimmed_complete(
        self,
        snap: ShowSnapshot,
        indexed: dict[str, tuple[str, int]],
        seen: Counter[str],
        stream_bought: dict[tuple[str, str], int],
    ) -> None:
        """Nothing trimmed: every indexed order has its entry, every viewer's units are there."""
        missing = sorted(set(indexed) - set(seen))
        for order_id in missing[:20]:
            self.fail("orders stream", f"order {order_id} is indexed but has no entry")
        if len(missing) > 20:
            self.fail("orders stream", f"... and {len(missing) - 20} more orders missing")
        for dsnap in snap.drops.values():
            for viewer, raw in dsnap.bought.items():
                in_stream = stream_bought.get((dsnap.id, viewer), 0)
                if (_int(raw) or 0) != in_stream:
                    self.fail(
                        f"drop {dsnap.id}",
                        f"viewer {viewer}: bought={raw} but the stream has {in_stream} unit(s)",
                    )

    def _trimmed_complete(self, snap: ShowSnapshot, seen: Counter[str]) -> None:
        """Trimmed from the front: an order whose entry id is not below the first kept entry
        must still be there."""
        first = _stream_id(snap.stream[0][0]) if snap.stream else (1 << 62, 0)
        for dsnap in snap.drops.values():
            for n, raw in dsnap.holdrec.items():
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # reported by the drop check
                order = rec.get("order")
                if rec.get("s") != "confirmed" or not isinstance(order, dict):
                    continue
                if _stream_id(order["stream_id"]) >= first and order["id"] not in seen:
                    self.fail(
                        f"drop {dsnap.id}",
                        f"hold {n}: order {order['id']} ({order['stream_id']}) is missing "
                        f"from the stream",
                    )
