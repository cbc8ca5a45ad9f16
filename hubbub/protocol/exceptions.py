"""Every exception of the protocol layer, each carrying the code to answer with.

Like h11, an error says whose fault it is and what to send back::

    HubbubError
     ├── ProtocolViolation      the peer broke framing or encoding: disconnect (3004)
     │    ├── FrameTooLarge      a TCP length header over ``max_frame``
     │    └── BadProxyHeader     a trusted proxy's PROXY protocol header is missing or malformed
     ├── CommandError           one command failed: reply with ``code`` (4xx/5xx)
     │    ├── PositionGone       ``since`` is no longer in history (410)
     │    └── BrokerUnavailable  the broker cannot take it now (503; ``hubbub.cluster.exceptions``)
     └── WebSocketError         seen by a client: the server broke RFC 6455 or refused
                                the upgrade (``protocol.wsclient``)

The node's own errors (``ConfigError``, ``InvalidTransition``) are in
``hubbub.server.exceptions``; the client's in ``hubbub.client``.
"""

from __future__ import annotations

from typing import Any

from hubbub.protocol.codes import DisconnectCode, ErrorCode


class HubbubError(Exception):
    """Base class of every error raised by hubbub's protocol layer."""


class ProtocolViolation(HubbubError):
    """The peer sent bytes that break the protocol; the connection must close."""

    def __init__(self, reason: str, code: DisconnectCode = DisconnectCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class FrameTooLarge(ProtocolViolation):
    """A frame's length header is over ``max_frame``: refused before buffering."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__("frame too large")
        self.length = length
        self.limit = limit


class BadProxyHeader(ProtocolViolation):
    """A connection from a trusted proxy did not start with a valid PROXY protocol
    header (protocol.proxy); nothing it sent can be trusted, so it is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad PROXY protocol header: {reason}")


class CommandError(HubbubError):
    """A single command failed; the connection stays open.

    ``command_id`` is the id of the command when it had a valid one, so the
    error goes back as a reply; without it, it is sent as an ``error`` push.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        command_id: int | None = None,
        op: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.command_id = command_id
        self.op = op
        self.extra = extra or {}


class PositionGone(CommandError):
    """The stream position asked for is no longer in history (410)."""

    def __init__(self, message: str = "position is no longer in history") -> None:
        super().__init__(ErrorCode.GONE, message)


class WebSocketError(HubbubError):
    """The server broke the WebSocket protocol (or refused the upgrade)."""
