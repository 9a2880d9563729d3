"""The relay: confirmed orders from the per-show outbox streams to the fulfillment backend.

Every show's orders stream (``B:orders``, written in the same Lua step as the sale) is read with
one consumer group (``settings.relay.group``) shared by every relay process. Each entry becomes a
Standard Webhooks POST (:mod:`livecommerce.fulfillment.webhooks`) and is acknowledged (``XACK``)
only after
a 2xx -- the acknowledgements of one event-loop turn together, one ``XACK`` per stream in one
pipeline. Until then it stays in the group's pending entries list (PEL), so:

* a failed attempt is retried in-process with exponential backoff and equal jitter, or after the
  server's ``Retry-After``; after ``max_attempts`` the order goes to the dead letters
  (:mod:`livecommerce.fulfillment.deadletters`) and is acknowledged;
* a relay that dies mid-delivery leaves the entry pending; another relay takes it over with
  ``XAUTOCLAIM`` once it has been idle ``claim_idle_s``. A live relay keeps its own entries fresh
  with ``XCLAIM ... JUSTID`` (which resets the idle time without counting a delivery);
* the group's delivery counter (raised by every ``XREADGROUP``/``XAUTOCLAIM`` hand-over) marks
  *poison* entries: one handed over more than ``max_deliveries`` times goes to the dead letters
  without another attempt;
* ``410 Gone`` disables the endpoint: the relay stops sending, keeps the entry pending, logs an
  error and sets ``livecommerce_relay_endpoint_disabled``; nothing is acknowledged or lost;
* the streams are trimmed (``XTRIM MINID``) only below what every consumer group on them has
  acknowledged -- the relay's group and any group a backend reads with itself.

The same holds for each pooled SKU's ``inventory.adjusted`` outbox stream (what the live channel
sold and gave back, :mod:`livecommerce.fulfillment.stock_events`), read with the same group.

Duplicates: an order whose 2xx was sent but not acknowledged (relay crash, ``XACK`` failure, a
timeout after the backend took it) is sent again with the same ``webhook-id``.

The transport is a small :class:`Deliverer` seam: :class:`HttpDeliverer` (aiohttp) is the real
one, :class:`MemoryDeliverer` the in-memory one for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError, ResponseError

from livecommerce.core.config import RelaySettings, Settings
from livecommerce.core.errors import ConfigError, DeliveryError, ValidationError
from livecommerce.fulfillment import deadletters
from livecommerce.fulfillment.acks import Acks
from livecommerce.fulfillment.delivery import Deliverer, HttpDeliverer
from livecommerce.fulfillment.metrics import RelayMetrics
from livecommerce.fulfillment.policy import (
    KEEP_RECENT,
    GroupPosition,
    backoff_delay,
    endpoint_unreachable,
    failure_reason,
    keep_floor,
    parse_id,
    trim_floor,
)
from livecommerce.fulfillment.stock_events import message_for
from livecommerce.fulfillment.webhooks import Signer, parse_secrets
from livecommerce.store.keys import Keyspace

log = logging.getLogger("livecommerce.relay")

DISCOVER_INTERVAL_S = 1.0
"""How often the relay looks for new shows (their orders streams) in ``P:shows``."""
GAUGE_INTERVAL_S = 1.0

Fields = Mapping[bytes | str, bytes | str]


@dataclass(frozen=True)
class Disabled:
    """Why the endpoint was disabled (a ``410 Gone``)."""

    url: str
    status: int
    message: str
    at_ms: int


@dataclass
class _Work:
    stream: str
    entry_id: str
    task: asyncio.Task[None] | None = None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# -- the relay -----------------------------------------------------------------------------------
class Relay:
    """Delivers every show's confirmed orders; run :meth:`run` until ``stop`` is set.

    Inside another process (the gateway), use :meth:`start` / :meth:`stop` instead.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keyspace: Keyspace,
        settings: RelaySettings,
        deliverer: Deliverer,
        *,
        registry: CollectorRegistry | None = None,
        consumer: str | None = None,
        rand: Callable[[], float] = random.random,
        block_ms: int = 500,
        url: str = "",
        keep_recent: int = KEEP_RECENT,
    ) -> None:
        self.redis = redis
        self.keep_recent = keep_recent
        self.keys = keyspace
        self.settings = settings
        self.deliverer = deliverer
        self.metrics = RelayMetrics(registry)
        self.consumer = consumer or settings.consumer or default_consumer()
        self.group = settings.group
        self.url = url or settings.webhook_url
        self.disabled: Disabled | None = None
        self._rand = rand
        self._block_ms = block_ms
        self._streams: list[str] = []
        self._known_groups: set[str] = set()
        self._work: dict[tuple[str, str], _Work] = {}
        self._acks = Acks(redis, self.group)
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._answered = asyncio.Event()
        """Set (and replaced) at every successful delivery: the endpoint is reachable again."""
        self._runner: asyncio.Task[None] | None = None
        self._delivered_mark = (time.monotonic(), 0)
        self._delivered_count = 0

    @classmethod
    def from_settings(
        cls,
        redis: aioredis.Redis,
        keyspace: Keyspace,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> Relay:
        """A relay posting to ``settings.relay.webhook_url`` signed with its secret(s)."""
        rs = settings.relay
        if not rs.webhook_url:
            raise ConfigError("LIVECOMMERCE_WEBHOOK_URL", "the relay needs the backend's URL")
        if rs.webhook_secret is None:
            raise ConfigError("LIVECOMMERCE_WEBHOOK_SECRET", "the relay needs a whsec_ secret")
        try:
            signer = Signer(parse_secrets(rs.webhook_secret.reveal()))
        except ValidationError as exc:
            raise ConfigError("LIVECOMMERCE_WEBHOOK_SECRET", exc.message) from exc
        deliverer = HttpDeliverer(
            rs.webhook_url, signer, timeout_s=rs.timeout_s, max_connections=rs.concurrency
        )
        return cls(redis, keyspace, rs, deliverer, registry=registry)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Run in the background of the current event loop (for the gateway's lifespan)."""
        if self._runner is None:
            self._stop = asyncio.Event()
            self._runner = asyncio.create_task(self.run(self._stop), name="relay")

    async def stop(self) -> None:
        """Stop the background relay: finish in-flight requests (bounded), then close."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stop.set()
            await runner
        await self.deliverer.aclose()

    async def ready(self) -> bool:
        """True when Redis answers (what ``/readyz`` of a relay reports)."""
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    def status(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "group": self.group,
            "streams": len(self._streams),
            "inflight": len(self._work),
            "disabled": None if self.disabled is None else dataclasses.asdict(self.disabled),
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight requests get ``timeout_s`` to finish."""
        self._stop = stop
        upkeep = asyncio.create_task(self._upkeep_loop(stop), name="relay-upkeep")
        wake = asyncio.create_task(self._wake_on(stop), name="relay-wake")
        try:
            await self._guard(self._discover)
            await self._guard(self._read_own_pending)
            while not stop.is_set():
                if self.disabled is not None:
                    await stop.wait()
                    break
                await self._wait_for_slot(stop)
                if stop.is_set():
                    break
                if not await self._guard(self._read_new):
                    await _wait(stop, 0.5)
        finally:
            for task in (upkeep, wake):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._drain(self.settings.timeout_s + 1.0)

    async def _guard(self, step: Callable[[], Awaitable[Any]]) -> bool:
        try:
            await step()
        except (RedisError, OSError) as exc:
            if "NOGROUP" in str(exc):
                self._known_groups.clear()  # a stream or group vanished: recreate on discovery
            log.warning("relay: redis unavailable: %s", exc)
            return False
        return True

    async def _drain(self, grace_s: float) -> None:
        tasks = [w.task for w in self._work.values() if w.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        """Set ``_changed`` when ``stop`` is set, so waiting on ``_changed`` alone suffices."""
        await stop.wait()
        self._changed.set()

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        while len(self._work) >= self.settings.concurrency and not stop.is_set():
            self._changed.clear()
            await self._changed.wait()

    # -- streams ----------------------------------------------------------------------------
    async def _discover(self) -> None:
        """Find every show's orders stream and make sure our group exists on it (at id 0)."""
        shows = await self.redis.zrange(self.keys.shows, 0, -1)
        streams = [self.keys.orders(_s(s)) for s in shows]
        # Stock out: each pooled SKU's inventory.adjusted outbox, same group, same guarantees.
        skus = sorted(_s(s) for s in await self.redis.smembers(self.keys.pools))
        streams += [self.keys.sku(sku).adjusted for sku in skus]
        for stream in streams:
            if stream in self._known_groups:
                continue
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._known_groups.add(stream)
        self._streams = streams

    async def _read_own_pending(self) -> None:
        """After a restart under the same consumer name: our own PEL first."""
        if not self._streams:
            return
        rows = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self._streams, "0"),
            count=self.settings.concurrency,
        )
        await self._accept(rows)

    async def _read_new(self) -> None:
        if not self._streams:
            await _wait(self._stop, self._block_ms / 1000)
            return
        room = self.settings.concurrency - len(self._work)
        rows = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self._streams, ">"),
            count=max(1, room),
            block=self._block_ms,
        )
        await self._accept(rows)

    async def _accept(self, rows: Any) -> None:
        if not rows:
            return
        items = rows.items() if isinstance(rows, dict) else rows
        for stream_raw, entries in items:
            stream = _s(stream_raw)
            for entry in entries:
                entry_id, fields = _s(entry[0]), entry[1]
                if fields is None:
                    continue  # deleted while pending (Redis < 7 keeps such ids)
                self._spawn(stream, entry_id, fields)

    def _spawn(self, stream: str, entry_id: str, fields: Fields) -> None:
        key = (stream, entry_id)
        if key in self._work:
            return
        work = _Work(stream, entry_id)
        self._work[key] = work
        self.metrics.inflight.set(len(self._work))
        work.task = asyncio.create_task(self._deliver(work, fields), name=f"relay-{entry_id}")

    # -- one order --------------------------------------------------------------------------
    async def _deliver(self, work: _Work, fields: Fields) -> None:
        try:
            await self._attempts(work, fields)
        except (RedisError, OSError) as exc:
            # The entry stays pending and is claimed again later: delivered again, not lost.
            log.warning("relay: redis error on %s %s: %s", work.stream, work.entry_id, exc)
        finally:
            self._work.pop((work.stream, work.entry_id), None)
            self.metrics.inflight.set(len(self._work))
            self._changed.set()

    async def _attempts(self, work: _Work, fields: Fields) -> None:
        try:
            message = message_for(work.stream, fields, stream_id=work.entry_id)
        except ValidationError as exc:
            await self._dead_letter(work, fields, f"malformed entry: {exc}", 0)
            return
        attempt = 0
        while True:
            if self.disabled is not None or self._stop.is_set():
                return
            attempt += 1
            self.metrics.attempts.inc()
            try:
                await self.deliverer.deliver(message)
            except DeliveryError as exc:
                self.metrics.failures.labels(failure_reason(exc)).inc()
                if exc.gone:
                    self._disable(exc)
                    return
                if attempt >= self.settings.max_attempts:
                    await self._dead_letter(work, fields, str(exc), attempt)
                    return
                delay = backoff_delay(
                    attempt,
                    base_s=self.settings.backoff_base_s,
                    max_s=self.settings.backoff_max_s,
                    retry_after_s=exc.retry_after,
                    rand=self._rand(),
                )
                log.info(
                    "relay: %s attempt %d failed (%s); retry in %.3fs",
                    message.id,
                    attempt,
                    exc,
                    delay,
                )
                await self._pause(delay, early=endpoint_unreachable(exc))
                continue
            break
        answered, self._answered = self._answered, asyncio.Event()
        answered.set()  # orders waiting out an outage's back-off go now
        await self._acks.ack(work.stream, work.entry_id)
        self.metrics.delivered.inc()
        self._delivered_count += 1
        self.metrics.latency.observe(max(0.0, time.time() - message.confirmed_at / 1000))

    async def _pause(self, delay: float, *, early: bool) -> None:
        """The back-off before the next attempt; with ``early`` (the endpoint was unreachable),
        cut short by the next successful delivery: when a backend comes back after minutes,
        its orders go at once instead of each waiting out a back-off of up to a minute or more."""
        if not early:
            await _wait(self._stop, delay)
            return
        waits = [asyncio.ensure_future(self._stop.wait()),
                 asyncio.ensure_future(self._answered.wait())]  # fmt: skip
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _dead_letter(self, work: _Work, fields: Fields, error: str, attempts: int) -> None:
        await deadletters.add(
            self.redis,
            self.keys,
            stream=work.stream,
            entry_id=work.entry_id,
            fields=fields,
            error=error,
            attempts=attempts,
        )
        await self.redis.xack(work.stream, self.group, work.entry_id)
        self.metrics.dead_letters.inc()
        log.error(
            "relay: order entry %s %s dead-lettered after %d attempts: %s",
            work.stream,
            work.entry_id,
            attempts,
            error,
        )

    def _disable(self, exc: DeliveryError) -> None:
        if self.disabled is None:
            self.disabled = Disabled(
                url=self.url,
                status=exc.status or 410,
                message=str(exc),
                at_ms=int(time.time() * 1000),
            )
            self.metrics.disabled.set(1)
            log.error(
                "relay: endpoint %s answered 410 Gone: disabled; orders stay pending "
                "until a relay is started with a working URL (%s)",
                self.url,
                exc,
            )
        self._changed.set()

    # -- upkeep: discovery, heartbeat, claims, trimming, gauges ------------------------------
    async def _upkeep_loop(self, stop: asyncio.Event) -> None:
        claim_every = max(0.005, self.settings.claim_idle_s / 3)
        last_discover = last_gauges = last_trim = last_claim = time.monotonic()
        while not stop.is_set():
            await _wait(stop, min(claim_every, DISCOVER_INTERVAL_S))
            if stop.is_set():
                break
            now = time.monotonic()
            if now - last_discover >= DISCOVER_INTERVAL_S:
                last_discover = now
                await self._guard(self._discover)
            await self._guard(self._heartbeat)
            if self.disabled is None and now - last_claim >= claim_every:
                last_claim = now
                await self._guard(self._claim_idle)
            trim_every = self.settings.trim_interval_s
            if trim_every > 0 and now - last_trim >= trim_every:
                last_trim = now
                await self._guard(self.trim)
            if now - last_gauges >= GAUGE_INTERVAL_S:
                last_gauges = now
                await self._guard(self.update_gauges)

    async def _heartbeat(self) -> None:
        """Reset the idle time of entries we are working on, so no other relay claims them."""
        by_stream: dict[str, list[Any]] = {}
        for stream, entry_id in list(self._work):
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            await self.redis.xclaim(
                stream, self.group, self.consumer, min_idle_time=0, message_ids=ids, justid=True
            )

    async def _claim_idle(self) -> None:
        """Take over entries another (dead) relay left pending longer than ``claim_idle_s``."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        for stream in list(self._streams):
            room = self.settings.concurrency - len(self._work)
            if room <= 0:
                return
            reply = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=idle_ms,
                start_id="0-0",
                count=room,
            )
            entries = [(_s(e[0]), e[1]) for e in reply[1] if e and e[1] is not None]
            entries = [(i, f) for i, f in entries if (stream, i) not in self._work]
            if not entries:
                continue
            counts = await self._delivery_counts(stream, [i for i, _ in entries])
            for entry_id, fields in entries:
                self.metrics.claimed.inc()
                handed = counts.get(entry_id, 1)
                if handed > self.settings.max_deliveries:
                    work = _Work(stream, entry_id)
                    self._work[(stream, entry_id)] = work
                    try:
                        await self._dead_letter(
                            work,
                            fields,
                            f"poison: handed to relays {handed} times without an acknowledgement",
                            0,
                        )
                    finally:
                        self._work.pop((stream, entry_id), None)
                    continue
                log.info("relay: claimed %s %s (handed over %d times)", stream, entry_id, handed)
                self._spawn(stream, entry_id, fields)

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows = await self.redis.xpending_range(
            stream,
            self.group,
            min=min(ids, key=parse_id),
            max=max(ids, key=parse_id),
            count=len(ids) * 4 + 10,
            consumername=self.consumer,
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _positions(self, stream: str) -> list[GroupPosition]:
        groups = await self.redis.xinfo_groups(stream)
        out = []
        for g in groups:
            pending = int(g["pending"])
            oldest = None
            if pending:
                summary = await self.redis.xpending(stream, g["name"])
                oldest = _s(summary["min"]) if summary.get("min") else None
            out.append(GroupPosition(pending, _s(g["last-delivered-id"]), oldest))
        return out

    async def trim(self) -> int:
        """Trim every orders stream below what all its consumer groups acknowledged, keeping
        the newest ``keep_recent`` entries (the host dashboard's order feed reads them)."""
        removed = 0
        for stream in list(self._streams):
            try:
                floor = trim_floor(await self._positions(stream))
                if floor is not None and self.keep_recent > 0:
                    newest: Any = await self.redis.xrevrange(stream, count=self.keep_recent)
                    floor = keep_floor(floor, [_s(entry_id) for entry_id, _ in newest],
                                       self.keep_recent)  # fmt: skip
            except ResponseError:
                continue  # the stream vanished
            if floor is not None:
                removed += int(await self.redis.xtrim(stream, minid=floor, approximate=False))
        return removed

    async def update_gauges(self) -> None:
        lag = pending = 0
        for stream in list(self._streams):
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue
            for g in groups:
                if _s(g["name"]) != self.group:
                    continue
                pending += int(g["pending"])
                if g.get("lag") is not None:
                    lag += int(g["lag"])
        self.metrics.lag.set(lag)
        self.metrics.pending.set(pending)
        now = time.monotonic()
        then, count = self._delivered_mark
        if now > then:
            self.metrics.delivered_rate.set((self._delivered_count - count) / (now - then))
        self._delivered_mark = (now, self._delivered_count)


def server_relay(
    redis: aioredis.Redis,
    keyspace: Keyspace,
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
) -> Relay | None:
    """The relay a gateway runs in its lifespan, or None unless ``LIVECOMMERCE_RELAY_IN_SERVER``.

    Usage in a lifespan: ``relay = server_relay(...)``; ``relay.start()`` after startup;
    ``await relay.stop()`` on shutdown (in-flight requests get ``timeout_s`` to finish).
    """
    if not settings.relay.in_server:
        return None
    return Relay.from_settings(redis, keyspace, settings, registry=registry)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first."""
    if seconds <= 0 or stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
