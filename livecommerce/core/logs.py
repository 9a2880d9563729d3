"""JSON logs: one object per line on stderr (``ts``, ``level``, ``logger``, ``msg``, extras),
with secrets in URLs redacted from every record."""

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


# A client may wrongly put its viewer token in the WebSocket URL (``/ws?token=...``) and a script
# its host key in any URL; uvicorn logs the path with the query string. Neither belongs in a log.
_WS_QUERY = re.compile(r"(/ws)\?[^\s\"']*")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][a-z0-9_.-]*(?:token|key|secret|password|signature)[a-z0-9_.-]*=)[^&;\s\"']*"
)
REDACTED = "***"


def redact(text: str) -> str:
    """``text`` without the query string of ``/ws`` URLs and without token/key parameters."""
    if "?" not in text:
        return text
    text = _WS_QUERY.sub(r"\1?" + REDACTED, text)
    return _SECRET_PARAM.sub(r"\1" + REDACTED, text)


class RedactFilter(logging.Filter):
    """Rewrites every record's message (and string extras) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str) and "?" in value:
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
        return orjson.dumps(body, default=str).decode()


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
