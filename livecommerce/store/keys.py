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
    B:req:<viewer>:<rid>   string  first result of a request id (idempotency), expires
    B:orders               stream  confirmed orders: the outbox the relay reads
    B:events               stream  per-show event log for resume (bounded, MAXLEN ~)
    P:{s:<show>}:live      channel live events of the show (pub/sub)
    B:viewers              hash    gateway process id -> "<viewers>:<server ms>" (heartbeat)

Global (cross-slot) indexes, only ever written outside the atomic scripts::

    P:shows                zset    show ids scored by creation time
    P:schedule             zset    "<show>/<drop>" scored by the next time-driven transition
    P:active               set     "<show>/<drop>" that may hold stock (the reaper's worklist)
    P:products             hash    sku -> product record (JSON)
    P:hostkeys             hash    sha256(key) -> host key record (JSON)
    P:deadletters          stream  orders the relay gave up on (with the last error)
    P:aofbarrier           string  written before each WAITAOF round (durability.AofBarrier)
    P:{sink}:received      hash    reference sink: webhook-id -> what it received (JSON)
    P:{sink}:arrivals      list    reference sink: webhook-ids in order of first arrival
    P:{sink}:stats         hash    reference sink: counters (accepted, duplicates, rejected)
    P:{sink}:fail          hash    reference sink: injected failure mode (fault tests, demo)
    (one hash tag: the sink's record script touches them together, also on a cluster)
"""

from __future__ import annotations

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

    def channel(self, show: str) -> str:
        return f"{self.base(show)}:live"

    def viewers(self, show: str) -> str:
        return f"{self.base(show)}:viewers"

    def request(self, show: str, viewer: str, request_id: str) -> str:
        return f"{self.base(show)}:req:{viewer}:{request_id}"

    def drop(self, show: str, drop: str) -> DropKeys:
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
        )

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


def drop_member(show: str, drop: str) -> str:
    """Member of the global ``schedule``/``active`` indexes for one drop."""
    return f"{show}/{drop}"


def parse_drop_member(member: str) -> tuple[str, str]:
    show, _, drop = member.partition("/")
    return show, drop
