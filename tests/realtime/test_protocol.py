"""The session without I/O: messages in, actions out; clocks handed in."""

from __future__ import annotations

from typing import Any

from livecommerce.core.model import Hold, Outcome, Reason
from livecommerce.realtime.codec import Encoding, encode
from livecommerce.realtime.protocol import (
    Close,
    CloseCode,
    Command,
    Join,
    Op,
    Send,
    Session,
    TokenBucket,
    result_message,
)
from livecommerce.realtime.tokens import mint

SECRET = "k" * 32


def session(**kw: Any) -> Session:
    return Session(rate=kw.get("rate", 10.0), burst=kw.get("burst", 5), token_secret=SECRET,
                   now=0.0)  # fmt: skip


def feed(s: Session, msg: dict[str, Any], now: float = 0.0) -> list[Any]:
    return s.receive_frame(Encoding.JSON, encode(Encoding.JSON, msg), now=now, wall=1000.0)


def codes(actions: list[Any]) -> list[str]:
    return [a.message.get("code", a.message["type"]) for a in actions if isinstance(a, Send)]


def test_join_then_commands() -> None:
    s = session()
    token = mint(SECRET, "alice", 60, now=1000.0)
    [join] = feed(s, {"type": "join", "show": "s1", "token": token, "last_event_id": "5-1"})
    assert join == Join(show="s1", viewer="alice", last_event_id="5-1")
    [cmd] = feed(s, {"type": "reserve", "id": "r1", "drop": "d1", "quantity": 2,
                     "currency": "EUR"})  # fmt: skip
    assert cmd == Command(op=Op.RESERVE, request_id="r1", viewer="alice", drop="d1", quantity=2,
                          currency="EUR")  # fmt: skip
    [cmd] = feed(s, {"type": "confirm", "id": "r2", "hold": "d1.3", "payment_reference": "p"})
    assert cmd.hold == "d1.3" and cmd.payment_reference == "p"
    assert codes(feed(s, {"type": "join", "show": "s1"})) == ["already_joined"]


def test_commands_before_join_and_anonymous() -> None:
    s = session()
    assert codes(feed(s, {"type": "cancel", "id": "r1", "hold": "d1.1"})) == ["not_joined"]
    assert isinstance(feed(s, {"type": "join", "show": "s1"})[0], Join)
    out = feed(s, {"type": "buy_now", "id": "r1", "drop": "d1", "quantity": 1,
                   "payment_reference": "p"})  # fmt: skip
    assert codes(out) == ["auth_required"] and out[0].message["id"] == "r1"


def test_validation_errors_name_the_field() -> None:
    s = session(burst=100)
    feed(s, {"type": "join", "show": "s1", "token": mint(SECRET, "a", 60, now=1000.0)})
    cases = [
        ({"type": "reserve", "id": "r", "drop": "d1", "quantity": True}, "quantity"),
        ({"type": "reserve", "id": "r", "drop": 3, "quantity": 1}, "drop"),
        ({"type": "reserve", "id": "r", "drop": "d1", "quantity": 1, "currency": "eur"},
         "currency"),
        ({"type": "reserve", "drop": "d1", "quantity": 1}, "id"),
        ({"type": "confirm", "id": "r", "hold": "x"}, "hold"),
        ({"type": "confirm", "id": "r", "hold": "d1.1"}, "payment_reference"),
        ({"type": "buy_now", "id": "r", "drop": "d1", "quantity": 1, "payment_reference": "p",
          "fresh": "yes"}, "fresh"),
    ]  # fmt: skip
    for msg, field in cases:
        [err] = feed(s, msg)
        assert err.message["code"] == "bad_message" and err.message["field"] == field, msg
    assert codes(feed(s, {"type": 7})) == ["unknown_type"]
    assert codes(feed(s, {"type": "ping", "id": "p"})) == ["pong"]


def test_a_buy_says_whether_its_request_id_is_fresh() -> None:
    s = session(burst=100)
    feed(s, {"type": "join", "show": "s1", "token": mint(SECRET, "a", 60, now=1000.0)})
    base = {"type": "buy_now", "id": "r1", "drop": "d1", "quantity": 1, "payment_reference": "p"}
    [cmd] = feed(s, {**base, "fresh": True})
    assert isinstance(cmd, Command) and cmd.fresh is True
    [cmd] = feed(s, base)
    assert isinstance(cmd, Command) and cmd.fresh is False  # unsaid: maybe a retry
    [cmd] = feed(s, {"type": "confirm", "id": "r2", "hold": "d1.1", "payment_reference": "p",
                     "fresh": True})  # fmt: skip
    assert isinstance(cmd, Command) and cmd.fresh is False  # only reserve and buy_now


def test_bad_tokens_close() -> None:
    for token in (mint("z" * 32, "a", 60, now=1000.0), mint(SECRET, "a", 1, now=0.0), "x"):
        s = session()
        out = feed(s, {"type": "join", "show": "s1", "token": token})
        assert codes(out) == ["auth_failed"] and out[1] == Close(CloseCode.AUTH_FAILED,
                                                                 "auth_failed")  # fmt: skip
        assert feed(s, {"type": "ping"}) == []


def test_join_validation() -> None:
    s = session()
    assert codes(feed(s, {"type": "join", "show": "bad show"})) == ["bad_message"]
    assert codes(feed(s, {"type": "join", "show": "s1", "last_event_id": "x"})) == ["bad_message"]
    assert isinstance(feed(s, {"type": "join", "show": "s1"})[0], Join)


def test_rate_limit_then_abuse_close() -> None:
    s = session(rate=1.0, burst=2)
    assert codes(feed(s, {"type": "ping"}, now=0.0)) == ["pong"]
    assert codes(feed(s, {"type": "ping"}, now=0.0)) == ["pong"]
    limited = feed(s, {"type": "ping"}, now=0.0)
    assert codes(limited) == ["rate_limited"] and limited[0].message["retry_after_ms"] > 0
    assert codes(feed(s, {"type": "ping"}, now=1.0)) == ["pong"]  # refilled, strikes reset
    for _ in range(2):
        assert codes(feed(s, {"type": "ping"}, now=1.0)) == ["rate_limited"]
    assert feed(s, {"type": "ping"}, now=1.0) == [Close(CloseCode.RATE_ABUSE, "rate_abuse")]


def test_malformed_frames_cost_a_token_and_change_nothing() -> None:
    s = session()
    out = s.receive_frame(Encoding.JSON, "{nope", now=0.0, wall=0.0)
    assert codes(out) == ["bad_frame"]
    out = s.receive_frame(Encoding.MSGPACK, "text", now=0.0, wall=0.0)
    assert codes(out) == ["wrong_frame_type"]
    assert s.bucket.tokens == 3.0


def test_token_bucket_refuses_past_the_burst_then_refills() -> None:
    bucket = TokenBucket(2.0, 1, now=0.0)
    assert bucket.take(0.0) and not bucket.take(0.1) and bucket.take(0.5)


def test_result_message_carries_hold_reason_and_server_time() -> None:
    cmd = Command(op=Op.RESERVE, request_id="r1", viewer="a", drop="d1", quantity=1)
    hold = Hold("d1.1", "d1", "a", 1, 5000, 1999, "EUR", "held")
    ok = result_message(cmd, Outcome(ok=True, now_ms=7, hold=hold, remaining=3))
    assert ok["ok"] and ok["hold"]["id"] == "d1.1" and ok["id"] == "r1" and ok["server_time"] == 7
    refused = result_message(cmd, Outcome(ok=False, now_ms=7, reason=Reason.SOLD_OUT))
    assert refused["reason"] == "sold_out" and refused["op"] == "reserve"
    assert CloseCode.RECONNECT.reconnect and not CloseCode.AUTH_FAILED.reconnect
