"""server.lifecycle: the node's state table is the only way its state changes."""

from __future__ import annotations

import itertools

import pytest

from hubbub.server.exceptions import InvalidTransition
from hubbub.server.lifecycle import TRANSITIONS, Lifecycle, NodeState

ALLOWED = {
    (NodeState.NEW, NodeState.RUNNING),
    (NodeState.NEW, NodeState.DRAINING),
    (NodeState.NEW, NodeState.STOPPING),
    (NodeState.RUNNING, NodeState.DRAINING),
    (NodeState.RUNNING, NodeState.STOPPING),
    (NodeState.DRAINING, NodeState.STOPPING),
    (NodeState.STOPPING, NodeState.STOPPED),
}
PATHS = {
    NodeState.NEW: [],
    NodeState.RUNNING: [NodeState.RUNNING],
    NodeState.DRAINING: [NodeState.RUNNING, NodeState.DRAINING],
    NodeState.STOPPING: [NodeState.RUNNING, NodeState.STOPPING],
    NodeState.STOPPED: [NodeState.STOPPING, NodeState.STOPPED],
}


def lifecycle_in(state: NodeState) -> Lifecycle:
    lifecycle = Lifecycle()
    for step in PATHS[state]:
        lifecycle.to(step)
    assert lifecycle.state is state
    return lifecycle


def test_table_is_exactly_the_documented_one() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED
    assert set(TRANSITIONS) == set(NodeState)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(NodeState, NodeState)))
def test_every_transition(old: NodeState, new: NodeState) -> None:
    lifecycle = lifecycle_in(old)
    if old is new or (old, new) in ALLOWED:
        lifecycle.to(new)
        assert lifecycle.state is new
    else:
        with pytest.raises(InvalidTransition, match=f"{old.value} -> {new.value}"):
            lifecycle.to(new)
        assert lifecycle.state is old


def test_draining_from_the_first_signal_to_the_end() -> None:
    assert [lifecycle_in(s).draining for s in NodeState] == [False, False, True, True, True]
