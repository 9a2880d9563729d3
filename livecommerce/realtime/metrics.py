"""Prometheus metrics of the WebSocket gateway, registered on the app's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "livecommerce_ws_connections", "Open viewer WebSocket connections.",
            ["encoding"], registry=registry,
        )  # fmt: skip
        self.accepted = Counter(
            "livecommerce_ws_accepted", "Viewer connections accepted.", ["encoding"],
            registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "livecommerce_ws_refused", "Handshakes refused (origin, subprotocol, draining).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.closes = Counter(
            "livecommerce_ws_closes", "Connections closed by the server, by close code.",
            ["code"], registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "livecommerce_events_fanned_out", "Durable show events fanned out to local viewers.",
            registry=registry,
        )  # fmt: skip
        self.frames = Counter(
            "livecommerce_frames_sent", "Frames handed to viewers by the hub (events x viewers).",
            registry=registry,
        )  # fmt: skip
        self.fanout_seconds = Histogram(
            "livecommerce_fanout_seconds", "Time to hand one event to every local viewer.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.commands = Counter(
            "livecommerce_ws_commands", "Viewer commands by type and outcome.",
            ["type", "outcome"], registry=registry,
        )  # fmt: skip
        self.reserve_seconds = Histogram(
            "livecommerce_reserve_seconds", "Latency of reserve and buy_now against the store.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.slow_consumers = Counter(
            "livecommerce_slow_consumer_disconnects", "Viewers closed for not keeping up (4008).",
            registry=registry,
        )  # fmt: skip
        self._command_counts: dict[tuple[str, str], Any] = {}
        self.resumes = Counter(
            "livecommerce_resumes", "Joins with last_event_id, by result (resumed, gap).",
            ["result"], registry=registry,
        )  # fmt: skip

    def count_command(self, op: str, outcome: str) -> None:
        """``commands{type, outcome}`` += 1, the labelled child looked up once (hot path)."""
        child = self._command_counts.get((op, outcome))
        if child is None:
            child = self._command_counts[op, outcome] = self.commands.labels(op, outcome)
        child.inc()
