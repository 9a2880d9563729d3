"""Host blocks: a viewer id or a client address refused in one show.

Stored in the show's ``B:blocks`` hash (``viewer:<id>`` / ``address:<ip>`` -> JSON record with
``by``, ``at`` and an optional ``reason``); written by the host API, read by the gateway, which
refuses a blocked viewer's or address's ``join`` and buy attempts at the edge
(:mod:`livecommerce.realtime.admission`). Blocking is idempotent; unblocking an unknown entry is a
no-op.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.core.model import check_text, valid_id
from livecommerce.store.keys import Keyspace

MAX_REASON = 200


class BlockKind(StrEnum):
    VIEWER = "viewer"
    ADDRESS = "address"


@dataclass(frozen=True)
class Block:
    kind: BlockKind
    value: str
    by: str
    at: int
    reason: str = ""

    @property
    def field(self) -> str:
        return f"{self.kind}:{self.value}"

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "kind": str(self.kind)}


def check_block(kind: object, value: object) -> tuple[BlockKind, str]:
    """A valid (kind, value): a viewer id, or an IPv4/IPv6 address (normalised)."""
    try:
        block_kind = BlockKind(str(kind))
    except ValueError as exc:
        raise ValidationError("kind", "expected 'viewer' or 'address'") from exc
    if block_kind is BlockKind.VIEWER:
        if not valid_id(value):
            raise ValidationError("value", "a viewer id: 1-64 characters of A-Z a-z 0-9 _ -")
        return block_kind, str(value)
    try:
        return block_kind, str(ipaddress.ip_address(str(value)))
    except ValueError as exc:
        raise ValidationError("value", "an IPv4 or IPv6 address") from exc


def field_of(kind: BlockKind, value: str) -> str:
    return f"{kind}:{value}"


class Blocks:
    def __init__(self, redis: aioredis.Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.keys = keyspace

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def block(self, show: str, kind: object, value: object, *, by: str,
                    reason: str = "") -> Block:  # fmt: skip
        block_kind, normal = check_block(kind, value)
        check_text("reason", reason, MAX_REASON)
        record = Block(block_kind, normal, by, int(time.time() * 1000), reason)
        payload = orjson.dumps({"by": by, "at": record.at, "reason": reason})
        await self._call(self.redis.hset(self.keys.blocks(show), record.field, payload))
        return record

    async def unblock(self, show: str, kind: object, value: object) -> bool:
        block_kind, normal = check_block(kind, value)
        removed = await self._call(
            self.redis.hdel(self.keys.blocks(show), field_of(block_kind, normal))
        )
        return bool(removed)

    async def list(self, show: str) -> list[Block]:
        raw = await self._call(self.redis.hgetall(self.keys.blocks(show)))
        out = []
        for field, value in raw.items():
            kind, _, ident = (field.decode() if isinstance(field, bytes) else field).partition(":")
            d = orjson.loads(value)
            out.append(Block(BlockKind(kind), ident, d["by"], int(d["at"]), d.get("reason", "")))
        return sorted(out, key=lambda b: (b.at, b.field))

    async def fields(self, show: str) -> frozenset[str]:
        """The blocked ``viewer:``/``address:`` fields of a show (what the gateway caches)."""
        raw = await self._call(self.redis.hkeys(self.keys.blocks(show)))
        return frozenset(f.decode() if isinstance(f, bytes) else f for f in raw)
