"""Prometheus metrics of the fulfillment relay."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    """Prometheus metrics of one relay, in the registry given (or a private one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "livecommerce_relay_"
        self.delivered = Counter(
            p + "delivered", "Orders delivered (2xx) and acknowledged.", registry=r
        )
        self.delivered_rate = Gauge(
            p + "delivered_per_second",
            "Orders delivered per second over the last interval.",
            registry=r,
        )
        self.attempts = Counter(p + "attempts", "Webhook requests sent.", registry=r)
        self.failures = Counter(
            p + "failures", "Failed webhook requests, by reason.", ["reason"], registry=r
        )
        self.dead_letters = Counter(
            p + "dead_letters", "Orders moved to the dead letters.", registry=r
        )
        self.claimed = Counter(
            p + "claimed", "Pending orders taken over from idle consumers.", registry=r
        )
        self.lag = Gauge(
            p + "lag", "Orders in the streams not yet handed to any relay.", registry=r
        )
        self.pending = Gauge(
            p + "pending", "Orders handed to a relay but not yet acknowledged.", registry=r
        )
        self.inflight = Gauge(p + "inflight", "Orders this relay is working on.", registry=r)
        self.disabled = Gauge(
            p + "endpoint_disabled", "1 once the endpoint answered 410 Gone.", registry=r
        )
        self.latency = Histogram(
            p + "delivery_latency_seconds",
            "From order confirmation to a 2xx from the backend.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
