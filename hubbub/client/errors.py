"""Every exception the client raises::

    ClientError
     ├── ReplyError       the server answered a command with an error (or an
     │                    ``error`` push reported a fire-and-forget failure)
     ├── ReplyTimeout     no reply within the timeout (also a TimeoutError)
     └── Disconnected     the connection is gone: in-flight commands, commands
                          after close(), iterators after a final disconnect

Transport-level failures while opening a connection (refused, DNS, TLS,
WebSocket handshake) surface from :meth:`Client.connect` as the ``OSError`` or
``websockets`` exception that caused them.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base class of every error raised by :mod:`client`."""


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

    def __repr__(self) -> str:
        return (
            f"Disconnected(code={self.code!r}, reason={self.reason!r}, "
            f"reconnect={self.reconnect!r}, after={self.after!r})"
        )
