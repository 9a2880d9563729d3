"""The product catalog: what a host can put on sale, with prices in one or more currencies.

Products live in the hash ``keys.products`` (sku -> JSON record). A product belongs to the host
that created it: another host's sku is refused (403), and a sku is unique across hosts (409 on
create). Prices are integers in the currency's minor units (``{"EUR": 1999}`` is 19.99 EUR).
Every input is validated before anything is written: a bad product changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livecommerce.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from livecommerce.core.model import (
    CURRENCY,
    MAX_DESCRIPTION,
    MAX_PRICE,
    MAX_TEXT,
    check_text,
    valid_id,
)
from livecommerce.store.keys import Keyspace

MAX_URL = 2048
MAX_CURRENCIES = 20
EDITABLE = ("title", "description", "image_url", "prices")


def check_url(name: str, value: object) -> str:
    """Empty, an http(s) URL, or a path on this server (``/static/...``)."""
    text = check_text(name, value, MAX_URL)
    if text and not text.startswith(("http://", "https://", "/")):
        raise ValidationError(name, "expected an http:// or https:// URL")
    if any(c.isspace() for c in text):
        raise ValidationError(name, "must not contain spaces")
    return text


def check_prices(value: object, name: str = "prices") -> dict[str, int]:
    """``{"EUR": 1999, "USD": 2199}``: ISO 4217 codes to non-negative minor units."""
    if not isinstance(value, dict) or not value:
        raise ValidationError(name, 'at least one price, like {"EUR": 1999}')
    if len(value) > MAX_CURRENCIES:
        raise ValidationError(name, f"at most {MAX_CURRENCIES} currencies")
    prices: dict[str, int] = {}
    for cur, amount in value.items():
        if not isinstance(cur, str) or not CURRENCY.fullmatch(cur):
            raise ValidationError(f"{name}.{cur}", "not an ISO 4217 code like EUR")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValidationError(f"{name}.{cur}", "expected an integer amount in minor units")
        if not 0 <= amount <= MAX_PRICE:
            raise ValidationError(f"{name}.{cur}", f"expected 0..{MAX_PRICE}")
        prices[cur] = amount
    return prices


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    prices: dict[str, int]
    host: str
    description: str = ""
    image_url: str = ""
    created_at: int = 0
    updated_at: int = 0

    def public(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, raw: bytes | str) -> Product:
        d = orjson.loads(raw)
        return cls(
            sku=d["sku"],
            title=d["title"],
            prices={k: int(v) for k, v in d["prices"].items()},
            host=d.get("host", ""),
            description=d.get("description", ""),
            image_url=d.get("image_url", ""),
            created_at=int(d.get("created_at") or 0),
            updated_at=int(d.get("updated_at") or 0),
        )


def validate(data: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """The editable fields of ``data``, checked. ``partial`` for updates (PATCH)."""
    out: dict[str, Any] = {}
    if "title" in data or not partial:
        out["title"] = check_text("title", data.get("title"), MAX_TEXT, required=True)
    if "description" in data:
        out["description"] = check_text("description", data["description"], MAX_DESCRIPTION)
    if "image_url" in data:
        out["image_url"] = check_url("image_url", data["image_url"])
    if "prices" in data or not partial:
        out["prices"] = check_prices(data.get("prices"))
    return out


class Catalog:
    """Product CRUD for every host under one key prefix."""

    def __init__(self, redis: aioredis.Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.key = keyspace.products

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    async def create(self, host: str, sku: object, data: dict[str, Any]) -> Product:
        if not valid_id(sku):
            raise ValidationError("sku", "1-64 characters of A-Z a-z 0-9 _ -")
        assert isinstance(sku, str)
        fields = validate(data)
        now = int(time.time() * 1000)
        product = Product(sku=sku, host=host, created_at=now, updated_at=now, **fields)
        created = await self._call(self.redis.hsetnx(self.key, sku, orjson.dumps(product.public())))
        if not created:
            raise ConflictError("product_exists", f"a product with sku {sku!r} exists already")
        return product

    async def get(self, host: str, sku: str) -> Product:
        """The host's product. NotFoundError if there is none, ForbiddenError if not theirs."""
        if not valid_id(sku):
            raise NotFoundError("product", sku)
        raw = await self._call(self.redis.hget(self.key, sku))
        if raw is None:
            raise NotFoundError("product", sku)
        product = Product.parse(raw)
        if product.host != host:
            raise ForbiddenError(f"product {sku!r} belongs to another host")
        return product

    async def update(self, host: str, sku: str, data: dict[str, Any], *, partial: bool) -> Product:
        current = await self.get(host, sku)  # ownership before anything about the body
        fields = validate(data, partial=partial)
        base = current.public()
        if not partial:
            base.update(description="", image_url="")
        base.update(fields, updated_at=int(time.time() * 1000))
        product = Product(**base)
        await self._call(self.redis.hset(self.key, sku, orjson.dumps(product.public())))
        return product

    async def delete(self, host: str, sku: str) -> None:
        await self.get(host, sku)
        await self._call(self.redis.hdel(self.key, sku))

    async def list(self, host: str) -> list[Product]:
        raw = await self._call(self.redis.hgetall(self.key))
        products = [Product.parse(v) for v in raw.values()]
        return sorted((p for p in products if p.host == host), key=lambda p: p.sku)
