"""Limits at the edge, per client address and per viewer, before anything reaches Redis.

Pure bookkeeping with the clock handed in (like :mod:`livecommerce.realtime.protocol`); the
gateway calls it at the handshake, at ``join`` and before each buy command. Per gateway
process: a deployment with N processes behind a balancer allows up to N times the numbers
(sticky balancing by address keeps the address limits exact). Every limit is 0 = off.

* **address** (``client_address``: the peer, or -- only when the peer is a configured trusted
  proxy -- the right-most ``X-Forwarded-For`` hop that is not one): at most
  ``address_connections`` open connections and ``address_handshakes_per_s`` handshakes per
  second (a token bucket, burst = one second's worth). Refused at the handshake with HTTP
  ``429`` (``Retry-After``) before the upgrade: the cheapest refusal there is.
* **viewer**: at most ``viewer_connections`` open connections per viewer id (refused at
  ``join``: error ``too_many_connections``, close ``4013``) and ``viewer_attempts_per_s`` buy
  attempts per second per drop (answered ``too_many_attempts`` with ``retry_after_ms``; the
  connection and other drops are untouched).
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Iterable
from typing import TypeVar

from livecommerce.core.config import FraudSettings

K = TypeVar("K")
MAX_TRACKED = 50_000
"""Buckets kept before idle ones are dropped (bounded memory under a flood of addresses)."""


class Bucket:
    """``burst`` tokens refilled at ``rate`` per second; the clock is handed in."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


def _networks(items: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


class Guard:
    def __init__(self, settings: FraudSettings) -> None:
        self.settings = settings
        self._proxies = _networks(settings.trusted_proxies)
        self._address_conns: Counter[str] = Counter()
        self._viewer_conns: Counter[str] = Counter()
        self._handshakes: dict[str, Bucket] = {}
        self._attempts: dict[tuple[str, str], Bucket] = {}

    # -- addresses ---------------------------------------------------------------------------
    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The address a limit or a block applies to. ``X-Forwarded-For`` only counts when the
        peer is a trusted proxy; then the right-most hop that is not one (the client as the
        first trusted proxy saw it -- hops further left may be forged by the client)."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def admit(self, address: str, now: float) -> tuple[str, float] | None:
        """Count a handshake from ``address``: None when admitted (the caller must call
        :meth:`leave` when it closes), else (reason, seconds to wait)."""
        limit = self.settings.address_connections
        if limit and self._address_conns[address] >= limit:
            return "address_connections", 1.0
        rate = self.settings.address_handshakes_per_s
        if rate:
            bucket = self._handshakes.get(address)
            if bucket is None:
                self._prune(self._handshakes, now)
                bucket = self._handshakes[address] = Bucket(rate, max(1.0, rate), now)
            wait = bucket.take(now)
            if wait:
                return "handshake_rate", wait
        self._address_conns[address] += 1
        return None

    def leave(self, address: str) -> None:
        self._address_conns[address] -= 1
        if self._address_conns[address] <= 0:
            del self._address_conns[address]

    # -- viewers -----------------------------------------------------------------------------
    def join(self, viewer: str) -> bool:
        """Count a joined connection of ``viewer`` (False: over the limit, not counted)."""
        limit = self.settings.viewer_connections
        if limit and self._viewer_conns[viewer] >= limit:
            return False
        self._viewer_conns[viewer] += 1
        return True

    def part(self, viewer: str) -> None:
        self._viewer_conns[viewer] -= 1
        if self._viewer_conns[viewer] <= 0:
            del self._viewer_conns[viewer]

    def attempt(self, viewer: str, drop: str, now: float) -> int:
        """0 when a buy attempt on ``drop`` may go ahead, else the ms to wait."""
        rate = self.settings.viewer_attempts_per_s
        if not rate or not viewer:
            return 0
        key = (viewer, drop)
        bucket = self._attempts.get(key)
        if bucket is None:
            self._prune(self._attempts, now)
            bucket = self._attempts[key] = Bucket(rate, max(1.0, rate), now)
        return math.ceil(bucket.take(now) * 1000)

    @staticmethod
    def _prune(buckets: dict[K, Bucket], now: float) -> None:
        if len(buckets) < MAX_TRACKED:
            return
        for key in [k for k, b in buckets.items() if b.full(now)]:
            del buckets[key]
