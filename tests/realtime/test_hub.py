"""The hub with the in-memory broker: fan-out, coalescing, holding during join, slow consumers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from websockets.client import ClientProtocol
from websockets.protocol import State as WSState
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from livecommerce.realtime.broker import MemoryBroker
from livecommerce.realtime.codec import Encoding, Frame
from livecommerce.realtime.hub import Hub
from livecommerce.realtime.metrics import GatewayMetrics
from livecommerce.realtime.outbox import Outbox


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


async def test_messages_read_together_reach_each_viewer_as_one_frame() -> None:
    """A last sale publishes sold_out, drop_closed and the stock level in one store step: the
    broker reads them together and every viewer gets them in one frame, in order."""
    hub, broker, _ = await make()
    a, b, over = Sink(), Sink(), []
    await hub.join("s1", outbox(a, over))
    await hub.join("s1", outbox(b, over))
    level = {"id": "d1", "remaining": 0, "held": 0, "sold": 10}
    broker.publish(
        "s1",
        {"id": "5-0", "type": "sold_out", "ts": 5, "data": level},
        {"id": "5-1", "type": "drop_closed", "ts": 5, "data": {**level, "state": "closed"}},
        {"type": "stock", "ts": 5, "data": {"drop": "d1", "remaining": 0, "held": 0, "sold": 10}},
    )
    for sink in (a, b):
        assert len(sink.sent) == 1
        frame = orjson.loads(sink.sent[0]["text"])
        assert frame["type"] == "batch"
        assert [m["type"] for m in frame["messages"]] == ["sold_out", "drop_closed", "stock"]
    assert hub.metrics.events._value.get() == 2  # two durable events, in one frame
    broker.publish("s1", {"id": "6-0", "type": "restocked", "ts": 6, "data": {}})
    assert orjson.loads(a.sent[-1]["text"])["type"] == "restocked"  # alone: no batch
    await hub.stop()


class SlowSink(Sink):
    """A viewer whose every write takes ``delay`` seconds of the process (a loaded socket)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def __call__(self, message: dict[str, Any]) -> None:
        time.sleep(self.delay)  # noqa: ASYNC251 - on purpose: the write holds the process
        self.sent.append(message)


async def test_stock_pushes_stretch_to_keep_their_fanout_within_the_budget() -> None:
    """stock_interval 0 (every level at once) and a budget of 10 %: after a fan-out that took
    20 ms the next stock push waits at least 200 ms; with quick viewers it goes at once."""
    await stock_gap_case(delay=0.02, held_back=True)
    await stock_gap_case(delay=0.0, held_back=False)


async def stock_gap_case(*, delay: float, held_back: bool) -> None:
    now = [100.0]
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics(CollectorRegistry()), stock_interval_s=0.0,
              stock_budget=0.1, clock=lambda: now[0])  # fmt: skip
    await hub.start()
    sink, over = SlowSink(delay), []
    await hub.join("s1", outbox(sink, over))
    stock = {"type": "stock", "ts": 1, "data": {"drop": "d1", "remaining": 9}}
    broker.publish("s1", stock)
    assert len(sink.sent) == 1
    topic = hub.topics["s1"]
    assert (hub.stock_gap(topic) >= 0.2) is held_back
    now[0] += 0.01
    broker.publish("s1", {**stock, "data": {"drop": "d1", "remaining": 8}})
    assert (len(sink.sent) == 1) is held_back
    assert (topic.flush_timer is not None) is held_back
    if topic.flush_timer is not None:  # the timer sends the latest level once the gap is over
        topic.flush_timer.cancel()
        now[0] += hub.stock_gap(topic)
        hub._flush(topic)
        assert len(sink.sent) == 2 and '"remaining":8' in sink.sent[-1]["text"]
    await hub.stop()


def test_frame_encodes_json_text_once() -> None:
    frame = Frame({"type": "x"})
    assert frame.asgi(Encoding.JSON)["text"] == '{"type":"x"}'


class FakeTransport:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


class FakeSansIO:
    """What the hub relies on in uvicorn's websockets-sansio protocol, and its ASGI ``send``."""

    def __init__(self) -> None:
        self.conn = ServerProtocol(state=WSState.OPEN)
        self.transport = FakeTransport()
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = False
        self.disconnected = False
        self.asgi_sends = 0
        self.wrote = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.asgi_sends += 1
        self.conn.send_text(message["text"].encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.wrote.set()

    def texts(self) -> list[str]:
        reader = ClientProtocol(parse_uri("ws://x/"), state=WSState.OPEN)
        reader.receive_data(b"".join(self.transport.chunks))
        return [event.data.decode() for event in reader.events_received()]


async def test_outbox_writes_frames_to_the_transport_and_waits_while_paused() -> None:
    proto, over = FakeSansIO(), []
    box = Outbox(Encoding.JSON, proto.send, max_queue=2, max_buffer=1 << 20,
                 on_overflow=over.append)  # fmt: skip
    assert box._direct is proto
    box.push(Frame({"n": 1}))
    assert proto.asgi_sends == 0 and box.sent == 1  # written at once, no ASGI event
    assert box._queue is None and box._task is None  # kept up: no queue, no writer task
    proto.writable.clear()  # the transport asks to pause writing
    box.push(Frame({"n": 2}))
    box.push(Frame({"n": 3}))
    assert box.sent == 1  # queued, in order, for the writer task
    box.push(Frame({"n": 4}))
    box.push(Frame({"n": 5}))  # beyond max_queue: a slow consumer
    assert over == [box] and box.closed
    await box.aclose()

    proto, over = FakeSansIO(), []
    box = Outbox(Encoding.JSON, proto.send, max_queue=8, max_buffer=1 << 20,
                 on_overflow=over.append)  # fmt: skip
    box.push(Frame({"n": 1}))
    proto.writable.clear()
    box.push(Frame({"n": 2}))
    box.push(Frame({"n": 3}))
    proto.writable.set()
    while box.sent < 3:
        proto.wrote.clear()
        await asyncio.wait_for(proto.wrote.wait(), 5)
    box.push(Frame({"n": 4}))  # the queue is empty again: straight to the transport
    assert [orjson.loads(t)["n"] for t in proto.texts()] == [1, 2, 3, 4]
    assert proto.asgi_sends == 2 and not over
    proto.close_sent = True  # the endpoint closed: nothing more goes out
    box.push(Frame({"n": 5}))
    assert box.closed and len(proto.texts()) == 4
    await box.aclose()


async def test_outbox_keeps_the_asgi_send_with_an_extension() -> None:
    proto = FakeSansIO()
    proto.conn.extensions = [object()]  # type: ignore[list-item]  # e.g. permessage-deflate
    box = Outbox(Encoding.JSON, proto.send, max_queue=8, max_buffer=1 << 20,
                 on_overflow=lambda _: None)  # fmt: skip
    assert box._direct is None
    proto.conn.extensions = []
    box.push(Frame({"n": 1}))
    assert proto.asgi_sends == 1 and proto.texts() == ['{"n":1}']
    await box.aclose()


async def test_a_live_event_the_join_snapshot_already_reflected_is_not_sent_again() -> None:
    """The snapshot (one connection) can be read before the hub passes on an event it reflects
    (the pub/sub connection): released with the snapshot's id, the outbox drops that event."""
    hub, broker, _ = await make()
    sink, over = Sink(), []
    box = outbox(sink, over)
    box.hold()
    await hub.join("s1", box)
    box.release("3-0")  # the snapshot reflected events up to 3-0, not yet passed on here
    for n in (3, 4):
        broker.publish("s1", {"id": f"{n}-0", "type": "restocked", "ts": n, "data": {}})
    assert [orjson.loads(m["text"])["id"] for m in sink.sent] == ["4-0"]
    assert box.position == "4-0"
    await hub.stop()
