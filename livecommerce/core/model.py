"""The pure data model of a sale: ids, limits, drop specs, holds, orders and outcomes.

No I/O: the store (:mod:`livecommerce.store.inventory`) fills these from its Lua replies, the
protocol (:mod:`livecommerce.realtime.protocol`) and the host API validate input with the same
patterns and checks, so every layer agrees on what a valid id, price or quantity is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from livecommerce.core.errors import ValidationError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Show, drop and viewer ids: short, and never containing the separators used in Redis keys."""


def valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


MAX_QUANTITY = 1000
"""Largest quantity one request may ask for (per-viewer limits are usually far lower)."""
MAX_STOCK = 1_000_000
MAX_PRICE = 10**9
MAX_TEXT = 200
MAX_DESCRIPTION = 2000
CURRENCY = re.compile(r"^[A-Z]{3}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
HOLD_ID = re.compile(r"^([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})$")


class Reason(StrEnum):
    NOT_OPEN = "not_open"
    CLOSED = "closed"
    SOLD_OUT = "sold_out"
    INSUFFICIENT_STOCK = "insufficient_stock"
    LIMIT_EXCEEDED = "limit_exceeded"
    INVALID_QUANTITY = "invalid_quantity"
    UNKNOWN_DROP = "unknown_drop"
    UNSUPPORTED_CURRENCY = "unsupported_currency"
    UNKNOWN_HOLD = "unknown_hold"
    HOLD_EXPIRED = "hold_expired"
    HOLD_CANCELLED = "hold_cancelled"
    HOLD_CONFIRMED = "hold_confirmed"
    REQUEST_ID_REUSED = "request_id_reused"
    RISK_REFUSED = "risk_refused"
    BLOCKED = "blocked"
    TOO_MANY_ATTEMPTS = "too_many_attempts"


class DropKind(StrEnum):
    DROP = "drop"
    OFFER = "offer"


# Hold, Order and Outcome are built for every store reply (an Outcome two or three times per
# sale), so they are plain dataclasses: a frozen one sets each field through
# object.__setattr__, about twice the cost. Nothing changes them once made (so Hold and Order
# stay hashable values: unsafe_hash); copies are made with dataclasses.replace or anew.
@dataclass(unsafe_hash=True)
class Hold:
    id: str
    drop: str
    viewer: str
    quantity: int
    expires_at: int
    unit_price: int
    currency: str
    state: str

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Hold:
        return cls(
            id=d["id"],
            drop=d["drop"],
            viewer=d["viewer"],
            quantity=int(d["quantity"]),
            expires_at=int(d["expires_at"]),
            unit_price=int(d["unit_price"]),
            currency=d["currency"],
            state=d["state"],
        )


@dataclass(unsafe_hash=True)
class Order:
    id: str
    stream_id: str
    show: str
    drop: str
    sku: str
    title: str
    viewer: str
    quantity: int
    unit_price: int
    amount: int
    currency: str
    payment_reference: str
    hold: str
    request_id: str
    confirmed_at: int

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Order:
        return cls(
            id=d["id"],
            stream_id=d["stream_id"],
            show=d["show"],
            drop=d["drop"],
            sku=d["sku"],
            title=d["title"],
            viewer=d["viewer"],
            quantity=int(d["quantity"]),
            unit_price=int(d["unit_price"]),
            amount=int(d["amount"]),
            currency=d["currency"],
            payment_reference=d["payment_reference"],
            hold=d["hold"],
            request_id=d["request_id"],
            confirmed_at=int(d["confirmed_at"]),
        )


@dataclass
class Outcome:
    """The result of reserve / buy_now / confirm / cancel."""

    ok: bool
    now_ms: int
    reason: Reason | None = None
    hold: Hold | None = None
    order: Order | None = None
    remaining: int | None = None
    replay: bool = False
    durable: bool | None = None
    """For orders: True once the server fsynced it (WAITAOF), False if that timed out, None
    when the server cannot tell (WAITAOF off or unsupported) and for holds and refusals."""
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes | str) -> Outcome:
        d = orjson.loads(raw)
        detail = {
            k: v
            for k, v in d.items()
            if k not in ("ok", "now", "reason", "hold", "order", "remaining", "replay")
        }
        return cls(
            ok=bool(d["ok"]),
            now_ms=int(d["now"]),
            reason=Reason(d["reason"]) if "reason" in d else None,
            hold=Hold.from_wire(d["hold"]) if isinstance(d.get("hold"), dict) else None,
            order=Order.from_wire(d["order"]) if isinstance(d.get("order"), dict) else None,
            remaining=int(d["remaining"]) if "remaining" in d else None,
            replay=bool(d.get("replay", False)),
            detail=detail,
        )


@dataclass(frozen=True)
class DropSpec:
    """What a host asks for when putting a product on sale in a show."""

    id: str
    sku: str
    title: str
    quantity: int
    limit: int
    prices: dict[str, int]
    currency: str = ""
    kind: DropKind = DropKind.DROP
    opens_at: int = 0
    """Absolute ms on the server clock; 0 = now."""
    closes_at: int = 0
    """Absolute ms on the server clock; 0 = no closing time (unless duration_ms)."""
    duration_ms: int = 0
    """Closing time relative to the opening (timed offers)."""
    description: str = ""
    image_url: str = ""

    def validated(self) -> DropSpec:
        check_id("id", self.id)
        check_text("sku", self.sku, 64, required=True)
        check_text("title", self.title, MAX_TEXT, required=True)
        check_text("description", self.description, MAX_DESCRIPTION)
        check_text("image_url", self.image_url, 2048)
        check_int("quantity", self.quantity, 1, MAX_STOCK)
        check_int("limit", self.limit, 1, MAX_QUANTITY)
        for name in ("opens_at", "closes_at", "duration_ms"):
            check_int(name, getattr(self, name), 0, 2**53)
        if not isinstance(self.prices, dict) or not self.prices:
            raise ValidationError("prices", "at least one currency price is required")
        for cur, amount in self.prices.items():
            if not isinstance(cur, str) or not CURRENCY.fullmatch(cur):
                raise ValidationError("prices", f"{cur!r} is not an ISO 4217 code like EUR")
            check_int(f"prices.{cur}", amount, 0, MAX_PRICE)
        currency = self.currency or next(iter(self.prices))
        if currency not in self.prices:
            raise ValidationError("currency", f"{currency!r} has no price")
        try:
            kind = DropKind(self.kind)
        except ValueError as exc:
            raise ValidationError("kind", "expected 'drop' or 'offer'") from exc
        if self.closes_at and self.duration_ms:
            raise ValidationError("duration_ms", "give closes_at or duration_ms, not both")
        if kind is DropKind.OFFER and not (self.closes_at or self.duration_ms):
            raise ValidationError("duration_ms", "a timed offer needs a closing time")
        return DropSpec(**{**self.__dict__, "currency": currency, "kind": kind})


def check_id(name: str, value: object) -> str:
    if not valid_id(value):
        raise ValidationError(name, "1-64 characters of A-Z a-z 0-9 _ -")
    return str(value)


def check_text(name: str, value: object, max_len: int, *, required: bool = False) -> str:
    """``value`` if it is a string of at most ``max_len`` characters (non-blank if required)."""
    if not isinstance(value, str):
        raise ValidationError(name, "expected a string")
    if required and not value.strip():
        raise ValidationError(name, "must not be empty")
    if len(value) > max_len:
        raise ValidationError(name, f"at most {max_len} characters")
    return value


def check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(name, "expected an integer")
    if not low <= value <= high:
        raise ValidationError(name, f"expected {low}..{high}")
    return value


def parse_hold_id(hold_id: object) -> tuple[str, str]:
    """``"<drop>.<n>"`` -> (drop, n)."""
    if not isinstance(hold_id, str) or not (m := HOLD_ID.fullmatch(hold_id)):
        raise ValidationError("hold", "expected a hold id like 'drop1.7'")
    return m.group(1), m.group(2)


def drop_view(raw: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any]:
    """A drop hash as the public view (the same shape the Lua ``drop_view`` emits)."""
    d = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
         for k, v in raw.items()}  # fmt: skip
    ints = ("remaining", "held", "sold", "limit", "opens_at", "closes_at")
    view: dict[str, Any] = {
        k: d.get(k, "")
        for k in ("id", "show", "sku", "title", "kind", "description", "image_url",
                  "currency", "state", "reason")
    }  # fmt: skip
    for k in ints:
        view[k] = int(d.get(k) or 0)
    view["quantity"] = int(d.get("quantity") or 0) + int(d.get("restocked") or 0)
    view["prices"] = orjson.loads(d.get("prices") or "{}")
    return view
