"""Hypothesis strategies for the protocol tests: valid messages and their values."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

#: msgpack's integer range (int64 .. uint64).
msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)

# "$b64" alone in a map is the JSON form of bytes (PROTOCOL.md §1), so a
# valid message never uses it as a key of its own.
keys = st.text(max_size=12).filter(lambda k: k != "$b64")

scalars = (
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)

#: Any value a message may carry: scalars, lists and maps with str keys.
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=16,
)

#: A valid message: a map with str keys.
messages = st.dictionaries(keys, values, max_size=6)


def assert_same(got: Any, want: Any, path: str = "$") -> None:
    """Deep equality that also compares types (``1 == 1.0 == True`` in Python)."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key, item in want.items():
            assert_same(got[key], item, f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == want and math.copysign(1, got) == math.copysign(1, want), path
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"
