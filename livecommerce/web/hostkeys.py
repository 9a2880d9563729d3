"""Host API keys: ``lch_`` + 32 random bytes (URL-safe base64), stored only as their SHA-256.

Each key belongs to one host id; everything created with a key (shows, products) is owned by
that host, and a key may only act on its host's things. Keys are created and revoked with
``livecommerce hostkey ...`` (:mod:`livecommerce.ops.cli_hostkeys`); the secret is shown once.

Records live in the hash ``keys.host_keys`` (sha256 hex -> JSON). A key's public ``id`` is the
first 16 hex digits of its hash; its ``prefix`` (``lch_`` + 8 characters) is what people see in
listings. Revoking keeps the record (with ``revoked_at``), so a revoked key stays refused.
Viewer tokens (JWTs) never start with ``lch_`` and are refused before any lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from livecommerce.core.model import valid_id
from livecommerce.store.keys import Keyspace

KEY_PREFIX = "lch_"
MAX_LABEL = 100
_PREFIX_SHOWN = len(KEY_PREFIX) + 8


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class HostKey:
    """What is stored about one key (never the key itself)."""

    id: str
    host: str
    label: str
    prefix: str
    created_at: int
    revoked_at: int = 0

    @property
    def revoked(self) -> bool:
        return self.revoked_at > 0

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "revoked": self.revoked}

    @classmethod
    def parse(cls, raw: bytes | str) -> HostKey:
        d = orjson.loads(raw)
        return cls(
            id=d["id"],
            host=d["host"],
            label=d.get("label", ""),
            prefix=d.get("prefix", ""),
            created_at=int(d["created_at"]),
            revoked_at=int(d.get("revoked_at") or 0),
        )


class HostKeys:
    """Create, verify, list and revoke host API keys."""

    def __init__(self, redis: aioredis.Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.key = keyspace.host_keys

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def create(self, host: str, label: str = "") -> tuple[str, HostKey]:
        """A new key for ``host``: returns (the secret, shown once; its record)."""
        if not valid_id(host):
            raise ValidationError("host", "1-64 characters of A-Z a-z 0-9 _ -")
        if not isinstance(label, str) or len(label) > MAX_LABEL:
            raise ValidationError("label", f"at most {MAX_LABEL} characters")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        hashed = digest(secret)
        record = HostKey(
            id=hashed[:16],
            host=host,
            label=label,
            prefix=secret[:_PREFIX_SHOWN],
            created_at=int(time.time() * 1000),
        )
        await self._call(self.redis.hset(self.key, hashed, orjson.dumps(asdict(record))))
        return secret, record

    async def verify(self, secret: str) -> HostKey:
        """The record of a valid, unrevoked key. Raises AuthError otherwise."""
        if not isinstance(secret, str) or not secret.startswith(KEY_PREFIX):
            raise AuthError("expected a host API key (lch_...); viewer tokens are not accepted")
        if len(secret) > 200:
            raise AuthError("unknown host API key")
        hashed = digest(secret)
        raw = await self._call(self.redis.hget(self.key, hashed))
        if raw is None:
            raise AuthError("unknown host API key")
        record = HostKey.parse(raw)
        # The lookup is by hash already; compare again in constant time as a belt and braces.
        if not hmac.compare_digest(record.id, hashed[:16]):
            raise AuthError("unknown host API key")
        if record.revoked:
            raise AuthError("this host API key was revoked")
        return record

    async def list(self) -> list[HostKey]:
        raw = await self._call(self.redis.hgetall(self.key))
        records = [HostKey.parse(v) for v in raw.values()]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def revoke(self, prefix_or_id: str) -> HostKey:
        """Revoke the one key whose id or shown prefix starts with ``prefix_or_id``."""
        if not isinstance(prefix_or_id, str) or len(prefix_or_id) < 4:
            raise ValidationError("key", "give a key id or prefix (at least 4 characters)")
        raw = await self._call(self.redis.hgetall(self.key))
        matches: list[tuple[bytes | str, HostKey]] = []
        for field, value in raw.items():
            record = HostKey.parse(value)
            if (
                record.id.startswith(prefix_or_id)
                or record.prefix.startswith(prefix_or_id)
                or digest(prefix_or_id) == _text(field)
            ):
                matches.append((field, record))
        if not matches:
            raise NotFoundError("host key", prefix_or_id)
        if len(matches) > 1:
            raise ConflictError("ambiguous", f"{len(matches)} keys match {prefix_or_id!r}")
        field, record = matches[0]
        if record.revoked:
            return record
        revoked = HostKey(**{**asdict(record), "revoked_at": int(time.time() * 1000)})
        await self._call(self.redis.hset(self.key, field, orjson.dumps(asdict(revoked))))
        return revoked


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
