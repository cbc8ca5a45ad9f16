"""A short pass of every fuzz target (``make fuzz`` runs a million inputs each)."""

from __future__ import annotations

import pytest

from tests.fuzz.runner import run
from tests.fuzz.targets import TARGETS

SHORT = 2000


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target_survives_a_short_pass(name: str) -> None:
    code, line = run(name, SHORT, timeout=120)
    assert code == 0, line
