"""``inventory.adjusted``: what the live channel sold of a SKU and gave back to its pool, as a
Standard Webhooks message the relay delivers with the orders' guarantees. No I/O.

Each settlement of a pooled drop (docs/stock-sync.md) appends one entry to the SKU's outbox
stream ``P:{k:<sku>}:adjusted`` in the same Lua step that credits the pool. The relay reads those
streams with the same consumer group as the orders streams, so an event is retried, claimed
from a dead relay, dead-lettered and trimmed exactly like an order. Its ``webhook-id`` is
``adj_`` + the settlement id: the same for every attempt, so the backend de-duplicates on it.

Body::

    {"type": "inventory.adjusted", "timestamp": "...Z", "data": {"sku": "TEE-1",
     "sold": 3, "returned": 7, "show": "s1", "drop": "d1", "settlement": "s1.d1.s2",
     "pool": 17, "on_hand": 20, "at": 1767225600000, "stream_id": "..."}}

``sold`` is what the backend should deduct from its own on-hand; ``returned`` is informational
(units that were allocated to the live channel and are available again).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from livecommerce.core.errors import ValidationError
from livecommerce.fulfillment.webhooks import WebhookMessage, order_message

EVENT_TYPE = "inventory.adjusted"
ID_PREFIX = "adj_"
STREAM_SUFFIX = ":adjusted"
INT_FIELDS = ("sold", "returned", "pool", "on_hand", "at")
STR_FIELDS = ("sku", "show", "drop")


def is_stock_stream(stream: str) -> bool:
    return stream.endswith(STREAM_SUFFIX)


def is_stock_event_id(webhook_id: str) -> bool:
    return webhook_id.startswith(ID_PREFIX)


def adjusted_message(
    fields: Mapping[bytes | str, bytes | str], *, stream_id: str = ""
) -> WebhookMessage:
    """Build the webhook for one adjusted-stream entry. Raises ValidationError if malformed."""
    named = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    settlement = named.get("id", "")
    if not settlement:
        raise ValidationError("id", "missing from the adjusted stream entry")
    data: dict[str, object] = {"settlement": settlement}
    for name in STR_FIELDS:
        if name not in named:
            raise ValidationError(name, "missing from the adjusted stream entry")
        data[name] = named[name]
    for name in INT_FIELDS:
        try:
            data[name] = int(named[name])
        except (KeyError, ValueError) as exc:
            raise ValidationError(name, "expected an integer") from exc
    if stream_id:
        data["stream_id"] = stream_id
    at = int(str(data["at"]))
    stamp = datetime.fromtimestamp(at / 1000, tz=UTC)
    body = orjson.dumps(
        {
            "type": EVENT_TYPE,
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": data,
        }
    )
    return WebhookMessage(
        id=ID_PREFIX + settlement, body=body, order_id=settlement, show=str(data["show"]),
        confirmed_at=at,
    )  # fmt: skip


def message_for(
    stream: str, fields: Mapping[bytes | str, bytes | str], *, stream_id: str = ""
) -> WebhookMessage:
    """The webhook of one outbox entry: an order, or a stock adjustment (by its stream)."""
    if is_stock_stream(stream):
        return adjusted_message(fields, stream_id=stream_id)
    return order_message(fields, stream_id=stream_id)
