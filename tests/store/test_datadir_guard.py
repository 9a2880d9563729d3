"""Two servers never write one AOF: the data directory's lock, Valkey dying with its parent
(a real SIGKILL of ``livecommerce serve``), and an orphan stopped before a new Valkey starts.
Also: what the server logs never carries a token from a URL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from livecommerce.core.errors import DataDirInUseError
from livecommerce.store.embedded import (
    PID_FILE,
    EmbeddedValkey,
    _running_in,
    free_port,
    stop_orphan,
)

pytestmark = pytest.mark.slow

REDIS_LINE = re.compile(r"embedded Valkey on (redis://\S+),")
SERVING = re.compile(r"livecommerce: serving on ")


def alive(pid: int, data_dir: Path) -> bool:
    return _running_in(pid, data_dir.resolve())


def wait_gone(pid: int, data_dir: Path, timeout: float = 30.0) -> bool:
    """Polls /proc until the process is gone (there is no event for another's child dying)."""
    deadline = time.monotonic() + timeout
    while alive(pid, data_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Serve:
    """``livecommerce serve --no-demo`` as a subprocess, its output collected line by line."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        env.update(LIVECOMMERCE_DATA_DIR=str(data_dir), LIVECOMMERCE_PORT=str(port),
                   LIVECOMMERCE_TOKEN_SECRET="s" * 32, LIVECOMMERCE_LOG_LEVEL="info")  # fmt: skip
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livecommerce", "serve", "--no-demo"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if m := pattern.search(line):
                return m
        pytest.fail(f"no {pattern.pattern!r} in:\n" + "".join(self.lines))

    def finish(self, sig: int | None = signal.SIGTERM) -> str:
        """Signal (unless None: it exits by itself) and collect the rest of the output."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        rest, _ = self.proc.communicate(timeout=30)
        self.lines.append(rest)
        return "".join(self.lines)


def test_sigkill_of_serve_takes_its_valkey_along_and_the_next_serve_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Serve(data_dir, free_port())
    try:
        url = first.wait_for(REDIS_LINE).group(1)
        first.wait_for(SERVING)
        redis.Redis.from_url(url).set("lc:guard", "kept")
        valkey = int((data_dir / PID_FILE).read_text())
        assert alive(valkey, data_dir)

        second = Serve(data_dir, free_port())  # same directory, while the first one runs
        output = second.finish(None)
        assert second.proc.returncode == 2, output
        assert "is in use by another livecommerce process" in output
        assert alive(valkey, data_dir)  # the first server's Valkey was not touched
        assert redis.Redis.from_url(url).get("lc:guard") == b"kept"
    finally:
        first.finish(signal.SIGKILL)
    assert wait_gone(valkey, data_dir), "the embedded Valkey outlived its SIGKILLed server"

    third = Serve(data_dir, free_port())
    try:
        url = third.wait_for(REDIS_LINE).group(1)
        third.wait_for(SERVING)
        assert redis.Redis.from_url(url).get("lc:guard") == b"kept"  # flushed on SIGTERM
    finally:
        third.finish()
    assert third.proc.returncode == 0, "".join(third.lines)


def test_an_orphaned_valkey_is_stopped_before_a_new_one_starts(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    data_dir.mkdir()
    # A Valkey whose server died without taking it along (started as an older version did).
    port = free_port()
    orphan = subprocess.Popen(EmbeddedValkey(data_dir)._args(port), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        (data_dir / PID_FILE).write_text(f"{orphan.pid}\n")
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.set("orphan", "wrote-this")
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        with EmbeddedValkey(data_dir) as server:
            assert orphan.poll() is not None, "the orphan still runs beside the new server"
            assert server.pid != orphan.pid
            assert redis.Redis(port=server.port).get("orphan") == b"wrote-this"
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait(10)


def test_the_lock_refuses_a_second_server_and_a_stale_pid_is_left_alone(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    with EmbeddedValkey(data_dir) as first:
        with pytest.raises(DataDirInUseError, match=f"pid {os.getpid()}"):
            EmbeddedValkey(data_dir).start()
        assert redis.Redis(port=first.port).ping()
    # A pid file naming a process that does not run there (here: this test) is not signalled.
    (data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    assert stop_orphan(data_dir) is None
    with EmbeddedValkey(data_dir) as again:  # the lock was released by stop()
        assert redis.Redis(port=again.port).ping()


def test_tokens_in_the_websocket_url_never_reach_the_log(tmp_path: Path) -> None:
    server = Serve(tmp_path / "data", free_port())
    secret = "eyJhbGciOiJIUzI1NiJ9.SECRET-TOKEN-VALUE.sig"
    try:
        server.wait_for(SERVING)

        async def knock() -> None:
            url = f"ws://127.0.0.1:{server.port}/ws?token={secret}&show=s1"
            async with connect(url) as ws:
                await ws.send('{"type": "ping"}')
                await ws.recv()
            with pytest.raises(WebSocketException):  # refused: unknown subprotocol
                async with connect(url, subprotocols=["nope"]):  # type: ignore[list-item]
                    pass

        asyncio.run(knock())
        httpx.get(f"http://127.0.0.1:{server.port}/livez?host_key={secret}", timeout=5)
    finally:
        output = server.finish()
    assert "WebSocket /ws?***" in output, output  # the line is there, its query is not
    assert "SECRET-TOKEN-VALUE" not in output, output
