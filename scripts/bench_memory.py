"""Memory per viewer: one gateway process (``livecommerce serve``, one worker, real Valkey) holding
thousands of idle viewers, and its growth over a soak with drops and event traffic.

Viewers are minimal raw WebSocket clients in this process (asyncio protocols that join, answer
the server's keepalive pings and discard everything else), so the figure is the server's alone.
RSS is read from /proc/<pid>/status.

- per viewer: (RSS with ``--viewers`` joined - RSS with ``--base`` joined) / (viewers - base);
- soak: ``--soak-s`` seconds with a new drop every 10 s and ``--events-per-s`` restocks (each an
  event of ~200 bytes fanned out to every viewer); RSS sampled every 5 s, growth reported as the
  last sample minus the first and as a least-squares slope (KB per minute).

    .venv/bin/python scripts/bench_memory.py --viewers 10000 --soak-s 120
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis

from livecommerce.core.config import load
from livecommerce.core.model import DropSpec
from livecommerce.store.inventory import Inventory
from livecommerce.store.keys import Keyspace
from loadtests.stack import LocalStack


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n, first = len(payload), 0x80 | opcode
    header = struct.pack("!BB", first, 0x80 | n) if n < 126 else struct.pack("!BBH", first, 0xFE, n)
    return header + mask + body


class Viewer(asyncio.Protocol):
    """Handshake, join, answer pings, discard the rest (an idle viewer that keeps up)."""

    def __init__(self, port: int, join: bytes, joined: asyncio.Future[None]) -> None:
        self.port = port
        self.join = join
        self.joined = joined
        self.buffer = b""
        self.received = 0
        self.lost = False
        self.lost_at = 0.0
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        )  # fmt: skip
        self.upgraded = False

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if not self.joined.done():
            self.buffer += data
            if not self.upgraded:
                if b"\r\n\r\n" not in self.buffer:
                    return
                if not self.buffer.startswith(b"HTTP/1.1 101"):
                    self.joined.set_exception(ConnectionError(self.buffer[:200].decode()))
                    return
                self.upgraded = True
                self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
                self.transport.write(masked(self.join))
            if b"snapshot" in self.buffer:
                self.joined.set_result(None)
            else:
                return
        else:
            self.buffer += data
        self._frames()

    def _frames(self) -> None:
        """Walk the server's frames: answer pings (RFC 6455 5.5.2), note a close, drop the rest."""
        buf = self.buffer
        while len(buf) >= 2:
            opcode, n, start = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, start = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, start = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < start + n:
                break
            payload = buf[start : start + n]
            if opcode == 0x9:
                self.transport.write(masked(payload, opcode=0xA))
            elif opcode == 0x8 and n >= 2:
                self.close_code = int.from_bytes(payload[:2], "big")
            buf = buf[start + n :]
        self.buffer = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_at = time.monotonic()
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(str(exc)))


async def connect(port: int, count: int, viewers: list[Viewer]) -> None:
    loop = asyncio.get_running_loop()
    join = json.dumps({"type": "join", "show": "mem"}).encode()
    slots = asyncio.Semaphore(200)

    async def one() -> None:
        async with slots:
            joined: asyncio.Future[None] = loop.create_future()
            _, protocol = await loop.create_connection(
                lambda: Viewer(port, join, joined), "127.0.0.1", port
            )
            viewers.append(protocol)
            await asyncio.wait_for(joined, 60)

    await asyncio.gather(*(one() for _ in range(count)))


async def settle(pid: int, seconds: float = 3.0) -> int:
    """RSS once it stops moving (the joins' transient buffers freed), at most ``seconds``."""
    await asyncio.sleep(1.0)
    last = rss_kb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (r - mr) for t, r in samples) / var if var else 0.0


async def run(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    pid = stack.procs["server"].pid
    client = aioredis.Redis.from_url(stack.redis_url)
    inv = Inventory(client, Keyspace(stack.key_prefix), load({}))
    await inv.load()
    await inv.create_show("mem", title="Memory")
    await inv.start_show("mem")
    await inv.create_drop("mem", DropSpec(id="d0", sku="M-0", title="Soak", quantity=10**6,
                                          limit=5, prices={"EUR": 100}))  # fmt: skip
    viewers: list[Viewer] = []
    idle = await settle(pid)
    await connect(stack.port, args.base, viewers)
    base = await settle(pid)
    started = time.monotonic()
    await connect(stack.port, args.viewers - args.base, viewers)
    connect_s = time.monotonic() - started
    full = await settle(pid, 10.0)
    per_viewer = (full - base) * 1024 / (args.viewers - args.base)

    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    drops = events = 0
    next_sample = t0
    while (now := time.monotonic()) - t0 < args.soak_s:
        if now >= next_sample:
            samples.append((now - t0, rss_kb(pid)))
            next_sample += 5.0
        if int((now - t0) // 10) >= drops:
            drops += 1
            spec = DropSpec(id=f"d{drops}", sku=f"M-{drops}", title="x" * 60, quantity=100,
                            limit=5, prices={"EUR": 100})  # fmt: skip
            await inv.create_drop("mem", spec)
        await inv.restock("mem", "d0", 1)
        events += 1
        await asyncio.sleep(1 / args.events_per_s)
    samples.append((time.monotonic() - t0, rss_kb(pid)))
    lost = sum(v.lost for v in viewers)
    codes = collections.Counter(str(v.close_code) for v in viewers if v.lost)
    lost_after = sorted(round(v.lost_at - t0) for v in viewers if v.lost)
    received = sum(v.received for v in viewers)
    for v in viewers:
        v.transport.close()
    await client.aclose()
    return {
        "viewers": args.viewers, "base_viewers": args.base, "connect_s": round(connect_s, 1),
        "rss_idle_kb": idle, "rss_base_kb": base, "rss_full_kb": full,
        "rss_per_viewer_bytes": round(per_viewer), "rss_per_viewer_kb": round(per_viewer / 1024, 1),
        "soak_s": args.soak_s, "soak_events": events, "soak_drops": drops,
        "soak_rss_first_kb": samples[0][1], "soak_rss_last_kb": samples[-1][1],
        "soak_growth_kb": samples[-1][1] - samples[0][1],
        "soak_slope_kb_per_min": round(slope_kb_per_min(samples), 1),
        "viewers_lost": lost, "lost_close_codes": dict(codes),
        "lost_after_s": lost_after[:1] + lost_after[-1:], "bytes_received": received,
        "samples": samples,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=10_000)
    parser.add_argument("--base", type=int, default=100, help="viewers of the baseline")
    parser.add_argument("--soak-s", type=float, default=120.0)
    parser.add_argument("--events-per-s", type=float, default=2.0)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    env = {"LIVECOMMERCE_LOG_LEVEL": "warning"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp,
        LocalStack(Path(tmp), relay=False, env=env) as stack,
    ):
        report = asyncio.run(run(stack, args))
    shown = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(shown, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
