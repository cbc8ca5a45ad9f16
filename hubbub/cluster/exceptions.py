"""Every exception of the broker engines (after websockets' ``exceptions.py``).

A broker's errors are protocol errors: they carry the code the node answers
with, so a command handler or ``/api/publish`` passes them on unchanged::

    hubbub.protocol.exceptions.CommandError
     ├── PositionGone          ``since`` is no longer in history (410; protocol)
     └── BrokerUnavailable     the broker cannot take the operation now (503): a shard
          │                    is down, the publish queue is full, a reply timed out
          └── SlotMoved        a Redis Cluster slot moved under a subscribe (the
                               engine retries it on the new primary)

Anything else an engine raises is a bug, answered 500 and logged.
"""

from __future__ import annotations

from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError, PositionGone

__all__ = ["BrokerUnavailable", "CommandError", "PositionGone", "SlotMoved"]


class BrokerUnavailable(CommandError):
    """The broker cannot take the operation now (503): never a silent loss."""

    def __init__(self, message: str = "broker unavailable") -> None:
        super().__init__(ErrorCode.UNAVAILABLE, message)


class SlotMoved(BrokerUnavailable):
    """The channel's Redis Cluster slot is not (or no longer) served by the
    primary asked; a 503 only if it keeps moving."""

    def __init__(self) -> None:
        super().__init__("redis cluster: the channel's slot moved")
