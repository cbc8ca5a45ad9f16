"""A blocking hubbub connection for thread- or greenlet-based tools (Locust).

Plain ``socket`` and ``threading``: under Locust, gevent's monkey-patching
turns them into cooperative sockets and greenlets, so the same code serves
both. One reader thread dispatches replies (by id, to the waiting caller) and
pushes (``pub`` to ``on_pub``; ``ping`` answered with ``pong``). Bytes go
through the client's framing (:mod:`hubbub.client.wire`: TCP length prefix,
or WebSocket with ``hubbub.v1.msgpack``); failures are the client's errors
(:mod:`hubbub.client.exceptions`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from hubbub.client.exceptions import NOT_CONNECTED, Disconnected, ReplyError, ReplyTimeout
from hubbub.client.wire import Endpoint, Framing, WsFraming
from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.exceptions import ProtocolViolation
from hubbub.protocol.wsclient import WebSocketError

OnPub = Callable[[str, Any, float], None]

#: How much one read asks the socket for.
READ_SIZE = 262144


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
        on_push: Callable[[dict[str, Any]], None] | None = None,
        name: str = "hubbub-locust",
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        self.timeout = timeout
        self.on_pub = on_pub
        #: Gets every other push but ``ping`` (``error``, ``disconnect``, ``join`` ...).
        self.on_push = on_push
        self.name = name
        self.info: dict[str, Any] = {}
        #: How the connection ended (None while open).
        self.closed: Disconnected | None = None
        self._sock: socket.socket | None = None
        self._framing: Framing = self.endpoint.framing()
        self._lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._last_id = 0
        self._disconnect: dict[str, Any] | None = None

    # -- connecting -------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Open the socket (and WebSocket), send ``connect``; returns its ok map."""
        ep = self.endpoint
        framing = self._framing
        sock = socket.create_connection((ep.host, ep.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first: Sequence[bytes] = ()
        opening = framing.opening()
        if opening:
            sock.sendall(opening)
        while not framing.open:
            chunk = sock.recv(65536)
            if not chunk:
                raise WebSocketError("closed during the handshake")
            first = framing.feed(chunk)
        sock.settimeout(None)
        self._sock = sock
        threading.Thread(target=self._read, args=(sock, first), daemon=True).start()
        self.info = self.call({"op": "connect", "client": {"name": self.name}})
        return self.info

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self.closed is None:
            self.closed = Disconnected(None, "closed by the client", reconnect=False)
        try:
            if isinstance(self._framing, WsFraming):
                sock.sendall(self._framing.closing())
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # -- commands ---------------------------------------------------------------

    def frame(self, message: dict[str, Any]) -> bytes:
        """``message`` as it goes on this connection's wire (to send later, at once)."""
        return self._framing.frame(encode_msgpack(message))

    def send_framed(self, data: bytes) -> None:
        """Send bytes made by :meth:`frame` (commands without ids: no reply is awaited)."""
        sock = self._sock
        if sock is None:
            raise self.closed or Disconnected(None, NOT_CONNECTED)
        with self._lock:
            sock.sendall(data)

    def _send(self, message: dict[str, Any]) -> None:
        self.send_framed(self.frame(message))

    def call(self, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send ``message`` with a new id; its ok map.

        Raises :class:`ReplyError`, :class:`ReplyTimeout` or :class:`Disconnected`.
        """
        waiter = _Waiter()
        with self._lock:
            self._last_id += 1
            message["id"] = cid = self._last_id
            self._pending[cid] = waiter
        try:
            self._send(message)
            if not waiter.event.wait(self.timeout if timeout is None else timeout):
                raise ReplyTimeout(f"no reply to {message.get('op')!r}")
        finally:
            self._pending.pop(cid, None)
        reply = waiter.reply
        if reply is None:
            raise self.closed or Disconnected(None, "connection lost")
        error = reply.get("error")
        if error is not None:
            raise ReplyError.from_wire(error)
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    # -- reading ------------------------------------------------------------------

    def _read(self, sock: socket.socket, first: Sequence[bytes]) -> None:
        framing = self._framing
        payloads = first
        try:
            while True:
                now = time.monotonic()
                for payload in payloads:
                    self._dispatch(msgpack.unpackb(payload), now)
                if framing.replies:
                    with self._lock:
                        for reply in framing.replies:
                            sock.sendall(reply)
                    framing.replies.clear()
                if framing.closed:
                    return
                data = sock.recv(READ_SIZE)
                if not data:
                    return
                payloads = framing.feed(data)
        except (OSError, ValueError, ProtocolViolation, WebSocketError):
            return
        finally:
            self._ended()

    def _ended(self) -> None:
        """The reader stopped: record how, wake every waiting caller."""
        if self.closed is None:
            info = self._disconnect
            self.closed = (
                Disconnected.from_push(info)
                if info is not None
                else Disconnected(None, "connection lost")
            )
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
        else:
            if push == "disconnect":
                self._disconnect = message
            if self.on_push is not None:
                self.on_push(message)
