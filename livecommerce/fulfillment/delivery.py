"""The transport seam of the relay: a :class:`Deliverer` sends one signed webhook and returns on
2xx or raises :class:`~livecommerce.core.errors.DeliveryError`. :class:`HttpDeliverer`
(aiohttp) is the real one, :class:`MemoryDeliverer` the in-memory one for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
import yarl

from livecommerce.core.errors import DeliveryError
from livecommerce.fulfillment.policy import (
    parse_retry_after,
)
from livecommerce.fulfillment.webhooks import Signer, WebhookMessage

USER_AGENT = "livecommerce-relay"


class Deliverer(Protocol):
    async def deliver(self, message: WebhookMessage) -> None:
        """Send one message; return on 2xx, raise DeliveryError otherwise."""

    async def aclose(self) -> None: ...


class HttpDeliverer:
    """Standard Webhooks over HTTP POST with aiohttp: signed per attempt, one deadline per request.

    One session with a keep-alive pool of at most ``max_connections`` connections (the relay's
    concurrency), created on first use inside the running loop. Nothing a webhook does not need
    runs per order: no cookie jar, no redirects (a 3xx is a failure like any non-2xx), no
    environment proxies, no response decompression. ``timeout_s`` bounds the whole request,
    connecting and reading the answer included.
    """

    def __init__(
        self,
        url: str,
        signer: Signer,
        *,
        timeout_s: float,
        max_connections: int = 32,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = yarl.URL(url)
        self.signer = signer
        self.timeout_s = timeout_s
        self.max_connections = max(1, max_connections)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"user-agent": USER_AGENT},
            skip_auto_headers=("accept", "accept-encoding"),
            auto_decompress=False,
            trust_env=False,
        )
        return self._session

    async def deliver(self, message: WebhookMessage) -> None:
        session = self._session or self._open()
        headers = self.signer.headers(message.id, int(self._clock()), message.body)
        try:
            async with session.post(
                self.url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                # read the (small) answer in full so the connection goes back to the pool
                answer = await response.read()
        except TimeoutError as exc:  # aiohttp's timeout errors are TimeoutErrors too
            raise DeliveryError(f"timeout after {self.timeout_s}s: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"network: {exc!r}") from exc
        status = response.status
        if 200 <= status < 300:
            return
        raise DeliveryError(
            f"HTTP {status}: {answer[:200].decode(errors='replace')}",
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after"), self._clock()),
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class MemoryDeliverer:
    """In-memory backend for tests: records deliveries; ``failures`` scripts errors per order id.

    ``failures[order_id]`` is a list of errors raised by successive attempts (then success); an
    order id in ``always_fail`` fails every time.
    """

    def __init__(self) -> None:
        self.delivered: list[WebhookMessage] = []
        self.attempts: dict[str, int] = {}
        self.failures: dict[str, list[DeliveryError]] = {}
        self.always_fail: dict[str, DeliveryError] = {}
        self.changed = asyncio.Event()

    async def deliver(self, message: WebhookMessage) -> None:
        self.attempts[message.order_id] = self.attempts.get(message.order_id, 0) + 1
        self.changed.set()
        if message.order_id in self.always_fail:
            raise self.always_fail[message.order_id]
        queue = self.failures.get(message.order_id)
        if queue:
            raise queue.pop(0)
        self.delivered.append(message)

    async def aclose(self) -> None:
        return None
