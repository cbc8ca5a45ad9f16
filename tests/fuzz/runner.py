"""Run one fuzz target in a child process and sum it up in a line (no atheris
import here, so pytest can call it without instrumenting anything)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time


def run(name: str, runs: int, timeout: float | None = None) -> tuple[int, str]:
    """Run target ``name`` for ``runs`` inputs in a child process: its exit
    code and a one-line summary (inputs, seconds, outcome)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hubbub-fuzz-") as tmp:
        child = subprocess.run(
            [sys.executable, "-m", "tests.fuzz", name, f"-runs={runs}",
             f"-artifact_prefix={tmp}/", "-print_final_stats=1"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    took = time.monotonic() - started
    done = re.search(r"Done (\d+) runs", child.stderr)
    count = int(done.group(1)) if done else 0
    if child.returncode == 0 and count == runs:
        return 0, f"{name}: {count} inputs in {took:.0f} s, no unhandled exception"
    tail = "\n".join(child.stderr.splitlines()[-40:])
    return child.returncode or 1, f"{name}: FAILED after {count} inputs ({took:.0f} s)\n{tail}"
