"""What a hostile user found: error messages that name the real problem, refusals that carry the
server clock. Pure session tests first, then the same through a real gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers.gateway import SECRET, Running, drop, serve, settings
from websockets.asyncio.client import connect

from livecommerce.realtime.codec import Encoding, decode, encode
from livecommerce.realtime.protocol import MAX_PAYMENT_REFERENCE, Send, Session
from livecommerce.realtime.tokens import mint
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


def joined() -> Session:
    s = Session(rate=100.0, burst=100, token_secret=SECRET, now=0.0)
    [_join] = s.receive({"type": "join", "show": "s1", "token": mint(SECRET, "a", 60, now=1000.0)},
                        wall=1000.0)  # fmt: skip
    return s


def reply(s: Session, payload: str) -> dict[str, Any]:
    [action] = s.receive_frame(Encoding.JSON, payload, now=0.0, wall=1000.0)
    assert isinstance(action, Send)
    return action.message


def test_a_too_long_payment_reference_says_too_long() -> None:
    long = "p" * (MAX_PAYMENT_REFERENCE + 1)
    err = reply(
        joined(),
        encode(
            Encoding.JSON,
            {  # type: ignore[arg-type]
                "type": "buy_now",
                "id": "r1",
                "drop": "d1",
                "quantity": 1,
                "payment_reference": long,
            },
        ),
    )
    assert err["code"] == "bad_message" and err["field"] == "payment_reference"
    assert err["message"] == (
        f"payment_reference: expected a string of at most {MAX_PAYMENT_REFERENCE} characters"
    )


def test_a_missing_type_is_named_as_missing() -> None:
    s = joined()
    err = reply(s, '{"id": "r1", "drop": "d1"}')
    assert err["code"] == "unknown_type" and err["field"] == "type"
    assert err["message"] == "type: required" and err["id"] == "r1"
    err = reply(s, '{"type": 7}')
    assert err["message"] == "type: expected a string" and err["field"] == "type"
    assert reply(s, '{"type": "dance"}')["message"] == "unknown message type 'dance'"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "9" * 400, "1" * 5000])
def test_a_number_too_large_is_a_bad_field_not_a_bad_frame(number: str) -> None:
    err = reply(joined(), f'{{"type": "reserve", "id": "r1", "drop": "d1", "quantity": {number}}}')
    assert err["code"] == "bad_message" and err["field"] == "quantity", err


def test_still_bad_frames_after_the_second_parse() -> None:
    s = joined()
    for payload in ['{"quantity": 1e400, "x": NaN}', '{"q": 1e400' + "[" * 5000, '{"q": 1e400,']:
        assert reply(s, payload)["code"] == "bad_frame"


# -- through the gateway --------------------------------------------------------------------------
@pytest.fixture
async def inv(redis: aioredis.Redis, keyspace: Keyspace) -> Inventory:
    inventory = Inventory(redis, keyspace, settings())
    await inventory.load()
    await inventory.create_show("s1", title="Show one", host="h1")
    await inventory.start_show("s1")
    await inventory.create_drop("s1", drop("d1", quantity=5))
    return inventory


@pytest.fixture
async def gw(redis_url: str, keyspace: Keyspace, inv: Inventory) -> AsyncIterator[Running]:
    async with serve(settings(), redis_url, keyspace) as running:
        yield running


@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.MSGPACK])
async def test_refused_results_carry_the_server_clock(gw: Running, inv: Inventory,
                                                      encoding: Encoding) -> None:  # fmt: skip
    async with connect(gw.url, subprotocols=[encoding.subprotocol]) as ws:  # type: ignore[list-item]

        async def ask(message: dict[str, Any]) -> dict[str, Any]:
            await ws.send(encode(encoding, message))
            return decode(encoding, await ws.recv())

        token = mint(SECRET, "mallory", 600)
        assert (await ask({"type": "join", "show": "s1", "token": token}))["type"] == "snapshot"
        before = await inv.server_time_ms()
        refusals = [
            await ask({"type": "reserve", "id": "r1", "drop": "nope", "quantity": 1}),
            await ask({"type": "reserve", "id": "r2", "drop": "d1", "quantity": 0}),
            await ask(
                {
                    "type": "buy_now",
                    "id": "r3",
                    "drop": "d1",
                    "quantity": 10**6,
                    "payment_reference": "p",
                }
            ),
        ]
        after = await inv.server_time_ms()
    assert [r["reason"] for r in refusals] == ["unknown_drop", "invalid_quantity",
                                               "invalid_quantity"]  # fmt: skip
    for result in refusals:
        # The gateway's estimate of the store clock: within the second it refreshes it.
        assert before - 5_000 <= result["server_time"] <= after + 5_000, result
    view = await inv.get_drop("s1", "d1")
    assert view is not None and view["remaining"] == 5


# -- logs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "clean"),
    [
        ('1.2.3.4:5 - "WebSocket /ws?token=eyJ.x.y&show=s1" [accepted]',
         '1.2.3.4:5 - "WebSocket /ws?***" [accepted]'),
        ("GET /api/shows?host_key=lch_abc&limit=5", "GET /api/shows?host_key=***&limit=5"),
        ("POST /hook?a=1&secret=zz;sig=1", "POST /hook?a=1&secret=***;sig=1"),
        ("GET /watch/demo?token=abc", "GET /watch/demo?token=***"),
        ("nothing to hide in /ws", "nothing to hide in /ws"),
    ],
)  # fmt: skip
def test_logs_redact_tokens_in_urls(line: str, clean: str) -> None:
    import logging

    from livecommerce.core.logs import RedactFilter, redact

    assert redact(line) == clean
    fmt = '%s - "WebSocket %s"'
    record = logging.LogRecord("uvicorn.error", 20, "", 0, fmt, ("ip", line), None)
    RedactFilter().filter(record)
    assert "eyJ" not in record.getMessage() and "lch_abc" not in record.getMessage()
