"""The Shopify adapter: Shopify's webhooks mapped onto the generic updates. No I/O.

Shopify signs each webhook with ``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw
body, keyed with the app's client secret (the source's secret, as it is: no ``whsec_``). The
topic is in ``X-Shopify-Topic``, the delivery id in ``X-Shopify-Webhook-Id``. Two topics:

- ``inventory_levels/update``: ``{"inventory_item_id", "location_id", "available",
  "updated_at", "admin_graphql_api_id"}``: the level of one inventory item at one location.
  It names no SKU: the item -> SKU map is learned from ``products/update`` (each variant has
  ``sku`` and ``inventory_item_id``). An item not mapped yet, another location than the one
  the live channel sells from (``?location=`` on the webhook URL) or ``available: null``
  (untracked) changes nothing and says why.
- ``products/update``: title and description (``body_html``) of the product, and the price of
  each variant with a SKU when the webhook URL names the shop's currency (``?currency=EUR``).
  A variant's title other than "Default Title" is appended to the product's.

The version of an update is its ``updated_at`` in microseconds (``X-Shopify-Triggered-At`` when
it is more precise, so two changes in one second keep their order). Adapters for other backends
(Saleor, Magento) are the same thin layer: verify, then map to :class:`Level` /
:class:`ProductChange`. Guide: ``docs/stock-in.md``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.core.model import valid_id
from livecommerce.web.products import validate as validate_product
from livecommerce.web.stocksync import Level, ProductChange, Source

TOPICS = ("inventory_levels/update", "products/update")
DEFAULT_VARIANT = "Default Title"


def verify(source: Source, header: str, body: bytes) -> None:
    """Raise AuthError unless ``header`` is the base64 HMAC-SHA256 of ``body`` (any secret)."""
    if not header:
        raise AuthError("missing X-Shopify-Hmac-Sha256")
    for secret in source.secrets:
        expected = base64.b64encode(
            hmac.new(secret.encode(), body, hashlib.sha256).digest()
        ).decode()
        if hmac.compare_digest(expected, header.strip()):
            return
    raise AuthError("X-Shopify-Hmac-Sha256 does not match")


def micros(stamp: object, name: str) -> int:
    """An ISO 8601 time (``2021-12-31T19:00:00-05:00``, ``...Z``, with or without fraction)
    as microseconds since the epoch."""
    if not isinstance(stamp, str) or not stamp:
        raise ValidationError(name, "expected an ISO 8601 time")
    text = stamp.strip().replace("Z", "+00:00")
    main, dot, rest = text.partition(".")
    frac = ""
    if dot:  # Python parses at most 6 fraction digits: keep the zone, cut the rest
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits][:6], rest[digits:]
        text = f"{main}.{frac.ljust(6, '0')}{zone}" if frac else main + zone
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValidationError(name, f"not an ISO 8601 time: {stamp!r}") from exc
    if when.tzinfo is None:
        raise ValidationError(name, "a time zone is required")
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("body", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValidationError("body", "expected a JSON object")
    return data


def _version(payload_time: object, triggered_at: str) -> int:
    version = micros(payload_time, "updated_at")
    if triggered_at:  # an unreadable header does not make a valid payload invalid
        with contextlib.suppress(ValidationError):
            version = max(version, micros(triggered_at, "X-Shopify-Triggered-At"))
    return version


@dataclass(frozen=True)
class LevelUpdate:
    """``inventory_levels/update``, before the item is mapped to a SKU."""

    inventory_item_id: str
    location_id: str
    available: int | None
    version: int

    def level(self, sku: str) -> Level | None:
        if self.available is None:
            return None
        return Level(sku, max(0, self.available), self.version)  # negative available: none


def inventory_level(body: bytes, triggered_at: str = "") -> LevelUpdate:
    data = _json(body)
    item, location = data.get("inventory_item_id"), data.get("location_id")
    if not isinstance(item, int) or not isinstance(location, int):
        raise ValidationError("inventory_item_id", "inventory_item_id and location_id required")
    available = data.get("available")
    if available is not None and (not isinstance(available, int) or isinstance(available, bool)):
        raise ValidationError("available", "expected an integer or null")
    return LevelUpdate(str(item), str(location), available, _version(data.get("updated_at"),
                                                                      triggered_at))  # fmt: skip


@dataclass(frozen=True)
class ProductUpdate:
    """``products/update``: catalog changes per SKU, and the item -> SKU map it teaches."""

    changes: list[ProductChange]
    items: dict[str, str]
    """inventory_item_id -> sku"""


def _price(value: object) -> int | None:
    """``"29.99"`` -> 2999 (minor units; currencies with 2 decimals)."""
    try:
        amount = Decimal(str(value)) * 100
    except InvalidOperation:
        return None
    if amount != amount.to_integral_value() or amount < 0:
        return None
    return int(amount)


def product_update(body: bytes, currency: str = "", triggered_at: str = "") -> ProductUpdate:
    data = _json(body)
    variants = data.get("variants")
    if not isinstance(variants, list):
        raise ValidationError("variants", "expected a list")
    version = _version(data.get("updated_at"), triggered_at)
    raw_title = data.get("title")
    title = raw_title if isinstance(raw_title, str) else ""
    changes: list[ProductChange] = []
    items: dict[str, str] = {}
    for variant in variants:
        if not isinstance(variant, dict) or not valid_id(variant.get("sku")):
            continue  # a variant without a usable SKU is not sold live
        sku = str(variant["sku"])
        if isinstance(variant.get("inventory_item_id"), int):
            items[str(variant["inventory_item_id"])] = sku
        fields: dict[str, Any] = {}
        name = title
        vtitle = variant.get("title")
        if isinstance(vtitle, str) and vtitle and vtitle != DEFAULT_VARIANT:
            name = f"{title} - {vtitle}" if title else vtitle
        if name.strip():
            fields["title"] = name[:200]
        if isinstance(data.get("body_html"), str):
            fields["description"] = data["body_html"][:2000]
        if currency and (price := _price(variant.get("price"))) is not None:
            fields["prices"] = {currency: price}
        try:
            fields = validate_product(fields, partial=True)
        except ValidationError:
            continue  # e.g. a price beyond our limits: this variant's catalog is left alone
        if fields:
            changes.append(ProductChange(sku, version, fields))
    return ProductUpdate(changes, items)
