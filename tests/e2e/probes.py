"""Probes for the protection tests: a node's memory and metrics, blocking
sockets that stop reading, and the wait helpers they need.

:class:`SlowTcp` is a plain blocking socket speaking PROTOCOL.md §1 framing,
with a small ``SO_RCVBUF`` set before it connects, so a test can make a
client that stops reading (it just does not call :meth:`SlowTcp.read_all`
until later) without an event loop reading for it behind its back.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from typing import Any

from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from tests.procs import NodeProc

TIMEOUT = 5.0


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS`` in /proc)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def kernel_buffer_max() -> tuple[int, int]:
    """(tcp_wmem max, tcp_rmem max): the most one socket's kernel buffers hold."""
    values = []
    for name in ("tcp_wmem", "tcp_rmem"):
        with open(f"/proc/sys/net/ipv4/{name}") as fh:
            values.append(int(fh.read().split()[2]))
    return values[0], values[1]


def http_get(url: str, timeout: float = TIMEOUT) -> tuple[int, str]:
    """GET ``url``: (status, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(node: NodeProc, name: str, **labels: str) -> float:
    """One sample of the node's /metrics (0.0 when absent)."""
    status, text = http_get(node.admin_url + "/metrics")
    assert status == 200, text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$", re.M)
    for m in pattern.finditer(text):
        got = ",".join(sorted((m.group("labels") or "").split(","))) if m.group("labels") else ""
        if got == want:
            return float(m.group("value"))
    return 0.0


async def wait_for(predicate: Any, timeout: float = TIMEOUT, what: str = "condition") -> None:
    """Poll ``predicate()`` until true, every 20 ms, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def log_line(node: NodeProc, needle: str, timeout: float = TIMEOUT) -> str:
    """The first line of the node's log containing ``needle`` (waits for it)."""

    def found() -> bool:
        return any(needle in line for line in node.lines)

    await wait_for(found, timeout, f"{needle!r} in the log:\n{node.log_text()}")
    return next(line for line in node.lines if needle in line)


class SlowTcp:
    """A blocking TCP client with a small receive buffer that reads only when told."""

    def __init__(self, address: tuple[str, int], rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.decoder = FrameDecoder(2**31)
        self.pending: list[dict[str, Any]] = []
        self.next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(encode_msgpack(message)))

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and read up to its reply (other messages are kept)."""
        self.next_id += 1
        cid = self.next_id
        self.send({"op": op, "id": cid, **fields})
        while True:
            for i, message in enumerate(self.pending):
                if message.get("id") == cid:
                    del self.pending[i]
                    return message
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"closed before the reply to {op}")
            self.pending.extend(decode_msgpack(p) for p in self.decoder.feed(data))

    def read_all(self, timeout: float = 30.0) -> tuple[list[dict[str, Any]], str]:
        """Read until the server closes: the messages, and ``"eof"`` or ``"reset"``."""
        messages, self.pending = self.pending, []
        self.sock.settimeout(timeout)
        end = "eof"
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                messages.extend(decode_msgpack(p) for p in self.decoder.feed(data))
        except ConnectionResetError:
            end = "reset"
        return messages, end

    def read_until(self, done: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Read until ``done(messages)`` is true; fails on close or timeout."""
        messages, self.pending = self.pending, []
        deadline = time.monotonic() + timeout
        while not done(messages):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; last messages {messages[-3:]}")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise AssertionError(f"closed; last messages {messages[-3:]}")
            messages.extend(decode_msgpack(p) for p in self.decoder.feed(data))
        return messages

    def close(self) -> None:
        self.sock.close()
