"""The Sans-I/O WebSocket client: handshake and server frames, as plain bytes."""

from __future__ import annotations

import struct

import pytest

from hubbub.protocol.exceptions import WebSocketError
from hubbub.protocol.frames import ws_server_frame
from hubbub.protocol.wsclient import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    ClientHandshake,
    FrameParser,
    accept_for,
    client_frame,
    frame_bounds,
    mask,
    parse_close,
)


def response(key: str, protocol: str = "hubbub.v1.msgpack", status: str = "101") -> bytes:
    return (
        f"HTTP/1.1 {status} Switching Protocols\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_for(key)}\r\n"
        f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


def test_accept_matches_rfc_example() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_in_pieces_returns_the_bytes_after_it() -> None:
    hs = ClientHandshake("127.0.0.1", 7401, "/ws", "hubbub.v1.msgpack")
    request = hs.request().decode()
    assert (
        request.startswith("GET /ws HTTP/1.1\r\n") and "Sec-WebSocket-Protocol: hubbub" in request
    )
    reply = response(hs.key) + b"\x82\x01x"
    assert hs.receive(reply[:10]) is None
    assert hs.receive(reply[10:]) == b"\x82\x01x"


@pytest.mark.parametrize(
    "bad",
    [
        lambda key: response(key, status="403"),
        lambda key: response("wrongkey00000000wrongk=="),
        lambda key: response(key, protocol="hubbub.v1.json"),
    ],
)
def test_bad_handshakes_are_refused(bad) -> None:  # type: ignore[no-untyped-def]
    hs = ClientHandshake("h", 1, "/ws", "hubbub.v1.msgpack")
    with pytest.raises(WebSocketError):
        hs.receive(bad(hs.key))


def test_frames_split_anywhere_and_of_every_length_size() -> None:
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 70000, b"d"]
    stream = b"".join(ws_server_frame(p, text=False) for p in payloads)
    for step in (1, 7, 1000, len(stream)):
        parser = FrameParser()
        out = []
        for i in range(0, len(stream), step):
            out += parser.feed(stream[i : i + step])
        assert out == [(OP_BINARY, p) for p in payloads]


def test_fragmented_message_and_interleaved_control_frame() -> None:
    first = bytes((OP_TEXT, 3)) + b"abc"  # FIN clear
    ping = bytes((0x80 | OP_PING, 1)) + b"p"
    last = bytes((0x80, 2)) + b"de"  # continuation, FIN
    assert FrameParser().feed(first + ping + last) == [(OP_PING, b"p"), (OP_TEXT, b"abcde")]


@pytest.mark.parametrize(
    "data",
    [
        bytes((0x82, 0x81)) + b"mask" + b"x",  # masked server frame
        bytes((0xC2, 1)) + b"x",  # RSV1 (compression) set
        bytes((0x80, 1)) + b"x",  # continuation without a message
    ],
)
def test_protocol_errors(data: bytes) -> None:
    with pytest.raises(WebSocketError):
        FrameParser().feed(data)


def test_size_limit() -> None:
    with pytest.raises(WebSocketError):
        FrameParser(max_size=10).feed(ws_server_frame(b"x" * 11, text=False))


def test_client_frames_are_masked_and_unmask_back() -> None:
    for payload in (b"", b"hi", b"z" * 300, b"q" * 70000):
        frame = client_frame(payload, OP_BINARY)
        assert frame[0] == 0x80 | OP_BINARY and frame[1] & 0x80
        n = frame[1] & 0x7F
        offset = 2 if n < 126 else (4 if n == 126 else 10)
        key = frame[offset : offset + 4]
        assert mask(frame[offset + 4 :], key) == payload


def test_close_payload() -> None:
    assert parse_close(struct.pack("!H", 3001) + b"draining") == (3001, "draining")
    assert parse_close(b"") == (None, "")
    assert FrameParser().feed(bytes((0x80 | OP_CLOSE, 2)) + b"\x0b\xb9") == [
        (OP_CLOSE, b"\x0b\xb9")
    ]


def test_frame_bounds_at_every_header_size() -> None:
    """Payload bounds of server frames with 1-, 2- and 8-byte lengths; None
    until the header is in; the end may lie past the bytes held so far."""
    for size in (0, 125, 126, 65535, 65536):
        frame = b"xx" + ws_server_frame(b"p" * size, text=False)
        start, end = frame_bounds(frame, 2) or (0, 0)
        assert frame[start:end] == b"p" * size and end == len(frame)
        header = start - 2
        assert frame_bounds(frame[: 2 + header - 1], 2) is None  # header incomplete
        assert frame_bounds(frame[: 2 + header], 2) == (start, end)  # payload still due
