"""The viewer session without I/O: decoded messages in, actions out.

:class:`Session` knows what a frame means, what may follow what and which reply to send. It never
awaits and never reads a clock: every call is handed ``now`` (monotonic seconds, for the rate
limit) and ``wall`` (Unix seconds, for token expiry). The gateway is a thin loop that feeds it
frames and carries out the :data:`Action` s it returns (send a message, join a show, run a buy
command against the inventory, close). See ``docs/protocol.md`` for the wire contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum
from typing import Any

from livecommerce.core.errors import AuthError, ProtocolError
from livecommerce.core.model import CURRENCY, HOLD_ID, REQUEST_ID, Outcome, valid_id
from livecommerce.realtime import chat, tokens
from livecommerce.realtime.codec import Encoding, decode

EVENT_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
MAX_PAYMENT_REFERENCE = 128


class CloseCode(IntEnum):
    """WebSocket close codes of the protocol (docs/protocol.md, "Close codes")."""

    NORMAL = 1000
    TOO_BIG = 1009
    RECONNECT = 4000
    AUTH_FAILED = 4003
    UNKNOWN_SHOW = 4004
    SLOW_CONSUMER = 4008
    JOIN_TIMEOUT = 4009
    BLOCKED = 4011
    TOO_MANY_CONNECTIONS = 4013
    RATE_ABUSE = 4029
    INTERNAL = 4500

    @property
    def reconnect(self) -> bool:
        """Whether a client should reconnect after this close."""
        return self in RECONNECTABLE


RECONNECTABLE = frozenset(
    {CloseCode.RECONNECT, CloseCode.SLOW_CONSUMER, CloseCode.JOIN_TIMEOUT, CloseCode.RATE_ABUSE,
     CloseCode.INTERNAL}
)  # fmt: skip


class ErrorCode(StrEnum):
    BAD_FRAME = "bad_frame"
    WRONG_FRAME_TYPE = "wrong_frame_type"
    UNKNOWN_TYPE = "unknown_type"
    BAD_MESSAGE = "bad_message"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    UNKNOWN_SHOW = "unknown_show"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    BLOCKED = "blocked"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    BUSY = "busy"


class Op(StrEnum):
    RESERVE = "reserve"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    BUY_NOW = "buy_now"


OPS = {str(op): op for op in Op}
"""Each buy operation by its message type (a dict lookup: ``Op(kind)`` costs a microsecond)."""


class Phase(Enum):
    AWAITING_JOIN = "awaiting_join"
    JOINED = "joined"
    CLOSED = "closed"


# -- actions --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    message: dict[str, Any]


@dataclass(frozen=True)
class Join:
    show: str
    viewer: str | None
    last_event_id: str | None


@dataclass(slots=True)
class Command:
    """One store command of a viewer. Built for every buy attempt, so not frozen: a frozen
    dataclass sets each field through ``object.__setattr__`` (1.1 µs to build here against
    0.5 µs; not frozen, an edge refusal takes 0.933 of the instructions). Nothing changes a
    command once made."""

    op: Op
    request_id: str
    viewer: str
    drop: str = ""
    hold: str = ""
    quantity: int = 0
    currency: str | None = None
    payment_reference: str = ""
    fresh: bool = False
    """The client says it never sent this request id before (``"fresh": true``): the attempt
    cannot be the retry of a success, so the edge may answer it on a closed drop even for a
    viewer who bought there (docs/protocol.md, "Edge refusals")."""


@dataclass(frozen=True)
class Close:
    code: CloseCode
    reason: str


Action = Send | Join | Command | Close | chat.ChatAction


def error(code: ErrorCode, message: str, *, request_id: object = None,
          field: str | None = None, **extra: Any) -> Send:  # fmt: skip
    body: dict[str, Any] = {"type": "error", "code": str(code), "message": message}
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        body["id"] = request_id
    if field is not None:
        body["field"] = field
    body.update(extra)
    return Send(body)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; the clock is handed in."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        return max(0.0, (1.0 - self.tokens) / self.rate)


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _str(
    msg: dict[str, Any], name: str, *, pattern: re.Pattern[str] | None = None,
    max_len: int = 64, required: bool = True, what: str = "a string",
) -> str | None:  # fmt: skip
    value = msg.get(name)
    if value is None:
        if required:
            raise _Invalid(name, "required")
        return None
    if not isinstance(value, str):
        raise _Invalid(name, f"expected {what}")
    if len(value) > max_len:
        raise _Invalid(name, f"expected {what} of at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Invalid(name, f"expected {what}")
    return value


class Session:
    """One viewer connection's protocol state."""

    __slots__ = ("bucket", "burst", "name", "phase", "show", "strikes", "token_secret", "viewer")

    def __init__(self, *, rate: float, burst: int, token_secret: str | None, now: float) -> None:
        self.phase = Phase.AWAITING_JOIN
        self.bucket = TokenBucket(rate, burst, now)
        self.burst = burst
        self.strikes = 0
        self.token_secret = token_secret
        self.show: str | None = None
        self.viewer: str | None = None
        self.name = ""
        """Display name from the token (shown in chat), the viewer id when it has none."""

    # -- input --------------------------------------------------------------------------------
    def receive_frame(self, encoding: Encoding, payload: str | bytes, *, now: float,
                      wall: float) -> list[Action]:  # fmt: skip
        """One received frame (text or bytes). Every frame costs a rate-limit token."""
        if self.phase is Phase.CLOSED:
            return []
        if not self.bucket.take(now):
            self.strikes += 1
            if self.strikes > self.burst:
                self.phase = Phase.CLOSED
                return [Close(CloseCode.RATE_ABUSE, "rate_abuse")]
            retry_ms = int(self.bucket.retry_after() * 1000) + 1
            return [error(ErrorCode.RATE_LIMITED, "too many messages; this one was dropped",
                          retry_after_ms=retry_ms)]  # fmt: skip
        self.strikes = 0
        try:
            message = decode(encoding, payload)
        except ProtocolError as exc:
            return [error(ErrorCode(exc.code), exc.message)]
        return self.receive(message, wall=wall)

    def receive(self, message: dict[str, Any], *, wall: float) -> list[Action]:
        """One decoded message (already rate-limited)."""
        kind = message.get("type")
        rid = message.get("id")
        if kind == "join":
            return self._join(message, wall)
        if kind == "ping":
            if rid is not None and not isinstance(rid, str):
                return [error(ErrorCode.BAD_MESSAGE, "id: expected a string", field="id")]
            return [Send({"type": "pong", "id": rid})]
        if isinstance(kind, str) and kind in chat.TYPES:
            return self._chat(kind, message, rid)
        if not isinstance(kind, str):
            problem = "required" if kind is None else "expected a string"
            return [error(ErrorCode.UNKNOWN_TYPE, f"type: {problem}", request_id=rid,
                          field="type")]  # fmt: skip
        op = OPS.get(kind)
        if op is None:
            return [error(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}"[:200],
                          request_id=rid)]  # fmt: skip
        if self.phase is not Phase.JOINED:
            return [error(ErrorCode.NOT_JOINED, "send join first", request_id=rid)]
        try:
            command = self._command(op, message)
        except _Invalid as exc:
            return [error(ErrorCode.BAD_MESSAGE, f"{exc.field}: {exc}", request_id=rid,
                          field=exc.field)]  # fmt: skip
        if command is None:
            return [error(ErrorCode.AUTH_REQUIRED, "buying needs a viewer token", request_id=rid)]
        return [command]

    def _chat(self, kind: str, message: dict[str, Any], rid: object) -> list[Action]:
        if self.phase is not Phase.JOINED:
            return [error(ErrorCode.NOT_JOINED, "send join first", request_id=rid)]
        try:
            return [chat.parse(kind, message, viewer=self.viewer, name=self.name)]
        except chat.Invalid as exc:
            return [error(ErrorCode.BAD_MESSAGE, f"{exc.field}: {exc}", request_id=rid,
                          field=exc.field)]  # fmt: skip
        except PermissionError as exc:
            return [error(ErrorCode.AUTH_REQUIRED, str(exc), request_id=rid)]

    def _join(self, message: dict[str, Any], wall: float) -> list[Action]:
        if self.phase is not Phase.AWAITING_JOIN:
            return [error(ErrorCode.ALREADY_JOINED, "one join per connection")]
        try:
            show = _str(message, "show", what="a show id")
            if not valid_id(show):
                raise _Invalid("show", "expected a show id")
            token = _str(message, "token", required=False, max_len=tokens.MAX_TOKEN_CHARS)
            last = _str(message, "last_event_id", required=False, pattern=EVENT_ID,
                        max_len=41, what="an event id like '1732350000123-0'")  # fmt: skip
        except _Invalid as exc:
            return [error(ErrorCode.BAD_MESSAGE, f"{exc.field}: {exc}", field=exc.field)]
        assert show is not None
        viewer: str | None = None
        if token:
            try:
                identity = tokens.identify(self.token_secret or "", token, now=wall)
                viewer, self.name = identity.viewer, identity.name
            except AuthError as exc:
                self.phase = Phase.CLOSED
                return [error(ErrorCode.AUTH_FAILED, str(exc)),
                        Close(CloseCode.AUTH_FAILED, "auth_failed")]  # fmt: skip
        self.phase = Phase.JOINED
        self.show = show
        self.viewer = viewer
        return [Join(show=show, viewer=viewer, last_event_id=last)]

    def _command(self, op: Op, m: dict[str, Any]) -> Command | None:
        rid = _str(m, "id", pattern=REQUEST_ID, what="a request id ([A-Za-z0-9_.:-]{1,64})")
        assert rid is not None
        drop = hold = payment = ""
        quantity = 0
        currency: str | None = None
        fresh = False
        if op in (Op.RESERVE, Op.BUY_NOW):
            drop = _str(m, "drop", what="a drop id") or ""
            q = m.get("quantity")
            if not isinstance(q, int) or isinstance(q, bool):
                raise _Invalid("quantity", "expected an integer")
            quantity = q
            fresh = m.get("fresh", False)
            if not isinstance(fresh, bool):
                raise _Invalid("fresh", "expected true or false")
            currency = _str(m, "currency", required=False, pattern=CURRENCY,
                            what="an ISO 4217 code like EUR")  # fmt: skip
        if op in (Op.CONFIRM, Op.CANCEL):
            hold = _str(m, "hold", pattern=HOLD_ID, max_len=80,
                        what="a hold id like 'd1.7'") or ""  # fmt: skip
        if op in (Op.CONFIRM, Op.BUY_NOW):
            payment = _str(m, "payment_reference", max_len=MAX_PAYMENT_REFERENCE) or ""
        if self.viewer is None:
            return None
        return Command(op=op, request_id=rid, viewer=self.viewer, drop=drop, hold=hold,
                       quantity=quantity, currency=currency, payment_reference=payment,
                       fresh=fresh)  # fmt: skip

    def close(self) -> None:
        self.phase = Phase.CLOSED


# -- replies --------------------------------------------------------------------------------------
def result_message(command: Command, outcome: Outcome) -> dict[str, Any]:
    """The ``result`` reply to a buy command (sent to the buyer's connection only)."""
    body: dict[str, Any] = {
        "type": "result",
        "id": command.request_id,
        "op": str(command.op),
        "ok": outcome.ok,
        "server_time": outcome.now_ms,
    }
    if outcome.ok:
        body["hold"] = outcome.hold.__dict__ if outcome.hold is not None else None
        body["order"] = outcome.order.__dict__ if outcome.order is not None else None
        body["remaining"] = outcome.remaining
        body["replay"] = outcome.replay
        if outcome.durable is not None:
            body["durable"] = outcome.durable
    else:
        body["reason"] = str(outcome.reason) if outcome.reason is not None else "refused"
        body["detail"] = outcome.detail
        body["replay"] = outcome.replay
    return body
