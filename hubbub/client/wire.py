"""The client side of both transports, Sans-I/O: bytes in, message payloads out.

One :class:`Framing` per connection: :meth:`~Framing.opening` is what to write
first (the WebSocket upgrade request; nothing on TCP), :meth:`~Framing.feed`
takes received bytes and returns the msgpack payloads they completed, and
:meth:`~Framing.frame` wraps a payload for sending. ``tcp://`` is the 4-byte
length prefix (PROTOCOL.md §1); ``ws://`` is WebSocket on ``/ws`` with the
``hubbub.v1.msgpack`` subprotocol, masked client frames, and the server's
pings and close answered through :attr:`~Framing.replies`. No sockets here:
the lean fast path (:mod:`hubbub.client.lean`), the blocking client
(:mod:`hubbub.client.sync`) and the benchmarks all read and write through it.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hubbub.protocol.codec import Encoding
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.protocol.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    ClientHandshake,
    FrameParser,
    client_frame,
    close_payload,
    parse_close,
)

#: Largest message accepted from a server.
MAX_MESSAGE = 1 << 24

_frame_length = struct.Struct(">I").unpack_from


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
        """The endpoint of ``url`` (parsed once per process: thousands of users share it)."""
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

    def framing(self) -> Framing:
        """A fresh framing for one connection to this endpoint."""
        return TcpFraming() if self.scheme == "tcp" else WsFraming(self)


class Framing:
    """One connection's framing; see the module doc."""

    #: True once messages may be sent (at once on TCP; after the upgrade on WebSocket).
    open = True
    #: The WebSocket close code the server sent, if it closed that way.
    close_code: int | None = None
    #: Set once the server closed the WebSocket: write :attr:`replies`, then close.
    closed = False

    def __init__(self) -> None:
        #: Bytes to write back now (pongs, the close reply); the caller empties it.
        self.replies: list[bytes] = []

    def opening(self) -> bytes:
        """What to write as soon as the socket is connected."""
        return b""

    def feed(self, data: bytes) -> Sequence[bytes]:
        """The message payloads completed by ``data``; raises on a protocol violation."""
        raise NotImplementedError

    def frame(self, payload: bytes) -> bytes:
        """``payload`` as it goes on the wire."""
        raise NotImplementedError


class TcpFraming(Framing):
    """4-byte big-endian length + msgpack payload (PROTOCOL.md §1)."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = FrameDecoder(MAX_MESSAGE)

    def feed(self, data: bytes) -> Sequence[bytes]:
        decoder = self.decoder
        if not decoder.buffered and len(data) > 4 and _frame_length(data)[0] + 4 == len(data):
            return (data[4:],)  # exactly one frame: the common case
        return decoder.feed(data)

    def frame(self, payload: bytes) -> bytes:
        return encode_frame(payload)


class WsFraming(Framing):
    """WebSocket on the endpoint's path, subprotocol ``hubbub.v1.msgpack`` (binary messages)."""

    open = False

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self.handshake: ClientHandshake | None = ClientHandshake(
            endpoint.host, endpoint.port, endpoint.path, Encoding.MSGPACK.value
        )
        self.parser = FrameParser(MAX_MESSAGE)

    def opening(self) -> bytes:
        assert self.handshake is not None
        return self.handshake.request()

    def feed(self, data: bytes) -> Sequence[bytes]:
        if self.handshake is not None:
            rest = self.handshake.receive(data)  # raises WebSocketError when refused
            if rest is None:
                return ()
            self.handshake = None
            self.open = True
            if not rest:
                return ()
            data = rest
        out: list[bytes] = []
        for opcode, payload in self.parser.feed(data):
            if opcode == OP_BINARY:
                out.append(payload)
            elif opcode == OP_PING:
                self.replies.append(client_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.close_code, _ = parse_close(payload)
                self.replies.append(client_frame(close_payload(self.close_code or 1000), OP_CLOSE))
                self.closed = True
                break
        return out

    def frame(self, payload: bytes) -> bytes:
        return client_frame(payload)

    def closing(self) -> bytes:
        """The close frame a client sends when it closes (1000)."""
        return client_frame(close_payload(1000), OP_CLOSE)
