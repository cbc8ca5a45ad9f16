"""The client's Sans-I/O framing (hubbub.client.wire) with plain bytes, no sockets."""

from __future__ import annotations

import pytest

from hubbub.client.wire import Endpoint, TcpFraming, WsFraming
from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame, ws_server_frame
from hubbub.protocol.wsclient import OP_CLOSE, OP_PING, WebSocketError, accept_for, close_payload


def _server_frame(payload: bytes, opcode: int) -> bytes:
    """An unmasked control frame (short payload) as a server sends it."""
    return bytes((0x80 | opcode, len(payload))) + payload


def _upgrade(key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n"
        "Sec-WebSocket-Protocol: hubbub.v1.msgpack\r\n\r\n"
    ).encode()


def test_endpoints_parse_once_and_refuse_other_schemes() -> None:
    assert Endpoint.parse("ws://127.0.0.1:7401/ws") == Endpoint("ws", "127.0.0.1", 7401, "/ws")
    assert Endpoint.parse("tcp://h:1") is Endpoint.parse("tcp://h:1")
    assert isinstance(Endpoint.parse("tcp://h:1").framing(), TcpFraming)
    with pytest.raises(ValueError):
        Endpoint.parse("wss://h:1/ws")


def test_tcp_one_frame_per_chunk_and_frames_split_anywhere() -> None:
    payloads = [encode_msgpack({"push": "pub", "n": n}) for n in range(3)]
    framing = TcpFraming()
    assert framing.open and framing.opening() == b""
    assert list(framing.feed(encode_frame(payloads[0]))) == [payloads[0]]
    stream = b"".join(encode_frame(p) for p in payloads)
    for step in (1, 5, len(stream)):
        framing = TcpFraming()
        out: list[bytes] = []
        for i in range(0, len(stream), step):
            out += framing.feed(stream[i : i + step])
        assert out == payloads
    assert framing.frame(b"xy") == encode_frame(b"xy")


def test_ws_upgrade_then_messages_pings_and_close() -> None:
    framing = WsFraming(Endpoint.parse("ws://127.0.0.1:7401/ws"))
    assert not framing.open
    assert framing.opening().startswith(b"GET /ws HTTP/1.1\r\n")
    assert framing.handshake is not None
    first = ws_server_frame(b"one", text=False)
    reply = _upgrade(framing.handshake.key) + first
    assert list(framing.feed(reply[:20])) == [] and not framing.open
    assert list(framing.feed(reply[20:])) == [b"one"] and framing.open
    out = framing.feed(
        _server_frame(b"hi", OP_PING)
        + ws_server_frame(b"two", text=False)
        + _server_frame(close_payload(3001), OP_CLOSE)
        + ws_server_frame(b"after the close", text=False)
    )
    assert list(out) == [b"two"]
    assert framing.closed and framing.close_code == 3001
    assert len(framing.replies) == 2  # the pong, then the close reply


def test_ws_refused_upgrade_raises() -> None:
    framing = WsFraming(Endpoint.parse("ws://127.0.0.1:7401/ws"))
    framing.opening()
    with pytest.raises(WebSocketError):
        framing.feed(b"HTTP/1.1 403 Forbidden\r\n\r\n")
