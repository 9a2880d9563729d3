"""The reference fulfillment sink: a small service that receives the relay's order webhooks.

It is "the fulfillment backend" of the demo and the tests, and an example for backend teams:

1. verify the Standard Webhooks signature with the ``standardwebhooks`` package, trying every
   configured secret (key rotation), and reject timestamps more than 5 minutes off (the
   package's tolerance) -- ``400`` for missing headers or a stale timestamp, ``401`` for a bad
   signature;
2. de-duplicate by ``webhook-id``: a repeat is answered ``200`` and counted, not recorded again;
3. record what it received in Redis under ``P:sink:*`` (see :mod:`livecommerce.store.keys`), where
   tests and :mod:`livecommerce.fulfillment.audit` read it.

Steps 2 and 3 and the fault injection below are one Lua call (``lua/sink_record.lua``), and the
calls of one event-loop turn share one pipeline
(:class:`livecommerce.store.scriptrunner.ScriptRunner`):
about one Redis round trip per batch of webhooks rather than three per webhook. The sink's keys
have no common hash tag, so it runs against a single Redis/Valkey, not a cluster.

Fault injection (for fault tests and the demo): ``POST /admin/fail`` from loopback, or
:func:`set_fail_mode` directly, stores a mode in ``P:sink:fail`` that every request reads:

* ``500`` -- answer 500 (with ``Retry-After`` if ``retry_after`` is given);
* ``timeout`` -- hold the request ``delay_s`` seconds, then answer 503 without recording;
* ``410`` -- answer 410 Gone;
* ``slow`` -- record the order, then hold the answer ``delay_s`` seconds (a backend that took
  the order but answered too late: the relay's crash-between-send-and-ack case);
* ``none`` -- clear.

``match`` limits the failure to webhook-ids containing it; ``times`` > 0 fails only that many
requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.fulfillment.webhooks import decode_secret
from livecommerce.store import scriptrunner as scripts
from livecommerce.store.keys import Keyspace

WEBHOOK_PATH = "/webhooks/orders"
JSON = "application/json"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})


class FailMode(StrEnum):
    NONE = "none"
    ERROR = "500"
    TIMEOUT = "timeout"
    GONE = "410"
    SLOW = "slow"


@dataclass(frozen=True)
class Failure:
    mode: FailMode
    match: str = ""
    times: int = 0
    delay_s: float = 30.0
    retry_after: str = ""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def set_fail_mode(
    redis: aioredis.Redis,
    keyspace: Keyspace,
    mode: FailMode | str,
    *,
    match: str = "",
    times: int = 0,
    delay_s: float = 30.0,
    retry_after: str = "",
) -> None:
    """Make the sink fail (or, with ``none``, stop failing) from its next request on."""
    mode = FailMode(mode)
    key = keyspace.sink_fail
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    if mode is not FailMode.NONE:
        pipe.hset(
            key,
            mapping={
                "mode": mode.value,
                "match": match,
                "times": str(max(0, times)),
                "left": str(max(0, times)),
                "delay_s": str(delay_s),
                "retry_after": retry_after,
            },
        )
    await pipe.execute()


class Outcome(StrEnum):
    """What ``sink_record.lua`` did with one verified webhook."""

    NEW = "new"
    DUPLICATE = "dup"
    BAD = "bad"
    """Not an order.confirmed body: rejected."""
    FAILED = "fail"
    """Answered with the injected failure; nothing recorded."""


@dataclass(frozen=True)
class Recorded:
    outcome: Outcome
    failure: Failure | None
    """The injected failure that applied to this request (SLOW comes with NEW/DUPLICATE/BAD)."""


RECORD_SCRIPT = scripts.build(
    "sink_record", (scripts.LUA_DIR / "sink_record.lua").read_text("utf-8")
)


def parse_recorded(reply: Sequence[Any]) -> Recorded:
    outcome, mode, delay_s, retry_after = (_s(x) for x in reply)
    failure = None
    if mode:
        failure = Failure(
            mode=FailMode(mode), delay_s=float(delay_s or "30"), retry_after=retry_after
        )
    return Recorded(Outcome(outcome), failure)


@dataclass(frozen=True)
class Received:
    webhook_id: str
    received_at_ms: int
    timestamp: int
    order: dict[str, Any]


async def received(redis: aioredis.Redis, keyspace: Keyspace) -> dict[str, Received]:
    """Everything the sink accepted, by webhook-id (duplicates are not in it)."""
    raw = await redis.hgetall(keyspace.sink_received)
    out = {}
    for k, v in raw.items():
        d = orjson.loads(v)
        out[_s(k)] = Received(d["webhook_id"], d["received_at"], d["timestamp"], d["order"])
    return out


async def received_count(redis: aioredis.Redis, keyspace: Keyspace) -> int:
    return int(await redis.hlen(keyspace.sink_received))


async def arrivals(redis: aioredis.Redis, keyspace: Keyspace) -> list[str]:
    """Webhook-ids in order of first arrival."""
    return [_s(x) for x in await redis.lrange(keyspace.sink_arrivals, 0, -1)]


async def stats(redis: aioredis.Redis, keyspace: Keyspace) -> dict[str, int]:
    """Counters: ``requests``, ``accepted``, ``duplicates``, ``rejected``, ``failed``."""
    raw = await redis.hgetall(keyspace.sink_stats)
    return {_s(k): int(v) for k, v in raw.items()}


class Sink:
    """The receiving logic, independent of the web framework: verify, de-duplicate, record."""

    def __init__(self, redis: aioredis.Redis, keyspace: Keyspace, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValidationError("webhook_secret", "the sink needs at least one whsec_ secret")
        for secret in secrets:
            decode_secret(secret)
        self.redis = redis
        self.keys = keyspace
        self._webhooks = [Webhook(s) for s in secrets]
        self._scripts = scripts.ScriptRunner(redis, {RECORD_SCRIPT.name: RECORD_SCRIPT})

    def verify(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(0, "") when a secret verifies the message, else (HTTP status, reason)."""
        reason = "no matching signature"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, headers, json_parse=False)
            except WebhookVerificationError as exc:
                reason = str(exc)
                if "signature" not in reason.lower() or "headers" in reason.lower():
                    return 400, reason  # missing headers or a stale/future timestamp
                continue
            except ValueError as exc:  # a malformed signature list
                return 400, f"malformed headers: {exc}"
            return 0, ""
        return 401, reason

    async def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, reason = self.verify(body, headers)
        if status:
            await self.redis.hincrby(self.keys.sink_stats, "rejected", 1)
            return status, {"error": reason}
        msg_id = headers["webhook-id"]
        k = self.keys
        reply = await self._scripts.call(
            RECORD_SCRIPT.name,
            (k.sink_received, k.sink_arrivals, k.sink_stats, k.sink_fail),
            (msg_id, self._record_of(msg_id, body, headers)),
        )
        recorded = parse_recorded(reply)
        failure = recorded.failure
        if recorded.outcome is Outcome.FAILED and failure is not None:
            if failure.mode is FailMode.TIMEOUT:
                await asyncio.sleep(failure.delay_s)
                return 503, {"error": "injected timeout"}
            if failure.mode is FailMode.GONE:
                return 410, {"error": "injected gone"}
            extra = {"retry_after": failure.retry_after} if failure.retry_after else {}
            return 500, {"error": "injected failure", **extra}
        if failure is not None and failure.mode is FailMode.SLOW:
            await asyncio.sleep(failure.delay_s)
        if recorded.outcome is Outcome.BAD:
            return 400, {"error": "body is not an order.confirmed event"}
        return 200, {"ok": True, "duplicate": recorded.outcome is Outcome.DUPLICATE}

    @staticmethod
    def _record_of(msg_id: str, body: bytes, headers: dict[str, str]) -> bytes:
        """What is stored for a webhook (JSON), or b"" if the body is not an order event."""
        try:
            order = orjson.loads(body)["data"]
            timestamp = int(headers["webhook-timestamp"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return b""
        return orjson.dumps(
            {
                "webhook_id": msg_id,
                "received_at": int(time.time() * 1000),
                "timestamp": timestamp,
                "order": order,
            }
        )


def create_app(redis: aioredis.Redis, keyspace: Keyspace, secrets: Sequence[str]) -> Starlette:
    """The sink as a Starlette app: ``POST /webhooks/orders`` plus health and admin routes."""
    sink = Sink(redis, keyspace, secrets)

    async def webhook(request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            status, payload = await sink.handle(body, headers)
        except (RedisError, StoreError, OSError) as exc:
            status, payload = 503, {"error": f"store unavailable: {exc}"}
        extra = {}
        if "retry_after" in payload:
            extra["retry-after"] = str(payload.pop("retry_after"))
        return Response(orjson.dumps(payload), status, extra, JSON)

    async def livez(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(request: Request) -> Response:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
        return JSONResponse({"ok": True})

    async def summary(request: Request) -> Response:
        return JSONResponse(
            {"received": await received_count(redis, keyspace), **await stats(redis, keyspace)}
        )

    async def admin_fail(request: Request) -> Response:
        if request.client is None or request.client.host not in LOOPBACK:
            return JSONResponse({"error": "loopback only"}, status_code=403)
        try:
            d = orjson.loads(await request.body())
            await set_fail_mode(
                redis,
                keyspace,
                d.get("mode", "none"),
                match=str(d.get("match", "")),
                times=int(d.get("times", 0)),
                delay_s=float(d.get("delay_s", 30.0)),
                retry_after=str(d.get("retry_after", "")),
            )
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route("/livez", livez),
            Route("/readyz", readyz),
            Route("/received", summary),
            Route("/admin/fail", admin_fail, methods=["POST"]),
        ]
    )
