"""The node's lifecycle state table: the only place the node's state changes
(like ``server.session`` for a connection; DESIGN.md "Draining").

NEW --start--> RUNNING --SIGTERM/SIGINT--> DRAINING --drained or 2nd signal--> STOPPING --> STOPPED
  \\______________________________ stop ______________________/

A node is *draining* from the first signal to the end (``/readyz`` 503, no new
clients, no new publications); ``Lifecycle.draining`` reads it from the state.
"""

from __future__ import annotations

from enum import Enum

from hubbub.server.session import Machine


class NodeState(Enum):
    NEW = ("new", False)  # built, listeners not bound yet
    RUNNING = ("running", False)  # listening and serving
    DRAINING = ("draining", True)  # listeners closed, clients told 3001, buffers flushing
    STOPPING = ("stopping", True)  # closing what is left and the broker
    STOPPED = ("stopped", True)  # done: wait_stopped returns

    draining: bool

    def __new__(cls, value: str, draining: bool) -> NodeState:
        member = object.__new__(cls)
        member._value_ = value
        member.draining = draining
        return member


TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.NEW: frozenset({NodeState.RUNNING, NodeState.DRAINING, NodeState.STOPPING}),
    NodeState.RUNNING: frozenset({NodeState.DRAINING, NodeState.STOPPING}),
    NodeState.DRAINING: frozenset({NodeState.STOPPING}),
    NodeState.STOPPING: frozenset({NodeState.STOPPED}),
    NodeState.STOPPED: frozenset(),
}


class Lifecycle(Machine[NodeState]):
    """Holds the node's state and enforces :data:`TRANSITIONS`; shared read-only
    with the parts that refuse work while draining (admission, commands)."""

    __slots__ = ()
    table = TRANSITIONS
    subject = "node "

    def __init__(self) -> None:
        super().__init__(NodeState.NEW)

    @property
    def draining(self) -> bool:
        return self.state.draining
