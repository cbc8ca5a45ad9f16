"""The session state table: the only place a connection's state changes (after h11).

CONNECTING --connect ok--> OPEN --disconnect/drain--> CLOSING --transport gone--> CLOSED
     \\___________________________ error / EOF _______________________________/

Each state says whether the connection still takes output (``State.writable``):
``Connection.writable`` and the outbox read it from the state, never from a
flag of their own.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

from hubbub.server.exceptions import InvalidTransition

S = TypeVar("S", bound=Enum)


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


class Machine(Generic[S]):
    """A state and the table it moves by: :meth:`to` is the only way it changes
    (the session's, and the node's in ``server.lifecycle``)."""

    __slots__ = ("state",)

    #: state -> the states it may move to
    table: ClassVar[dict[Any, frozenset[Any]]]
    #: what the state is of, in an InvalidTransition's message ("" for a session)
    subject: ClassVar[str] = ""

    def __init__(self, state: S) -> None:
        self.state = state

    def to(self, new: S) -> None:
        old = self.state
        if new is old:
            return
        if new not in self.table[old]:
            raise InvalidTransition(f"{self.subject}{old.value} -> {new.value}")
        self.state = new


class Session(Machine[State]):
    """Holds one connection's state and enforces :data:`TRANSITIONS`."""

    __slots__ = ()
    table = TRANSITIONS

    def __init__(self) -> None:
        super().__init__(State.CONNECTING)
