"""Real processes for integration and e2e tests: ``hubbub serve`` nodes and
``redis-server`` instances on free loopback ports.

Nodes are started with port 0 and the ports are read from their startup log
line (PROTOCOL.md §7: "the startup log says which").
"""

from __future__ import annotations

import os
import re
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

ROOT = Path(__file__).resolve().parent.parent
HUBBUB = [sys.executable, "-m", "hubbub.server.cli"]
_LISTEN_RE = re.compile(r"event=listening .*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeProc:
    """A running ``hubbub serve`` process."""

    proc: subprocess.Popen[str]
    tcp: tuple[str, int] | None = None
    ws: tuple[str, int] | None = None
    admin: tuple[str, int] | None = None
    node_id: str = ""
    lines: list[str] = field(default_factory=list)
    config_path: str | None = None

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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.send_signal(signal.SIGINT)  # second signal: close at once
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.config_path:
            os.unlink(self.config_path)
            self.config_path = None


def _pump(node: NodeProc, ready: threading.Event) -> None:
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
) -> NodeProc:
    """Start ``hubbub serve`` on free loopback ports with an optional TOML
    ``config`` text (``nofile``: its soft and hard limits of open files);
    returns once it logged its listening line."""
    cmd = [*HUBBUB, "serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
           "--admin", "127.0.0.1:0"]
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

    def limit_files() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=proc_env,
        preexec_fn=limit_files if nofile is not None else None,
    )
    node = NodeProc(proc, config_path=config_path)
    ready = threading.Event()
    threading.Thread(target=_pump, args=(node, ready), daemon=True).start()
    if not ready.wait(timeout) or (node.tcp is None and node.ws is None):
        node.stop()
        raise RuntimeError("hubbub did not start:\n" + node.log_text())
    return node


@dataclass
class RedisProc:
    """A running ``redis-server`` on a free loopback port."""

    port: int
    dir: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run `make install`")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the data is gone (no persistence)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> RedisProc:
    r = RedisProc(free_port(), tempfile.mkdtemp(prefix="hubbub-redis-"))
    r.start()
    return r
