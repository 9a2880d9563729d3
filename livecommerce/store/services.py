"""What one server process holds while it runs, created and closed by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from livecommerce.core.config import Settings
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    """Commands (pool). Pub/sub uses its own connection, opened by the hub."""
    keys: Keyspace
    inventory: Inventory
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    """Prometheus registry of this app (one per app, so tests can run several in one process)."""
    redis_url: str = ""
    draining: bool = False
    """Set first on shutdown: /readyz turns 503 before any viewer is closed."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Components by name ("gateway", "relay", ...), for the health and admin routes."""
