"""Every reply/error code and disconnect code of the wire protocol (PROTOCOL.md §5).

One module holds them all, so a newcomer finds every code in one place and the
server, the client and the load tester agree on their meaning.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes carried by an error reply or an ``error`` push (PROTOCOL.md §5)."""

    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    GONE = 410
    TOO_LARGE = 413
    RATE_LIMITED = 429
    INTERNAL = 500
    UNAVAILABLE = 503


class DisconnectCode(IntEnum):
    """Codes of the ``disconnect`` push, also used as the WebSocket close code."""

    SHUTDOWN = 3000
    DRAINING = 3001
    SLOW_CONSUMER = 3002
    STALE = 3003
    PROTOCOL_ERROR = 3004
    UNAUTHORIZED = 3005
    RATE_LIMIT_ABUSE = 3006
    CONNECTION_LIMIT = 3007


#: Whether a client should reconnect after each disconnect code (PROTOCOL.md §5).
RECONNECT: dict[DisconnectCode, bool] = {
    DisconnectCode.SHUTDOWN: True,
    DisconnectCode.DRAINING: True,
    DisconnectCode.SLOW_CONSUMER: True,
    DisconnectCode.STALE: True,
    DisconnectCode.PROTOCOL_ERROR: False,
    DisconnectCode.UNAUTHORIZED: False,
    DisconnectCode.RATE_LIMIT_ABUSE: True,
    DisconnectCode.CONNECTION_LIMIT: True,
}

#: Default human-readable reason of each disconnect code.
REASONS: dict[DisconnectCode, str] = {
    DisconnectCode.SHUTDOWN: "server shutdown",
    DisconnectCode.DRAINING: "node draining",
    DisconnectCode.SLOW_CONSUMER: "slow consumer",
    DisconnectCode.STALE: "stale connection",
    DisconnectCode.PROTOCOL_ERROR: "protocol error",
    DisconnectCode.UNAUTHORIZED: "unauthorized",
    DisconnectCode.RATE_LIMIT_ABUSE: "rate limit abuse",
    DisconnectCode.CONNECTION_LIMIT: "connection limit reached",
}

#: WebSocket close code for a message over ``max_frame`` (RFC 6455 §7.4.1).
WS_MESSAGE_TOO_BIG = 1009
