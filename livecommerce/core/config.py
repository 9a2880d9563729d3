"""Configuration, read once from ``LIVECOMMERCE_*`` environment variables and frozen.

A missing or malformed value raises :class:`~livecommerce.core.errors.ConfigError` naming the
variable.
Secrets are wrapped in :class:`Secret`, which prints as ``***``. Every variable is listed in
``docs/configuration.md``; :data:`VARIABLES` is the machine-readable list (name, default, help).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

from livecommerce.core.errors import ConfigError

T = TypeVar("T")
PREFIX = "LIVECOMMERCE_"


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Env:
    """Typed access to one environment mapping; every read names its variable on failure."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(PREFIX + name, f"expected {what}, got {value!r}") from exc

    def text(self, name: str, default: str) -> str:
        return self._parse(name, default, str, "a string")

    def optional_str(self, name: str) -> str | None:
        return self.raw(name)

    def secret(self, name: str) -> Secret | None:
        value = self.raw(name)
        return None if value is None else Secret(value)

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**62) -> int:
        def parse(v: str) -> int:
            n = int(v)
            if not minimum <= n <= maximum:
                raise ValueError(v)
            return n

        return self._parse(name, default, parse, f"an integer in [{minimum}, {maximum}]")

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float = 1e12
    ) -> float:
        def parse(v: str) -> float:
            x = float(v)
            if not minimum <= x <= maximum:
                raise ValueError(v)
            return x

        return self._parse(name, default, parse, f"a number in [{minimum}, {maximum}]")

    def flag(self, name: str, default: bool) -> bool:
        def parse(v: str) -> bool:
            low = v.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(v)

        return self._parse(name, default, parse, "true/false")

    def items(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        def parse(v: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in v.split(",") if item.strip())

        return self._parse(name, default, parse, "a comma-separated list")

    def path(self, name: str, default: Path) -> Path:
        return self._parse(name, default, lambda v: Path(v).expanduser(), "a path")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(v: str) -> str:
            if v not in choices:
                raise ValueError(v)
            return v

        return self._parse(name, default, parse, "one of " + ", ".join(choices))


@dataclass(frozen=True)
class RedisSettings:
    url: Secret | None = None
    """LIVECOMMERCE_REDIS_URL: use this server instead of the embedded Valkey."""
    data_dir: Path = Path(".livecommerce")
    """LIVECOMMERCE_DATA_DIR: where the embedded Valkey keeps its AOF (and the dev secrets)."""
    key_prefix: str = "lc"
    """LIVECOMMERCE_KEY_PREFIX: prefix of every key and channel; lets deployments share a server."""
    appendfsync: str = "everysec"
    """LIVECOMMERCE_APPENDFSYNC: embedded Valkey's appendfsync (always, everysec)."""
    wait_aof: bool = True
    """LIVECOMMERCE_WAIT_AOF: WAITAOF before reporting an order confirmed (where supported)."""
    startup_wait_s: float = 60.0
    """LIVECOMMERCE_REDIS_STARTUP_WAIT: seconds a starting server waits for Redis to answer before
    it gives up (a worker restarted during a Redis restart waits instead of failing)."""


@dataclass(frozen=True)
class InventorySettings:
    hold_ttl_s: int = 120
    """LIVECOMMERCE_HOLD_TTL: seconds a reservation holds stock before it expires."""
    idempotency_ttl_s: int = 86_400
    """LIVECOMMERCE_IDEMPOTENCY_TTL: seconds a request id's first result is remembered."""
    event_log_size: int = 10_000
    """LIVECOMMERCE_EVENT_LOG_SIZE: approximate events kept per show for resume."""
    ending_soon_s: int = 10
    """LIVECOMMERCE_ENDING_SOON: seconds before a timed offer closes that "ending soon" is sent."""
    reap_interval_s: float = 1.0
    """LIVECOMMERCE_REAP_INTERVAL: seconds between passes of the expired-hold reaper."""
    limit_per_payment: bool = False
    """LIVECOMMERCE_LIMIT_PER_PAYMENT: a drop's per-viewer limit also per payment reference."""
    stock_shortfall: str = "reduce"
    """LIVECOMMERCE_STOCK_SHORTFALL: on-hand below what drops allocated: reduce, close, keep."""
    sync_secrets: Secret | None = None
    """LIVECOMMERCE_SYNC_SECRETS: inbound stock sources, ``name=secret,...`` (docs/stock-in.md)."""


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    """LIVECOMMERCE_HOST: interface to listen on."""
    port: int = 8000
    """LIVECOMMERCE_PORT: TCP port to listen on."""
    public_url: str = ""
    """LIVECOMMERCE_PUBLIC_URL: URL printed for people (defaults to http://HOST:PORT)."""
    token_secret: Secret | None = None
    """LIVECOMMERCE_TOKEN_SECRET: HMAC key for viewer tokens (HS256). Required in production."""
    token_ttl_s: int = 3600
    """LIVECOMMERCE_TOKEN_TTL: lifetime of tokens minted by `livecommerce token`."""
    allowed_origins: tuple[str, ...] = ()
    """LIVECOMMERCE_ALLOWED_ORIGINS: comma-separated Origin allowlist; empty = same host only."""
    max_frame_bytes: int = 16_384
    """LIVECOMMERCE_MAX_FRAME_BYTES: largest WebSocket frame accepted from a client."""
    rate_per_s: float = 20.0
    """LIVECOMMERCE_RATE: commands per second a connection may send (token bucket refill)."""
    rate_burst: int = 40
    """LIVECOMMERCE_RATE_BURST: token bucket size for client commands."""
    send_queue: int = 256
    """LIVECOMMERCE_SEND_QUEUE: outbound messages queued per viewer before it is a slow consumer."""
    send_buffer_bytes: int = 262_144
    """LIVECOMMERCE_SEND_BUFFER: bytes not yet sent to a viewer before it is a slow consumer."""
    stock_interval_s: float = 0.25
    """LIVECOMMERCE_STOCK_INTERVAL: minimum seconds between stock-level pushes per drop."""
    stock_budget: float = 0.1
    """LIVECOMMERCE_STOCK_BUDGET: largest share of a gateway's time a show's stock pushes take."""
    chat_interval_s: float = 0.25
    """LIVECOMMERCE_CHAT_INTERVAL: min seconds between chat batches (chat, reactions) per show."""
    edge_refusals: bool = True
    """LIVECOMMERCE_EDGE_REFUSALS: answer certain refusals in the gateway (docs/protocol.md)."""
    gc_quiet_s: float = 2.0
    """LIVECOMMERCE_GC_QUIET: seconds without a buy attempt before a gateway runs a full garbage
    collection itself (docs/burst.md); 0 = leave the full collections to CPython."""
    line_in_flight: int = 0
    """LIVECOMMERCE_LINE_IN_FLIGHT: attempts per drop at the store at once; 0 = no waiting line."""
    line_size: int = 10_000
    """LIVECOMMERCE_LINE_SIZE: attempts per drop waiting in one process's line before `busy`."""
    line_stall_s: float = 2.0
    """LIVECOMMERCE_LINE_STALL: seconds without progress before a line skips lost tickets."""
    drain_s: float = 10.0
    """LIVECOMMERCE_DRAIN_SECONDS: bounded wait for viewers to go on shutdown."""
    workers: int = 1
    """LIVECOMMERCE_WORKERS: gateway processes (uvicorn workers) sharing shows through Redis."""
    log_level: str = "info"
    """LIVECOMMERCE_LOG_LEVEL: debug, info, warning, error. Logs are JSON lines on stderr; query
    strings of `/ws` URLs and any token/key/secret URL parameter are written as `***`."""
    demo: bool = True
    """LIVECOMMERCE_DEMO: `livecommerce serve` seeds a demo show and prints its URLs."""


@dataclass(frozen=True)
class RelaySettings:
    webhook_url: str = ""
    """LIVECOMMERCE_WEBHOOK_URL: the fulfillment backend; empty = no relay."""
    webhook_secret: Secret | None = None
    """LIVECOMMERCE_WEBHOOK_SECRET: whsec_... signing secret(s); comma-separated during rotation."""
    in_server: bool = False
    """LIVECOMMERCE_RELAY_IN_SERVER: run the relay inside the gateway process."""
    group: str = "fulfillment"
    """LIVECOMMERCE_RELAY_GROUP: consumer group name on the orders streams."""
    consumer: str = ""
    """LIVECOMMERCE_RELAY_CONSUMER: this relay's consumer name (default host-pid)."""
    max_attempts: int = 12
    """LIVECOMMERCE_RELAY_MAX_ATTEMPTS: deliveries tried before an order is dead-lettered (with the
    default back-off, 12 attempts span 7 to 14 minutes: a backend down for minutes loses nothing to
    the dead letters)."""
    timeout_s: float = 10.0
    """LIVECOMMERCE_RELAY_TIMEOUT: seconds for one webhook request."""
    claim_idle_s: float = 30.0
    """LIVECOMMERCE_RELAY_CLAIM_IDLE: seconds before another relay claims a pending delivery."""
    backoff_base_s: float = 0.5
    """LIVECOMMERCE_RELAY_BACKOFF: first retry delay; doubles per attempt, with jitter."""
    backoff_max_s: float = 300.0
    """LIVECOMMERCE_RELAY_BACKOFF_MAX: cap on the retry delay."""
    concurrency: int = 32
    """LIVECOMMERCE_RELAY_CONCURRENCY: webhook requests in flight at once."""
    max_deliveries: int = 10
    """LIVECOMMERCE_RELAY_MAX_DELIVERIES: relays an order may be handed to before it is poison."""
    trim_interval_s: float = 5.0
    """LIVECOMMERCE_RELAY_TRIM_INTERVAL: seconds between trims of acknowledged orders; 0 = never."""
    port: int = 0
    """LIVECOMMERCE_RELAY_PORT: /livez /readyz /metrics port of `livecommerce relay`; 0 = off."""


@dataclass(frozen=True)
class PrivacySettings:
    retain_events_h: int = 72
    """LIVECOMMERCE_RETAIN_EVENTS_HOURS: a show's event-log entries older than this are removed."""
    retain_dead_letters_d: int = 30
    """LIVECOMMERCE_RETAIN_DEAD_LETTERS_DAYS: dead letters older than this are removed."""
    retain_holds_d: int = 30
    """LIVECOMMERCE_RETAIN_HOLDS_DAYS: ended hold records lose viewer and payment reference."""
    retain_chat_h: int = 72
    """LIVECOMMERCE_RETAIN_CHAT_HOURS: chat messages (questions, pin) older than this go."""
    retention_interval_s: float = 300.0
    """LIVECOMMERCE_RETENTION_INTERVAL: seconds between retention sweeps (0 = never sweep)."""


@dataclass(frozen=True)
class FraudSettings:
    risk_url: str = ""
    """LIVECOMMERCE_RISK_URL: fraud-scoring endpoint asked before each confirm (empty = none)."""
    risk_timeout_ms: int = 150
    """LIVECOMMERCE_RISK_TIMEOUT_MS: time budget of one risk check, connection included."""
    risk_fail_open: bool = True
    """LIVECOMMERCE_RISK_FAIL_OPEN: on a timeout or error, confirm anyway (false: refuse)."""
    trusted_proxies: tuple[str, ...] = ()
    """LIVECOMMERCE_TRUSTED_PROXIES: addresses/CIDRs whose X-Forwarded-For is believed."""
    address_connections: int = 0
    """LIVECOMMERCE_ADDRESS_CONNECTIONS: open connections per client address (0 = no limit)."""
    address_handshakes_per_s: float = 0.0
    """LIVECOMMERCE_ADDRESS_HANDSHAKES: WebSocket handshakes per second per address (0 = off)."""
    viewer_connections: int = 0
    """LIVECOMMERCE_VIEWER_CONNECTIONS: open connections per viewer id (0 = no limit)."""
    viewer_attempts_per_s: float = 0.0
    """LIVECOMMERCE_VIEWER_ATTEMPTS: buy attempts per second per viewer and drop (0 = off)."""


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    inventory: InventorySettings = field(default_factory=InventorySettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    fraud: FraudSettings = field(default_factory=FraudSettings)

    def describe(self) -> dict[str, dict[str, str]]:
        """Every setting as text, secrets masked (for logs and `livecommerce config`)."""
        out: dict[str, dict[str, str]] = {}
        for section in fields(self):
            part = getattr(self, section.name)
            out[section.name] = {f.name: str(getattr(part, f.name)) for f in fields(part)}
        return out


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every LIVECOMMERCE_* variable once. Raises ConfigError naming a bad variable."""
    env = Env(environ)
    fsync = env.choice("APPENDFSYNC", "everysec", ("always", "everysec"))
    redis = RedisSettings(
        url=env.secret("REDIS_URL"),
        data_dir=env.path("DATA_DIR", Path(".livecommerce")),
        key_prefix=env.text("KEY_PREFIX", "lc"),
        appendfsync=fsync,
        wait_aof=env.flag("WAIT_AOF", True),
        startup_wait_s=env.number("REDIS_STARTUP_WAIT", 60.0, minimum=0.0, maximum=3600),
    )
    if redis.url is not None and not redis.url.reveal().startswith(
        ("redis://", "rediss://", "unix://", "valkey://", "valkeys://")
    ):
        raise ConfigError(PREFIX + "REDIS_URL", "expected a redis:// rediss:// or unix:// URL")
    if not redis.key_prefix.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(PREFIX + "KEY_PREFIX", "letters, digits, - and _ only")
    inventory = InventorySettings(
        hold_ttl_s=env.integer("HOLD_TTL", 120, minimum=1, maximum=86_400),
        idempotency_ttl_s=env.integer("IDEMPOTENCY_TTL", 86_400, minimum=60, maximum=30 * 86_400),
        event_log_size=env.integer("EVENT_LOG_SIZE", 10_000, minimum=100, maximum=10_000_000),
        ending_soon_s=env.integer("ENDING_SOON", 10, minimum=0, maximum=3600),
        reap_interval_s=env.number("REAP_INTERVAL", 1.0, minimum=0.05, maximum=60),
        limit_per_payment=env.flag("LIMIT_PER_PAYMENT", False),
        stock_shortfall=env.choice("STOCK_SHORTFALL", "reduce", ("reduce", "close", "keep")),
        sync_secrets=env.secret("SYNC_SECRETS"),
    )
    if inventory.sync_secrets is not None:
        for item in inventory.sync_secrets.reveal().split(","):
            name, sep, secrets = item.strip().partition("=")
            if item.strip() and (not sep or not name.strip() or not secrets.split()):
                raise ConfigError(PREFIX + "SYNC_SECRETS", "expected name=secret[ secret],...")
    token_secret = env.secret("TOKEN_SECRET")
    if token_secret is not None and len(token_secret.reveal().encode()) < 32:
        # HS256 keys shorter than the hash are guessable offline from one token (RFC 7518 3.2).
        raise ConfigError(PREFIX + "TOKEN_SECRET", "at least 32 bytes")
    gateway = GatewaySettings(
        host=env.text("HOST", "127.0.0.1"),
        port=env.integer("PORT", 8000, minimum=0, maximum=65_535),
        public_url=env.text("PUBLIC_URL", ""),
        token_secret=token_secret,
        token_ttl_s=env.integer("TOKEN_TTL", 3600, minimum=10, maximum=30 * 86_400),
        allowed_origins=env.items("ALLOWED_ORIGINS", ()),
        max_frame_bytes=env.integer("MAX_FRAME_BYTES", 16_384, minimum=256, maximum=1 << 24),
        rate_per_s=env.number("RATE", 20.0, minimum=0.1, maximum=100_000),
        rate_burst=env.integer("RATE_BURST", 40, minimum=1, maximum=100_000),
        send_queue=env.integer("SEND_QUEUE", 256, minimum=4, maximum=1_000_000),
        send_buffer_bytes=env.integer("SEND_BUFFER", 262_144, minimum=1024, maximum=1 << 30),
        stock_interval_s=env.number("STOCK_INTERVAL", 0.25, minimum=0.0, maximum=60),
        stock_budget=env.number("STOCK_BUDGET", 0.1, minimum=0.01, maximum=1.0),
        chat_interval_s=env.number("CHAT_INTERVAL", 0.25, minimum=0.0, maximum=10),
        edge_refusals=env.flag("EDGE_REFUSALS", True),
        gc_quiet_s=env.number("GC_QUIET", 2.0, minimum=0.0, maximum=3600),
        line_in_flight=env.integer("LINE_IN_FLIGHT", 0, minimum=0, maximum=1_000_000),
        line_size=env.integer("LINE_SIZE", 10_000, minimum=1, maximum=10_000_000),
        line_stall_s=env.number("LINE_STALL", 2.0, minimum=0.05, maximum=3600),
        drain_s=env.number("DRAIN_SECONDS", 10.0, minimum=0, maximum=600),
        workers=env.integer("WORKERS", 1, minimum=1, maximum=256),
        log_level=env.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        demo=env.flag("DEMO", True),
    )
    relay = RelaySettings(
        webhook_url=env.text("WEBHOOK_URL", ""),
        webhook_secret=env.secret("WEBHOOK_SECRET"),
        in_server=env.flag("RELAY_IN_SERVER", False),
        group=env.text("RELAY_GROUP", "fulfillment"),
        consumer=env.text("RELAY_CONSUMER", ""),
        max_attempts=env.integer("RELAY_MAX_ATTEMPTS", 12, minimum=1, maximum=1000),
        timeout_s=env.number("RELAY_TIMEOUT", 10.0, minimum=0.01, maximum=600),
        claim_idle_s=env.number("RELAY_CLAIM_IDLE", 30.0, minimum=0.01, maximum=86_400),
        backoff_base_s=env.number("RELAY_BACKOFF", 0.5, minimum=0.0, maximum=3600),
        backoff_max_s=env.number("RELAY_BACKOFF_MAX", 300.0, minimum=0.0, maximum=86_400),
        concurrency=env.integer("RELAY_CONCURRENCY", 32, minimum=1, maximum=10_000),
        max_deliveries=env.integer("RELAY_MAX_DELIVERIES", 10, minimum=1, maximum=1000),
        trim_interval_s=env.number("RELAY_TRIM_INTERVAL", 5.0, minimum=0.0, maximum=86_400),
        port=env.integer("RELAY_PORT", 0, minimum=0, maximum=65_535),
    )
    privacy = PrivacySettings(
        retain_events_h=env.integer("RETAIN_EVENTS_HOURS", 72, minimum=1, maximum=100_000),
        retain_dead_letters_d=env.integer("RETAIN_DEAD_LETTERS_DAYS", 30, minimum=1,
                                          maximum=10_000),
        retain_holds_d=env.integer("RETAIN_HOLDS_DAYS", 30, minimum=1, maximum=10_000),
        retain_chat_h=env.integer("RETAIN_CHAT_HOURS", 72, minimum=1, maximum=100_000),
        retention_interval_s=env.number("RETENTION_INTERVAL", 300.0, minimum=0, maximum=86_400),
    )  # fmt: skip
    fraud = FraudSettings(
        risk_url=env.text("RISK_URL", ""),
        risk_timeout_ms=env.integer("RISK_TIMEOUT_MS", 150, minimum=1, maximum=60_000),
        risk_fail_open=env.flag("RISK_FAIL_OPEN", True),
        trusted_proxies=env.items("TRUSTED_PROXIES", ()),
        address_connections=env.integer("ADDRESS_CONNECTIONS", 0, minimum=0, maximum=1_000_000),
        address_handshakes_per_s=env.number("ADDRESS_HANDSHAKES", 0.0, minimum=0, maximum=1e6),
        viewer_connections=env.integer("VIEWER_CONNECTIONS", 0, minimum=0, maximum=10_000),
        viewer_attempts_per_s=env.number("VIEWER_ATTEMPTS", 0.0, minimum=0, maximum=10_000),
    )
    for proxy in fraud.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(PREFIX + "TRUSTED_PROXIES", f"{proxy!r} is no address") from exc
    if fraud.risk_url and not fraud.risk_url.startswith(("http://", "https://")):
        raise ConfigError(PREFIX + "RISK_URL", "expected an http:// or https:// URL")
    return Settings(
        redis=redis, inventory=inventory, gateway=gateway, relay=relay, privacy=privacy,
        fraud=fraud,
    )  # fmt: skip
