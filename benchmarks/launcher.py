"""Start and stop a ``hubbub serve`` process (or a ``redis-server``) for a benchmark.

The node listens on free loopback ports (port 0) and its ports are read from
its ``event=listening`` log line (PROTOCOL.md §7). The benchmark config only
lifts the per-connection command rate limit so one publisher connection may
publish at the rates measured; everything else is the default. A
:class:`RedisServer` (no persistence, loopback only) is stopped by the same
:func:`stop_all` as the nodes.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent

#: A publisher sends up to a few hundred commands/s on one connection.
BENCH_CONFIG = """\
[server]
log_level = "info"

[limits]
messages_per_second = 1000000
message_burst = 1000000
"""


_PR_SET_PDEATHSIG = 1
_live: set[ServerProcess | RedisServer] = set()


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the benchmark dies, however it
    dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so no server outlives a killed run."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guard
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_all() -> None:
    """Stop every server (nodes and Redis) this process started and has not stopped yet."""
    for server in list(_live):
        server.stop()


class ServerProcess:
    """A running ``hubbub serve`` on 127.0.0.1; a context manager that always stops it."""

    def __init__(
        self, config: str = BENCH_CONFIG, start_timeout: float = 15.0, args: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.start_timeout = start_timeout
        self.args = tuple(args)  # more ``serve`` flags, e.g. ("--redis", URL)
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self._config_path: str | None = None
        self._ready = threading.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def address(self, name: str) -> tuple[str, int]:
        return self.addresses[name]

    def start(self) -> ServerProcess:
        fd, self._config_path = tempfile.mkstemp(suffix=".toml", prefix="hubbub-bench-")
        with os.fdopen(fd, "w") as fh:
            fh.write(self.config)
        cmd = [
            sys.executable,
            "-m",
            "hubbub.server.cli",
            "serve",
            "--config",
            self._config_path,
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            *self.args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        _live.add(self)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(self.start_timeout) or not self.addresses:
            self.stop()
            raise RuntimeError("hubbub did not start:\n" + "\n".join(self.lines))
        return self

    def _pump(self) -> None:
        """Read the log (so the pipe never fills) and catch the listening line."""
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            if "event=listening" in line and not self._ready.is_set():
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                for name in ("tcp", "ws", "admin"):
                    if name in fields:
                        host, _, port = fields[name].rpartition(":")
                        self.addresses[name] = (host, int(port))
                self._ready.set()
        self._ready.set()

    def log_count(self, event: str) -> int:
        """How many of the last log lines are ``event``."""
        return sum(1 for line in self.lines if f"event={event} " in line + " ")

    def stop(self) -> None:
        """SIGINT twice (drain, then close at once); SIGKILL if still there after 5 s."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _live.discard(self)
        if self._config_path is not None:
            os.unlink(self._config_path)
            self._config_path = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (redis-server cannot pick one itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` on a free loopback port, no persistence; a context manager
    that always stops it (and :func:`stop_all` does too)."""

    def __init__(self, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="hubbub-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        _live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM (no persistence: nothing to save); SIGKILL if still there after 5 s."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _live.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
