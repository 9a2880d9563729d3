"""Viewer tokens: HS256 JWTs issued by the platform the stream runs on.

Claims: ``sub`` (viewer id), ``iat``, ``exp`` (required), ``aud`` = ``"livecommerce"``. The
gateway verifies them at ``join``; ``livecommerce token VIEWER`` mints one for development.
PyJWT errors are translated to :class:`~livecommerce.core.errors.AuthError` here, at the boundary.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from livecommerce.core.errors import AuthError, ValidationError
from livecommerce.core.model import valid_id

ALGORITHM = "HS256"
AUDIENCE = "livecommerce"
LEEWAY_S = 30
MAX_TOKEN_CHARS = 4096


def mint(secret: str, viewer: str, ttl_s: int, *, now: float | None = None) -> str:
    """A token for ``viewer`` valid ``ttl_s`` seconds from ``now`` (default: the wall clock)."""
    if not valid_id(viewer):
        raise ValidationError("viewer", "1-64 characters of A-Z a-z 0-9 _ -")
    if not secret:
        raise ValidationError("secret", "must not be empty")
    issued = int(time.time() if now is None else now)
    claims = {"sub": viewer, "iat": issued, "exp": issued + int(ttl_s), "aud": AUDIENCE}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, *, now: float | None = None) -> str:
    """The viewer id of a valid token. Raises AuthError for forged, expired or malformed ones."""
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
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    viewer = claims.get("sub")
    if not valid_id(viewer):
        raise AuthError("invalid token: bad subject")
    return str(viewer)
