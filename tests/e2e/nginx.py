"""Debian's nginx for tests: the shipped configs/nginx/nginx.conf rendered with
loopback ports and a temporary prefix, run in the foreground (never the system
service)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.tools import CONFIGS, system_tool

#: Debian builds the stream module as a dynamic module (libnginx-mod-stream).
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def render_nginx_conf(
    prefix: Path, *, ws: int, tcp: int, upstream_ws: list[int], upstream_tcp: list[int]
) -> Path:
    """configs/nginx/nginx.conf with the compose names (``hubbub-N:7401`` and
    ``hubbub-N:7400``) and listen ports replaced by loopback ports, its pid, logs
    and temp files under ``prefix``, and one worker."""
    text = (CONFIGS / "nginx" / "nginx.conf").read_text()
    ports = {"7401": upstream_ws, "7400": upstream_tcp}

    def upstream(match: re.Match[str]) -> str:
        return f"server 127.0.0.1:{ports[match[2]][int(match[1]) - 1]}"

    text, count = re.subn(r"server hubbub-(\d):(740[01])", upstream, text)
    assert count == 6, "configs/nginx/nginx.conf: expected 3 ws and 3 tcp upstream servers"
    text = text.replace("listen 80;", f"listen 127.0.0.1:{ws};")
    text = text.replace("listen 7400;", f"listen 127.0.0.1:{tcp};")
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    temp = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp, 1)
    head = f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
    if STREAM_MODULE.exists():
        head = f"load_module {STREAM_MODULE};\n" + head
    path = prefix / "nginx.conf"
    path.write_text(head + text)
    return path


@dataclass
class NginxProc:
    proc: subprocess.Popen[bytes]
    prefix: Path

    def log_text(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_nginx(conf: Path, http_port: int, timeout: float = 10.0) -> NginxProc:
    """Run nginx on ``conf`` in the foreground; returns once ``http_port``
    accepts connections (the master binds every listener before that; a
    ``stream {}`` port is not probed: a connection there goes to an upstream)."""
    prefix = conf.parent
    proc = subprocess.Popen(
        [system_tool("nginx"), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nginx = NginxProc(proc, prefix)
    deadline = time.monotonic() + timeout
    waiting = [http_port]
    while waiting:
        if proc.poll() is not None or time.monotonic() > deadline:
            nginx.stop()
            raise RuntimeError("nginx did not start:\n" + nginx.log_text())
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5).close()
            waiting.pop(0)
        except OSError:
            time.sleep(0.05)
    return nginx
