"""Loading the Lua scripts in ``livecommerce/lua`` and calling them by SHA.

Drop scripts (``drop_*``, ``hold_*``, ``holds_*``) are prefixed with ``_lib.lua`` at load time,
so shared helpers live in one file; the SKU pool scripts (``pool_*``) with ``_pool.lua``.
Scripts are loaded once with SCRIPT LOAD and called with EVALSHA; a NOSCRIPT reply (server
restarted or flushed) reloads the script and retries once.

:class:`ScriptRunner` batches concurrent calls made in the same event-loop turn into one
pipeline, which is what lets one Python process approach the server's own ceiling. The pipeline is
packed by hiredis and written on one pooled connection (what redis-py's ``Pipeline.execute`` does,
with the same retry on a broken connection, minus its per-argument Python packing).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from livecommerce.core.errors import StoreError
from livecommerce.store.parsed import NOTHING, next_parsed

SCRIPT_NAMES = (
    "drop_create",
    "drop_reserve",
    "drop_restock",
    "drop_close",
    "drop_window",
    "hold_confirm",
    "hold_cancel",
    "holds_reap",
    "show_update",
    "drop_settle",
    "pool_update",
    "pool_debit",
    "pool_settle",
    "pool_credit",
    "audit_read",
    "product_sync",
    "line_ticket",
    "line_done",
)
_STANDALONE = {"show_update", "audit_read", "product_sync", "line_ticket", "line_done"}
_POOL_LIB = "_pool.lua"
"""Prepended to the SKU pool scripts (``pool_*``) instead of ``_lib.lua``."""
LUA_DIR = Path(__file__).with_name("lua")
"""Every Lua script of the project (the reference sink's included)."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


def read_source(name: str, *, lib: str | None = None) -> str:
    """Source of one script as it is sent to the server (library prepended where it applies)."""
    folder = LUA_DIR
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if name in _STANDALONE:
        return body
    if name.startswith("pool_"):
        return (folder / _POOL_LIB).read_text(encoding="utf-8") + "\n" + body
    if lib is None:
        lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


def build(name: str, source: str) -> Script:
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())


def load_all(overrides: dict[str, str] | None = None) -> dict[str, Script]:
    """Every script by name; ``overrides`` replaces sources (used to break a script in tests)."""
    out = {name: build(name, read_source(name)) for name in SCRIPT_NAMES}
    for name, source in (overrides or {}).items():
        out[name] = build(name, source)
    return out


Call = tuple[Script, Sequence[str], Sequence[Any], "asyncio.Future[Any]"]


class ScriptRunner:
    """Calls scripts by SHA, batching the calls of one event-loop turn into one pipeline.

    At most one pipeline is in flight; calls that arrive meanwhile form the next batch. Under
    light load a batch holds one call, so the only cost is one loop turn.
    """

    def __init__(
        self,
        redis: aioredis.Redis | RedisCluster,
        scripts: dict[str, Script],
        max_batch: int = 512,
    ):
        self.redis = redis
        # redis-py refuses EVALSHA in cluster pipelines: there a batch goes out as concurrent
        # single calls, which the cluster client spreads over its per-node connections.
        self.cluster = isinstance(redis, RedisCluster)
        self.scripts = scripts
        self.max_batch = max_batch
        self._pending: list[Call] = []
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        try:
            for script in self.scripts.values():
                sha = await self.redis.script_load(script.source)
                if sha != script.sha:  # pragma: no cover - would mean a broken server
                    raise StoreError(f"script {script.name}: server returned SHA {sha}")
        except RedisError as exc:
            raise StoreError(f"could not load Lua scripts: {exc}") from exc

    async def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((self.scripts[name], keys, args, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Started by the first call of a loop turn, this runs in the next turn: the turn's other
        # calls are in by then. (It used to wait one more turn for the next turn's calls too; in
        # a burst that was one turn more per store round trip, on a loop whose turns are long.)
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                await self._execute(batch)
            except BaseException as exc:  # deliver any failure to every waiter, then go on
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(_translate(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _execute(self, batch: list[Call]) -> None:
        if self.cluster:
            results = await asyncio.gather(
                *(self._single(script, keys, args) for script, keys, args, _ in batch),
                return_exceptions=True,
            )
            for (*_, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(_translate(result))
                else:
                    fut.set_result(result)
            return
        packed: list[bytes] = []
        calls: list[Call] = []
        for call in batch:
            script, keys, args, fut = call
            try:
                packed.append(hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys,
                                                    *args)))  # fmt: skip
            except TypeError as exc:  # an argument redis-py would refuse too
                if not fut.done():
                    fut.set_exception(exc)
                continue
            calls.append(call)
        if not calls:
            return
        results = await self._pipeline(b"".join(packed), len(calls))
        for (script, keys, args, fut), result in zip(calls, results, strict=True):
            if isinstance(result, NoScriptError):
                try:
                    result = await self._single(script, keys, args)
                except Exception as exc:
                    result = exc
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(_translate(result))
            else:
                fut.set_result(result)

    async def _pipeline(self, payload: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands on one pooled connection; their replies, in order (an
        error reply as its exception). A broken connection is retried as redis-py retries a
        pipeline: the connection's own retry policy, disconnecting between attempts."""
        assert not isinstance(self.redis, RedisCluster)
        pool = self.redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]

        async def attempt() -> list[Any]:
            await conn.send_packed_command(payload)
            replies: list[Any] = []
            while len(replies) < count:
                if _take_parsed(conn, replies, count):
                    continue  # replies already read off the socket: no wait, no timer
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies

        async def failed(_: Exception) -> None:
            await conn.disconnect()

        try:
            replies: list[Any] = await conn.retry.call_with_retry(attempt, failed)
            return replies
        finally:
            await pool.release(conn)

    async def _single(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)


def _take_parsed(conn: Any, replies: list[Any], count: int) -> bool:
    """Move the replies hiredis has already parsed from ``conn``'s buffer to ``replies`` (at most
    up to ``count``; :mod:`livecommerce.store.parsed`); False when there was none (the caller
    then waits, with redis-py's timeout). That timer per reply was 6.5 % of a gateway's time in
    a burst. A push message among the replies (never seen on these connections, which subscribe
    to nothing) fails the attempt as a broken connection would."""
    push_type = getattr(getattr(conn, "_parser", None), "_hiredis_PushNotificationType", None)
    took = False
    while len(replies) < count:
        reply = next_parsed(conn)
        if reply is NOTHING:
            break
        if push_type is not None and isinstance(reply, push_type):
            raise _PushInBatch()
        replies.append(reply)
        took = True
    return took


class _PushInBatch(RedisConnectionError):
    """A push message among a batch's replies: handled as a broken connection (disconnected,
    then redis-py's retry policy)."""


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, RedisError):
        err = StoreError(f"redis: {exc}")
        err.__cause__ = exc
        return err
    return exc
