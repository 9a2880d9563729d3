"""Prometheus metrics of the WebSocket gateway, registered on the app's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SELL_OUT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
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
        self.batched = Counter(
            "livecommerce_batched_messages", "Chat-class pushes sent inside batch frames "
            "(per show, not per viewer)", registry=registry,
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
            "livecommerce_resumes",
            "Joins with last_event_id, by result (resumed, gap); viewers caught up in place after "
            "the pub/sub link broke (filled).",
            ["result"], registry=registry,
        )  # fmt: skip

        self.edge_refusals = Counter(
            "livecommerce_edge_refusals",
            "Buy attempts refused in the gateway without a store round trip, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.sell_out_seconds = Histogram(
            "livecommerce_drop_sell_out_seconds",
            "Time from a drop opening to its sold_out event (server clock).",
            buckets=SELL_OUT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.gc_full_seconds = Histogram(
            "livecommerce_gc_full_seconds",
            "Full garbage collections the gateway ran when it was quiet (docs/burst.md).",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._edge_counts: dict[str, Any] = {}
        self.line_waiting = Gauge(
            "livecommerce_line_waiting", "Attempts waiting in a drop's line in this process.",
            ["show", "drop"], registry=registry,
        )  # fmt: skip
        self.line_seconds = Histogram(
            "livecommerce_line_seconds", "Time an attempt waited in its drop's line.",
            buckets=SELL_OUT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.line_busy = Counter(
            "livecommerce_line_busy", "Attempts refused busy: their drop's line was full.",
            registry=registry,
        )  # fmt: skip

    def count_edge(self, reason: str) -> None:
        child = self._edge_counts.get(reason)
        if child is None:
            child = self._edge_counts[reason] = self.edge_refusals.labels(reason)
        child.inc()

    def count_command(self, op: str, outcome: str) -> None:
        """``commands{type, outcome}`` += 1, the labelled child looked up once (hot path)."""
        child = self._command_counts.get((op, outcome))
        if child is None:
            child = self._command_counts[op, outcome] = self.commands.labels(op, outcome)
        child.inc()
