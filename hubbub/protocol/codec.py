"""The two encodings of a message: msgpack (TCP and WebSocket binary) and JSON.

A message is one map. JSON carries binary values as ``{"$b64": "..."}``
(PROTOCOL.md §1). Anything that does not decode to a map is a
:class:`ProtocolViolation`. msgpack extension types are refused (they have no
JSON form); msgpack timestamps decode to float seconds; non-finite floats go
to JSON clients as ``null``. Whatever either decoder accepts, both encoders
can encode: maps and lists nest at most :data:`MAX_DEPTH` deep, and JSON
strings must be valid Unicode (no lone surrogates) and JSON integers within
msgpack's range.

JSON goes through orjson (C, 5-10x faster than the stdlib on our messages,
docs/decisions.md). Its verdicts differ from the stdlib's in corners (integers
past 64 bits become floats, ``1e400`` is an error, lone surrogates are
refused), so the stdlib path stays the one that decides: orjson's result is
used only for payloads that cannot reach those corners, and everything else
(a failure, ``$b64``, ``\\u`` escapes, long digit runs, deep nesting) is
decoded again the stdlib way.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from enum import Enum
from typing import Any

import msgpack
import orjson

from hubbub.protocol.exceptions import ProtocolViolation


class Encoding(Enum):
    """Wire encodings; the value is the WebSocket subprotocol that selects it."""

    MSGPACK = "hubbub.v1.msgpack"
    JSON = "hubbub.v1.json"


SUBPROTOCOLS = (Encoding.MSGPACK.value, Encoding.JSON.value)

#: Deepest nesting of maps and lists in a message (the top-level map is 1).
MAX_DEPTH = 100
#: msgpack's integer range: JSON integers outside it are refused.
MIN_INT, MAX_INT = -(2**63), 2**64 - 1

_packer = msgpack.Packer(use_bin_type=True, datetime=False)


def encode_msgpack(message: dict[str, Any]) -> bytes:
    """Encode one message with msgpack (bytes stay binary)."""
    return _packer.pack(message)


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolViolation("msgpack extension types are not supported")


def decode_msgpack(payload: bytes) -> dict[str, Any]:
    """Decode one msgpack payload that must hold exactly one map."""
    try:
        message = msgpack.unpackb(
            payload, raw=False, strict_map_key=False, ext_hook=_no_ext, timestamp=1
        )
    except ProtocolViolation:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolViolation("undecodable message") from exc
    if not isinstance(message, dict):
        raise ProtocolViolation("message is not a map")
    # Each level of nesting takes a container marker byte: a payload with few
    # of them cannot be too deep, and needs no walk.
    if len(payload) > MAX_DEPTH and (
        len(payload) - len(bytes(payload).translate(None, _MSGPACK_CONTAINERS)) > MAX_DEPTH
    ):
        _check_values(message)
    return message


# fixmap, fixarray, array 16/32, map 16/32.
_MSGPACK_CONTAINERS = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"
# A \u escape of a surrogate: alone, it is no Unicode character.
_JSON_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_values(message: dict[str, Any]) -> None:
    """Refuse a message nested too deep or holding a lone surrogate.

    Walked only when a cheap scan of the payload says it may be needed.
    """
    stack: list[tuple[Any, int]] = [(message, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise ProtocolViolation("message nested too deep")
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise ProtocolViolation("message nested too deep")
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolViolation("string is not valid Unicode") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$b64" in obj:
        text = obj["$b64"]
        if not isinstance(text, str):
            raise ProtocolViolation("$b64 value must be a string")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolViolation("bad base64 in $b64") from exc
    return obj


_json_encoder = json.JSONEncoder(
    default=_json_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_orjson_dumps = orjson.dumps
_orjson_loads = orjson.loads
_OrjsonError = orjson.JSONDecodeError


def encode_json(message: dict[str, Any]) -> bytes:
    """Encode one message as UTF-8 JSON, bytes as ``{"$b64": ...}``."""
    try:
        # orjson writes NaN and infinities as null itself; non-str keys and
        # integers past 64 bits fail and take the stdlib path below.
        return _orjson_dumps(message, default=_json_default)
    except TypeError:
        return _encode_json_stdlib(message)


def _encode_json_stdlib(message: dict[str, Any]) -> bytes:
    try:
        return _json_encoder.encode(message).encode("utf-8")
    except (ValueError, TypeError):
        # Values from msgpack clients that JSON cannot hold: NaN and infinities
        # go as null, binary map keys as their base64 text. Rare, so only here.
        return _json_encoder.encode(_jsonable(message)).encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_key(key: Any) -> Any:
    if isinstance(key, bytes):
        return base64.b64encode(key).decode("ascii")
    if isinstance(key, float) and not math.isfinite(key):
        return str(key)
    return key


def _no_constant(name: str) -> Any:
    raise ProtocolViolation(f"{name} is not JSON")


def _json_int(text: str) -> int:
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise ProtocolViolation("integer out of range")
    return value


# Every digit as "0", every other byte as a space: a run of 19 digits in a
# payload is then a plain substring search for 19 zeros.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_DIGIT_RUN = b"0" * 19


def _stdlib_decides(payload: bytes) -> bool:
    """Whether orjson and the stdlib may read ``payload`` differently: a $b64
    object, an escape (a surrogate, or a key spelled with escapes), a run of 19
    or more digits (an integer past msgpack's range, which orjson makes a float),
    or nesting deeper than the stdlib path lets through without a check."""
    return (
        b"$b64" in payload
        or b"\\u" in payload
        or payload.count(b"[") + payload.count(b"{") > MAX_DEPTH
        or _DIGIT_RUN in payload.translate(_DIGITS_AS_ZEROS)
    )


def decode_json(payload: bytes | str) -> dict[str, Any]:
    """Decode one JSON text that must hold exactly one object."""
    if type(payload) is bytes:
        try:
            message = _orjson_loads(payload)
        except _OrjsonError:
            pass  # the stdlib decides what is wrong
        else:
            if type(message) is dict and not _stdlib_decides(payload):
                return message
    return _decode_json_stdlib(payload)


def _decode_json_stdlib(payload: bytes | str) -> dict[str, Any]:
    try:
        # Strict UTF-8 both ways: json.loads would let encoded surrogates in.
        if isinstance(payload, str):
            text = payload
            text.encode("utf-8")
        else:
            text = bytes(payload).decode("utf-8")
        message = json.loads(
            text, object_hook=_json_hook, parse_constant=_no_constant, parse_int=_json_int
        )
    except ProtocolViolation:
        raise
    except (ValueError, RecursionError) as exc:
        raise ProtocolViolation("undecodable message") from exc
    if not isinstance(message, dict):
        raise ProtocolViolation("message is not an object")
    if text.count("[") + text.count("{") > MAX_DEPTH or (
        "\\u" in text and _JSON_SURROGATE_ESCAPE.search(text)
    ):
        _check_values(message)
    return message


def encode(message: dict[str, Any], encoding: Encoding) -> bytes:
    """Encode ``message`` in ``encoding``."""
    if encoding is Encoding.MSGPACK:
        return encode_msgpack(message)
    return encode_json(message)


def decode(payload: bytes, encoding: Encoding) -> dict[str, Any]:
    """Decode ``payload`` from ``encoding``."""
    if encoding is Encoding.MSGPACK:
        return decode_msgpack(payload)
    return decode_json(payload)
