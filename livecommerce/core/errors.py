"""Every exception livecommerce raises has one root, :class:`LivecommerceError`.

::

    LivecommerceError
    ├── ConfigError            a LIVECOMMERCE_* variable is missing or malformed
    ├── StoreError             Redis/Valkey unreachable or refused a command
    │   └── EmbeddedServerError
    │       └── DataDirInUseError  another live process holds the data directory's lock
    ├── ValidationError        bad input from a caller; nothing was changed (has .field)
    ├── NotFoundError          unknown show, drop, product, hold or key (has .kind and .ident)
    ├── ConflictError          the thing exists already or is in a state that forbids the action
    ├── AuthError              missing, forged or expired credentials
    │   └── ForbiddenError     valid credentials, but not for this resource
    ├── ProtocolError          a WebSocket frame that cannot be understood (has .code)
    └── DeliveryError          the backend did not take an order (.retry_after, .gone)

Refusals of a sale (sold out, limit exceeded, ...) are *results*, not exceptions: see
:mod:`livecommerce.store.inventory`. Foreign exceptions (redis-py, httpx, PyJWT) are translated at
the
boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class LivecommerceError(Exception):
    """Root of every error raised by livecommerce."""


class ConfigError(LivecommerceError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class StoreError(LivecommerceError):
    """The Redis/Valkey server could not be reached or refused a command."""


class EmbeddedServerError(StoreError):
    """The embedded Valkey server could not be started or stopped."""


class DataDirInUseError(EmbeddedServerError):
    """Another live process holds the data directory's lock: two servers never share an AOF."""

    def __init__(self, data_dir: object, holder: str) -> None:
        super().__init__(
            f"data directory {data_dir} is in use by another livecommerce process (pid {holder});"
            " stop it, or give this one its own LIVECOMMERCE_DATA_DIR"
        )
        self.holder = holder


class ValidationError(LivecommerceError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(LivecommerceError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"unknown {kind}: {ident!r}")
        self.kind = kind
        self.ident = ident


class ConflictError(LivecommerceError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthError(LivecommerceError):
    """Missing, malformed, forged or expired credentials."""


class ForbiddenError(AuthError):
    """Valid credentials that do not grant access to this resource."""


class ProtocolError(LivecommerceError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DeliveryError(LivecommerceError):
    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def gone(self) -> bool:
        return self.status == 410
