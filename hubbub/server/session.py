"""The session state table: the only place a connection's state changes (after h11).

CONNECTING --connect ok--> OPEN --disconnect/drain--> CLOSING --transport gone--> CLOSED
     \\___________________________ error / EOF _______________________________/
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    CONNECTING = "connecting"  # transport up, no successful `connect` yet
    OPEN = "open"  # connected: every command allowed
    CLOSING = "closing"  # disconnect sent, flushing before the transport closes
    CLOSED = "closed"  # transport gone; nothing more is written


TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change the table does not allow: a bug in the server, not the peer."""


class Session:
    """Holds one connection's state and enforces :data:`TRANSITIONS`."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = State.CONNECTING

    def to(self, new: State) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"{self.state.value} -> {new.value}")
        self.state = new
