"""Fixtures every broker test module shares."""

from __future__ import annotations

import pytest

from tests.cluster.contract import RecordingHandler


@pytest.fixture
def handler() -> RecordingHandler:
    """What the engine under test calls on the node: it records everything."""
    return RecordingHandler()
