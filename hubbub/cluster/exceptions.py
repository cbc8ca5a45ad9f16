"""Every exception of the broker engines (after websockets' ``exceptions.py``).

A broker's errors are protocol errors: they carry the code the node answers
with, so a command handler or ``/api/publish`` passes them on unchanged::

    hubbub.protocol.exceptions.CommandError
     ├── PositionGone          ``since`` is no longer in history (410; protocol)
     └── BrokerUnavailable     the broker cannot take the operation now (503): a shard
                               is down, the publish queue is full, a reply timed out

Anything else an engine raises is a bug, answered 500 and logged.
"""

from __future__ import annotations

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError, PositionGone

__all__ = ["BrokerUnavailable", "CommandError", "PositionGone"]


class BrokerUnavailable(CommandError):
    """The broker cannot take the operation now (503): never a silent loss."""

    def __init__(self, message: str = "broker unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message)
