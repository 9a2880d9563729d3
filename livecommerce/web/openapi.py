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
    "EventStream": {
        "type": "string",
        "description": "text/event-stream: events snapshot, event, order, stats (JSON data)",
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
