"""Every exception of the node, in one tree (after websockets' ``exceptions.py``).

The protocol's errors (``hubbub.protocol.exceptions``) are what a client is
told; the broker's (``hubbub.cluster.exceptions``) are protocol errors too.
These are the node's own, and none reaches a client::

    Exception
     ├── ConfigError              a config key or value cannot be used: the node refuses
     │                            to start (exit 1), a SIGHUP keeps the running config
     ├── AdminRefusal             an admin HTTP request answered with ``status`` and the
     │                            connection closed (408, 413, 431, ...; server.admin)
     ├── MessageTooBig            a fragmented WebSocket message passed ``max_frame``,
     │                            counted from its first byte: close 1009 (server.ws)
     └── RuntimeError
          └── InvalidTransition   a state change the session's or the node's table does
                                  not allow: a bug in the server, not the peer's fault
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration value or key that cannot be used; the node refuses to start."""


class InvalidTransition(RuntimeError):
    """A state change the table does not allow: a bug in the server, not the peer."""


class AdminRefusal(Exception):
    """An admin request is answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MessageTooBig(Exception):
    """A fragmented message passed ``max_frame``, counted from its first byte."""
