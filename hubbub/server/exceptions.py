"""Every exception of the node, in one tree (after websockets' ``exceptions.py``).

The protocol's errors (``hubbub.protocol.exceptions``) are what a client is
told; the broker's (``hubbub.cluster.exceptions``) are protocol errors too.
These are the node's own, and none reaches a client::

    Exception
     ├── ConfigError              a config key or value cannot be used: the node refuses
     │                            to start (exit 1), a SIGHUP keeps the running config
     └── RuntimeError
          └── InvalidTransition   a state change the session's or the node's table does
                                  not allow: a bug in the server, not the peer's fault
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration value or key that cannot be used; the node refuses to start."""


class InvalidTransition(RuntimeError):
    """A state change the table does not allow: a bug in the server, not the peer."""
