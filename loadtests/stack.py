"""A whole local deployment for a load run, as real processes on loopback: the embedded Valkey,
the server (``python -m livecommerce serve``, N workers), the reference fulfillment sink and the
relay feeding it, plus a host API key. ``scripts/spike.py --local`` and the load tests use it.

::

    with LocalStack(Path("out/stack"), workers=2) as stack:
        stack.url, stack.host_key, stack.token_secret, stack.redis_url, stack.key_prefix

Each process logs to ``<dir>/<name>.log``. Stopping is ordered (server, relay, sink, Valkey), each
with SIGTERM and a bounded wait before SIGKILL.

The fault injection of ``scripts/spike.py --chaos`` (:mod:`loadtests.chaos`) uses the rest:
:meth:`LocalStack.gateway_pids` (the server's worker processes, which uvicorn's supervisor
restarts when one dies), :meth:`LocalStack.kill` / :meth:`LocalStack.respawn` for the relay and
the sink, and :meth:`LocalStack.stop_valkey` / :meth:`LocalStack.start_valkey` (same data directory,
same port).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from livecommerce.core.processes import stop_process
from livecommerce.fulfillment.webhooks import generate_secret
from livecommerce.store.embedded import EmbeddedValkey, free_port

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class StackError(RuntimeError):
    """A process of the local stack did not come up."""


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{url} not ready within {timeout_s:.0f} s")
        time.sleep(0.1)


class LocalStack:
    def __init__(
        self,
        directory: Path,
        *,
        workers: int = 1,
        relay: bool = True,
        key_prefix: str | None = None,
        env: dict[str, str] | None = None,
        src: Path | None = None,
    ) -> None:
        self.dir = directory
        self.src = src.resolve() if src is not None else None
        """The server's source tree (another checkout, to measure it with today's load tools);
        None: this checkout's. Every server process runs from it through the ``livecommerce``
        command, which older trees have too."""
        self.workers = workers
        self.with_relay = relay
        self.key_prefix = key_prefix or "lt" + secrets.token_hex(4)
        self.extra_env = env or {}
        self.token_secret = secrets.token_urlsafe(32)
        self.webhook_secret = generate_secret()
        self.port = free_port()
        self.sink_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.host_key = ""
        self.valkey: EmbeddedValkey | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, list[str]] = {}
        self._logs: list[object] = []

    @property
    def redis_url(self) -> str:
        assert self.valkey is not None
        return self.valkey.url

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        env.update(
            LIVECOMMERCE_REDIS_URL=self.redis_url,
            LIVECOMMERCE_KEY_PREFIX=self.key_prefix,
            LIVECOMMERCE_TOKEN_SECRET=self.token_secret,
            LIVECOMMERCE_WEBHOOK_SECRET=self.webhook_secret,
            LIVECOMMERCE_WEBHOOK_URL=f"http://127.0.0.1:{self.sink_port}/webhooks/orders",
            LIVECOMMERCE_DEMO="false",
            LIVECOMMERCE_LOG_LEVEL="warning",
            LIVECOMMERCE_DATA_DIR=str(self.dir / "data"),
        )
        env.update(self.extra_env)
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.src),
                                                              env.get("PYTHONPATH")]))  # fmt: skip
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self._commands[name] = args
        log = (self.dir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.src,  # ``python -m`` looks in the working directory first
            start_new_session=True,  # a Ctrl-C of the load tool does not kill the server first
        )
        self.procs[name] = proc
        return proc

    def start(self) -> LocalStack:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self.valkey = EmbeddedValkey(self.dir / "valkey").start()
            self.host_key = self._create_host_key()
            sink = self._spawn(
                "sink", ["-m", "livecommerce", "sink", "--port", str(self.sink_port)]
            )
            wait_http(self.sink_url + "/livez", READY_TIMEOUT_S, sink)
            if self.with_relay:
                self._spawn("relay", ["-m", "livecommerce", "relay"])
            server = self._spawn(
                "server",
                ["-m", "livecommerce", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--no-demo", "--workers", str(self.workers)],
            )  # fmt: skip
            wait_http(self.url + "/readyz", READY_TIMEOUT_S, server)
            relay = self.procs.get("relay")
            if relay is not None and relay.poll() is not None:
                raise StackError(f"the relay exited with {relay.returncode}: see relay.log")
        except BaseException:
            self.stop()
            raise
        return self

    def _create_host_key(self) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "livecommerce", "hostkey", "create", "--host", "loadtest",
             "--label", "load-testing kit", "--json"],
            env=self._env(), cwd=self.src, capture_output=True, text=True,
            timeout=READY_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise StackError(f"hostkey create exited {done.returncode}: {done.stderr[-500:]}")
        key: str = json.loads(done.stdout)["key"]
        return key

    @property
    def sink_url(self) -> str:
        return f"http://127.0.0.1:{self.sink_port}"

    # -- faults (loadtests.chaos) ---------------------------------------------------------------
    def gateway_pids(self) -> list[int]:
        """The server's worker processes (its direct children that run uvicorn's workers)."""
        server = self.procs["server"]
        if self.workers <= 1:
            return [server.pid]
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        pids = []
        for raw in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{raw}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:  # not multiprocessing's resource tracker
                pids.append(int(raw))
        return sorted(pids)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process of the stack (``relay``, ``sink``) and reap it."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def respawn(self, name: str) -> None:
        """Start a killed ``relay`` or ``sink`` again with its first command line."""
        proc = self._spawn(name, self._commands[name])
        if name == "sink":
            wait_http(self.sink_url + "/livez", READY_TIMEOUT_S, proc)

    def stop_valkey(self, *, kill: bool) -> None:
        """SIGTERM (Valkey fsyncs and exits) or, with ``kill``, SIGKILL (the AOF on disk is what
        is left); :meth:`start_valkey` brings it back on the same data directory and port."""
        assert self.valkey is not None
        if kill:
            self.valkey.kill()
        else:
            self.valkey.stop()

    def start_valkey(self) -> None:
        """Call from the thread that started the stack: Valkey dies with that thread."""
        old = self.valkey
        assert old is not None
        self.valkey = EmbeddedValkey(old.data_dir, port=old.port).start(timeout=READY_TIMEOUT_S)

    def stop(self) -> None:
        for name in ("server", "relay", "sink"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            stop_process(proc, STOP_TIMEOUT_S)
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        self._logs.clear()
        if self.valkey is not None:
            self.valkey.stop()
            self.valkey = None

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
