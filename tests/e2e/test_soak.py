"""The short ``make soak`` (tests/e2e/soak.py): 300 clients over three nodes and
a real redis-server through a rolling SIGTERM restart, a node SIGKILL and a
Redis SIGKILL + restart, with nothing accepted lost and nothing twice."""

from __future__ import annotations

import subprocess
import sys

from tests.procs import ROOT


def test_short_soak_loses_nothing_and_duplicates_nothing() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.soak", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "result: 0 lost, 0 duplicated" in proc.stdout, out
    assert "drains: exit 0" in proc.stdout, out
