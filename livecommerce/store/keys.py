"""Every Redis key and channel name livecommerce uses, in one place.

All keys of one show -- the show itself, its drops, holds, orders outbox and event log -- carry the
show's hash tag ``{s:<show>}`` so that they live in one Redis Cluster slot and one Lua script can
change stock, write the order to the outbox and append the event in a single atomic step.

Layout (``P`` is the configurable prefix, default ``lc``; ``B`` is ``P:{s:<show>}``)::

    B:show                 hash    show record (title, host, video_url, state, ...)
    B:drops                zset    drop ids of the show, scored by creation time (ms)
    B:seq                  hash    counters: hold and order sequence numbers per drop
    B:drop:<d>             hash    drop record and counters (remaining, held, sold, ...)
    B:drop:<d>:holds       zset    active hold numbers scored by expiry (ms, server clock)
    B:drop:<d>:holdrec     hash    hold number -> hold record (JSON), kept after it ends
    B:drop:<d>:held        hash    viewer -> units currently held
    B:drop:<d>:bought      hash    viewer -> units bought
    B:drop:<d>:orders      hash    order id -> units, every confirmed order of the drop
    B:drop:<d>:payers      hash    sha1(drop key | payment reference) -> units bought with it
    B:drop:<d>:line        hash    the drop's waiting line: "next" ticket taken, "done" answered
    B:req:<viewer>:<rid>   string  first result of a request id (idempotency), expires
    B:orders               stream  confirmed orders: the outbox the relay reads
    B:events               stream  per-show event log for resume (bounded, MAXLEN ~)
    B:erased               hash    erasure ledger: orders-stream entry id -> pseudonymised copy
    B:blocks               hash    "viewer:<id>" / "address:<ip>" -> block record (JSON)
    P:{s:<show>}:live      channel live events of the show (pub/sub)
    B:viewers              hash    gateway process id -> "<viewers>:<server ms>" (heartbeat)
    B:chat                 stream  chat history (bounded, exact MAXLEN; deleted messages XDEL'd)
    B:chat:settings        hash    enabled (0/1), slow_ms, pinned (JSON of the pinned message)
    B:chat:words           set     the host's word filter (casefolded words)
    B:chat:mutes           hash    viewer -> muted until (server ms; -1 = for the whole show)
    B:chat:mods            set     viewer ids the host named moderators
    B:chat:questions       zset    open questions: chat message id scored by its time (ms)
    B:chat:slow:<viewer>   string  slow-mode marker of one viewer (PX = the slow-mode interval)
    B:chat:req:<viewer>:<rid> string  "<message id> <ms>" of a posted request id (idempotency)
    B:xfers                hash    stock transfer id -> "applied" or its refusal (stock-sync.md)
    B:drop:<d>:returns     hash    settlement id -> {"r": returned, "s": sold} not yet credited

Per SKU stock pool (``K`` is ``P:{k:<sku>}``: its own hash tag, often another slot than a show)::

    K:pool                 hash    ledger: on_hand, version, pool, out, back, sold, adjust, short
    K:xfer                 hash    transfer id -> pending allocation (JSON)
    K:credited             set     settlement ids credited to the pool
    K:drops                set     "<show>/<drop>" of the drops that allocated from the pool
    K:deliveries           zset    inbound delivery ids, scored by arrival (ms)
    K:adjusted             stream  inventory.adjusted outbox of the SKU

Global (cross-slot) indexes, only ever written outside the atomic scripts::

    P:shows                zset    show ids scored by creation time
    P:schedule             zset    "<show>/<drop>" scored by the next time-driven transition
    P:active               set     "<show>/<drop>" that may hold stock (the reaper's worklist)
    P:products             hash    sku -> product record (JSON)
    P:pools                set     skus that have a stock pool
    P:xfers                set     skus that may have pending transfers (recovery worklist)
    P:pooled               set     "<show>/<drop>" pooled drops not yet settled for good
    P:syncitems:<source>   hash    a source's item id -> sku (Shopify inventory_item_id)
    P:hostkeys             hash    sha256(key) -> host key record (JSON)
    P:operatorkeys         hash    sha256(key) -> operator key record (JSON; privacy routes)
    P:deadletters          stream  orders the relay gave up on (with the last error)
    P:aofbarrier           string  written before each WAITAOF round (durability.AofBarrier)
    P:{sink}:received      hash    reference sink: webhook-id -> what it received (JSON)
    P:{sink}:arrivals      list    reference sink: webhook-ids in order of first arrival
    P:{sink}:stats         hash    reference sink: counters (accepted, duplicates, rejected)
    P:{sink}:fail          hash    reference sink: injected failure mode (fault tests, demo)
    P:{sink}:erased        hash    reference sink: order id -> pseudonym (order.erased received)
    (one hash tag: the sink's record script touches them together, also on a cluster)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class DropKeys:
    """The keys one drop's scripts touch, in the order every inventory script expects them."""

    drop: str
    holds: str
    holdrec: str
    held: str
    bought: str
    orders_index: str
    orders: str
    events: str
    seq: str
    payers: str = ""
    """Units per payment reference (one-way hash): the limit across viewer ids sharing one.
    Not in :meth:`as_list`; the sale scripts take it as a script-specific key."""

    def as_list(self) -> list[str]:
        return [
            self.drop,
            self.holds,
            self.holdrec,
            self.held,
            self.bought,
            self.orders_index,
            self.orders,
            self.events,
            self.seq,
        ]


@dataclass(frozen=True)
class ChatKeys:
    """The keys of one show's chat (all under the show's hash tag)."""

    history: str
    settings: str
    words: str
    mutes: str
    mods: str
    questions: str
    slow_prefix: str
    channel: str

    def slow(self, viewer: str) -> str:
        return self.slow_prefix + viewer

    def request(self, viewer: str, request_id: str) -> str:
        """First reply to a chat post's request id (a resent post is not posted twice)."""
        return f"{self.history}:req:{viewer}:{request_id}"


@dataclass(frozen=True)
class SkuKeys:
    """The keys of one SKU's stock pool (one hash tag: one slot)."""

    pool: str
    xfer: str
    credited: str
    drops: str
    deliveries: str
    adjusted: str


@dataclass(frozen=True)
class Keyspace:
    """Key and channel names under one prefix (tests use one prefix each)."""

    prefix: str = "lc"

    # -- per show (one hash tag) ---------------------------------------------------------------
    def base(self, show: str) -> str:
        return f"{self.prefix}:{{s:{show}}}"

    def show(self, show: str) -> str:
        return f"{self.base(show)}:show"

    def drops(self, show: str) -> str:
        return f"{self.base(show)}:drops"

    def seq(self, show: str) -> str:
        return f"{self.base(show)}:seq"

    def orders(self, show: str) -> str:
        return f"{self.base(show)}:orders"

    def events(self, show: str) -> str:
        return f"{self.base(show)}:events"

    def blocks(self, show: str) -> str:
        return f"{self.base(show)}:blocks"

    def erased(self, show: str) -> str:
        return f"{self.base(show)}:erased"

    def channel(self, show: str) -> str:
        return f"{self.base(show)}:live"

    def viewers(self, show: str) -> str:
        return f"{self.base(show)}:viewers"

    def chat(self, show: str) -> ChatKeys:
        c = f"{self.base(show)}:chat"
        return ChatKeys(history=c, settings=f"{c}:settings", words=f"{c}:words",
                        mutes=f"{c}:mutes", mods=f"{c}:mods", questions=f"{c}:questions",
                        slow_prefix=f"{c}:slow:", channel=self.channel(show))  # fmt: skip

    def line(self, show: str, drop: str) -> str:
        """The drop's waiting line counters (realtime/line.py)."""
        return f"{self.base(show)}:drop:{drop}:line"

    def request(self, show: str, viewer: str, request_id: str) -> str:
        return f"{self.base(show)}:req:{viewer}:{request_id}"

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - Keyspace is a frozen value, kept for good
    def drop(self, show: str, drop: str) -> DropKeys:
        """One drop's keys (immutable; cached: every attempt of a burst asks for the same)."""
        d = f"{self.base(show)}:drop:{drop}"
        return DropKeys(
            drop=d,
            holds=f"{d}:holds",
            holdrec=f"{d}:holdrec",
            held=f"{d}:held",
            bought=f"{d}:bought",
            orders_index=f"{d}:orders",
            orders=self.orders(show),
            events=self.events(show),
            seq=self.seq(show),
            payers=f"{d}:payers",
        )

    def xfers(self, show: str) -> str:
        return f"{self.base(show)}:xfers"

    def returns(self, show: str, drop: str) -> str:
        return f"{self.base(show)}:drop:{drop}:returns"

    # -- per sku stock pool (its own hash tag) -------------------------------------------------
    def sku(self, sku: str) -> SkuKeys:
        base = f"{self.prefix}:{{k:{sku}}}"
        return SkuKeys(
            pool=f"{base}:pool",
            xfer=f"{base}:xfer",
            credited=f"{base}:credited",
            drops=f"{base}:drops",
            deliveries=f"{base}:deliveries",
            adjusted=f"{base}:adjusted",
        )

    @property
    def pools(self) -> str:
        return f"{self.prefix}:pools"

    @property
    def pending_xfers(self) -> str:
        return f"{self.prefix}:xfers"

    @property
    def pooled(self) -> str:
        return f"{self.prefix}:pooled"

    def sync_items(self, source: str) -> str:
        return f"{self.prefix}:syncitems:{source}"

    # -- global indexes --------------------------------------------------------------------------
    @property
    def shows(self) -> str:
        return f"{self.prefix}:shows"

    @property
    def schedule(self) -> str:
        return f"{self.prefix}:schedule"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def products(self) -> str:
        return f"{self.prefix}:products"

    @property
    def host_keys(self) -> str:
        return f"{self.prefix}:hostkeys"

    @property
    def operator_keys(self) -> str:
        return f"{self.prefix}:operatorkeys"

    @property
    def aof_barrier(self) -> str:
        return f"{self.prefix}:aofbarrier"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:deadletters"

    @property
    def sink_prefix(self) -> str:
        """Keys of the reference fulfillment sink (a separate service; own namespace and tag)."""
        return f"{self.prefix}:{{sink}}"

    @property
    def sink_received(self) -> str:
        return f"{self.sink_prefix}:received"

    @property
    def sink_arrivals(self) -> str:
        return f"{self.sink_prefix}:arrivals"

    @property
    def sink_stats(self) -> str:
        return f"{self.sink_prefix}:stats"

    @property
    def sink_fail(self) -> str:
        return f"{self.sink_prefix}:fail"

    @property
    def sink_erased(self) -> str:
        return f"{self.sink_prefix}:erased"


def drop_member(show: str, drop: str) -> str:
    """Member of the global ``schedule``/``active`` indexes for one drop."""
    return f"{show}/{drop}"


def parse_drop_member(member: str) -> tuple[str, str]:
    show, _, drop = member.partition("/")
    return show, drop
