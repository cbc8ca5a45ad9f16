"""Fuzz targets: each takes one input's bytes and must return without an
exception other than the ones the code under test promises (a protocol
violation, a command error). ``make fuzz`` runs each under atheris
(coverage-guided, libFuzzer's engine): ``python -m tests.fuzz TARGET -runs=N``.

The transport targets run the node's real read loops (``serve_ws``,
``serve_admin``) over an in-memory stream: a :class:`FakeTransport` records
what the node writes, the input is fed to a real ``asyncio.StreamReader`` in
chunks the input chooses, then EOF. Whatever the bytes, the loop must end by
itself, close its transport, and let nothing escape.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode

from hubbub.protocol.codec import decode_json, decode_msgpack, encode_json, encode_msgpack
from hubbub.protocol.exceptions import CommandError, ProtocolViolation
from hubbub.protocol.frames import FrameDecoder
from hubbub.protocol.messages import parse_command

Target = Callable[[bytes], None]


def _chunks(data: bytes) -> list[bytes]:
    """Split the input where its first byte says: how TCP might have cut it."""
    if not data:
        return []
    step = 1 + data[0] % 64
    body = data[1:]
    return [body[i : i + step] for i in range(0, len(body), step)]


def frame_decoder(data: bytes) -> None:
    """The TCP frame decoder: any bytes, cut anywhere, give frames, then at
    most a ProtocolViolation; the same frames however the bytes were cut."""
    max_frame = 1 + (data[:1] or b"\0")[0] * 256
    whole = FrameDecoder(max_frame)
    try:
        expected = whole.feed(data[1:])
    except ProtocolViolation:
        expected = []
    decoder = FrameDecoder(max_frame)
    got: list[bytes] = []
    try:
        for chunk in _chunks(data):
            got += decoder.feed(chunk)
    except ProtocolViolation:
        pass
    assert got[: len(expected)] == expected


def codecs(data: bytes) -> None:
    """Both decoders; whatever decodes must encode again in both formats."""
    for decode in (decode_msgpack, decode_json):
        try:
            message = decode(data)
        except ProtocolViolation:
            continue
        encode_msgpack(message)
        encode_json(message)


def command(data: bytes) -> None:
    """parse_command on whatever a client's message decodes to."""
    for decode in (decode_msgpack, decode_json):
        try:
            message = decode(data)
        except ProtocolViolation:
            continue
        with contextlib.suppress(CommandError):
            parse_command(message)


# -- the transports' read loops ---------------------------------------------------


class FakeTransport(asyncio.Transport):
    """Enough of a TCP transport for the node: records writes, never blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closing = False
        self.eof = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.out.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self.closing


class Harness:
    """One event loop and one node for every input of a transport target."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.node: Any = self.loop.run_until_complete(self._node())

    @staticmethod
    async def _node() -> Any:
        from hubbub.cluster.memory import MemoryBroker
        from hubbub.server.config import AuthConfig, Config
        from hubbub.server.node import Node

        config = Config(auth=AuthConfig(api_key="k", allowed_origins=("https://ok.example",)))
        node = Node(config, MemoryBroker())
        await node.broker.start(node.hub)
        return node

    def run(self, serve: Any, chunks: list[bytes], *, admin: bool = False) -> FakeTransport:
        """Run ``serve(services, reader, writer)`` (the admin listener's takes
        the node) over ``chunks``, then EOF."""
        transport = FakeTransport()

        async def go() -> None:
            reader = asyncio.StreamReader(limit=2**16)
            reader.set_transport(transport)
            protocol = asyncio.StreamReaderProtocol(reader)
            writer = asyncio.StreamWriter(transport, protocol, reader, self.loop)
            for chunk in chunks:
                reader.feed_data(chunk)
            reader.feed_eof()
            first = self.node if admin else self.node.services
            await asyncio.wait_for(serve(first, reader, writer), 5.0)

        self.loop.run_until_complete(go())
        assert transport.closing, "the read loop ended without closing its transport"
        # Let callbacks the loop scheduled (flushes, releases) run before the next input.
        self.loop.run_until_complete(asyncio.sleep(0))
        return transport


_harness: Harness | None = None


def _get_harness() -> Harness:
    global _harness
    if _harness is None:
        _harness = Harness()
    return _harness


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
_OPCODES = list(Opcode)


def _ws_frames(data: bytes) -> bytes:
    """Client frames built from the input: opcode, fin and length from a
    header byte each, payload from what follows; some left raw."""
    out = bytearray()
    i = 0
    while i < len(data):
        head = data[i]
        size = data[i + 1] if i + 1 < len(data) else 0
        payload = data[i + 2 : i + 2 + size]
        i += 2 + size
        if head & 0x80:  # raw bytes: whatever a broken client might send
            out += payload
            continue
        opcode = _OPCODES[head % len(_OPCODES)]
        frame = Frame(opcode, payload, fin=bool(head & 0x40))
        try:
            out += frame.serialize(mask=True, extensions=[])
        except Exception:  # a control frame the client side refuses to build
            out += payload
    return bytes(out)


def ws_read_loop(data: bytes) -> None:
    """serve_ws over a handshake (good, or with the input's headers) and
    frames built from the input, cut into chunks."""
    from hubbub.server.ws import serve_ws

    if not data:
        return
    mode = data[0] % 4
    body = data[1:]
    if mode == 0:
        stream = body  # raw bytes from the first byte on
    elif mode == 1:
        stream = HANDSHAKE + b"\r\n" + _ws_frames(body)
    elif mode == 2:  # a handshake with headers of the input's making
        cut = body.find(b"\r\n\r\n")
        stream = HANDSHAKE + (body if cut < 0 else body[: cut + 4] + _ws_frames(body[cut + 4 :]))
    else:  # a refused handshake (origin) with frames behind it
        stream = HANDSHAKE + b"Origin: https://evil.example\r\n\r\n" + _ws_frames(body)
    step = 16 * (1 + data[0] // 4)
    _get_harness().run(serve_ws, [stream[i : i + step] for i in range(0, len(stream), step)])


def tcp_read_loop(data: bytes) -> None:
    """serve_tcp over frames of the input's making."""
    from hubbub.server.tcp import serve_tcp

    _get_harness().run(serve_tcp, _chunks(data))


def admin_http(data: bytes) -> None:
    """serve_admin over whatever bytes, and over requests with the input's tail."""
    from hubbub.server.admin import serve_admin

    if not data:
        return
    mode = data[0] % 3
    body = data[1:]
    if mode == 0:
        stream = body
    elif mode == 1:
        stream = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n" + body
    else:
        stream = b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n" + body
    _get_harness().run(serve_admin, _chunks(bytes([data[0]]) + stream), admin=True)


TARGETS: dict[str, Target] = {
    "frames": frame_decoder,
    "codecs": codecs,
    "commands": command,
    "ws": ws_read_loop,
    "tcp": tcp_read_loop,
    "admin": admin_http,
}
