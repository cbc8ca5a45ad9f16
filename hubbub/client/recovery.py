"""Recovery after a reconnect, one set of rules for every client (PROTOCOL.md §3).

A subscriber remembers its position in a channel's stream (offset within an
epoch). Re-subscribing asks for ``recover`` from ``since`` that position; the
reply either brings what was missed (``publications``) and the current
position, or says ``recovered: false`` (the position is gone: publications
were lost). A position reported by the server replaces the one kept when it
is in a new epoch (the stream restarted) or further on. The asyncio client's
:class:`~hubbub.client.subscription.Subscription` and the lean fast path's
channels both follow these rules. A gap the server reports (``lag``) is read
with ``history`` from the position kept, page by page, with the live
publications held back meanwhile; the overlap of that read with them is
skipped. Beyond that only the client drops duplicates (the lean path hands
every live publication on, so the load tester counts what the server sent).
"""

from __future__ import annotations

from typing import Any

from hubbub.protocol.codes import ErrorCode
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
#: "History positions"): the channel had no history when it was read, and
#: the first publication's epoch is no restart.
EMPTY_EPOCH_MARK = "~"

#: Reply codes after which a re-subscribe or a read of a gap is tried again
#: (what was missed cannot be skipped): unavailable, rate limited, internal error.
RETRY_RECOVERY = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL})


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
