"""JSON logs: one object per line on stderr (``ts``, ``level``, ``logger``, ``msg``, extras).

Logs never carry credentials or payment references: no code logs them, and as a safety net every
record passes :class:`RedactFilter` and every line :func:`redact`, which drops the query string
of ``/ws`` URLs and any token/key/secret URL parameter, and masks anything shaped like a viewer
token (JWT), a host or operator key, a webhook secret, or a ``payment_reference`` or ``token``
value -- also in the frames websockets logs at debug level, cut short (docs/privacy.md).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

# uvicorn adds ``color_message`` (the message with ANSI colours): not for JSON.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "color_message",
}


_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JWT (viewer token)
    r"|\b(?:lch|lco)_[A-Za-z0-9_-]{8,}"  # host and operator keys
    r"|\bwhsec_[A-Za-z0-9+/=]{8,}"  # webhook secrets
)
_FIELDS = re.compile(
    r"""((?:payment_reference|token)\\?['"]?\s*[:=]\s*\\?['"]?)([^'",}\s\\]+)"""
)  # also inside JSON-escaped text (a logged frame: \"token\":\"...\")
MASK = "[redacted]"
# A client may wrongly put its viewer token in the WebSocket URL (``/ws?token=...``) and a script
# its host key in any URL; uvicorn logs the path with the query string. Neither belongs in a log.
_WS_QUERY = re.compile(r"(/ws)\?[^\s\"']*")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][a-z0-9_.-]*(?:token|key|secret|password|signature)[a-z0-9_.-]*=)[^&;\s\"']*"
)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` without the query string of ``/ws`` URLs and token/key URL parameters, and with
    tokens, keys, secrets and payment references masked."""
    text = _FIELDS.sub(lambda m: m.group(1) + MASK, _SECRETS.sub(MASK, text))
    if "?" in text:  # then URLs: their token/key parameters say *** whatever was masked above
        text = _SECRET_PARAM.sub(r"\1" + REDACTED, _WS_QUERY.sub(r"\1?" + REDACTED, text))
    return text


class RedactFilter(logging.Filter):
    """Rewrites every record's message (and string extras) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactFilter` to every handler of ``logger`` (the root by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(body, default=str).decode())


def configure(level: str = "info") -> None:
    """Route every logger (uvicorn's too) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
