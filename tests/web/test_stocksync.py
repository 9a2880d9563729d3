"""The inbound formats and signatures without I/O: Standard Webhooks interop with the
reference library, Shopify HMAC and timestamps, and bad input refused with a named field."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.fulfillment.webhooks import generate_secret
from livecommerce.web import shopify
from livecommerce.web.stocksync import (
    Level,
    Source,
    parse_message,
    parse_sources,
    verify_standard,
)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_a_message_signed_by_the_reference_library_verifies() -> None:
    secret = generate_secret()
    body = orjson.dumps(
        {"type": "inventory.levels", "data": {"levels": [{"sku": "A", "on_hand": 1, "version": 2}]}}
    )
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(NOW, tz=UTC), body.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": f"v1,bogus {signature}",
    }  # rotation: any one may match
    source = Source("erp", (generate_secret(), secret))
    assert verify_standard(source, headers, body, NOW + 10) == "msg_1"
    assert parse_message(body) == [Level("A", 1, 2)]
    with pytest.raises(AuthError):
        verify_standard(source, headers, body, NOW + 3600)  # replayed an hour later
    with pytest.raises(AuthError):
        verify_standard(source, {**headers, "webhook-id": "msg_2"}, body, NOW)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"type": "nope"}', "type"),
        (b'{"type": "inventory.levels", "data": {"levels": []}}', "data.levels"),
        (
            b'{"type": "inventory.levels", "data": {"levels": [{"sku": "A", "on_hand": 1}]}}',
            "data.levels[0].version",
        ),
        (
            b'{"type": "inventory.levels", "data": {"levels": [{"sku": "A", "on_hand": 1,'
            b' "version": 1, "x": 1}]}}',
            "data.levels[0].x",
        ),
        (
            b'{"type": "product.updated", "data": {"sku": "A", "version": 1,'
            b' "prices": {"eur": 1}}}',
            "prices.eur",
        ),
    ],
)
def test_malformed_messages_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_message(body)
    assert err.value.field == field


def test_sources() -> None:
    sources = parse_sources("erp=whsec_a whsec_b, shop=shpss_x")
    assert sources["erp"].secrets == ("whsec_a", "whsec_b")
    assert "shpss" not in repr(sources["shop"])
    for bad in ("erp", "=x", "bad name=x", "erp="):
        with pytest.raises(ValidationError):
            parse_sources(bad)


def test_shopify_hmac_and_times() -> None:
    body = (
        b'{"inventory_item_id":1,"location_id":2,"available":3,'
        b'"updated_at":"2021-12-31T19:00:00-05:00"}'
    )
    good = base64.b64encode(hmac.new(b"secret", body, hashlib.sha256).digest()).decode()
    shopify.verify(Source("shop", ("old", "secret")), good, body)
    for header in ("", "AAAA", good.lower()):
        with pytest.raises(AuthError):
            shopify.verify(Source("shop", ("secret",)), header, body)
    level = shopify.inventory_level(body)
    assert level.version == shopify.micros("2022-01-01T00:00:00Z", "t")
    # Two changes in one second keep their order through X-Shopify-Triggered-At.
    first = shopify.inventory_level(body, "2022-01-01T00:00:00.100000000Z")
    second = shopify.inventory_level(body, "2022-01-01T00:00:00.200000000Z")
    assert level.version < first.version < second.version
    assert shopify.micros("2022-01-01T00:00:00.5+01:00", "t") == (
        shopify.micros("2021-12-31T23:00:00Z", "t") + 500_000
    )
    with pytest.raises(ValidationError):
        shopify.micros("2022-01-01T00:00:00", "t")  # no zone
    assert (
        shopify.inventory_level(body.replace(b'"available":3', b'"available":null')).level("A")
        is None
    )
    assert shopify.inventory_level(body.replace(b":3", b":-4")).level("A") == Level(
        "A", 0, level.version
    )
