"""Codes (PROTOCOL.md §5) and the error tree that carries them."""

from __future__ import annotations

import pytest

from hubbub.protocol.codes import REASONS, RECONNECT, WS_MESSAGE_TOO_BIG, DisconnectCode, ErrorCode
from hubbub.protocol.exceptions import (
    CommandError,
    FrameTooLarge,
    HubbubError,
    PositionGone,
    ProtocolViolation,
)

# PROTOCOL.md §5, copied by hand: the code modules must agree with the page.
REPLY_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    410: "GONE",
    413: "TOO_LARGE",
    429: "RATE_LIMITED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
DISCONNECT_CODES = {  # code: (name, reconnect)
    3000: ("SHUTDOWN", True),
    3001: ("DRAINING", True),
    3002: ("SLOW_CONSUMER", True),
    3003: ("STALE", True),
    3004: ("PROTOCOL_ERROR", False),
    3005: ("UNAUTHORIZED", False),
    3006: ("RATE_LIMIT_ABUSE", True),
    3007: ("CONNECTION_LIMIT", True),
}


@pytest.mark.parametrize(("value", "name"), sorted(REPLY_CODES.items()))
def test_reply_code(value: int, name: str) -> None:
    assert ErrorCode(value).name == name
    assert ErrorCode[name] == value


def test_every_reply_code_and_no_other() -> None:
    assert {int(c) for c in ErrorCode} == set(REPLY_CODES)


@pytest.mark.parametrize(("value", "spec"), sorted(DISCONNECT_CODES.items()))
def test_disconnect_code(value: int, spec: tuple[str, bool]) -> None:
    name, reconnect = spec
    code = DisconnectCode(value)
    assert code.name == name
    assert RECONNECT[code] is reconnect
    assert REASONS[code]


def test_every_disconnect_code_and_no_other() -> None:
    assert {int(c) for c in DisconnectCode} == set(DISCONNECT_CODES)
    assert set(RECONNECT) == set(DisconnectCode) == set(REASONS)


def test_disconnect_codes_are_application_close_codes() -> None:
    # RFC 6455 §7.4.2: 3000-3999 are registered for libraries and frameworks.
    assert all(3000 <= c <= 3999 for c in DisconnectCode)


def test_message_too_big_close_code() -> None:
    assert WS_MESSAGE_TOO_BIG == 1009


# -- errors -------------------------------------------------------------------


def test_error_tree() -> None:
    assert issubclass(ProtocolViolation, HubbubError)
    assert issubclass(FrameTooLarge, ProtocolViolation)
    assert issubclass(CommandError, HubbubError)
    assert issubclass(PositionGone, CommandError)
    assert not issubclass(CommandError, ProtocolViolation)


def test_protocol_violation_carries_its_disconnect_code() -> None:
    exc = ProtocolViolation("bad")
    assert (exc.reason, exc.code, str(exc)) == ("bad", DisconnectCode.PROTOCOL_ERROR, "bad")
    assert ProtocolViolation("x", DisconnectCode.UNAUTHORIZED).code == 3005
    too_large = FrameTooLarge(70000, 65536)
    assert (too_large.code, too_large.length, too_large.limit) == (3004, 70000, 65536)


def test_command_error_fields() -> None:
    exc = CommandError(
        ErrorCode.RATE_LIMITED,
        "rate limited",
        command_id=7,
        op="publish",
        extra={"retry_after": 250},
    )
    assert (exc.code, exc.message, exc.command_id, exc.op) == (429, "rate limited", 7, "publish")
    assert exc.extra == {"retry_after": 250}
    bare = CommandError(ErrorCode.INTERNAL, "oops")
    assert (bare.command_id, bare.op, bare.extra) == (None, None, {})


def test_position_gone_is_410() -> None:
    assert PositionGone().code == ErrorCode.GONE == 410
