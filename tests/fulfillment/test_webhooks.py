"""Standard Webhooks signing: everything we sign is verified by the ``standardwebhooks`` package."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from livecommerce.core.errors import ValidationError
from livecommerce.fulfillment.webhooks import (
    EVENT_TYPE,
    Signer,
    generate_secret,
    message_id,
    order_id_of,
    order_message,
    parse_secrets,
)

ENTRY = {
    b"order_id": b"show1.drop1.17",
    b"show": b"show1",
    b"drop": b"drop1",
    b"sku": b"SKU-1",
    b"title": b"Sneaker \xe2\x9c\x93",
    b"viewer": b"v42",
    b"quantity": b"2",
    b"unit_price": b"4999",
    b"amount": b"9998",
    b"currency": b"EUR",
    b"payment_reference": b"pay_123",
    b"hold": b"",
    b"request_id": b"r-1",
    b"confirmed_at": b"1767225600123",
}


def test_signed_message_verifies_with_the_reference_package() -> None:
    secret = generate_secret()
    message = order_message(ENTRY, stream_id="1767225600123-0")
    now = int(time.time())
    headers = Signer([secret]).headers(message.id, now, message.body)

    payload = Webhook(secret).verify(message.body, headers)

    assert headers["webhook-id"] == "msg_show1.drop1.17"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert payload["type"] == EVENT_TYPE
    assert payload["timestamp"] == "2026-01-01T00:00:00.123Z"
    data = payload["data"]
    assert data["order_id"] == "show1.drop1.17"
    assert data["title"] == "Sneaker ✓"
    assert data["quantity"] == 2 and data["amount"] == 9998
    assert data["confirmed_at"] == 1767225600123
    assert data["stream_id"] == "1767225600123-0"


def test_body_and_id_are_stable_across_attempts() -> None:
    signer = Signer([generate_secret()])
    first = order_message(ENTRY, stream_id="1-0")
    again = order_message(dict(ENTRY), stream_id="1-0")
    assert first == again
    h1 = signer.headers(first.id, 1_000, first.body)
    h2 = signer.headers(again.id, 2_000, again.body)
    assert h1["webhook-id"] == h2["webhook-id"]
    assert h1["webhook-signature"] != h2["webhook-signature"]  # the timestamp is signed


def test_rotation_signs_with_every_secret_and_each_verifies() -> None:
    old, new = generate_secret(), generate_secret()
    message = order_message(ENTRY)
    headers = Signer(parse_secrets(f"{old}, {new}")).headers(
        message.id, int(time.time()), message.body
    )
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(message.body, headers)
    Webhook(new).verify(message.body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(message.body, headers)


def test_tampered_body_and_stale_timestamp_are_rejected_by_the_package() -> None:
    secret = generate_secret()
    message = order_message(ENTRY)
    signer = Signer([secret])
    headers = signer.headers(message.id, int(time.time()), message.body)
    tampered = json.loads(message.body)
    tampered["data"]["amount"] = 1
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(json.dumps(tampered), headers)
    stale = signer.headers(message.id, int(time.time()) - 600, message.body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(message.body, stale)


def test_string_fields_are_accepted_too() -> None:
    as_text = {k.decode(): v.decode() for k, v in ENTRY.items()}
    assert order_message(as_text).body == order_message(ENTRY).body


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in ENTRY.items() if k != b"order_id"},
        {**ENTRY, b"quantity": b"two"},
        {**ENTRY, b"order_id": b""},
    ],
)
def test_malformed_entries_raise_validation_error(broken: dict[bytes, bytes]) -> None:
    with pytest.raises(ValidationError):
        order_message(broken)


@pytest.mark.parametrize("value", ["", "nope", "whsec_", "whsec_c2hvcnQ="])
def test_bad_secrets_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        parse_secrets(value)


def test_message_id_round_trip() -> None:
    assert order_id_of(message_id("a.b.1")) == "a.b.1"
