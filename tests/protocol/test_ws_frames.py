"""ws_server_frame: unmasked WebSocket data frames (RFC 6455 §5.2), checked
against websockets' own Sans-I/O client parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from hubbub.protocol.frames import ws_server_frame

BOUNDARY_SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537]


def client() -> ClientProtocol:
    """A client side already past the handshake, as a browser would be."""
    return ClientProtocol(parse_uri("ws://localhost/ws"), state=State.OPEN, max_size=None)


def frames_received(proto: ClientProtocol) -> list[Frame]:
    events = proto.events_received()
    assert all(isinstance(e, Frame) for e in events)
    return [e for e in events if isinstance(e, Frame)]


def parse_one(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as stop:
        frame: Frame = stop.value
    else:  # pragma: no cover - the parser wanted more bytes
        raise AssertionError("incomplete frame")
    assert reader.at_eof(), "bytes left after the frame"
    return frame


@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_header_layout_at_length_boundaries(size: int, text: bool) -> None:
    payload = b"a" * size
    frame = ws_server_frame(payload, text=text)
    first, second = frame[0], frame[1]
    assert first == (0x81 if text else 0x82)  # FIN, no RSV, opcode
    assert second & 0x80 == 0  # a server never masks
    if size <= 125:
        assert second == size
        header_size = 2
    elif size <= 65535:
        assert second == 126
        assert struct.unpack("!H", frame[2:4])[0] == size
        header_size = 4
    else:
        assert second == 127
        assert struct.unpack("!Q", frame[2:10])[0] == size
        header_size = 10
    assert len(frame) == header_size + size
    assert frame[header_size:] == payload


@pytest.mark.parametrize("text", [True, False])
@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_websockets_frame_parser_reads_it(size: int, text: bool) -> None:
    payload = bytes(i % 64 + 32 for i in range(size))  # printable ASCII, valid UTF-8
    frame = parse_one(ws_server_frame(payload, text=text))
    assert frame.opcode == (Opcode.TEXT if text else Opcode.BINARY)
    assert frame.fin
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert frame.data == payload


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_websockets_client_protocol_receives_it(size: int) -> None:
    proto = client()
    text_payload = "é".encode() * (size // 2) + b"x" * (size % 2)
    proto.receive_data(ws_server_frame(text_payload, text=True))
    proto.receive_data(ws_server_frame(b"\xff" * size, text=False))
    assert proto.parser_exc is None
    assert proto.state is State.OPEN
    events = frames_received(proto)
    assert [(e.opcode, e.fin, e.data) for e in events] == [
        (Opcode.TEXT, True, text_payload),
        (Opcode.BINARY, True, b"\xff" * size),
    ]
    assert proto.data_to_send() == []


@settings(max_examples=80, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.binary(max_size=300), st.booleans()).map(
            lambda t: (t[0].hex().encode() if t[1] else t[0], t[1])
        ),
        min_size=1,
        max_size=5,
    ),
    chunk=st.integers(min_value=1, max_value=700),
)
def test_concatenated_frames_in_any_chunks(frames: list[tuple[bytes, bool]], chunk: int) -> None:
    stream = b"".join(ws_server_frame(p, text=t) for p, t in frames)
    proto = client()
    for i in range(0, len(stream), chunk):
        proto.receive_data(stream[i : i + chunk])
    assert proto.parser_exc is None
    events = frames_received(proto)
    assert [(e.opcode, e.data) for e in events] == [
        (Opcode.TEXT if t else Opcode.BINARY, p) for p, t in frames
    ]
