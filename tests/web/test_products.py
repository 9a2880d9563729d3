"""The product catalog: validated CRUD, one owner per product."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from livecommerce.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from livecommerce.store.keys import Keyspace
from livecommerce.web.products import Catalog, check_prices


async def test_catalog_create_read_update_delete(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    catalog = Catalog(redis, keyspace)
    p = await catalog.create("h1", "mug", {"title": "Mug", "prices": {"EUR": 1200}})
    assert p.host == "h1" and p.created_at > 0 and p.description == ""
    with pytest.raises(ConflictError):
        await catalog.create("h2", "mug", {"title": "Mine", "prices": {"EUR": 1}})
    p2 = await catalog.update("h1", "mug", {"description": "Big"}, partial=True)
    assert p2.description == "Big" and p2.prices == {"EUR": 1200}
    p3 = await catalog.update("h1", "mug", {"title": "Cup", "prices": {"USD": 5}}, partial=False)
    assert (p3.title, p3.description, p3.prices) == ("Cup", "", {"USD": 5})
    assert [x.sku for x in await catalog.list("h1")] == ["mug"]
    assert await catalog.list("h2") == []
    with pytest.raises(ForbiddenError):
        await catalog.get("h2", "mug")
    with pytest.raises(ForbiddenError):
        await catalog.delete("h2", "mug")
    await catalog.delete("h1", "mug")
    with pytest.raises(NotFoundError):
        await catalog.get("h1", "mug")


@pytest.mark.parametrize(
    ("prices", "field"),
    [(None, "prices"), ({}, "prices"), ({"eur": 1}, "prices.eur"), ({"EUR": True}, "prices.EUR"),
     ({"EUR": 10**10}, "prices.EUR"), ([1], "prices")],
)  # fmt: skip
def test_prices_are_checked(prices: object, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_prices(prices)
    assert exc.value.field == field


async def test_bad_product_writes_nothing(redis: aioredis.Redis, keyspace: Keyspace) -> None:
    catalog = Catalog(redis, keyspace)
    for sku, data in [
        ("a b", {"title": "T", "prices": {"EUR": 1}}),
        ("a", {"title": "", "prices": {"EUR": 1}}),
        ("a", {"title": "T", "prices": {"EUR": 1}, "image_url": "javascript:x"}),
    ]:
        with pytest.raises(ValidationError):
            await catalog.create("h", sku, data)
    assert await redis.hlen(keyspace.products) == 0
