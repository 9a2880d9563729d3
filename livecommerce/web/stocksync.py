"""Inbound stock and catalog updates: sources, signatures and the generic formats. No I/O.

A *source* is one backend that may push updates (``LIVECOMMERCE_SYNC_SECRETS``:
``name=secret[ secret...],...``; several secrets of one source during rotation). Generic
messages are Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``) signed with the source's ``whsec_`` secret. Bodies::

    {"type": "inventory.levels", "data": {"levels": [{"sku": "TEE-1", "on_hand": 40,
                                                      "version": 17}]}}
    {"type": "product.updated", "data": {"sku": "TEE-1", "version": 17, "title": "Tee",
                                         "prices": {"EUR": 1999}}}

``version`` orders the updates of one SKU (a counter or a timestamp of the backend, always from
the same source for a SKU): an update whose version is not above the last one applied changes
nothing. The formats and curl examples are in ``docs/stock-in.md``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.core.model import valid_id
from livecommerce.fulfillment.webhooks import decode_secret
from livecommerce.store.pools import MAX_ON_HAND, MAX_VERSION
from livecommerce.web.products import validate as validate_product

TOLERANCE_S = 300
"""Standard Webhooks: a message whose timestamp is further than this from our clock is refused
(a replayed old message cannot pass even with a valid signature)."""
MAX_LEVELS = 1000
"""Levels in one message or one bulk import."""
MESSAGE_TYPES = ("inventory.levels", "product.updated")


@dataclass(frozen=True)
class Source:
    name: str
    secrets: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class Level:
    sku: str
    on_hand: int
    version: int


@dataclass(frozen=True)
class ProductChange:
    sku: str
    version: int
    fields: dict[str, Any]
    """Validated editable fields (title, description, image_url, prices), any subset."""


def parse_sources(value: str) -> dict[str, Source]:
    """``"erp=whsec_A,shopify=shpss_B shpss_C"`` -> sources by name."""
    sources: dict[str, Source] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition("=")
        name = name.strip()
        secrets = tuple(rest.split())
        if not sep or not valid_id(name) or not secrets:
            raise ValidationError("sync_secrets", "expected name=secret[ secret],...")
        sources[name] = Source(name, secrets)
    return sources


def _int(name: str, value: object, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ValidationError(name, f"expected an integer 0..{high}")
    return value


def parse_level(item: object, where: str = "level") -> Level:
    if not isinstance(item, dict):
        raise ValidationError(where, "expected an object with sku, on_hand and version")
    unknown = set(item) - {"sku", "on_hand", "version"}
    if unknown:
        raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown field")
    sku = item.get("sku")
    if not valid_id(sku):
        raise ValidationError(f"{where}.sku", "1-64 characters of A-Z a-z 0-9 _ -")
    assert isinstance(sku, str)
    return Level(
        sku,
        _int(f"{where}.on_hand", item.get("on_hand"), MAX_ON_HAND),
        _int(f"{where}.version", item.get("version"), MAX_VERSION),
    )


def parse_levels(items: object, name: str = "levels") -> list[Level]:
    """Every level checked before any is applied; a SKU at most once."""
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_LEVELS:
        raise ValidationError(name, f"expected a list of 1..{MAX_LEVELS} levels")
    levels = [parse_level(item, f"{name}[{i}]") for i, item in enumerate(items)]
    if len({lv.sku for lv in levels}) != len(levels):
        raise ValidationError(name, "a sku appears twice")
    return levels


def parse_product_change(data: object) -> ProductChange:
    if not isinstance(data, dict):
        raise ValidationError("data", "expected an object")
    sku = data.get("sku")
    if not valid_id(sku):
        raise ValidationError("data.sku", "1-64 characters of A-Z a-z 0-9 _ -")
    assert isinstance(sku, str)
    version = _int("data.version", data.get("version"), MAX_VERSION)
    editable = {k: v for k, v in data.items() if k not in ("sku", "version")}
    return ProductChange(sku, version, validate_product(editable, partial=True))


def parse_message(body: bytes) -> list[Level] | ProductChange:
    """A generic message's updates. Raises ValidationError (nothing applied) when malformed."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("body", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(message, dict):
        raise ValidationError("body", "expected a JSON object")
    kind = message.get("type")
    data = message.get("data")
    if kind == "inventory.levels":
        if not isinstance(data, dict):
            raise ValidationError("data", "expected an object with levels")
        return parse_levels(data.get("levels"), "data.levels")
    if kind == "product.updated":
        return parse_product_change(data)
    raise ValidationError("type", "expected one of " + ", ".join(MESSAGE_TYPES))


def verify_standard(source: Source, headers: Mapping[str, str], body: bytes, now_s: int) -> str:
    """Check a Standard Webhooks signature with the source's secrets; the ``webhook-id``.

    Raises AuthError for a missing, stale or forged signature (the caller changes nothing).
    """
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and stamp and signatures):
        raise AuthError("missing webhook-id, webhook-timestamp or webhook-signature")
    if len(msg_id) > 256 or not stamp.isdigit():
        raise AuthError("malformed webhook-id or webhook-timestamp")
    if abs(now_s - int(stamp)) > TOLERANCE_S:
        raise AuthError("webhook-timestamp too far from the server's clock")
    content = f"{msg_id}.{stamp}.".encode() + body
    offered = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    for secret in source.secrets:
        try:
            key = decode_secret(secret)
        except ValidationError:
            continue
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, sig) for sig in offered):
            return msg_id
    raise AuthError("webhook-signature does not match")
