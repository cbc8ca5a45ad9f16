"""The stamp every load-test publication carries in its ``data``.

A binary value (msgpack ``bin``; ``{"$b64": ...}`` for JSON clients):

    b"HB" | run u32 | stream u64 | seq u64 | intended f64 | padding up to ``size``

``stream`` names one (publisher, channel) pair: the publisher's global user
index shifted left 16 bits, plus the channel's number within that publisher.
``seq`` counts 1, 2, 3 ... per stream. ``intended`` is the time the publication
was *scheduled* for (``time.monotonic``, one clock for every process on the
machine), so latency = receive time - intended time.
"""

from __future__ import annotations

import struct

MAGIC = b"HB"
_STAMP = struct.Struct(">IQQd")
#: Bytes of the stamp; payloads are never shorter.
STAMP_SIZE = len(MAGIC) + _STAMP.size
#: Channels one publisher may number (the low 16 bits of a stream id).
CHANNELS_PER_PUBLISHER = 1 << 16

_pack = _STAMP.pack
#: ``unpack_stamp(buf, pos)``: ``(run, stream, seq, intended)`` of the stamp whose
#: magic ends at ``buf[pos]`` (the receivers' hot path calls it directly).
unpack_stamp = _STAMP.unpack_from


def stream_id(publisher: int, channel_number: int) -> int:
    """The stream of publisher ``publisher`` (global user index) on its ``channel_number``."""
    if not 0 <= channel_number < CHANNELS_PER_PUBLISHER:
        raise ValueError(f"channel number {channel_number} out of range")
    return (publisher << 16) | channel_number


def publisher_of(stream: int) -> int:
    return stream >> 16


def make_payload(run: int, stream: int, seq: int, intended: float, size: int) -> bytes:
    """A stamped payload of ``max(size, STAMP_SIZE)`` bytes."""
    stamp = MAGIC + _pack(run, stream, seq, intended)
    pad = size - STAMP_SIZE
    return stamp + b"." * pad if pad > 0 else stamp


def read_stamp(data: object) -> tuple[int, int, int, float] | None:
    """``(run, stream, seq, intended)`` of a stamped payload, else None."""
    if type(data) is not bytes or len(data) < STAMP_SIZE or data[:2] != MAGIC:
        return None
    return unpack_stamp(data, 2)


def msgpack_mark(size: int) -> bytes:
    """How a stamped payload of ``size`` (< 256) bytes starts inside a msgpack message:
    its ``bin 8`` header and the magic, so a receiver finds the stamp without decoding."""
    return b"\xc4" + bytes((max(size, STAMP_SIZE),)) + MAGIC
