"""The stamp in every load-test publication."""

from __future__ import annotations

import pytest

from hubbub.loadtest.accounting.payload import (
    STAMP_SIZE,
    make_payload,
    publisher_of,
    read_stamp,
    stream_id,
)


def test_stamp_round_trips_and_pads_to_size() -> None:
    sid = stream_id(123_456, 7)
    data = make_payload(42, sid, 9, 1234.5678, 100)
    assert len(data) == 100
    assert read_stamp(data) == (42, sid, 9, 1234.5678)
    assert publisher_of(sid) == 123_456
    assert len(make_payload(1, 1, 1, 0.0, 3)) == STAMP_SIZE  # never shorter than the stamp


@pytest.mark.parametrize("data", [b"", b"HB", b"XX" + b"\0" * 40, "HB" + "x" * 40, None, 5])
def test_non_stamps_are_not_read(data: object) -> None:
    assert read_stamp(data) is None


def test_channel_numbers_are_bounded() -> None:
    with pytest.raises(ValueError):
        stream_id(1, 1 << 16)
