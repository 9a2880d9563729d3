"""Batches: several pushes in one frame, composed once per encoding from the frames' payloads;
the hub defers chat-class pushes into them and a durable event takes waiting ones along."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
from prometheus_client import CollectorRegistry

from livecommerce.realtime.batch import Batch, batch_of
from livecommerce.realtime.broker import MemoryBroker
from livecommerce.realtime.codec import Encoding, Frame, decode
from livecommerce.realtime.hub import Hub
from livecommerce.realtime.metrics import GatewayMetrics
from livecommerce.realtime.outbox import Outbox


class Sink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["text"]) for m in self.sent]


def chat(n: int) -> dict[str, Any]:
    return {"type": "chat", "ts": n, "data": {"id": f"{n}-0", "text": f"m{n}"}}


def test_batch_payload_is_spliced_from_the_frames_payloads_in_both_encodings() -> None:
    raw = orjson.dumps({"type": "drop_opened", "id": "7-0", "ts": 7, "data": {"x": "é"}}).decode()
    frames = [Frame(chat(1)), Frame(orjson.loads(raw), json=raw, event_id="7-0"), Frame(chat(2))]
    batch = Batch(frames)
    assert batch.event_id == "7-0"
    want = {"type": "batch", "messages": [f.message for f in frames]}
    text = batch.payload(Encoding.JSON)
    assert isinstance(text, str) and raw in text  # the published JSON, not re-encoded
    assert orjson.loads(text) == want
    assert decode(Encoding.MSGPACK, batch.payload(Encoding.MSGPACK)) == want
    assert batch.payload(Encoding.JSON) is text  # composed once
    assert batch.wire(Encoding.JSON) is batch.wire(Encoding.JSON)
    big = Batch([Frame(chat(n)) for n in range(70_000)])  # array32 header in msgpack
    assert len(msgpack.unpackb(big.payload(Encoding.MSGPACK))["messages"]) == 70_000


def test_after_drops_only_the_events_a_snapshot_reflected() -> None:
    frames = [Frame(chat(1)), Frame({"type": "x"}, event_id="5-0"), Frame(chat(2)),
              Frame({"type": "y"}, event_id="9-0")]  # fmt: skip
    batch = Batch(frames)
    assert batch.after((1, 0)) is batch
    kept = batch.after((5, 0))
    assert isinstance(kept, Batch) and kept.frames == (frames[0], frames[2], frames[3])
    only = Batch(frames[1:3]).after((5, 0))
    assert only is frames[2]  # one frame left: no batch around it
    assert batch_of([]) is None and batch_of(frames[:1]) is frames[0]


async def make() -> tuple[Hub, MemoryBroker]:
    broker = MemoryBroker()
    hub = Hub(broker, GatewayMetrics(CollectorRegistry()), stock_interval_s=1.0,
              batch_interval_s=0.0)  # fmt: skip
    hub.deferred.update({"chat"})
    await hub.start()
    return hub, broker


def box(sink: Sink) -> Outbox:
    return Outbox(Encoding.JSON, sink, max_queue=64, max_buffer=1 << 20,
                  on_overflow=lambda _: None)  # fmt: skip


async def next_turn() -> None:
    """Let the callbacks scheduled in this loop turn run (the hub's batch is one of them)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


async def test_chat_of_one_loop_turn_goes_out_as_one_frame_per_viewer() -> None:
    hub, broker = await make()
    sinks = [Sink() for _ in range(3)]
    for sink in sinks:
        await hub.join("s1", box(sink))
    for n in range(5):
        broker.publish("s1", chat(n))
    assert all(s.sent == [] for s in sinks)  # deferred to the end of the turn
    await next_turn()
    for sink in sinks:
        [frame] = sink.messages()
        assert frame["type"] == "batch" and [m["data"]["text"] for m in frame["messages"]] == [
            f"m{n}" for n in range(5)]  # fmt: skip
    assert len({id(s.sent[0]["text"]) for s in sinks}) == 1  # one encoding shared by all
    broker.publish("s1", chat(9))
    await next_turn()
    assert sinks[0].messages()[-1]["type"] == "chat"  # a lone push is not wrapped
    await hub.stop()


async def test_a_durable_event_takes_the_waiting_chat_along_in_order() -> None:
    hub, broker = await make()
    sink = Sink()
    await hub.join("s1", box(sink))
    broker.publish("s1", chat(1))
    broker.publish("s1", {"type": "drop_opened", "id": "3-0", "ts": 3, "data": {"id": "d1"}})
    [frame] = sink.messages()  # at once, not at the end of the turn
    assert [m["type"] for m in frame["messages"]] == ["chat", "drop_opened"]
    await next_turn()
    assert len(sink.sent) == 1  # nothing left behind
    await hub.stop()


async def test_a_joining_viewer_keeps_the_chat_of_a_held_batch() -> None:
    hub, broker = await make()
    sink = Sink()
    joining = box(sink)
    joining.hold()
    await hub.join("s1", joining)
    broker.publish("s1", chat(1))
    broker.publish("s1", {"type": "restocked", "id": "3-0", "ts": 3, "data": {"id": "d1"}})
    joining.release("3-0")  # its snapshot already reflects event 3-0
    assert [m["type"] for m in sink.messages()] == ["chat"]
    await hub.stop()
