"""A blocking hubbub connection for thread- or greenlet-based tools (Locust).

Plain ``socket`` and ``threading``: under Locust, gevent's monkey-patching
turns them into cooperative sockets and greenlets, so the same code serves
both. One reader thread dispatches replies (by id, to the waiting caller) and
pushes (``pub`` to ``on_pub``; ``ping`` answered with ``pong``). Frames as in
:mod:`loadtest.conn`: TCP length prefix, or WebSocket with ``hubbub.v1.msgpack``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack

from hubbub.loadtest.conn import Endpoint, RequestFailed
from hubbub.protocol.codec import Encoding, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.protocol.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    ClientHandshake,
    FrameParser,
    WebSocketError,
    client_frame,
    close_payload,
)

OnPub = Callable[[str, Any, float], None]


class ConnectionClosed(Exception):
    """The connection is gone (``code``: the server's disconnect code, if it gave one)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class _Waiter:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: dict[str, Any] | None = None


class SyncConnection:
    """One blocking connection; :meth:`call` sends a command and waits for its reply."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        on_pub: OnPub | None = None,
        name: str = "hubbub-locust",
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout
        self.on_pub = on_pub
        self.name = name
        self.info: dict[str, Any] = {}
        self.closed: ConnectionClosed | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._last_id = 0
        self._disconnect: dict[str, Any] | None = None
        self._ws = self.endpoint.scheme == "ws"

    # -- connecting -------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Open the socket (and WebSocket), send ``connect``; returns its ok map."""
        ep = self.endpoint
        sock = socket.create_connection((ep.host, ep.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = b""
        if self._ws:
            handshake = ClientHandshake(ep.host, ep.port, ep.path, Encoding.MSGPACK.value)
            sock.sendall(handshake.request())
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise WebSocketError("closed during the handshake")
                done = handshake.receive(chunk)
                if done is not None:
                    rest = done
                    break
        sock.settimeout(None)
        self._sock = sock
        threading.Thread(target=self._read, args=(sock, rest), daemon=True).start()
        self.info = self.call({"op": "connect", "client": {"name": self.name}})
        return self.info

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self.closed is None:
            self.closed = ConnectionClosed("closed by the client")
        try:
            if self._ws:
                sock.sendall(client_frame(close_payload(1000), OP_CLOSE))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # -- commands ---------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        sock = self._sock
        if sock is None:
            raise self.closed or ConnectionClosed("not connected")
        payload = encode_msgpack(message)
        data = client_frame(payload) if self._ws else encode_frame(payload)
        with self._lock:
            sock.sendall(data)

    def call(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send ``message`` with a new id; its ok map, or :class:`RequestFailed`."""
        waiter = _Waiter()
        with self._lock:
            self._last_id += 1
            message["id"] = cid = self._last_id
            self._pending[cid] = waiter
        try:
            self._send(message)
            if not waiter.event.wait(self.timeout if timeout is None else timeout):
                raise TimeoutError(f"no reply to {message.get('op')!r}")
        finally:
            self._pending.pop(cid, None)
        reply = waiter.reply
        if reply is None:
            raise self.closed or ConnectionClosed("connection lost")
        error = reply.get("error")
        if error is not None:
            if isinstance(error, dict):
                raise RequestFailed(error.get("code"), str(error.get("message", "")))
            raise RequestFailed(None, repr(error))
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    # -- reading ------------------------------------------------------------------

    def _read(self, sock: socket.socket, rest: bytes) -> None:
        decoder = FrameDecoder(1 << 24)
        parser = FrameParser(1 << 24)
        data = rest
        try:
            while True:
                if data:
                    now = time.monotonic()
                    if self._ws:
                        for opcode, payload in parser.feed(data):
                            if opcode == OP_BINARY:
                                self._dispatch(msgpack.unpackb(payload), now)
                            elif opcode == OP_PING:
                                with self._lock:
                                    sock.sendall(client_frame(payload, OP_PONG))
                            elif opcode == OP_CLOSE:
                                return
                    else:
                        for frame in decoder.feed(data):
                            self._dispatch(msgpack.unpackb(frame), now)
                data = sock.recv(262144)
                if not data:
                    return
        except (OSError, ValueError, WebSocketError):
            return
        finally:
            info = self._disconnect
            if self.closed is None:
                code = info.get("code") if info is not None else None
                reason = str(info.get("reason", "")) if info is not None else "connection lost"
                self.closed = ConnectionClosed(reason, code if isinstance(code, int) else None)
            pending, self._pending = self._pending, {}
            for waiter in pending.values():
                waiter.event.set()

    def _dispatch(self, message: dict[str, Any], now: float) -> None:
        cid = message.get("id")
        if cid is not None:
            waiter = self._pending.get(cid)
            if waiter is not None:
                waiter.reply = message
                waiter.event.set()
            return
        push = message.get("push")
        if push == "pub":
            if self.on_pub is not None:
                self.on_pub(str(message.get("channel")), message.get("data"), now)
        elif push == "ping":
            self._send({"op": "pong"})
        elif push == "disconnect":
            self._disconnect = message
