"""Problem details for HTTP APIs (RFC 9457): every 4xx/5xx of the host API has this shape.

::

    HTTP/1.1 422 Unprocessable Content
    Content-Type: application/problem+json

    {"type": "urn:livecommerce:problem:validation", "title": "Invalid input", "status": 422,
     "detail": "quantity: expected 1..1000000", "field": "quantity",
     "errors": [{"field": "quantity", "message": "expected 1..1000000"}]}

``type`` is a URN (RFC 9457 section 3.1.1 allows any URI; it is an identifier, not a link).
``field`` and ``errors`` are extension members (section 3.2) naming the input at fault.
:func:`from_error` maps the livecommerce error tree onto statuses; anything else is not caught
here and stays a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from livecommerce.core.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    LivecommerceError,
    NotFoundError,
    StoreError,
    ValidationError,
)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:livecommerce:problem:"

TITLES: dict[str, str] = {
    "bad-request": "Malformed request",
    "validation": "Invalid input",
    "unauthorized": "Host API key required",
    "forbidden": "Not allowed for this key",
    "not-found": "Not found",
    "conflict": "Conflict with the current state",
    "unavailable": "Store unavailable",
    "method-not-allowed": "Method not allowed",
}
"""Every problem type the host API returns (``urn:livecommerce:problem:<name>``)."""


class ProblemResponse(Response):
    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class MalformedBody(ValidationError):
    """The body is not JSON, or not a JSON object: 400 rather than 422."""


def problem(
    name: str,
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """One problem response. ``name`` is a key of :data:`TITLES`."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + name,
        "title": TITLES[name],
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
        body["errors"] = [{"field": field, "message": extra.pop("message", detail)}]
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="livecommerce-host"'}


def from_error(exc: LivecommerceError) -> ProblemResponse:
    """The problem response for one livecommerce error."""
    if isinstance(exc, MalformedBody):
        return problem("bad-request", 400, str(exc), field=exc.field, message=exc.message)
    if isinstance(exc, ValidationError):
        return problem("validation", 422, str(exc), field=exc.field, message=exc.message)
    if isinstance(exc, ForbiddenError):
        return problem("forbidden", 403, str(exc))
    if isinstance(exc, AuthError):
        return problem("unauthorized", 401, str(exc), headers=UNAUTHORIZED_HEADERS)
    if isinstance(exc, NotFoundError):
        return problem("not-found", 404, str(exc), kind=exc.kind, id=exc.ident)
    if isinstance(exc, ConflictError):
        return problem("conflict", 409, exc.message, code=exc.code)
    if isinstance(exc, StoreError):
        return problem("unavailable", 503, "the store is unavailable; try again")
    return problem("bad-request", 400, str(exc))
