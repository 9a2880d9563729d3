"""Several pushes to a show's viewers as one frame: ``{"type": "batch", "messages": [...]}``.

The hub coalesces chat-class pushes of a show (chat messages, moderation, reaction counts) and
sends them as one :class:`Batch` per interval, and a durable event that arrives while some wait
takes them along in the same frame. A batch is one :class:`~livecommerce.realtime.codec.Frame`
shared by every viewer: its payload is composed once per encoding from the payloads its
messages already have (the JSON text Redis published is spliced in, never re-encoded), and its
wire frame is built once per encoding too. See docs/protocol.md, "Batches".
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack

from livecommerce.realtime.codec import Encoding, Frame, parse_event_id

_HEAD_JSON = '{"type":"batch","messages":['
_HEAD_MSGPACK = (
    b"\x82"
    + msgpack.packb("type", use_bin_type=True)
    + msgpack.packb("batch", use_bin_type=True)
    + msgpack.packb("messages", use_bin_type=True)
)


class Batch(Frame):
    """Frames in order, as one frame. ``event_id`` is the last durable event's id, if any."""

    __slots__ = ("frames",)

    def __init__(self, frames: Sequence[Frame]) -> None:
        ids = [f.event_id for f in frames if f.event_id is not None]
        super().__init__({"type": "batch", "messages": [f.message for f in frames]},
                         event_id=max(ids, key=parse_event_id) if ids else None)  # fmt: skip
        self.frames = tuple(frames)

    def payload(self, encoding: Encoding) -> str | bytes:
        if encoding is Encoding.JSON:
            if self._json is None:
                parts = [f.payload(encoding) for f in self.frames]
                self._json = _HEAD_JSON + ",".join(p for p in parts if isinstance(p, str)) + "]}"
            return self._json
        if self._msgpack is None:
            header: bytes = msgpack.Packer().pack_array_header(len(self.frames))
            body = b"".join(p for f in self.frames if isinstance(p := f.payload(encoding), bytes))
            self._msgpack = _HEAD_MSGPACK + header + body
        return self._msgpack

    def after(self, floor: tuple[int, int]) -> Frame | None:
        """The batch minus the durable events at or before ``floor`` (a viewer's snapshot)."""
        kept = [f for f in self.frames if (f.after(floor) is not None)]
        if len(kept) == len(self.frames):
            return self
        return batch_of(kept)


def batch_of(frames: Sequence[Frame]) -> Frame | None:
    """None for no frame, the frame itself for one, else a :class:`Batch`."""
    if not frames:
        return None
    if len(frames) == 1:
        return frames[0]
    return Batch(frames)
