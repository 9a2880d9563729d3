"""Viewer tokens: HS256 JWTs issued by the platform the stream runs on.

Claims: ``sub`` (viewer id), ``iat``, ``exp`` (required), ``aud`` = ``"livecommerce"``. The
gateway verifies them at ``join``; ``livecommerce token VIEWER`` mints one for development.
PyJWT errors are translated to :class:`~livecommerce.core.errors.AuthError` here, at the boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.core.model import valid_id

ALGORITHM = "HS256"
AUDIENCE = "livecommerce"
LEEWAY_S = 30
MAX_TOKEN_CHARS = 4096
MAX_NAME_CHARS = 40


@dataclass(frozen=True)
class Identity:
    """Who a valid token speaks for: the viewer id and the display name shown in chat."""

    viewer: str
    name: str


def display_name(value: object, viewer: str) -> str:
    """The optional ``name`` claim when it is printable text of 1..40 characters, else the id."""
    if isinstance(value, str):
        name = " ".join(value.split())
        if 0 < len(name) <= MAX_NAME_CHARS and name.isprintable():
            return name
    return viewer


def mint(secret: str, viewer: str, ttl_s: int, *, now: float | None = None,
         name: str | None = None) -> str:  # fmt: skip
    """A token for ``viewer`` valid ``ttl_s`` seconds from ``now`` (default: the wall clock),
    with an optional display ``name`` claim."""
    if not valid_id(viewer):
        raise ValidationError("viewer", "1-64 characters of A-Z a-z 0-9 _ -")
    if not secret:
        raise ValidationError("secret", "must not be empty")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": viewer, "iat": issued, "exp": issued + int(ttl_s),
                              "aud": AUDIENCE}  # fmt: skip
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, *, now: float | None = None) -> str:
    """The viewer id of a valid token. Raises AuthError for forged, expired or malformed ones."""
    return identify(secret, token, now=now).viewer


def identify(secret: str, token: str, *, now: float | None = None) -> Identity:
    """The identity of a valid token. Raises AuthError for forged, expired or malformed ones."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed token")
    if not secret:
        raise AuthError("tokens are not accepted: no token secret configured")
    options: Any = {"require": ["exp", "sub"]}
    try:
        if now is None:
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, leeway=LEEWAY_S,
                options=options,
            )  # fmt: skip
        else:
            relaxed: Any = {**options, "verify_exp": False, "verify_iat": False}
            # Judge expiry by the clock we were handed (tests, replays), not the wall clock.
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                options=relaxed,
            )  # fmt: skip
            exp = claims.get("exp")
            if not isinstance(exp, int | float) or now > exp + LEEWAY_S:
                raise AuthError("token expired")
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError(
            "invalid token: signed with another secret than this server's (a token from "
            "`livecommerce token` must see the server's LIVECOMMERCE_TOKEN_SECRET or "
            "LIVECOMMERCE_DATA_DIR)"
        ) from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    viewer = claims.get("sub")
    if not valid_id(viewer):
        raise AuthError("invalid token: bad subject")
    return Identity(str(viewer), display_name(claims.get("name"), str(viewer)))
