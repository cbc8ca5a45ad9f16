"""Every exception the client core raises (the asyncio client, the lean fast
path, the blocking client), and so every failure the load tester reports::

    ClientError
     ├── ReplyError       the server answered a command with an error (or an
     │                    ``error`` push reported a fire-and-forget failure)
     ├── ReplyTimeout     no reply within the timeout (also a TimeoutError)
     └── Disconnected     the connection is gone: in-flight commands, commands
                          while not connected or after close(), iterators after
                          a final disconnect; the transports end with it too

Transport-level failures while opening a connection (refused, DNS, TLS,
WebSocket handshake) surface from ``connect`` as the ``OSError``,
``websockets`` or :class:`hubbub.protocol.wsclient.WebSocketError` exception
that caused them.
"""

from __future__ import annotations

import errno
from typing import Any

from hubbub.protocol.codes import RECONNECT, DisconnectCode
from hubbub.protocol.wsclient import WebSocketError

#: The ``reason`` of the :class:`Disconnected` a command raises when no
#: connection is open (as opposed to one lost while it waited for its reply).
NOT_CONNECTED = "not connected"


class ClientError(Exception):
    """Base class of every error raised by :mod:`hubbub.client`."""


class ReplyError(ClientError):
    """An error reply or ``error`` push (PROTOCOL.md §2, §5).

    ``data`` is the whole error map as received (``op`` for an ``error`` push,
    any field the server added); ``retry_after`` is in milliseconds (429).
    """

    def __init__(
        self,
        code: int,
        message: str,
        retry_after: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.data = data if data is not None else {}

    @classmethod
    def from_wire(cls, body: Any) -> ReplyError:
        """Build from the ``error`` map of a reply, or from an ``error`` push."""
        if not isinstance(body, dict):
            return cls(0, f"malformed error {body!r}")
        code = body.get("code")
        retry = body.get("retry_after")
        return cls(
            code if isinstance(code, int) else 0,
            str(body.get("message", "")),
            retry if isinstance(retry, int) else None,
            body,
        )


class ReplyTimeout(ClientError, TimeoutError):
    """No reply arrived within the client's timeout."""


class Disconnected(ClientError):
    """The connection ended (PROTOCOL.md §3 ``disconnect``, §5 codes).

    ``code`` is the disconnect code (3000-3007, or a WebSocket close code) when
    the server gave one, else None (connection lost, or closed by us);
    ``reconnect`` whether the client may come back; ``after`` the delay in ms the
    server asked for before reconnecting.
    """

    def __init__(
        self,
        code: int | None,
        reason: str,
        reconnect: bool = True,
        after: int | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}" if code is not None else reason)
        self.code = code
        self.reason = reason
        self.reconnect = reconnect
        self.after = after

    @classmethod
    def from_push(cls, message: dict[str, Any]) -> Disconnected:
        """Build from a ``disconnect`` push (PROTOCOL.md §3)."""
        code = message.get("code")
        after = message.get("after")
        reconnect = message.get("reconnect")
        return cls(
            code if isinstance(code, int) else None,
            str(message.get("reason", "")),
            reconnect if isinstance(reconnect, bool) else True,
            after if isinstance(after, int) and after >= 0 else None,
        )

    @classmethod
    def from_close(cls, code: int | None, reason: str) -> Disconnected:
        """A WebSocket close: a code 3000-3007 stands for the disconnect push (§3)."""
        try:
            reconnect = RECONNECT[DisconnectCode(code)] if code is not None else True
        except ValueError:  # 1000, 1001, 1009, ...: not a hubbub code
            reconnect = True
        return cls(code, reason, reconnect)

    def __repr__(self) -> str:
        return (
            f"Disconnected(code={self.code!r}, reason={self.reason!r}, "
            f"reconnect={self.reconnect!r}, after={self.after!r})"
        )


# -- report keys ----------------------------------------------------------------


def command_reason(exc: ClientError) -> str:
    """The short key a failed command is counted under (the load tester's error
    names): the error code, ``timeout``, ``not-connected`` or ``disconnected``."""
    if isinstance(exc, ReplyError):
        return str(exc.code)
    if isinstance(exc, ReplyTimeout):
        return "timeout"
    if isinstance(exc, Disconnected):
        return "not-connected" if exc.reason == NOT_CONNECTED else "disconnected"
    return type(exc).__name__


def connect_reason(exc: BaseException) -> str:
    """The short key a failed connection attempt is counted under: the refusal's
    error code, the disconnect or close code (else ``lost``), ``timeout``, ``refused``,
    ``reset``, ``ws-handshake``, the errno name, else the exception's class."""
    if isinstance(exc, ReplyError):
        return str(exc.code)
    if isinstance(exc, Disconnected):
        return str(exc.code) if exc.code is not None else "lost"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, WebSocketError):
        return "ws-handshake"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__
