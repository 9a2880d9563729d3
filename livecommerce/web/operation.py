"""What every host API handler stands on: the route description (:class:`Operation`), the
request context (:class:`Ctx`: services, the caller's key, the parsed body), reading and
checking the body, the bearer key, small field readers that raise
:class:`~livecommerce.core.errors.ValidationError` naming the field, and ownership checks.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from livecommerce.core.errors import (
    AuthError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from livecommerce.store.services import Services
from livecommerce.web.hostkeys import HostKey
from livecommerce.web.problems import MalformedBody
from livecommerce.web.products import Catalog

MAX_BODY = 64 * 1024


MAX_MS = 2**53


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


# -- request context -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Ctx:
    """What a handler gets: the app's services, the caller's key, and the parsed body."""

    services: Services
    key: HostKey
    body: dict[str, Any]

    @property
    def host(self) -> str:
        return self.key.host

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.services.redis, self.services.keys)


Handler = Callable[[Request, Ctx], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One route: method, path (under /api), handler, and what OpenAPI says about it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    body: str | None = None
    """Name of the request schema in :mod:`livecommerce.web.openapi` (None = no body)."""
    fields: tuple[str, ...] = ()
    """Body fields accepted; any other is refused (422 naming it)."""
    response: str = "Empty"
    status: int = 200
    auth: bool = True
    query: tuple[str, ...] = ()
    stream: bool = False


async def read_body(request: Request, op: Operation) -> dict[str, Any]:
    if op.body is None:
        return {}
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:  # refuse before reading it
        raise MalformedBody("body", f"at most {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise MalformedBody("body", f"at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody("body", f"not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise MalformedBody("body", "expected a JSON object")
    for name in data:
        if name not in op.fields:
            raise ValidationError(name, "unknown field; expected one of " + ", ".join(op.fields))
    return data


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if not header:
        raise AuthError("missing 'Authorization: Bearer lch_...' header")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("expected 'Authorization: Bearer lch_...'")
    return credentials.strip()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- small field readers (raise ValidationError naming the field) -------------------------------
def integer(
    body: dict[str, Any], name: str, low: int, high: int, default: int | None = None
) -> int:
    value = body.get(name, default)
    if value is None:
        raise ValidationError(name, "required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(name, "expected an integer")
    if not low <= value <= high:
        raise ValidationError(name, f"expected {low}..{high}")
    return value


def one_of(body: dict[str, Any], *names: str) -> str:
    given = [n for n in names if n in body]
    if len(given) != 1:
        raise ValidationError(names[0] if not given else given[1], "give exactly one of "
                              + ", ".join(names))  # fmt: skip
    return given[0]


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(4)


# -- ownership ----------------------------------------------------------------------------------
async def owned_show(ctx: Ctx, show: str) -> dict[str, Any]:
    record = await ctx.services.inventory.get_show(show)
    if record is None:
        raise NotFoundError("show", show)
    if record.get("host") != ctx.host:
        raise ForbiddenError(f"show {show!r} belongs to another host")
    return record


async def owned_drop(ctx: Ctx, show: str, drop: str) -> dict[str, Any]:
    await owned_show(ctx, show)
    view = await ctx.services.inventory.get_drop(show, drop)
    if view is None:
        raise NotFoundError("drop", drop)
    return view
