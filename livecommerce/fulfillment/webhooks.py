"""Standard Webhooks wire format for confirmed orders: payload, id, signature. No I/O.

Spec: https://www.standardwebhooks.com/ (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``). The signed content is ``<webhook-id>.<webhook-timestamp>.<body>``; the
signature is ``v1,`` + base64(HMAC-SHA256(secret, content)); the secret is ``whsec_`` + base64
key bytes. During key rotation the sender signs with every configured secret and sends the
signatures space-separated; a receiver accepts the message if any one of them matches.

The ``webhook-id`` of an order is derived from its ``order_id`` only, so it is the same for every
attempt and every relay that delivers it: receivers de-duplicate on it. The body is derived from
the outbox entry only, so it is byte-identical across retries too; only the timestamp header and
the signatures change per attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from livecommerce.core.errors import ValidationError

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "order.confirmed"
ID_PREFIX = "msg_"
CONTENT_TYPE = "application/json"

INT_FIELDS = ("quantity", "unit_price", "amount", "confirmed_at")
"""Outbox fields that are integers in the JSON body (the stream stores flat strings)."""
STR_FIELDS = (
    "order_id",
    "show",
    "drop",
    "sku",
    "title",
    "viewer",
    "currency",
    "payment_reference",
    "hold",
    "request_id",
)
"""Outbox fields copied as strings into the JSON body."""


def generate_secret(nbytes: int = 24) -> str:
    """A fresh ``whsec_`` secret (for ``livecommerce`` setup and tests)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode()


def decode_secret(secret: str) -> bytes:
    """Key bytes of one ``whsec_<base64>`` secret."""
    raw = secret.strip()
    if not raw.startswith(SECRET_PREFIX):
        raise ValidationError("webhook_secret", "expected whsec_<base64>")
    try:
        key = base64.b64decode(raw[len(SECRET_PREFIX) :] + "==", validate=False)
    except ValueError as exc:
        raise ValidationError("webhook_secret", "not valid base64 after whsec_") from exc
    if len(key) < 16:
        raise ValidationError("webhook_secret", "the key must be at least 16 bytes")
    return key


def parse_secrets(value: str) -> tuple[str, ...]:
    """Comma- or space-separated ``whsec_`` secrets (several during key rotation)."""
    items = tuple(s for s in value.replace(",", " ").split() if s)
    if not items:
        raise ValidationError("webhook_secret", "at least one whsec_ secret is required")
    for item in items:
        decode_secret(item)
    return items


def message_id(order_id: str) -> str:
    """The ``webhook-id`` of an order: stable across attempts and relays (idempotency key)."""
    return ID_PREFIX + order_id


def order_id_of(webhook_id: str) -> str:
    return webhook_id.removeprefix(ID_PREFIX)


def _text(fields: Mapping[str, bytes | str], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise ValidationError(name, "missing from the orders stream entry")
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class WebhookMessage:
    """One order as it goes on the wire: its id and its (unsigned) JSON body."""

    id: str
    body: bytes
    order_id: str
    show: str
    confirmed_at: int


def order_message(
    fields: Mapping[bytes | str, bytes | str], *, stream_id: str = ""
) -> WebhookMessage:
    """Build the webhook for one orders-stream entry. Raises ValidationError if malformed."""
    # redis-py hands over bytes keys and values: decode the keys once, not per lookup
    named = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
    data: dict[str, object] = {name: _text(named, name) for name in STR_FIELDS}
    for name in INT_FIELDS:
        raw = _text(named, name)
        try:
            data[name] = int(raw)
        except ValueError as exc:
            raise ValidationError(name, f"expected an integer, got {raw!r}") from exc
    if stream_id:
        data["stream_id"] = stream_id
    order_id = str(data["order_id"])
    if not order_id:
        raise ValidationError("order_id", "empty")
    confirmed_at = int(str(data["confirmed_at"]))
    stamp = datetime.fromtimestamp(confirmed_at / 1000, tz=UTC)
    body = orjson.dumps(
        {
            "type": EVENT_TYPE,
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": data,
        }
    )
    return WebhookMessage(
        id=message_id(order_id),
        body=body,
        order_id=order_id,
        show=str(data["show"]),
        confirmed_at=confirmed_at,
    )


class Signer:
    """Signs messages with one or more ``whsec_`` secrets (all of them during rotation)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        keys = tuple(decode_secret(s) for s in secrets)
        if not keys:
            raise ValidationError("webhook_secret", "at least one whsec_ secret is required")
        # HMAC keyed once per secret; each signature continues from a copy (RFC 2104: the
        # key-derived inner and outer pads are the same for every message).
        self._macs = tuple(hmac.new(key, digestmod=hashlib.sha256) for key in keys)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        content = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        signatures = []
        for keyed in self._macs:
            mac = keyed.copy()
            mac.update(content)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode())
        return " ".join(signatures)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers (plus content-type) for one attempt.

        ``timestamp`` is whole seconds since the epoch, read by the caller from its clock.
        """
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
            "content-type": CONTENT_TYPE,
        }
