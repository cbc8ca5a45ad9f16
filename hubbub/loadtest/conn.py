"""The fast path: lean connections that speak the wire protocol themselves.

One worker must take in 100,000+ publications a second, so the built-in
scenarios skip :class:`client.Client` (a reader task, futures and a queue per
subscription) and use an asyncio ``Protocol`` per socket: frames are split
with :class:`protocol.frames.FrameDecoder` (TCP) or
:class:`protocol.wsclient.FrameParser` (WebSocket, ``hubbub.v1.msgpack``),
decoded with msgpack, and each ``pub`` goes straight to the user's
:class:`~loadtest.receiver.Receiver`. Replies resolve callbacks by id.

A :class:`LeanSession` outlives its sockets: when one is lost it reconnects
(the server's ``after``, else backoff with full jitter), going round the
hosts, and re-subscribes every channel with recovery from the last offset
(PROTOCOL.md §3), counting what was recovered, what could not be, and how
long the client was away.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgpack

from hubbub.loadtest.accounting.receiver import Receiver
from hubbub.loadtest.accounting.stats import WorkerStats
from hubbub.protocol.codec import Encoding, encode_msgpack
from hubbub.protocol.exceptions import ProtocolViolation
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
    parse_close,
)

_unpackb = msgpack.unpackb
_monotonic = time.monotonic
_frame_length = struct.Struct(">I").unpack_from
#: Largest message accepted from a server.
MAX_MESSAGE = 1 << 24

#: A pending request's callback: the reply map (None: the connection was lost) and the time.
Callback = Callable[[dict[str, Any] | None, float], None]


class ConnectFailed(Exception):
    """A connection attempt failed; ``reason`` is a short key for the report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotConnected(Exception):
    """A command was attempted while the session had no connection."""


class Lost(ConnectionError):
    """The connection ended before a reply; ``reason`` is the disconnect code or "lost"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestFailed(Exception):
    """An error reply; ``code`` is the protocol code (PROTOCOL.md §5)."""

    def __init__(self, code: Any, message: str = "") -> None:
        super().__init__(f"{code} {message}")
        self.code = code


@dataclass(frozen=True, eq=True)
class Endpoint:
    """Where to connect: transport, address and (WebSocket) path."""

    scheme: str
    host: str
    port: int
    path: str = "/ws"

    @classmethod
    @functools.lru_cache(maxsize=256)
    def parse(cls, url: str) -> Endpoint:
        """The endpoint of ``url`` (parsed once per worker: thousands of users share it)."""
        parts = urlsplit(url)
        if parts.scheme not in ("tcp", "ws") or not parts.hostname or parts.port is None:
            raise ValueError(f"the fast path takes tcp://HOST:PORT or ws://HOST:PORT/ws: {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port, parts.path or "/ws")

    @functools.cached_property
    def address(self) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
        """Family and socket address, resolved once (connects then skip the resolver)."""
        family, _, _, _, sockaddr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        return family, sockaddr


def _reason(exc: BaseException) -> str:
    """A short report key for a failed connection attempt."""
    if isinstance(exc, ConnectFailed | Lost):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, WebSocketError):
        return "ws-handshake"
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno

        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


class _Wire(asyncio.Protocol):
    """One socket: framing in and out, replies by id, everything else to the session."""

    def __init__(self, session: LeanSession) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, Callback] = {}
        self.close_code: int | None = None
        self.slow: tuple[float, int] | None = None
        #: When something last arrived (monotonic), for the dead-peer check.
        self.last_rx = _monotonic()

    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.session.slow is not None:
            self.read_slowly(self.session.slow)

    def read_slowly(self, slow: tuple[float, int]) -> None:
        """From now on pause ``slow[0]`` s after each read, with SO_RCVBUF ``slow[1]``."""
        self.slow = slow
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, slow[1])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed while opening"))
        now = _monotonic()
        pending, self.pending = self.pending, {}
        for callback in pending.values():
            callback(None, now)
        self.session._wire_lost(self)

    def _dispatch(self, message: dict[str, Any], now: float) -> None:
        cid = message.get("id")
        if cid is not None:
            callback = self.pending.pop(cid, None)
            if callback is not None:
                callback(message, now)
        else:
            self.session._push(self, message, now)

    def _read_slowly(self) -> None:
        """A slow consumer: stop reading for a while after each chunk."""
        assert self.transport is not None and self.slow is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.slow[0], self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _TcpWire(_Wire):
    """4-byte length + msgpack frames (PROTOCOL.md §1)."""

    def __init__(self, session: LeanSession) -> None:
        super().__init__(session)
        self.decoder = FrameDecoder(MAX_MESSAGE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opened.set_result(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(encode_msgpack(message)))

    def data_received(self, data: bytes) -> None:
        self.last_rx = now = _monotonic()
        session = self.session
        try:
            decoder = self.decoder
            if not decoder.buffered and len(data) > 4 and _frame_length(data)[0] + 4 == len(data):
                frames: list[bytes] | tuple[bytes] = (data[4:],)  # exactly one frame: common
            else:
                frames = decoder.feed(data)
            pub = session._on_pub
            for frame in frames:
                message = _unpackb(frame)
                if message.get("push") == "pub":
                    pub(message, now)
                else:
                    self._dispatch(message, now)
        except (ProtocolViolation, ValueError, TypeError, AttributeError) as exc:
            session.stats.error(f"protocol {type(exc).__name__}")
            self.abort()
            return
        if self.slow is not None:
            self._read_slowly()


class _WsWire(_Wire):
    """WebSocket on ``/ws`` with subprotocol ``hubbub.v1.msgpack`` (binary messages)."""

    def __init__(self, session: LeanSession, endpoint: Endpoint) -> None:
        super().__init__(session)
        self.handshake: ClientHandshake | None = ClientHandshake(
            endpoint.host, endpoint.port, endpoint.path, Encoding.MSGPACK.value
        )
        self.parser = FrameParser(MAX_MESSAGE)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.handshake is not None
        self.transport.write(self.handshake.request())  # type: ignore[union-attr]

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(encode_msgpack(message)))

    def data_received(self, data: bytes) -> None:
        self.last_rx = now = _monotonic()
        session = self.session
        try:
            if self.handshake is not None:
                rest = self.handshake.receive(data)
                if rest is None:
                    return
                self.handshake = None
                self.opened.set_result(None)
                data = rest
                if not data:
                    return
            pub = session._on_pub
            for opcode, payload in self.parser.feed(data):
                if opcode == OP_BINARY:
                    message = _unpackb(payload)
                    if message.get("push") == "pub":
                        pub(message, now)
                    else:
                        self._dispatch(message, now)
                elif opcode == OP_PING:
                    self.transport.write(client_frame(payload, OP_PONG))  # type: ignore[union-attr]
                elif opcode == OP_CLOSE:
                    self.close_code, _ = parse_close(payload)
                    self.transport.write(  # type: ignore[union-attr]
                        client_frame(close_payload(self.close_code or 1000), OP_CLOSE)
                    )
                    self.close()
                    return
        except WebSocketError as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            session.stats.error("protocol websocket")
            self.abort()
            return
        except (ValueError, TypeError, AttributeError) as exc:
            session.stats.error(f"protocol {type(exc).__name__}")
            self.abort()
            return
        if self.slow is not None:
            self._read_slowly()


@dataclass
class _Sub:
    """A subscribed channel: its last position, for recovery after a reconnect."""

    recover: bool
    offset: int | None = None
    epoch: str | None = None


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter."""
    return random.random() * min(cap, base * 2 ** min(attempt, 20))


class LeanSession:
    """A user's connection on the fast path, kept up across reconnects."""

    def __init__(
        self,
        urls: list[str],
        first: int,
        stats: WorkerStats,
        *,
        receiver: Receiver | None = None,
        local_addr: tuple[str, int] | None = None,
        timeout: float = 10.0,
        reconnect: bool = True,
        name: str = "hubbub-loadtest",
    ) -> None:
        self.endpoints = [Endpoint.parse(u) for u in urls]
        self.index = first % len(self.endpoints)
        self.stats = stats
        self.receiver = receiver
        self.local_addr = local_addr
        self.timeout = timeout
        self.reconnect = reconnect
        #: (pause seconds after each read, SO_RCVBUF bytes) once reading slowly.
        self.slow: tuple[float, int] | None = None
        self.name = name
        self.wire: _Wire | None = None
        self.info: dict[str, Any] = {}
        self.subs: dict[str, _Sub] = {}
        self.closing = False
        #: Set once the session gave up (a disconnect without reconnect).
        self.dead = False
        self._last_id = 0
        self._disconnect: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.wire is not None

    # -- connecting ---------------------------------------------------------

    async def connect(self, intended: float) -> None:
        """The first connection; records a "connect" request timed from ``intended``.

        Raises :class:`ConnectFailed` (also counted as a failed connect).
        """
        try:
            await self._open()
        except Exception as exc:
            reason = _reason(exc)
            self.stats.request("connect", None, ok=False)
            self.stats.error(f"connect {reason}")
            raise ConnectFailed(reason) from exc
        self.stats.request("connect", _monotonic() - intended)

    async def _open(self) -> None:
        endpoint = self.endpoints[self.index]
        loop = asyncio.get_running_loop()
        self._disconnect = None

        def make() -> _Wire:
            return _TcpWire(self) if endpoint.scheme == "tcp" else _WsWire(self, endpoint)

        wire: _Wire | None = None
        try:
            async with asyncio.timeout(self.timeout):
                family, address = endpoint.address
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    if self.local_addr is not None:
                        sock.bind(self.local_addr)
                    await loop.sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
                _, wire = await loop.create_connection(make, sock=sock)
                await wire.opened
                reply = await self._call(wire, {"op": "connect", "client": {"name": self.name}})
        except BaseException:
            if wire is not None:
                wire.abort()
            raise
        error = reply.get("error")
        if error is not None:
            wire.close()
            code = error.get("code") if isinstance(error, dict) else None
            raise ConnectFailed(str(code))
        ok = reply.get("ok")
        self.info = ok if isinstance(ok, dict) else {}
        self._disconnect = None
        self.wire = wire
        self.stats.connected += 1

    def _call(self, wire: _Wire, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a command with an id on ``wire``; the future gets the reply map."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def done(reply: dict[str, Any] | None, now: float) -> None:
            if future.done():
                return
            if reply is None:
                future.set_exception(Lost(self._lost_reason(wire)))
            else:
                future.set_result(reply)

        self._last_id += 1
        message["id"] = self._last_id
        wire.pending[self._last_id] = done
        wire.send(message)
        return future

    # -- commands -----------------------------------------------------------

    def send(self, message: dict[str, Any], callback: Callback | None = None) -> None:
        """Send a command; with ``callback`` it gets an id and the callback its reply.

        Raises :class:`NotConnected` while there is no connection.
        """
        wire = self.wire
        if wire is None:
            raise NotConnected("not connected")
        if callback is not None:
            self._last_id += 1
            message["id"] = self._last_id
            wire.pending[self._last_id] = callback
        wire.send(message)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a command and return its ok map; :class:`RequestFailed` on an error reply."""
        wire = self.wire
        if wire is None:
            raise NotConnected("not connected")
        async with asyncio.timeout(self.timeout):
            reply = await self._call(wire, message)
        error = reply.get("error")
        if error is not None:
            if isinstance(error, dict):
                raise RequestFailed(error.get("code"), str(error.get("message", "")))
            raise RequestFailed(None, repr(error))
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    async def subscribe(self, channel: str, recover: bool = False) -> dict[str, Any]:
        """Subscribe (the receiver counts from the reply's arrival); returns the ok map."""
        message: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if recover:
            message["recover"] = True
        ok = await self.request(message)
        sub = self.subs[channel] = _Sub(recover)
        self._apply_subscribe(channel, sub, ok, _monotonic(), asked=False)
        return ok

    async def unsubscribe(self, channel: str) -> None:
        self.subs.pop(channel, None)
        if self.receiver is not None:
            self.receiver.leave(channel, _monotonic())
        await self.request({"op": "unsubscribe", "channel": channel})

    def _apply_subscribe(
        self, channel: str, sub: _Sub, ok: dict[str, Any], now: float, *, asked: bool
    ) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.joined(channel, now)
        pubs = ok.get("publications") or ()
        if asked:
            if ok.get("recovered") is False:
                self.stats.counts["recovery_failed"] += 1
            elif pubs:
                self.stats.counts["recovered"] += len(pubs)
        for pub in pubs:
            if isinstance(pub, dict) and receiver is not None:
                receiver.on_pub(channel, pub.get("data"), now)
        offset, epoch = ok.get("offset"), ok.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            if sub.epoch != epoch or sub.offset is None or offset > sub.offset:
                sub.offset = offset
            sub.epoch = epoch

    # -- what the server sends ----------------------------------------------

    def _on_pub(self, message: dict[str, Any], now: float) -> None:
        channel = message.get("channel")
        offset = message.get("offset")
        if offset is not None:
            sub = self.subs.get(channel)  # type: ignore[arg-type]
            if sub is not None:
                sub.offset = offset
        receiver = self.receiver
        if receiver is not None:
            receiver.on_pub(channel, message.get("data"), now)  # type: ignore[arg-type]

    def _push(self, wire: _Wire, message: dict[str, Any], now: float) -> None:
        push = message.get("push")
        if push == "ping":
            wire.send({"op": "pong"})
        elif push == "disconnect":
            self._disconnect = message
        elif push == "lag":
            dropped = message.get("dropped")
            self.stats.counts["lagged"] += dropped if isinstance(dropped, int) else 0
        elif push == "error":
            self.stats.error(f"{message.get('op', 'push')} {message.get('code')}")
        elif push in ("join", "leave"):
            self.stats.counts["presence_events"] += 1

    # -- losing and regaining the connection ----------------------------------

    def _lost_reason(self, wire: _Wire) -> str:
        if self._disconnect is not None:
            return str(self._disconnect.get("code"))
        return str(wire.close_code) if wire.close_code is not None else "lost"

    def _wire_lost(self, wire: _Wire) -> None:
        if wire is not self.wire:
            return  # a connection attempt that did not finish
        self.wire = None
        self.stats.connected -= 1
        if self.closing:
            return
        info = self._disconnect
        self.stats.disconnects[self._lost_reason(wire)] += 1
        allowed = info.get("reconnect", True) if info is not None else True
        if not (self.reconnect and allowed):
            self.dead = True
            return
        after = info.get("after") if info is not None else None
        delay = after / 1000 if isinstance(after, int) and after >= 0 else backoff(0)
        self._task = asyncio.get_running_loop().create_task(self._reconnect(delay))

    async def _reconnect(self, delay: float) -> None:
        stats = self.stats
        down_since = _monotonic()
        stats.down += 1
        stats.note_down(down_since)
        attempt = 0
        try:
            while not self.closing:
                await asyncio.sleep(delay)
                attempt += 1
                delay = backoff(attempt)
                self.index = (self.index + 1) % len(self.endpoints)
                try:
                    await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    stats.error(f"reconnect {_reason(exc)}")
                    continue
                if await self._resubscribe():
                    now = _monotonic()
                    stats.request("reconnect", now - down_since)
                    stats.note_back(now)
                    return
                # The new connection failed while re-subscribing: try again.
        finally:
            stats.down -= 1

    async def _resubscribe(self) -> bool:
        """Re-subscribe every channel with recovery; False when the connection went away."""
        wire = self.wire
        if wire is None:
            return False
        waits = []
        for channel, sub in self.subs.items():
            message: dict[str, Any] = {"op": "subscribe", "channel": channel, "recover": True}
            asked = sub.offset is not None and sub.epoch is not None
            if asked:
                message["since"] = {"offset": sub.offset, "epoch": sub.epoch}
            waits.append((channel, sub, asked, self._call(wire, message)))
        for channel, sub, asked, future in waits:
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await future
            except (ConnectionError, TimeoutError):
                wire.abort()
                return False
            error = reply.get("error")
            if error is not None:
                code = error.get("code") if isinstance(error, dict) else error
                self.stats.error(f"resubscribe {code}")
                continue
            if self.subs.get(channel) is sub:
                ok = reply.get("ok")
                self._apply_subscribe(
                    channel, sub, ok if isinstance(ok, dict) else {}, _monotonic(), asked=asked
                )
        return self.wire is wire

    def check_alive(self, now: float) -> None:
        """Drop a connection silent for longer than the server's ping interval plus
        the timeout (a dead peer sends no FIN): the session then reconnects."""
        wire = self.wire
        ping = self.info.get("ping")
        if wire is None or wire.slow is not None or not isinstance(ping, int | float) or ping <= 0:
            return
        if now - wire.last_rx > ping + self.timeout:
            self.stats.error("connection silent")
            self._disconnect = {"code": "silent"}
            wire.abort()

    def read_slowly(self, pause: float, rcvbuf: int) -> None:
        """Become a slow consumer: after each read stop reading for ``pause`` seconds,
        with a socket receive buffer of ``rcvbuf`` bytes (also after reconnects)."""
        self.slow = (pause, rcvbuf)
        if self.wire is not None:
            self.wire.read_slowly(self.slow)

    async def close(self) -> None:
        """Close for good (not counted as a disconnect)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        if self.wire is not None:
            self.wire.close()
