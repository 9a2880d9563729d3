"""Catching viewers up in place after the pub/sub link broke (realtime/recovery.py), with the
in-memory broker: each viewer gets what it missed after its own position, then what was held,
each event once, in order; a second loss during the catch-up's read is caught up again; a gap
the log cannot cover sends the viewers to reconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from helpers.polling import eventually
from test_hub import Sink, make, outbox

from livecommerce.realtime.outbox import Outbox
from livecommerce.realtime.recovery import Recovery


def event(n: int) -> dict[str, Any]:
    return {"id": f"{n}-0", "type": "restocked", "ts": n, "data": {"added": n}}


def ids(sink: Sink) -> list[str]:
    return [orjson.loads(m["text"])["id"] for m in sink.sent if "text" in m]


class Log:
    """The show's event log as the gateway's read gives it; ``during`` runs inside the read."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.reads: list[str] = []
        self.during: Any = None
        self.cover = True

    async def read_since(self, show: str, last: str) -> Any:
        self.reads.append(last)
        if self.during is not None:
            self.during, during = None, self.during
            during()
        if not self.cover:
            return None
        after = [e for e in self.events if int(e["id"].split("-")[0]) > int(last.split("-")[0])]
        return after, []


async def setup(log: Log) -> tuple[Any, Any, Recovery, list[list[Outbox]], list[Outbox]]:
    hub, broker, _ = await make()
    reconnected: list[list[Outbox]] = []
    filled: list[Outbox] = []
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        tasks.add(task)
        return task

    def caught_up(show: str, drops: list[dict[str, Any]], boxes: list[Outbox]) -> None:
        filled.extend(boxes)

    recovery = Recovery(
        hub, log.read_since, reconnect=reconnected.append, filled=caught_up, spawn=spawn
    )
    hub.on_lost = recovery.lost
    return hub, broker, recovery, reconnected, filled


async def test_each_viewer_gets_what_it_missed_after_its_own_position_once_in_order() -> None:
    log = Log([event(n) for n in range(1, 7)])
    hub, broker, recovery, reconnected, filled = await setup(log)
    early, late, over = Sink(), Sink(), []
    box_early, box_late = outbox(early, over), outbox(late, over)
    await hub.join("s1", box_early)
    broker.publish("s1", event(1))
    box_late.hold()  # joining: its snapshot reflects events up to 2
    await hub.join("s1", box_late)
    broker.publish("s1", event(2))
    box_late.release("2-0")
    hub._lost()  # the link broke: events 3 and 4 are published while nobody listens

    def published_after_subscribing() -> None:
        broker.publish("s1", event(5))  # live again, and in the log too: held, sent once
        broker.publish("s1", event(6))

    log.during = published_after_subscribing
    await eventually(lambda: _true(not recovery.active))
    assert log.reads == ["2-0"]  # from the earliest position among the show's viewers
    assert ids(early) == ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"]
    assert ids(late) == ["3-0", "4-0", "5-0", "6-0"]
    assert reconnected == [] and set(filled) == {box_early, box_late}
    broker.publish("s1", event(7))  # live as before
    assert ids(early)[-1] == ids(late)[-1] == "7-0"
    await hub.stop()


async def test_a_second_loss_during_the_read_is_caught_up_by_another_read() -> None:
    log = Log([event(n) for n in range(1, 4)])
    hub, broker, recovery, reconnected, _ = await setup(log)
    viewer, over = Sink(), []
    box = outbox(viewer, over)
    await hub.join("s1", box)
    broker.publish("s1", event(1))
    hub._lost()
    log.during = hub._lost  # the link breaks again while the first catch-up reads
    await eventually(lambda: _true(not recovery.active))
    assert len(log.reads) == 2  # the first read did not cover the second loss: read again
    assert ids(viewer) == ["1-0", "2-0", "3-0"] and reconnected == []
    await hub.stop()


async def test_a_gap_the_log_cannot_cover_sends_the_viewers_to_reconnect() -> None:
    log = Log([])
    log.cover = False
    hub, _, recovery, reconnected, filled = await setup(log)
    viewer, joining, over = Sink(), Sink(), []
    box, box_joining = outbox(viewer, over), outbox(joining, over)
    await hub.join("s1", box)
    box_joining.hold()  # its join's snapshot is being read: it may predate the loss
    await hub.join("s1", box_joining)
    hub._lost()
    await eventually(lambda: _true(not recovery.active))
    assert reconnected == [[box_joining], [box]] and filled == []
    await hub.stop()


async def _true(value: bool) -> bool:
    return value
