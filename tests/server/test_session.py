"""server.session: the state table is the only way a state changes (after h11)."""

from __future__ import annotations

import itertools

import pytest

from hubbub.server.session import TRANSITIONS, InvalidTransition, Session, State

ALLOWED = {
    (State.CONNECTING, State.OPEN),
    (State.CONNECTING, State.CLOSING),
    (State.CONNECTING, State.CLOSED),
    (State.OPEN, State.CLOSING),
    (State.OPEN, State.CLOSED),
    (State.CLOSING, State.CLOSED),
}


def session_in(state: State) -> Session:
    session = Session()
    path = {
        State.CONNECTING: [],
        State.OPEN: [State.OPEN],
        State.CLOSING: [State.OPEN, State.CLOSING],
        State.CLOSED: [State.CLOSED],
    }[state]
    for step in path:
        session.to(step)
    assert session.state is state
    return session


def test_starts_connecting() -> None:
    assert Session().state is State.CONNECTING


def test_table_is_exactly_the_documented_one() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(State, State)))
def test_every_transition(old: State, new: State) -> None:
    session = session_in(old)
    if old is new or (old, new) in ALLOWED:
        session.to(new)
        assert session.state is new
    else:
        with pytest.raises(InvalidTransition, match=f"{old.value} -> {new.value}"):
            session.to(new)
        assert session.state is old  # unchanged by a refused transition


def test_closed_is_terminal() -> None:
    session = session_in(State.CLOSED)
    for state in (State.CONNECTING, State.OPEN, State.CLOSING):
        with pytest.raises(InvalidTransition):
            session.to(state)
    session.to(State.CLOSED)  # idempotent


def test_full_life() -> None:
    session = Session()
    for state in (State.OPEN, State.CLOSING, State.CLOSED):
        session.to(state)
    assert session.state is State.CLOSED
