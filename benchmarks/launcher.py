"""Real processes on free loopback ports: ``hubbub serve`` nodes and ``redis-server``.

The one launcher of the tree: the tests (through ``tests/procs.py``) and the
benchmarks start their nodes and Redis servers here. A node is started with
port 0 and its ports are read from its ``event=listening`` log line
(PROTOCOL.md §7: "the startup log says which"). A benchmark passes
``die_with_parent=True`` so no server outlives a killed run, and
:func:`stop_all` stops whatever this process started and has not stopped yet.
:data:`BENCH_CONFIG` only lifts the per-connection command rate limit, so one
publisher connection may publish at the rates measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
HUBBUB = [sys.executable, "-m", "hubbub.server.cli"]

#: A benchmark publisher sends up to a few hundred commands/s on one connection.
BENCH_CONFIG = """\
[server]
log_level = "info"

[limits]
messages_per_second = 1000000
message_burst = 1000000
"""

_PR_SET_PDEATHSIG = 1
_live: set[NodeProc | RedisProc] = set()


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies, however it
    dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such guard
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_guard = die_with_parent  # the ``die_with_parent`` flags below shadow the name


def stop_all() -> None:
    """Stop every node and Redis this process started and has not stopped yet."""
    for server in list(_live):
        server.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (redis-server cannot pick one itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Stopped:
    """A server that is stopped on leaving a ``with`` block."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(eq=False)
class NodeProc(_Stopped):
    """A running ``hubbub serve`` process."""

    proc: subprocess.Popen[str]
    tcp: tuple[str, int] | None = None
    ws: tuple[str, int] | None = None
    admin: tuple[str, int] | None = None
    node_id: str = ""
    lines: list[str] = field(default_factory=list)
    config_path: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def address(self, name: str) -> tuple[str, int]:
        """Host and port of listener ``name`` (``tcp``, ``ws`` or ``admin``)."""
        address: tuple[str, int] | None = getattr(self, name)
        assert address is not None, f"no {name} listener"
        return address

    @property
    def tcp_url(self) -> str:
        assert self.tcp
        return f"tcp://{self.tcp[0]}:{self.tcp[1]}"

    @property
    def ws_url(self) -> str:
        assert self.ws
        return f"ws://{self.ws[0]}:{self.ws[1]}/ws"

    @property
    def admin_url(self) -> str:
        assert self.admin
        return f"http://{self.admin[0]}:{self.admin[1]}"

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """SIGINT twice (drain, then close at once); SIGKILL if still there after 5 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)  # second signal: close at once
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _live.discard(self)
        if self.config_path:
            os.unlink(self.config_path)
            self.config_path = None


def _pump(node: NodeProc, ready: threading.Event) -> None:
    """Read the log (so the pipe never fills) and catch the listening line."""
    assert node.proc.stderr is not None
    for line in node.proc.stderr:
        line = line.rstrip("\n")
        node.lines.append(line)
        if "event=listening" in line:
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            for name in ("tcp", "ws", "admin"):
                if name in fields:
                    host, _, port = fields[name].rpartition(":")
                    setattr(node, name, (host, int(port)))
            node.node_id = fields.get("node", "")
            ready.set()
    ready.set()


def start_node(
    config: str | None = None,
    *,
    redis: Sequence[str] = (),
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
    nofile: tuple[int, int] | None = None,
    die_with_parent: bool = False,
) -> NodeProc:
    """Start ``hubbub serve`` on free loopback ports with an optional TOML
    ``config`` text (``nofile``: its soft and hard limits of open files);
    returns once it logged its listening line."""
    cmd = [*HUBBUB, "serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
           "--admin", "127.0.0.1:0"]  # fmt: skip
    config_path = None
    if config is not None:
        fd, config_path = tempfile.mkstemp(suffix=".toml", prefix="hubbub-test-")
        with os.fdopen(fd, "w") as fh:
            fh.write(config)
        cmd += ["--config", config_path]
    for url in redis:
        cmd += ["--redis", url]
    cmd += list(args)
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    proc_env.update(env or {})

    def prepare() -> None:  # in the child, before exec
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
        if die_with_parent:
            _guard()

    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=proc_env,
        preexec_fn=prepare if nofile is not None or die_with_parent else None,
    )  # fmt: skip
    node = NodeProc(proc, config_path=config_path)
    _live.add(node)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(node, ready), daemon=True).start()
    if not ready.wait(timeout) or (node.tcp is None and node.ws is None):
        node.stop()
        raise RuntimeError("hubbub did not start:\n" + node.log_text())
    return node


@dataclass(eq=False)
class RedisProc(_Stopped):
    """A running ``redis-server`` on a free loopback port, no persistence."""

    port: int
    dir: str
    proc: subprocess.Popen[bytes] | None = None
    #: More ``redis-server`` options (``--replicaof``, ``--cluster-enabled``, ...).
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0, *, die_with_parent: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run `make install`")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_guard if die_with_parent else None,
        )  # fmt: skip
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the data is gone (no persistence)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        _live.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis(*, die_with_parent: bool = False) -> RedisProc:
    r = RedisProc(free_port(), tempfile.mkdtemp(prefix="hubbub-redis-"))
    r.start(die_with_parent=die_with_parent)
    return r
