"""The short ``make soak`` (tests/e2e/soak.py): 300 clients over three nodes and
a real redis-server through a rolling SIGTERM restart, a node SIGKILL and a
Redis SIGKILL + restart, with nothing accepted lost and nothing twice (about
30 s; the soak's own exit status is the verdict, checked here with its lines)."""

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
        timeout=90,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "result: 0 lost, 0 duplicated" in proc.stdout, out
    assert " lost 0  duplicated 0 " in proc.stdout, out
    assert proc.stdout.count("exit 0 in") == 3, out  # every drained node exited 0
