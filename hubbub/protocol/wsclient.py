"""A minimal WebSocket client codec, Sans-I/O (RFC 6455): the load tester's fast
path, its Locust user and the benchmarks speak WebSocket through it.

Only what a hubbub client needs: the opening handshake on ``/ws`` with one
subprotocol, masked client frames (§5.3), and a parser of the server's
unmasked frames that copes with several frames per chunk, a frame spanning
chunks, fragmented messages and control frames. No extensions (hubbub never
negotiates compression). Bytes in with :meth:`ClientHandshake.receive` /
:meth:`FrameParser.feed`, bytes out from the encoders: no sockets here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from hubbub.protocol.exceptions import WebSocketError

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Longest handshake response accepted.
MAX_HEAD = 16384


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key`` (§4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


class ClientHandshake:
    """The opening handshake: :meth:`request` bytes out, response bytes in."""

    def __init__(self, host: str, port: int, path: str = "/ws", subprotocol: str = "") -> None:
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.host, self.port, self.path, self.subprotocol = host, port, path, subprotocol
        self._buf = b""

    def request(self) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {self.subprotocol}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def receive(self, data: bytes) -> bytes | None:
        """Feed response bytes; None until complete, then the bytes after it.

        Raises :class:`WebSocketError` when the upgrade is refused or wrong.
        """
        buf = self._buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise WebSocketError("handshake response too large")
            self._buf = buf
            return None
        self._buf = b""
        lines = buf[:end].decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise WebSocketError(f"upgrade refused: {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_for(self.key):
            raise WebSocketError("bad Sec-WebSocket-Accept")
        if self.subprotocol and headers.get("sec-websocket-protocol") != self.subprotocol:
            raise WebSocketError(
                f"subprotocol {self.subprotocol!r} not accepted "
                f"(got {headers.get('sec-websocket-protocol')!r})"
            )
        return buf[end + 4 :]


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (§5.3)."""
    n = len(payload)
    if not n:
        return payload
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One masked, unfragmented client frame with a fresh random mask."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """Code and reason of a close frame (no code: None)."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack_from("!H", payload)[0], payload[2:].decode("utf-8", "replace")


def frame_bounds(data: bytes, pos: int) -> tuple[int, int] | None:
    """Where the payload of the server frame at ``data[pos]`` lies, as
    ``(start, end)``; None while its header is incomplete. ``end`` may lie
    beyond ``data`` (the payload is still arriving), so a caller can refuse a
    frame by its length before buffering it (§5.2; server frames are unmasked).
    """
    n = len(data)
    if n - pos < 2:
        return None
    length = data[pos + 1] & 0x7F
    if length < 126:
        start = pos + 2
    elif length == 126:
        if n - pos < 4:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        start = pos + 4
    else:
        if n - pos < 10:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        start = pos + 10
    return start, start + length


class FrameParser:
    """The server's frames, from bytes to ``(opcode, payload)`` messages.

    Data messages come out whole (fragments joined, opcode of the first);
    control frames (close, ping, pong) as they arrive. A masked server frame,
    reserved bits or a message over ``max_size`` raise :class:`WebSocketError`.
    """

    __slots__ = ("_buf", "_frag", "_frag_op", "max_size")

    def __init__(self, max_size: int = 1 << 24) -> None:
        self.max_size = max_size
        self._buf = b""
        self._frag: list[bytes] = []
        self._frag_op = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        out: list[tuple[int, bytes]] = []
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0 = data[pos]
            if data[pos + 1] & 0x80 or b0 & 0x70:
                raise WebSocketError("masked or extended server frame")
            bounds = frame_bounds(data, pos)
            if bounds is None:
                break
            start, end = bounds
            if end - start > self.max_size:
                raise WebSocketError(f"frame of {end - start} bytes over {self.max_size}")
            if end > n:
                break
            pos = end
            opcode = b0 & 0x0F
            if opcode >= OP_CLOSE or (b0 & 0x80 and opcode and not self._frag):
                # A control frame, or a whole message (the common case).
                out.append((opcode, data[start:end]))
            else:
                self._fragment(b0 & 0x80, opcode, data[start:end], out)
        if pos < n:
            self._buf = data[pos:]
        return out

    def _fragment(
        self, fin: int, opcode: int, payload: bytes, out: list[tuple[int, bytes]]
    ) -> None:
        if opcode:
            if self._frag:
                raise WebSocketError("new data frame inside a fragmented message")
            self._frag_op = opcode
        elif not self._frag:
            raise WebSocketError("continuation frame without a message")
        self._frag.append(payload)
        if sum(map(len, self._frag)) > self.max_size:
            raise WebSocketError("fragmented message too large")
        if fin:
            out.append((self._frag_op, b"".join(self._frag)))
            self._frag = []
