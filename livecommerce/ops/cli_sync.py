"""``livecommerce sync FILE|URL``: reconcile the SKU pools (and the catalog) from a backend
export, the same updates the signed endpoint takes, applied in the backend's order.

The export is JSON: ``{"levels": [{"sku", "on_hand", "version"}, ...], "products": [{"sku",
"version", "title"?, "description"?, "image_url"?, "prices"?}, ...]}`` (either list may be
missing), or one generic ``inventory.levels`` message. Every entry is checked before the first
is applied; a level or product whose version is not newer than what is stored changes nothing,
so running it twice is harmless. Uses LIVECOMMERCE_REDIS_URL, or the embedded Valkey on
LIVECOMMERCE_DATA_DIR (which must not be in use by a running server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from livecommerce.core.errors import StoreError, ValidationError
from livecommerce.web.stocksync import Level, ProductChange, parse_levels, parse_product_change

MAX_EXPORT = 64 * 1024 * 1024
TIMEOUT_S = 30.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sync",
        help="reconcile stock pools and products from a backend export (file or URL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="a JSON file, or an http(s) URL to GET it from")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--redis-url", help="LIVECOMMERCE_REDIS_URL (embedded Valkey when unset)")
    p.add_argument("--data-dir", help="LIVECOMMERCE_DATA_DIR (.livecommerce)")
    p.set_defaults(func=cmd_sync)


def read_export(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        try:
            with httpx.stream("GET", source, timeout=TIMEOUT_S, follow_redirects=True) as r:
                r.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > MAX_EXPORT:
                        raise ValidationError("source", f"larger than {MAX_EXPORT} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise ValidationError("source", f"could not GET {source}: {exc}") from exc
    path = Path(source)
    try:
        if path.stat().st_size > MAX_EXPORT:
            raise ValidationError("source", f"larger than {MAX_EXPORT} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError("source", f"cannot read {source}: {exc.strerror}") from exc


def parse_export(raw: bytes) -> tuple[list[Level], list[ProductChange]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("source", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValidationError("source", "expected a JSON object")
    if data.get("type") == "inventory.levels" and isinstance(data.get("data"), dict):
        data = data["data"]
    levels = parse_levels(data["levels"]) if "levels" in data else []
    products_raw = data.get("products", [])
    if not isinstance(products_raw, list):
        raise ValidationError("products", "expected a list")
    products = [parse_product_change(item) for item in products_raw]
    if not levels and not products:
        raise ValidationError("source", "no levels and no products")
    return levels, products


async def apply(url: str, prefix: str, levels: list[Level], products: list[ProductChange]
                ) -> dict[str, Any]:  # fmt: skip
    from livecommerce.core.config import load
    from livecommerce.store.inventory import Inventory
    from livecommerce.store.keys import Keyspace
    from livecommerce.web.stockin import StockIn

    client = aioredis.Redis.from_url(url)
    try:
        inventory = Inventory(client, Keyspace(prefix), load())
        await inventory.load()
        stockin = StockIn(inventory)
        level_results = await stockin.levels(levels, source="sync") if levels else []
        product_results = [await stockin.product(change) for change in products]
    finally:
        await client.aclose()
    return {
        "levels": dict(Counter(r["status"] for r in level_results)),
        "products": dict(Counter(r["status"] for r in product_results)),
        "reduced": sum(int(r.get("reduced", 0)) for r in level_results),
        "results": level_results + product_results,
    }


def cmd_sync(args: argparse.Namespace) -> int:
    from livecommerce.core.config import load
    from livecommerce.store.embedded import EmbeddedValkey

    for name, value in (("REDIS_URL", args.redis_url), ("DATA_DIR", args.data_dir)):
        if value is not None:
            os.environ["LIVECOMMERCE_" + name] = str(value)
    levels, products = parse_export(read_export(args.source))  # all checked before any write
    settings = load()
    server: EmbeddedValkey | None = None
    if settings.redis.url is not None:
        url = settings.redis.url.reveal()
    else:
        server = EmbeddedValkey(settings.redis.data_dir).start()
        url = server.url
    try:
        summary = asyncio.run(apply(url, settings.redis.key_prefix, levels, products))
    except StoreError as exc:
        print(f"livecommerce sync: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"sync: levels {summary['levels'] or {}}, products {summary['products'] or {}}, "
            f"{summary['reduced']} unit(s) taken back from open drops"
        )
    return 0
