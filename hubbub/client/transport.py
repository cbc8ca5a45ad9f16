"""The two transports (PROTOCOL.md §1) behind one small interface.

A :class:`Transport` sends one message map at a time (:meth:`~Transport.send`,
ordered, never blocking), hands received maps out in batches
(:meth:`~Transport.recv`) and closes. ``tcp://host:port`` speaks length-prefixed
msgpack frames; ``ws://`` / ``wss://`` URLs speak WebSocket with the
``hubbub.v1.msgpack`` (binary) or ``hubbub.v1.json`` (text) subprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hubbub.client.exceptions import Disconnected, ReplyError
from hubbub.protocol.codec import Encoding, decode, decode_json, encode
from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.frames import FrameDecoder, encode_frame

#: Largest message the client accepts from a server (its own ``max_frame``).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

#: How much the TCP transport asks the socket for at once.
READ_SIZE = 256 * 1024

#: Bound on the WebSocket closing handshake and on flushing queued writes.
CLOSE_TIMEOUT = 2.0


class Transport(ABC):
    """One open connection to a server, in one encoding."""

    encoding: Encoding
    #: The server's ``max_frame`` once known: larger messages are refused
    #: locally with a 413 instead of getting the connection closed (3004/1009).
    max_send: int | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Encode and queue one message; order is kept. Raises on a closed one."""
        data = encode(message, self.encoding)
        if self.max_send is not None and len(data) > self.max_send:
            raise ReplyError(
                ErrorCode.TOO_LARGE,
                f"message of {len(data)} bytes is over the server's max_frame {self.max_send}",
            )
        self._write(data)

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    async def recv(self) -> list[dict[str, Any]]:
        """The next received messages (at least one); :class:`Disconnected` at the end.

        A message that does not decode raises ``ProtocolViolation``.
        """

    @abstractmethod
    async def drain(self) -> None:
        """Wait until queued writes are handed to the OS (flow control)."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what is queued (bounded) and close. Idempotent."""

    @abstractmethod
    def abort(self) -> None:
        """Drop the connection at once (a dead peer); :meth:`recv` then ends."""


class TcpTransport(Transport):
    """Length-prefixed msgpack frames over a stream (always msgpack)."""

    encoding = Encoding.MSGPACK

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise Disconnected(None, "connection closed")
        self._writer.write(encode_frame(data))

    async def recv(self) -> list[dict[str, Any]]:
        while True:
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as exc:
                raise Disconnected(None, f"connection lost: {exc}") from exc
            if not data:
                raise Disconnected(None, "connection closed by the server")
            frames = self._decoder.feed(data)
            if frames:
                return [decode(frame, Encoding.MSGPACK) for frame in frames]

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as exc:
            raise Disconnected(None, f"connection lost: {exc}") from exc

    async def close(self) -> None:
        writer = self._writer
        if not writer.is_closing():
            writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await writer.wait_closed()
        if not writer.transport.is_closing():  # pragma: no cover - timeout
            writer.transport.abort()

    def abort(self) -> None:
        self._writer.transport.abort()


class WebSocketTransport(Transport):
    """One msgpack map per binary message, or one JSON object per text message.

    ``websockets``' ``send`` is a coroutine, so writes go through a queue and one
    writer task, which keeps them in order and lets :meth:`send` stay synchronous.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        # PROTOCOL.md §1: JSON is also what a server speaks when it picks no
        # subprotocol.
        self.encoding = (
            Encoding.MSGPACK if ws.subprotocol == Encoding.MSGPACK.value else Encoding.JSON
        )
        self._text = self.encoding is Encoding.JSON
        self._out: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _write(self, data: bytes) -> None:
        if self._closed or self._writer.done():
            raise Disconnected(None, "connection closed")
        self._out.append(data)
        self._idle.clear()
        self._wake.set()

    async def _write_loop(self) -> None:
        out, ws, text = self._out, self._ws, self._text
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while out:
                    await ws.send(out.popleft(), text=text)
                self._idle.set()
        except ConnectionClosed:
            pass
        finally:
            out.clear()
            self._idle.set()

    async def recv(self) -> list[dict[str, Any]]:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else str(exc)
            raise Disconnected.from_close(code, reason) from exc
        if isinstance(message, str):
            return [decode_json(message)]
        return [decode(message, self.encoding)]

    async def drain(self) -> None:
        await self._idle.wait()
        if self._writer.done():
            raise Disconnected(None, "connection closed")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await self._idle.wait()
            self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        with contextlib.suppress(Exception):
            await self._ws.close()

    def abort(self) -> None:
        self._closed = True
        self._ws.transport.abort()


async def open_transport(
    url: str,
    *,
    encoding: Encoding = Encoding.MSGPACK,
    max_frame: int = DEFAULT_MAX_FRAME,
    timeout: float = 10.0,
) -> Transport:
    """Open a transport to ``url`` (``tcp://``, ``ws://`` or ``wss://``).

    ``encoding`` applies to WebSocket only (TCP is always msgpack); ``max_frame``
    bounds what the client accepts from the server.
    """
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        if not parts.hostname or parts.port is None:
            raise ValueError(f"tcp url needs a host and a port: {url!r}")
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return TcpTransport(reader, writer, max_frame)
    if parts.scheme in ("ws", "wss"):
        ws = await ws_connect(
            url,
            subprotocols=[Subprotocol(encoding.value)],
            compression=None,
            max_size=max_frame,
            open_timeout=timeout,
            close_timeout=CLOSE_TIMEOUT,
            # hubbub has its own keepalive (server ping push -> pong).
            ping_interval=None,
        )
        return WebSocketTransport(ws)
    raise ValueError(f"unsupported url scheme {parts.scheme!r} (tcp, ws or wss): {url!r}")
