"""Lean client connections for load generation: asyncio ``Protocol`` classes.

One core must drive a thousand subscribers receiving 200,000 messages/s, so
these skip everything the full :class:`client.Client` does (tasks, futures per
command, reconnects): the handshake and masked client frames come from
:mod:`protocol.wsclient`, and the server's unmasked frames are parsed inline,
without copying a message until it is handed on. Both transports speak
msgpack (WebSocket subprotocol ``hubbub.v1.msgpack``).

A connection sends ``connect`` (id 1) and, for a subscriber, ``subscribe``
(id 2) at once; :attr:`LeanConn.ready` resolves on the last reply. Server
``ping`` pushes are answered with ``pong`` (PROTOCOL.md §3).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack

from hubbub.protocol.codec import Encoding, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.protocol.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    ClientHandshake,
    WebSocketError,
    client_frame,
    frame_bounds,
)

_unpackb = msgpack.unpackb
_monotonic = time.monotonic


def commands(channel: str | None) -> list[dict[str, Any]]:
    """What a lean connection sends on open: ``connect``, then maybe ``subscribe``."""
    out: list[dict[str, Any]] = [{"op": "connect", "id": 1, "client": {"name": "bench"}}]
    if channel is not None:
        out.append({"op": "subscribe", "id": 2, "channel": channel})
    return out


class LeanConn(asyncio.Protocol):
    """Base of both transports: the connect/subscribe exchange and pushes."""

    def __init__(self, channel: str | None = None) -> None:
        self.channel = channel
        self.last_id = 2 if channel is not None else 1
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.disconnect_code: int | None = None

    # Subclasses: how one message goes out.
    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_open(self) -> None:
        for message in commands(self.channel):
            self.send(message)

    def on_message(self, payload: bytes, now: float) -> None:
        """One message from the server, still msgpack bytes."""
        self.on_map(_unpackb(payload), now)

    def on_map(self, message: dict[str, Any], now: float) -> None:
        push = message.get("push")
        if push is None:
            if message.get("id") == self.last_id and not self.ready.done():
                error = message.get("error")
                if error is not None:
                    self.ready.set_exception(ConnectionError(f"refused: {error}"))
                else:
                    self.ready.set_result(None)
            elif "error" in message and not self.ready.done():
                self.ready.set_exception(ConnectionError(f"refused: {message['error']}"))
        elif push == "pub":
            self.on_pub(message["data"], now)
        elif push == "ping":
            self.send({"op": "pong"})
        elif push == "disconnect":
            self.disconnect_code = message.get("code")

    def on_pub(self, data: Any, now: float) -> None:
        """A publication's ``data``; subscribers override this."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before ready"))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class TcpConn(LeanConn):
    """A raw TCP client: 4-byte length + msgpack frames (PROTOCOL.md §1)."""

    def __init__(self, channel: str | None = None) -> None:
        super().__init__(channel)
        self.decoder = FrameDecoder(1 << 24)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.on_open()

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(encode_msgpack(message)))

    def data_received(self, data: bytes) -> None:
        now = _monotonic()
        for payload in self.decoder.feed(data):
            self.on_message(payload, now)


class WsConn(LeanConn):
    """A WebSocket client on path ``/ws`` with subprotocol ``hubbub.v1.msgpack``."""

    def __init__(self, host: str, port: int, channel: str | None = None) -> None:
        super().__init__(channel)
        self.handshake = ClientHandshake(host, port, subprotocol=Encoding.MSGPACK.value)
        self.upgraded = False
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.write(self.handshake.request())  # type: ignore[attr-defined]

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(encode_msgpack(message)))

    def on_frame(self, buf: bytes, start: int, end: int, now: float) -> None:
        """A binary message at ``buf[start:end]`` (no copy made yet)."""
        self.on_message(buf[start:end], now)

    def data_received(self, data: bytes) -> None:
        now = _monotonic()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            try:
                rest = self.handshake.receive(data)
            except WebSocketError as exc:
                raise ConnectionError(str(exc)) from None
            if rest is None:
                return
            self.upgraded = True
            data = rest
            self.on_open()
        # Server frames are never masked (RFC 6455 §5.1); several may share a
        # chunk and one may span chunks.
        pos, n = 0, len(data)
        while True:
            bounds = frame_bounds(data, pos)
            if bounds is None or bounds[1] > n:
                break
            start, end = bounds
            opcode = data[pos] & 0x0F
            pos = end
            if opcode == OP_BINARY:
                self.on_frame(data, start, end, now)
            elif opcode == OP_PING:
                self.transport.write(client_frame(data[start:end], OP_PONG))  # type: ignore[union-attr]
            elif opcode == OP_CLOSE:
                if end - start >= 2:
                    self.disconnect_code = (data[start] << 8) | data[start + 1]
                self.transport.write(client_frame(data[start : start + 2], OP_CLOSE))  # type: ignore[union-attr]
        if pos < n:
            self.buf = data[pos:]


async def open_many(
    make: Any,
    host: str,
    port: int,
    count: int,
    *,
    concurrency: int = 200,
    timeout: float = 60.0,
) -> list[LeanConn]:
    """Open ``count`` connections made by ``make()`` and wait until each is ready.

    At most ``concurrency`` handshakes are in flight; the whole thing is
    bounded by ``timeout`` seconds. On failure every opened connection is
    closed and the error raised.
    """
    loop = asyncio.get_running_loop()
    conns: list[LeanConn] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            _, conn = await loop.create_connection(make, host, port)
            conns.append(conn)
            await conn.ready

    tasks = [loop.create_task(one()) for _ in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for task in tasks:
            task.cancel()
        for conn in conns:
            conn.close()
        raise
    return conns
