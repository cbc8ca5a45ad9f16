"""TCP framing (PROTOCOL.md §1): a 4-byte big-endian length, then the payload.

Sans-I/O: bytes go in with :meth:`FrameDecoder.feed`, payloads come out. The
length is checked against ``max_frame`` as soon as the four header bytes are
in, before any of the body is buffered.

Also here: :func:`ws_server_frame`, which builds an unmasked WebSocket data
frame, so a publication is framed once and the same bytes go to every
WebSocket subscriber (DESIGN.md "The hot path").
"""

from __future__ import annotations

import struct

from hubbub.protocol.exceptions import FrameTooLarge, ProtocolViolation

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME = 65536

_pack_header = HEADER.pack
_unpack_from = HEADER.unpack_from


def encode_frame(payload: bytes) -> bytes:
    """Frame one payload for the TCP transport."""
    return _pack_header(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder of length-prefixed frames.

    One chunk may hold many frames and one frame may span many chunks; both
    decode the same. A bad length header raises; when valid frames came
    before it in the same chunk, they are returned first and the error is
    kept in :attr:`error` (and raised by the next :meth:`feed`), so what a
    peer sent before its mistake is handled however TCP split the bytes.
    """

    __slots__ = ("_buf", "error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        #: The violation found after the frames last returned, if any.
        self.error: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every payload completed by them.

        Raises :class:`FrameTooLarge` for a length over ``max_frame`` and
        :class:`ProtocolViolation` for a zero length.
        """
        if self.error is not None:
            raise self.error
        buf = self._buf
        if not buf:
            # Fast path: parse straight from the chunk, buffer only the tail.
            frames, tail = self._split(data)
            if tail:
                buf += tail
            return frames
        buf += data
        # Trickled bytes of one frame only append: the buffer is copied and
        # split once the pending frame is complete, never once per chunk.
        if len(buf) < HEADER_SIZE:
            return []
        (length,) = _unpack_from(buf, 0)
        if length > self.max_frame or length == 0:
            self._check(length)
        if len(buf) < HEADER_SIZE + length:
            return []
        frames, tail = self._split(bytes(buf))
        buf.clear()
        if tail:
            buf += tail
        return frames

    def _split(self, data: bytes) -> tuple[list[bytes], bytes]:
        frames: list[bytes] = []
        pos = 0
        end = len(data)
        max_frame = self.max_frame
        while end - pos >= HEADER_SIZE:
            (length,) = _unpack_from(data, pos)
            if length > max_frame or length == 0:
                if not frames:
                    self._check(length)
                try:
                    self._check(length)
                except ProtocolViolation as exc:
                    self.error = exc  # raised once these frames are handled
                return frames, b""
            start = pos + HEADER_SIZE
            stop = start + length
            if stop > end:
                break
            frames.append(data[start:stop])
            pos = stop
        return frames, data[pos:]

    def _check(self, length: int) -> None:
        """Raise for a length header out of 1..max_frame (PROTOCOL.md §1)."""
        if length > self.max_frame:
            raise FrameTooLarge(length, self.max_frame)
        if length == 0:
            raise ProtocolViolation("empty frame")


# WebSocket (RFC 6455 §5.2): FIN set, opcode 0x1 text / 0x2 binary, no mask.
_WS_TEXT = 0x81
_WS_BINARY = 0x82


def ws_server_frame(payload: bytes, *, text: bool) -> bytes:
    """An unmasked, unfragmented WebSocket data frame as a server sends it."""
    first = _WS_TEXT if text else _WS_BINARY
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload
