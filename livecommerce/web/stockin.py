"""Applying inbound updates: on-hand levels to the SKU pools, product changes to the catalog.

Used by the signed inbound endpoints, the bulk import and ``livecommerce sync``. Each SKU's
level is one atomic step (``pool_update.lua``), each product change another
(``product_sync.lua``); both are ordered by the backend's version, so a late or repeated update
changes nothing. The item -> SKU map that adapters learn (Shopify's ``inventory_item_id``) is one
hash per source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from redis.exceptions import RedisError

from livecommerce.core.errors import StoreError
from livecommerce.store.inventory import Inventory
from livecommerce.web.stocksync import Level, ProductChange


class StockIn:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.pools = inventory.pools
        self.redis = inventory.redis
        self.keys = inventory.keys

    async def levels(
        self, levels: Iterable[Level], *, delivery: str = "", source: str = ""
    ) -> list[dict[str, Any]]:
        """Apply each level (its own atomic step); one result per level, in order."""
        results: list[dict[str, Any]] = []
        for level in levels:
            key = f"{source}:{delivery}" if delivery else ""
            update = await self.pools.report(
                level.sku, level.on_hand, level.version, delivery=key, source=source
            )
            result: dict[str, Any] = {"sku": level.sku, "status": update.status}
            if update.ledger is not None:
                result.update(update.ledger.public())
            if update.reduced:
                result["reduced"] = update.reduced
            results.append(result)
        return results

    async def product(self, change: ProductChange) -> dict[str, Any]:
        raw = await self.inventory.runner.call(
            "product_sync",
            [self.keys.products],
            [change.sku, change.version, orjson.dumps(change.fields)],
        )
        reply = orjson.loads(raw)
        return {"sku": change.sku, "status": reply["status"]}

    async def learn_items(self, source: str, items: dict[str, str]) -> None:
        if items:
            pipe = self.redis.pipeline(transaction=False)
            for item, sku in items.items():
                pipe.hset(self.keys.sync_items(source), item, sku)
            await self._r(pipe.execute())

    async def sku_of_item(self, source: str, item: str) -> str | None:
        raw = await self._r(self.redis.hget(self.keys.sync_items(source), item))
        return raw.decode() if raw is not None else None

    async def _r(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
