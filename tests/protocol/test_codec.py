"""The msgpack and JSON codecs (PROTOCOL.md §1): round trips and refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubbub.protocol.codec import (
    MAX_DEPTH,
    SUBPROTOCOLS,
    Encoding,
    _decode_json_stdlib,
    _encode_json_stdlib,
    decode,
    decode_json,
    decode_msgpack,
    encode,
    encode_json,
    encode_msgpack,
)
from hubbub.protocol.exceptions import ProtocolViolation
from tests.protocol.strategies import assert_same, messages

FAST = settings(max_examples=150, deadline=None)


def nested(depth: int) -> dict[str, Any]:
    """A message whose maps and lists nest ``depth`` deep (the top map is 1)."""
    value: Any = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value} if depth > 1 else {}


# -- encodings ----------------------------------------------------------------


def test_subprotocols_are_the_protocol_names() -> None:
    assert Encoding.MSGPACK.value == "hubbub.v1.msgpack"
    assert Encoding.JSON.value == "hubbub.v1.json"
    assert set(SUBPROTOCOLS) == {"hubbub.v1.msgpack", "hubbub.v1.json"}


def test_msgpack_keeps_bytes_binary() -> None:
    raw = encode_msgpack({"data": b"\x00\xff"})
    assert msgpack.unpackb(raw, raw=False) == {"data": b"\x00\xff"}
    assert b"\xc4\x02\x00\xff" in raw  # bin 8, not str


def test_json_sends_bytes_as_b64_object() -> None:
    raw = encode_json({"data": b"\x00\xff", "text": "é"})
    assert json.loads(raw) == {"data": {"$b64": "AP8="}, "text": "é"}
    raw.decode("utf-8")  # UTF-8, as a WebSocket text message must be


def test_json_b64_object_decodes_to_bytes() -> None:
    assert decode_json(b'{"data": {"$b64": "AP8="}}') == {"data": b"\x00\xff"}
    assert decode_json('{"x": [{"$b64": ""}]}') == {"x": [b""]}


@pytest.mark.parametrize(
    "payload",
    [b'{"d": {"$b64": 5}}', b'{"d": {"$b64": "not base64!"}}', b'{"d": {"$b64": "AP8"}}'],
)
def test_bad_b64_object_is_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(payload)


def test_other_objects_with_b64_key_stay_plain_json() -> None:
    assert decode_json(b'{"d": {"$b64": "AP8=", "x": 1}}') == {"d": {"$b64": "AP8=", "x": 1}}


# -- round trips --------------------------------------------------------------


@FAST
@given(message=messages)
def test_msgpack_round_trip(message: dict[str, Any]) -> None:
    assert_same(decode_msgpack(encode_msgpack(message)), message)
    assert_same(decode(encode(message, Encoding.MSGPACK), Encoding.MSGPACK), message)


@FAST
@given(message=messages)
def test_json_round_trip(message: dict[str, Any]) -> None:
    assert_same(decode_json(encode_json(message)), message)
    assert_same(decode(encode(message, Encoding.JSON), Encoding.JSON), message)
    assert_same(decode_json(encode_json(message).decode("utf-8")), message)


@FAST
@given(message=messages)
def test_across_encodings(message: dict[str, Any]) -> None:
    """What a msgpack client sends reaches a JSON client unchanged, and back."""
    via_json = decode_json(encode_json(decode_msgpack(encode_msgpack(message))))
    assert_same(decode_msgpack(encode_msgpack(via_json)), message)


def test_integer_range_edges_survive_both() -> None:
    message = {"lo": -(2**63), "hi": 2**64 - 1, "zero": 0, "neg0": -0.0}
    for enc in Encoding:
        assert_same(decode(encode(message, enc), enc), message)


def test_nesting_up_to_max_depth_survives_both() -> None:
    message = nested(MAX_DEPTH)
    for enc in Encoding:
        assert_same(decode(encode(message, enc), enc), message)


# -- refusals -----------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes_into_decode_msgpack(data: bytes) -> None:
    try:
        message = decode_msgpack(data)
    except ProtocolViolation:
        return
    assert isinstance(message, dict)
    encode_json(message)  # whatever is accepted can be sent to a JSON client
    encode_msgpack(message)


@FAST
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_into_decode_json(data: bytes) -> None:
    try:
        message = decode_json(data)
    except ProtocolViolation:
        return
    assert isinstance(message, dict)
    encode_json(message)
    encode_msgpack(message)


# JSON-ish values beyond what a valid message holds: unbounded integers,
# surrogates, NaN, deep nests; written with json.dumps and fed to decode_json.
_wild_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
_wild = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _wild_text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_wild_text, c, max_size=3),
    max_leaves=12,
)


@FAST
@given(body=st.dictionaries(_wild_text, _wild, max_size=4), ascii_only=st.booleans())
def test_wild_json_decodes_only_to_what_both_encoders_take(
    body: dict[str, Any], ascii_only: bool
) -> None:
    text = json.dumps(body, ensure_ascii=ascii_only)
    for payload in (text, text.encode("utf-8", "surrogatepass")):
        try:
            message = decode_json(payload)
        except ProtocolViolation:
            continue
        encode_json(message)
        encode_msgpack(message)


_wild_msgpack = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.none()
            | st.booleans()
            | st.integers(-5, 5)
            | st.floats()
            | st.text(max_size=4)
            | st.binary(max_size=4),
            c,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@FAST
@given(body=st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), _wild_msgpack))
def test_wild_msgpack_decodes_only_to_what_both_encoders_take(body: dict[Any, Any]) -> None:
    """Non-str keys, NaN and infinities, uint64: a JSON client still gets JSON."""
    message = decode_msgpack(msgpack.packb(body, use_bin_type=True))
    json.loads(encode_json(message))
    encode_msgpack(message)


@pytest.mark.parametrize("value", [[], [1, 2], "map", 1, None, True, 1.5, b"x"])
def test_non_map_top_level_is_a_violation(value: Any) -> None:
    with pytest.raises(ProtocolViolation):
        decode_msgpack(msgpack.packb(value, use_bin_type=True))
    with pytest.raises(ProtocolViolation):
        decode_json(json.dumps(value if not isinstance(value, bytes) else "x").encode())


def test_top_level_b64_object_is_bytes_not_a_map() -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(b'{"$b64": "AP8="}')


@pytest.mark.parametrize("payload", [b"", b"\x81", b"\x81\xa1a", b"\xc1", b"\x80\x00"])
def test_truncated_or_bad_msgpack_is_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decode_msgpack(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b'{"a":1}x',
        b"{'a': 1}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"\xff\xfe{}",
        b'{"a": "\xff"}',
    ],
)
def test_bad_json_is_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(payload)


@pytest.mark.parametrize("code", [0, 1, 5, 127, -1, -2, -128])
def test_msgpack_ext_types_are_refused(code: int) -> None:
    # {"data": ext 8, 3 bytes of type ``code``}, by hand: msgpack's ExtType
    # cannot build the reserved negative types (-1 with 3 bytes is no timestamp).
    payload = b"\x81\xa4data\xc7\x03" + code.to_bytes(1, "big", signed=True) + b"xyz"
    with pytest.raises(ProtocolViolation):
        decode_msgpack(payload)
    if code >= 0:
        with pytest.raises(ProtocolViolation):
            decode_msgpack(msgpack.packb({"data": [msgpack.ExtType(code, b"")]}))


def test_msgpack_timestamp_decodes_to_float_seconds() -> None:
    payload = msgpack.packb({"t": msgpack.Timestamp(1700000000, 500_000_000)}, datetime=False)
    assert decode_msgpack(payload) == {"t": 1700000000.5}


def test_msgpack_nan_and_infinities_go_to_json_as_null() -> None:
    payload = msgpack.packb(
        {"nan": math.nan, "list": [math.inf, -math.inf, 1.5], "map": {"x": math.nan}}
    )
    message = decode_msgpack(payload)
    assert math.isnan(message["nan"])
    assert json.loads(encode_json(message)) == {
        "nan": None,
        "list": [None, None, 1.5],
        "map": {"x": None},
    }
    # msgpack clients still get the floats themselves.
    again = decode_msgpack(encode_msgpack(message))
    assert math.isnan(again["nan"]) and again["list"][:2] == [math.inf, -math.inf]


def test_msgpack_binary_keys_go_to_json_as_base64_text() -> None:
    message = decode_msgpack(msgpack.packb({"d": {b"\x00\xff": 1}}, use_bin_type=True))
    assert json.loads(encode_json(message)) == {"d": {"AP8=": 1}}


@pytest.mark.parametrize("key", [[1], {"a": 1}])
def test_msgpack_unhashable_keys_are_a_violation(key: Any) -> None:
    # A map keyed by an array/map: packed by hand, Python cannot build it.
    payload = b"\x81" + msgpack.packb(key) + b"\x01"
    with pytest.raises(ProtocolViolation):
        decode_msgpack(payload)


# A JSON client can write what neither encoder can write again: lone
# surrogates, integers past 64 bits, nesting past the recursion limit. The
# decoder refuses them, so one client's message never breaks another's.


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": "\\ud800"}',
        b'{"a": "x\\uDFFFy"}',
        b'{"\\udc00": 1}',
        b'{"a": ["\\ud83d"]}',  # the high half of a pair, alone
        '{"a": "\ud800"}'.encode("utf-8", "surrogatepass"),
    ],
)
def test_json_lone_surrogates_are_a_violation(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(payload)


def test_json_escaped_surrogate_pair_is_one_character() -> None:
    message = decode_json(b'{"a": "\\ud83d\\ude00"}')
    assert message == {"a": "\U0001f600"}
    assert decode_msgpack(encode_msgpack(message)) == message


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30, -(10**40)])
def test_json_integers_outside_msgpack_range_are_a_violation(value: int) -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(f'{{"a": [{value}]}}'.encode())


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 10**18, 1234567890123456789.5])
def test_json_long_numbers_inside_the_range_are_fine(value: float) -> None:
    assert decode_json(f'{{"a": {value}}}'.encode()) == {"a": value}


def test_json_huge_exponent_is_infinity_and_goes_back_as_null() -> None:
    message = decode_json(b'{"a": 1e400}')
    assert message == {"a": math.inf}
    assert json.loads(encode_json(message)) == {"a": None}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 1020, 5000])
def test_nesting_past_max_depth_is_a_violation(depth: int) -> None:
    with pytest.raises(ProtocolViolation):
        decode_json(b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")
    with pytest.raises(ProtocolViolation):
        decode_msgpack(b"\x81\xa1a" + b"\x91" * (depth - 2) + b"\x90")
    with pytest.raises(ProtocolViolation):
        decode_msgpack(b"\x81\xa1a" + b"\x81\xa1a" * (depth - 2) + b"\x80")


def test_deep_maps_in_json_are_counted_too() -> None:
    depth = MAX_DEPTH + 1
    payload = '{"a":' * depth + "1" + "}" * depth
    with pytest.raises(ProtocolViolation):
        decode_json(payload)
    assert decode_json('{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH)


# -- orjson is a fast path: the stdlib's verdict and value stand -------------------


def _verdict(decoder: Any, payload: bytes | str) -> Any:
    try:
        return ("ok", decoder(payload))
    except ProtocolViolation as exc:
        return ("violation", exc.code)


@FAST
@given(
    body=st.dictionaries(_wild_text, _wild, max_size=4) | messages,
    ascii_only=st.booleans(),
)
def test_fast_json_decode_agrees_with_the_stdlib(body: dict[str, Any], ascii_only: bool) -> None:
    text = json.dumps(body, ensure_ascii=ascii_only, default=repr)
    payload = text.encode("utf-8", "surrogatepass")
    fast, slow = _verdict(decode_json, payload), _verdict(_decode_json_stdlib, payload)
    assert fast[0] == slow[0]
    if fast[0] == "ok":
        assert_same(fast[1], slow[1])


@FAST
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fast_json_decode_agrees_on_random_bytes(data: bytes) -> None:
    assert _verdict(decode_json, data)[0] == _verdict(_decode_json_stdlib, data)[0]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":18446744073709551616}',  # past uint64: orjson would make it a float
        b'{"a":-9223372036854775809}',
        b'{"a":1e400}',  # the stdlib reads infinity; orjson refuses
        b'{"a":"\\ud800"}',  # a lone surrogate
        b'{"\\u0024b64":"aGk="}',  # $b64 spelled with escapes
        b'{"a":{"$b64":"aGk="}}',
        b"[" * 50 + b"{}" + b"]" * 50,
    ],
)
def test_fast_json_decode_corners_take_the_stdlib_path(payload: bytes) -> None:
    assert _verdict(decode_json, payload) == _verdict(_decode_json_stdlib, payload)


@FAST
@given(message=messages)
def test_fast_json_encode_means_what_the_stdlib_wrote(message: dict[str, Any]) -> None:
    """orjson and the stdlib may spell a float differently (1e-07 / 1e-7); the
    value a client reads back is the same."""
    assert_same(json.loads(encode_json(message)), json.loads(_encode_json_stdlib(message)))
