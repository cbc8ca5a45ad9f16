"""Wire formats of a connection and how one message is encoded for each.

A connection speaks one of three formats. A publication is encoded at most
once per format and the same ``bytes`` go to every subscriber of that format
(DESIGN.md "The hot path", point 1).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from hubbub.protocol.codec import encode_json, encode_msgpack
from hubbub.protocol.frames import encode_frame, ws_server_frame


class Format(IntEnum):
    TCP = 0  # 4-byte length + msgpack
    WS_BINARY = 1  # WebSocket binary message of msgpack (subprotocol hubbub.v1.msgpack)
    WS_TEXT = 2  # WebSocket text message of JSON (hubbub.v1.json, the default)


def encode_for(fmt: Format, message: dict[str, Any]) -> bytes:
    """One message as bytes ready for a transport of format ``fmt``."""
    if fmt is Format.TCP:
        return encode_frame(encode_msgpack(message))
    if fmt is Format.WS_BINARY:
        return ws_server_frame(encode_msgpack(message), text=False)
    return ws_server_frame(encode_json(message), text=True)


class Encoded:
    """A message encoded lazily, at most once per format."""

    __slots__ = ("_json", "_packed", "message", "tcp", "ws_binary", "ws_text")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self._packed: bytes | None = None
        self.tcp: bytes | None = None
        self.ws_binary: bytes | None = None
        self.ws_text: bytes | None = None

    def get(self, fmt: int) -> bytes:
        if fmt == 0:
            if self.tcp is None:
                self.tcp = encode_frame(self._msgpack())
            return self.tcp
        if fmt == 1:
            if self.ws_binary is None:
                self.ws_binary = ws_server_frame(self._msgpack(), text=False)
            return self.ws_binary
        if self.ws_text is None:
            self.ws_text = ws_server_frame(encode_json(self.message), text=True)
        return self.ws_text

    def _msgpack(self) -> bytes:
        if self._packed is None:
            self._packed = encode_msgpack(self.message)
        return self._packed
