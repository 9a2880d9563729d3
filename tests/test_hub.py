"""The hub with the in-memory broker: fan-out, coalescing, holding during join, slow consumers."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from livecommerce.codec import Encoding, Frame
from livecommerce.hub import Hub, MemoryBroker, Outbox
from livecommerce.metrics import GatewayMetrics


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def make() -> tuple[Hub, MemoryBroker, list[float]]:
    now = [100.0]
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics(CollectorRegistry()), stock_interval_s=1.0,
              clock=lambda: now[0])  # fmt: skip
    await hub.start()
    return hub, broker, now


def outbox(sink: Sink, overflowed: list[Outbox], **kw: Any) -> Outbox:
    return Outbox(Encoding.JSON, sink, max_queue=kw.get("max_queue", 8), max_buffer=1 << 20,
                  on_overflow=overflowed.append)  # fmt: skip


async def test_fanout_hold_and_release() -> None:
    hub, broker, _ = await make()
    a, b, over = Sink(), Sink(), []
    box_a, box_b = outbox(a, over), outbox(b, over)
    await hub.join("s1", box_a)
    box_b.hold()
    await hub.join("s1", box_b)
    assert broker.shows == {"s1"}
    for n in (1, 2, 3):
        broker.publish("s1", {"id": f"{n}-0", "type": "restocked", "ts": n, "data": {}})
    assert len(a.sent) == 3 and b.sent == []
    box_b.release("2-0")  # the snapshot already reflected events up to 2-0
    assert [m["text"] for m in b.sent] == [a.sent[2]["text"]]
    await hub.leave("s1", box_a)
    await hub.leave("s1", box_b)
    assert broker.shows == set()
    await hub.stop()


async def test_stock_coalesced_ends_on_final_value() -> None:
    hub, broker, now = await make()
    sink, over = Sink(), []
    await hub.join("s1", outbox(sink, over))
    for remaining in (9, 8, 7):
        broker.publish("s1", {"type": "stock", "ts": 1, "data": {"drop": "d1", "remaining":
                                                                 remaining}})  # fmt: skip
    assert len(sink.sent) == 1  # leading edge; the rest waits for the timer
    topic = hub.topics["s1"]
    assert topic.flush_timer is not None
    topic.flush_timer.cancel()
    now[0] += 1.0
    hub._flush(topic)
    assert len(sink.sent) == 2 and '"remaining":7' in sink.sent[-1]["text"]
    await hub.stop()


async def test_slow_consumer_overflow_does_not_touch_others() -> None:
    hub, broker, _ = await make()
    fast, over = Sink(), []
    slow_box = outbox(Sink(), over, max_queue=2)
    slow_box.hold()  # nothing leaves while holding: the queue fills
    await hub.join("s1", slow_box)
    await hub.join("s1", outbox(fast, over))
    for n in range(5):
        broker.publish("s1", {"id": f"{n}-1", "type": "restocked", "ts": n, "data": {}})
    assert over == [slow_box] and slow_box.closed and len(fast.sent) == 5
    await hub.stop()


def test_frame_shared() -> None:
    frame = Frame({"type": "x"})
    assert frame.asgi(Encoding.JSON)["text"] == '{"type":"x"}'
