"""The OpenAPI 3.1 document of the host API, generated from :data:`hostapi.OPERATIONS`.

Served at ``/api/openapi.json``. Paths, methods, parameters, request bodies and the success
status come from the route table, so a route cannot exist without being described; the schemas
below say what the bodies hold. Errors are RFC 9457 problem details on every operation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from livecommerce import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from livecommerce.web.operation import Operation

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
MS = {"type": "integer", "minimum": 0, "description": "Absolute time, ms on the server clock"}
PRICES = {
    "type": "object",
    "description": "ISO 4217 currency -> price in minor units (1999 = 19.99 EUR)",
    "additionalProperties": {"type": "integer", "minimum": 0},
    "minProperties": 1,
    "example": {"EUR": 1999, "USD": 2199},
}
URL = {"type": "string", "maxLength": 2048, "description": "http(s) URL, or empty"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = list(required)
    return out


PRODUCT_EDIT = {
    "title": {"type": "string", "maxLength": 200},
    "description": {"type": "string", "maxLength": 2000},
    "image_url": URL,
    "prices": PRICES,
}
DROP_VIEW = obj(
    {
        "id": ID,
        "show": ID,
        "sku": ID,
        "title": {"type": "string"},
        "kind": {"enum": ["drop", "offer"]},
        "description": {"type": "string"},
        "image_url": {"type": "string"},
        "quantity": {"type": "integer", "description": "Initial quantity plus restocks"},
        "remaining": {"type": "integer"},
        "held": {"type": "integer"},
        "sold": {"type": "integer"},
        "limit": {"type": "integer", "description": "Units one viewer may buy"},
        "prices": PRICES,
        "currency": {"type": "string", "description": "Default currency"},
        "opens_at": MS,
        "closes_at": {**MS, "description": "0 = no closing time"},
        "state": {"enum": ["scheduled", "open", "closed"]},
        "reason": {"enum": ["", "sold_out", "time_up", "host"]},
    }
)
SALES = {
    "orders": {"type": "integer"},
    "units_sold": {"type": "integer"},
    "buyers": {"type": "integer"},
    "revenue": {"type": "object", "additionalProperties": {"type": "integer"}},
    "average_order_value": {"type": "object", "additionalProperties": {"type": "integer"}},
    "conversion": {"type": ["number", "null"], "description": "buyers / viewers now"},
}
SHOW = obj(
    {
        "id": ID,
        "title": {"type": "string"},
        "host": ID,
        "video_url": {"type": "string"},
        "state": {"enum": ["scheduled", "live", "ended"]},
        "created_at": MS,
        "started_at": MS,
        "ended_at": MS,
        "viewer_path": {"type": "string", "example": "/watch/show-1"},
    }
)
CHAT_MESSAGE = obj(
    {
        "id": {"type": "string", "example": "1732350000123-0"},
        "viewer": ID,
        "name": {"type": "string", "description": "Display name from the viewer's token"},
        "text": {"type": "string", "maxLength": 300},
        "question": {"type": "boolean"},
        "ts": MS,
    }
)
ORDER = obj(
    {
        "id": {"type": "string"},
        "stream_id": {"type": "string"},
        "show": ID,
        "drop": ID,
        "sku": ID,
        "title": {"type": "string"},
        "viewer": ID,
        "quantity": {"type": "integer"},
        "unit_price": {"type": "integer"},
        "amount": {"type": "integer"},
        "currency": {"type": "string"},
        "payment_reference": {"type": "string"},
        "hold": {"type": "string"},
        "request_id": {"type": "string"},
        "confirmed_at": MS,
    }
)

SCHEMAS: dict[str, Any] = {
    "Any": {},
    "Empty": {},
    "Problem": obj(
        {
            "type": {"type": "string", "example": "urn:livecommerce:problem:validation"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "The input at fault"},
            "errors": {
                "type": "array",
                "items": obj({"field": {"type": "string"}, "message": {"type": "string"}}),
            },
        },
        ("type", "title", "status", "detail"),
    ),
    "Me": obj({"host": ID, "key": {"type": "object"}, "server_time": MS}),
    "Block": obj(
        {
            "kind": {"type": "string", "enum": ["viewer", "address"]},
            "value": {"type": "string", "description": "Viewer id, or IPv4/IPv6 address"},
            "by": ID,
            "at": MS,
            "reason": {"type": "string"},
        }
    ),
    "BlockList": obj({"blocks": {"type": "array", "items": ref("Block")}}),
    "BlockRequest": obj(
        {
            "kind": {"type": "string", "enum": ["viewer", "address"]},
            "value": {"type": "string"},
            "reason": {"type": "string", "maxLength": 200},
        },
        ("kind", "value"),
    ),
    "UnblockRequest": obj(
        {"kind": {"type": "string", "enum": ["viewer", "address"]}, "value": {"type": "string"}},
        ("kind", "value"),
    ),
    "Unblocked": obj({"removed": {"type": "boolean"}}),
    "PrivacyExport": obj(
        {
            "viewer": ID,
            "generated_at": MS,
            "found": {"type": "array", "items": {"type": "string"}},
            "shows": {"type": "object"},
            "dead_letters": {"type": "array"},
            "fulfillment_sink": {"type": "array"},
        },
        description="Everything stored about a viewer (docs/privacy.md)",
    ),
    "ErasureReport": obj(
        {"viewer": ID, "pseudonym": {"type": "string"}, "erased": {"type": "object"}},
        description="What an erasure replaced (docs/privacy.md)",
    ),
    "Product": obj({"sku": ID, "host": ID, **PRODUCT_EDIT, "created_at": MS, "updated_at": MS}),
    "ProductList": obj({"products": {"type": "array", "items": ref("Product")}}),
    "ProductCreate": obj(
        {"sku": ID, **PRODUCT_EDIT}, ("sku", "title", "prices"), additionalProperties=False
    ),
    "ProductReplace": obj(PRODUCT_EDIT, ("title", "prices"), additionalProperties=False),
    "ProductPatch": obj(PRODUCT_EDIT, additionalProperties=False),
    "Show": SHOW,
    "ShowList": obj({"shows": {"type": "array", "items": ref("Show")}}),
    "ShowDetail": {"allOf": [ref("Show"), obj({"drops": {"type": "array", "items": ref("Drop")}})]},
    "ShowCreate": obj(
        {
            "id": {**ID, "description": "Default: generated"},
            "title": {"type": "string", "maxLength": 200},
            "video_url": URL,
            "start": {"type": "boolean", "description": "Go live at once", "default": False},
        },
        ("title",),
        additionalProperties=False,
    ),
    "ShowPatch": obj(
        {"title": {"type": "string", "maxLength": 200}, "video_url": URL},
        additionalProperties=False,
    ),
    "Drop": DROP_VIEW,
    "DropList": obj({"drops": {"type": "array", "items": ref("Drop")}, "server_time": MS}),
    "DropCreate": obj(
        {
            "sku": {**ID, "description": "A product of your catalog"},
            "id": {**ID, "description": "Default: <sku>-<random>"},
            "kind": {"enum": ["drop", "offer"], "default": "drop"},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "description": "Units one viewer may buy; default min(quantity, 1000)",
            },
            "opens_at": {**MS, "description": "Schedule: absolute server ms; default now"},
            "opens_in_ms": {"type": "integer", "minimum": 0, "description": "Schedule, relative"},
            "closes_at": MS,
            "duration_ms": {
                "type": "integer",
                "minimum": 0,
                "description": "Window length from the opening (timed offers)",
            },
            "prices": {**PRICES, "description": "Default: the product's prices"},
            "currency": {"type": "string", "description": "Default currency shown"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "image_url": URL,
        },
        ("sku", "quantity"),
        additionalProperties=False,
    ),
    "Restock": obj(
        {"quantity": {"type": "integer", "minimum": 1}}, ("quantity",), additionalProperties=False
    ),
    "Window": obj(
        {
            "closes_at": {**MS, "description": "New absolute closing time; 0 = no end"},
            "closes_in_ms": {"type": "integer", "minimum": 1, "description": "From now"},
            "extend_ms": {"type": "integer", "description": "Signed: negative shortens"},
        },
        description="Exactly one of the three fields.",
        additionalProperties=False,
    ),
    "Order": ORDER,
    "OrderList": obj({"orders": {"type": "array", "items": ref("Order")}}),
    "DropStats": obj(
        {
            **DROP_VIEW["properties"],
            **SALES,
            "sell_out_ms": {
                "type": ["integer", "null"],
                "description": "ms from the opening to selling out; null if it did not sell out",
            },
            "in_line": {
                "type": "integer",
                "description": "attempts in the drop's waiting line (waiting or at the store)",
            },
            "viewers": {"type": ["integer", "null"]},
            "server_time": MS,
        }
    ),
    "ShowStats": obj(
        {
            "show": ID,
            "server_time": MS,
            "viewers": {"type": ["integer", "null"], "description": "Viewers connected now"},
            **SALES,
            "drops": {"type": "array", "items": ref("DropStats")},
        }
    ),
    "StockLevel": obj(
        {
            "sku": ID,
            "on_hand": {"type": "integer", "minimum": 0},
            "version": {"type": "integer", "minimum": 0, "description": "Per-SKU order"},
        },
        ("sku", "on_hand", "version"),
        additionalProperties=False,
    ),
    "StockImport": obj(
        {
            "levels": {"type": "array", "items": ref("StockLevel"), "maxItems": 1000},
            "delivery": {"type": "string", "description": "Idempotency key of this import"},
        },
        ("levels",),
        additionalProperties=False,
    ),
    "Stock": obj(
        {
            "sku": ID,
            "title": {"type": "string"},
            "pooled": {"type": "boolean", "description": "False: no on-hand level reported"},
            "on_hand": {"type": ["integer", "null"]},
            "pool": {"type": ["integer", "null"], "description": "What a drop can allocate"},
            "allocated": {"type": ["integer", "null"]},
            "sold": {"type": ["integer", "null"]},
            "short": {"type": ["integer", "null"]},
        }
    ),
    "StockList": obj({"stock": {"type": "array", "items": ref("Stock")}}),
    "SyncResults": obj(
        {
            "results": {
                "type": "array",
                "items": obj(
                    {
                        "sku": ID,
                        "status": {
                            "enum": ["created", "applied", "stale", "duplicate", "unknown_product"]
                        },
                    }
                ),
            },
            "ignored": {"type": "string"},
        }
    ),
    "EventStream": {
        "type": "string",
        "description": "text/event-stream: events snapshot, event, order, stats (JSON data)",
    },
    **{
        "ChatMessage": CHAT_MESSAGE,
        "ChatOverview": obj(
            {
                "enabled": {"type": "boolean"},
                "slow_mode_s": {
                    "type": "number",
                    "description": "Seconds between two messages of one viewer; 0 = off",
                },
                "words": {"type": "array", "items": {"type": "string"}},
                "moderators": {"type": "array", "items": ID},
                "mutes": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                    "description": "viewer -> muted until (ms, server clock); -1 = the show",
                },
                "questions": {"type": "array", "items": ref("ChatMessage")},
                "pinned": {"oneOf": [ref("ChatMessage"), {"type": "null"}]},
                "messages": {"type": "array", "items": ref("ChatMessage")},
            }
        ),
        "ChatPatch": obj(
            {
                "enabled": {"type": "boolean"},
                "slow_mode_s": {"type": "integer", "minimum": 0, "maximum": 3600},
                "words": {
                    "type": "array",
                    "maxItems": 200,
                    "items": {"type": "string", "maxLength": 40},
                    "description": "Replaces the word filter",
                },
            },
            additionalProperties=False,
        ),
        "Moderators": obj(
            {"viewers": {"type": "array", "items": ID, "maxItems": 100}},
            ("viewers",),
            additionalProperties=False,
        ),
        "Pinned": obj({"pinned": ref("ChatMessage")}),
        "Mute": obj(
            {
                "viewer": ID,
                "duration_s": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "0 or absent = for the whole show",
                },
            },
            ("viewer",),
            additionalProperties=False,
        ),
        "Muted": obj(
            {
                "viewer": ID,
                "until": {
                    "type": "integer",
                    "description": "ms on the server clock; -1 = for the whole show",
                },
            }
        ),
    },
}

ERRORS = {
    "400": "Malformed body (not JSON, not an object)",
    "401": "Missing, unknown or revoked host API key; viewer tokens are refused",
    "403": "The show or product belongs to another host",
    "404": "Unknown show, drop or product",
    "409": "Conflicts with the current state (exists, already open, closed, ended)",
    "422": "A field is invalid; `field` names it",
}


def _operation(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": ID}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "integer"}}
        for name in op.query
    ]
    media = "text/event-stream" if op.stream else "application/json"
    success: dict[str, Any] = {"description": "OK"}
    if op.status != 204:
        success["content"] = {media: {"schema": ref(op.response)}}
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": {
            str(op.status): success,
            **{
                code: {
                    "description": text,
                    "content": {"application/problem+json": {"schema": ref("Problem")}},
                }
                for code, text in ERRORS.items()
                if op.auth or code not in ("401", "403")
            },
        },
    }
    if not op.auth:
        out["security"] = []
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(op.body)}},
        }
    return out


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault("/api" + op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livecommerce host API",
            "version": __version__,
            "description": "Products, shows, drops and timed offers, live stats. "
            "Authenticate with `Authorization: Bearer lch_...` (a host API key from "
            "`livecommerce hostkey create`). Errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/"}],
        "security": [{"hostKey": []}],
        "components": {
            "securitySchemes": {
                "hostKey": {"type": "http", "scheme": "bearer", "bearerFormat": "lch_..."}
            },
            "schemas": SCHEMAS,
        },
        "paths": paths,
    }
