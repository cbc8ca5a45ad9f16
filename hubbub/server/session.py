"""The session state table: the only place a connection's state changes (after h11).

CONNECTING --connect ok--> OPEN --disconnect/drain--> CLOSING --transport gone--> CLOSED
     \\___________________________ error / EOF _______________________________/

Each state says whether the connection still takes output (``State.writable``):
``Connection.writable`` and the outbox read it from the state, never from a
flag of their own.
"""

from __future__ import annotations

from enum import Enum

from hubbub.server.exceptions import InvalidTransition


class State(Enum):
    CONNECTING = ("connecting", True)  # transport up, no successful `connect` yet
    OPEN = ("open", True)  # connected: every command allowed
    CLOSING = ("closing", False)  # disconnect sent, flushing before the transport closes
    CLOSED = ("closed", False)  # transport gone; nothing more is written

    writable: bool

    def __new__(cls, value: str, writable: bool) -> State:
        member = object.__new__(cls)
        member._value_ = value
        member.writable = writable
        return member


TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


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
