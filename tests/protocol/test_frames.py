"""TCP framing (PROTOCOL.md §1): FrameDecoder and encode_frame, with plain bytes."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.exceptions import FrameTooLarge, ProtocolViolation
from hubbub.protocol.frames import DEFAULT_MAX_FRAME, HEADER_SIZE, FrameDecoder, encode_frame

FAST = settings(max_examples=150, deadline=None)


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def feed_all(decoder: FrameDecoder, chunks: list[bytes], stream: bytes) -> list[bytes]:
    """Feed ``chunks`` (which concatenate to ``stream``), checking after each chunk
    that the decoder holds exactly the bytes of the one frame not yet complete."""
    out: list[bytes] = []
    fed = 0
    for chunk in chunks:
        got = decoder.feed(chunk)
        assert all(type(p) is bytes for p in got)
        out += got
        fed += len(chunk)
        done = sum(HEADER_SIZE + len(p) for p in out)
        assert decoder.buffered == fed - done
        # What is held is a prefix of one frame, never a whole one.
        pending = stream[done:fed]
        if len(pending) >= HEADER_SIZE:
            assert len(pending) < HEADER_SIZE + struct.unpack(">I", pending[:HEADER_SIZE])[0]
    return out


# -- encode_frame -------------------------------------------------------------


def test_encode_frame_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 256) == b"\x00\x00\x01\x00" + b"x" * 256


def test_default_max_frame_is_the_protocol_default() -> None:
    assert DEFAULT_MAX_FRAME == 65536
    assert FrameDecoder().max_frame == 65536


# -- limits -------------------------------------------------------------------


@pytest.mark.parametrize("max_frame", [1, 16, DEFAULT_MAX_FRAME])
def test_frame_of_exactly_max_frame_is_accepted(max_frame: int) -> None:
    payload = b"p" * max_frame
    assert FrameDecoder(max_frame).feed(encode_frame(payload)) == [payload]


def test_header_over_max_frame_raises_without_the_body() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header(101))
    exc = info.value
    assert isinstance(exc, ProtocolViolation)
    assert (exc.length, exc.limit) == (101, 100)
    assert exc.code is DisconnectCode.PROTOCOL_ERROR
    assert exc.reason == "frame too large"


@FAST
@given(
    max_frame=st.integers(min_value=1, max_value=DEFAULT_MAX_FRAME),
    excess=st.integers(min_value=1, max_value=2**32 - 1),
    cut=st.integers(min_value=0, max_value=HEADER_SIZE - 1),
)
def test_oversized_header_raises_as_soon_as_its_last_byte_arrives(
    max_frame: int, excess: int, cut: int
) -> None:
    length = min(max_frame + excess, 2**32 - 1)
    decoder = FrameDecoder(max_frame)
    raw = header(length)
    if cut:
        assert decoder.feed(raw[:cut]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(raw[cut:])


@FAST
@given(before=st.lists(st.binary(min_size=1, max_size=20), max_size=3))
def test_oversized_header_after_other_frames_at_every_cut(before: list[bytes]) -> None:
    """The limit holds whether the header starts a chunk, follows frames in one,
    or completes a buffered prefix; and at every cut, every frame before it
    comes out first. The chunk that completes the header raises, or (when it
    also completed frames) returns them and holds the error for the next feed."""
    stream = b"".join(map(encode_frame, before)) + header(65)
    for i in range(len(stream)):
        decoder = FrameDecoder(max_frame=64)
        got = decoder.feed(stream[:i])
        try:
            got += decoder.feed(stream[i:])
        except FrameTooLarge:
            assert decoder.error is None
        else:
            assert isinstance(decoder.error, FrameTooLarge)
            with pytest.raises(FrameTooLarge):
                decoder.feed(b"")
        assert got == before


@pytest.mark.parametrize("prefix", [b"", encode_frame(b"ok")])
@pytest.mark.parametrize("cut", [0, 1, 3])
def test_zero_length_frame_raises(prefix: bytes, cut: int) -> None:
    decoder = FrameDecoder()
    stream = prefix + header(0) + b"more"
    split = len(prefix) + cut
    with pytest.raises(ProtocolViolation) as info:
        if cut:
            decoder.feed(stream[:split])
        decoder.feed(stream[split:])
    assert not isinstance(info.value, FrameTooLarge)
    assert info.value.code is DisconnectCode.PROTOCOL_ERROR


# -- random input -------------------------------------------------------------


@FAST
@given(
    data=st.binary(max_size=300),
    max_frame=st.integers(min_value=1, max_value=64),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_random_bytes_raise_only_protocol_violation(
    data: bytes, max_frame: int, cuts: list[int]
) -> None:
    decoder = FrameDecoder(max_frame)
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for a, b in itertools.pairwise(points):
            for payload in decoder.feed(data[a:b]):
                assert 1 <= len(payload) <= max_frame
            assert decoder.buffered < HEADER_SIZE + max_frame
    except ProtocolViolation:
        pass


# -- round trip ---------------------------------------------------------------

payload_lists = st.lists(st.binary(min_size=1, max_size=64), max_size=6)


@FAST
@given(payloads=payload_lists)
def test_payloads_decode_from_one_chunk(payloads: list[bytes]) -> None:
    stream = b"".join(map(encode_frame, payloads))
    assert feed_all(FrameDecoder(), [stream], stream) == payloads


@settings(max_examples=60, deadline=None)
@given(payloads=payload_lists)
def test_payloads_decode_split_at_every_byte_boundary(payloads: list[bytes]) -> None:
    stream = b"".join(map(encode_frame, payloads))
    # Two chunks, cut at each position in turn.
    for i in range(len(stream) + 1):
        chunks = [stream[:i], stream[i:]]
        assert feed_all(FrameDecoder(), chunks, stream) == payloads
    # One byte per chunk.
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_all(FrameDecoder(), chunks, stream) == payloads


@FAST
@given(payloads=payload_lists, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_payloads_decode_split_at_random_points(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(map(encode_frame, payloads))
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert feed_all(FrameDecoder(), chunks, stream) == payloads


def test_empty_chunks_are_harmless() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\x00\x01x") == [b"x"]
    assert decoder.buffered == 0


def test_max_size_frame_trickled_one_byte_at_a_time() -> None:
    payload = bytes(range(256)) * (DEFAULT_MAX_FRAME // 256)
    stream = encode_frame(payload) + encode_frame(b"next")
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
        assert decoder.buffered <= HEADER_SIZE + DEFAULT_MAX_FRAME - 1
    assert out == [payload, b"next"]
    assert decoder.buffered == 0


def test_frames_before_a_bad_header_in_one_chunk_come_out_first() -> None:
    """Whatever the split, what the peer sent before its mistake is decoded:
    the error waits in ``error`` and the next feed raises it."""
    decoder = FrameDecoder(max_frame=16)
    chunk = encode_frame(b"one") + encode_frame(b"two") + b"\xff\xff\xff\xff" + b"junk"
    assert decoder.feed(chunk) == [b"one", b"two"]
    assert isinstance(decoder.error, FrameTooLarge)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"more")
    # Alone (or first in its chunk), a bad header still raises at once.
    fresh = FrameDecoder(max_frame=16)
    with pytest.raises(ProtocolViolation):
        fresh.feed(b"\x00\x00\x00\x00")
    assert fresh.error is None
