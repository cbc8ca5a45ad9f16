"""Recovery after a reconnect, one set of rules for every client (PROTOCOL.md §3).

A subscriber remembers its position in a channel's stream (offset within an
epoch). Re-subscribing asks for ``recover`` from ``since`` that position; the
reply either brings what was missed (``publications``) and the current
position, or says ``recovered: false`` (the position is gone: publications
were lost). A position reported by the server replaces the one kept when it
is in a new epoch (the stream restarted) or further on. The asyncio client's
:class:`~hubbub.client.subscription.Subscription` and the lean fast path's
channels both follow these rules; only the client also drops the duplicates
the overlap between recovered and live publications can bring (the lean path
hands every publication on, so the load tester counts what the server sent).
"""

from __future__ import annotations

from typing import Any

from hubbub.protocol.messages import StreamPosition


def subscribe_command(
    channel: str, *, recover: bool, since: StreamPosition | None = None
) -> dict[str, Any]:
    """The ``subscribe`` command, asking for recovery from ``since`` when known."""
    message: dict[str, Any] = {"op": "subscribe", "channel": channel}
    if recover:
        message["recover"] = True
        if since is not None:
            message["since"] = since.to_wire()
    return message


#: The first character of an empty position's epoch (protocol-additions.md
#: "History positions"): the channel had no history when it was read.
EMPTY_EPOCH_MARK = "~"


def recovery_since(kept: StreamPosition | None) -> StreamPosition | None:
    """Where to recover from: the position kept; but when the live publications
    were numbered on from an empty position without taking the real epoch (the
    lean path reads no epoch per ``pub``: that is its hot path), the empty
    position itself, offset 0: the server then answers the whole history, which
    began after that read (protocol-additions.md), and what already arrived is
    the overlap to skip."""
    if kept is not None and kept.offset > 0 and kept.epoch.startswith(EMPTY_EPOCH_MARK):
        return StreamPosition(0, kept.epoch)
    return kept


def reported_position(ok: dict[str, Any]) -> StreamPosition | None:
    """The position a subscribe or history reply reports (None on channels without history)."""
    offset, epoch = ok.get("offset"), ok.get("epoch")
    if isinstance(offset, int) and isinstance(epoch, str):
        return StreamPosition(offset, epoch)
    return None


def moves_on(kept: StreamPosition | None, reported: StreamPosition) -> bool:
    """Whether ``reported`` replaces the position ``kept``: a new epoch, or further on."""
    return kept is None or reported.epoch != kept.epoch or reported.offset > kept.offset


def recovery_refused(ok: dict[str, Any], *, asked: bool) -> bool:
    """The reply to a recovery says the position is gone (``recovered: false``)."""
    return asked and ok.get("recovered") is False
