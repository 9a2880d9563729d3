"""A fuzz campaign against a running local stack (loadtests/stack.py): seed two shows, keep a
well-behaved viewer watching, dump the store, feed hypothesis-generated batches of hostile frames
(loadtests/fuzz.py) on six connections (both encodings; unjoined, anonymous, with a token), then
check what must hold and return a report: ``problems`` is empty when it all did.

- the server process is alive and ``/readyz`` answers 200;
- the watching viewer was never disconnected and receives an event published afterwards;
- a full dump of the store equals the one before, except the viewer-count heartbeats, what the
  final restock wrote, and, only if the server accepted commands (``ok`` results), the keys
  those commands write (the drop, the request records, orders, the work schedule).
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import threading
import time
import urllib.request
from typing import Any

import redis
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livecommerce.realtime.codec import Encoding
from livecommerce.realtime.tokens import mint
from livecommerce.store.keys import Keyspace
from loadtests.fuzz import KILLERS, Frame, FuzzConnection, Tally, batches, mutants
from loadtests.stack import LocalStack

STACK_ENV = {"LIVECOMMERCE_RATE": "100000", "LIVECOMMERCE_RATE_BURST": "100000",
             "LIVECOMMERCE_LOG_LEVEL": "error"}  # fmt: skip
"""The rate limit is lifted: the fuzz is for the session and codec, not for the rate limiter."""


class Watcher:
    """A well-behaved viewer joined to the show from the start, reading in a thread."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=60)
        self.ws.send(json.dumps({"type": "join", "show": "s1"}))
        assert json.loads(self.ws.recv())["type"] == "snapshot"
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self.ws.recv()
                if not data:
                    break
                message = json.loads(data)
                # A batch's messages, in order, each as if it had come alone (docs/protocol.md).
                for item in message["messages"] if message.get("type") == "batch" else [message]:
                    self.messages.put(item)
        except (websocket.WebSocketException, OSError):
            pass
        self.messages.put(None)  # closed

    def next_event(self, kind: str) -> dict[str, Any]:
        while True:
            message = self.messages.get(timeout=30)
            assert message is not None, "the watching viewer was disconnected"
            if message.get("type") == kind:
                return message


def dump(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key of the stack and its whole value, by type."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=f"{prefix}:*", count=1000)):
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            value = kind
        out[key.decode()] = (kind, value)
    return out


async def seed(stack: LocalStack, *, restock: bool = False) -> None:
    """Two shows with one drop each (or, with ``restock``, one unit more on s1/d1)."""
    import redis.asyncio as aioredis

    from livecommerce.core.config import load
    from livecommerce.core.model import DropSpec
    from livecommerce.store.inventory import Inventory

    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        inv = Inventory(client, Keyspace(stack.key_prefix), load({}))
        await inv.load()
        if restock:  # one unit more, published as any event: through the store's script
            await inv.restock("s1", "d1", 1)
            return
        for show in ("s1", "s2"):
            await inv.create_show(show, title=f"Fuzz {show}")
            await inv.start_show(show)
            await inv.create_drop(show, DropSpec(id="d1", sku="F-1", title="Fuzzed", quantity=50,
                                                 limit=5, prices={"EUR": 100}))  # fmt: skip
    finally:
        await client.aclose()


def run_campaign(
    stack: LocalStack, *, examples: int, min_batch: int = 1, max_batch: int = 40,
    mutants_per_frame: int = 1, seed_value: int | None = 0,
) -> dict[str, Any]:  # fmt: skip
    """Seed, fuzz ``examples`` batches, check; the report (``problems`` empty when all held)."""
    asyncio.run(seed(stack))
    ws_url = stack.url.replace("http://", "ws://") + "/ws"
    store = redis.Redis.from_url(stack.redis_url)
    watcher = Watcher(ws_url)
    try:
        return _campaign(stack, ws_url, store, watcher, examples, min_batch, max_batch,
                         mutants_per_frame, seed_value)  # fmt: skip
    finally:
        watcher.ws.close()
        store.close()


def _campaign(stack: LocalStack, ws_url: str, store: redis.Redis, watcher: Watcher,
              examples: int, min_batch: int, max_batch: int, mutants_per_frame: int,
              seed_value: int | None) -> dict[str, Any]:  # fmt: skip
    keys = Keyspace(stack.key_prefix)
    before = dump(store, stack.key_prefix)
    tally = Tally()
    pools: dict[Encoding, list[FuzzConnection]] = {}
    for encoding in Encoding:
        token = mint(stack.token_secret, f"fuzz-{encoding}", 24 * 3600)
        pools[encoding] = [
            FuzzConnection(ws_url, encoding, join=None, tally=tally),  # fuzzes the join too
            FuzzConnection(ws_url, encoding, join={"type": "join", "show": "s1"}, tally=tally),
            FuzzConnection(
                ws_url, encoding, tally=tally, join={"type": "join", "show": "s1", "token": token}
            ),
        ]

    def case(e: Encoding) -> st.SearchStrategy[tuple[Encoding, int, list[Any], int]]:
        return st.tuples(st.just(e), st.integers(0, 2), batches(e, min_size=min_batch,
                         max_size=max_batch), st.integers(0, 2**32))  # fmt: skip

    @settings(max_examples=examples, deadline=None, database=None,
              derandomize=seed_value is not None, suppress_health_check=list(HealthCheck),
              phases=[p for p in settings.default.phases if p.name != "shrink"])  # fmt: skip
    @given(st.sampled_from(list(Encoding)).flatmap(case))
    def fuzz(example: tuple[Encoding, int, list[Frame], int]) -> None:
        encoding, which, batch, rng_seed = example
        rng = random.Random(rng_seed)
        frames = batch + mutants(batch, rng, mutants_per_frame)
        rng.shuffle(frames)
        # The session sees every frame: a frame that ends the connection goes last, one a batch.
        kept = [f for f in frames if f.kind not in KILLERS]
        kept += [f for f in frames if f.kind in KILLERS][:1]
        pools[encoding][which].send_batch(kept)

    started = time.monotonic()
    fuzz()
    elapsed = time.monotonic() - started
    for pool in pools.values():
        for conn in pool:
            conn.close()

    problems: list[str] = []
    if stack.procs["server"].poll() is not None:
        problems.append(f"the server exited with {stack.procs['server'].returncode}")
    else:
        with urllib.request.urlopen(stack.url + "/readyz", timeout=5) as response:
            if response.status != 200:
                problems.append(f"/readyz answered {response.status}")
        asyncio.run(seed(stack, restock=True))
        try:
            if watcher.next_event("restocked")["data"]["added"] != 1:
                problems.append("the watcher received the wrong restock")
        except (AssertionError, queue.Empty) as exc:
            problems.append(f"the watcher received nothing: {exc}")

    after = dump(store, stack.key_prefix)
    volatile = {keys.viewers("s1"), keys.viewers("s2")}  # viewer-count heartbeats
    changed = {k for k in before.keys() | after.keys()
               if k not in volatile and before.get(k) != after.get(k)}  # fmt: skip
    written_by_restock = {*keys.drop("s1", "d1").as_list(), keys.events("s1")}
    written_by_commands = {keys.orders("s1"), keys.active, keys.aof_barrier}
    request_keys = {k for k in changed if k.startswith(keys.base("s1") + ":req:fuzz-")}
    unexplained = changed - written_by_restock - request_keys
    if tally.accepted:
        unexplained -= written_by_commands
    elif request_keys:
        problems.append(f"request records without an accepted command: {sorted(request_keys)}")
    if unexplained:
        problems.append(f"keys changed that no accepted command writes: {sorted(unexplained)}")
    return {**tally.as_dict(), "seconds": round(elapsed, 1),
            "frames_per_s": round(tally.frames / max(elapsed, 1e-9)),
            "changed_keys": sorted(changed), "problems": problems}  # fmt: skip
