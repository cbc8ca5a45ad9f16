"""Where the deploy kit's checkers live: Python tools in the venv (dev extra),
Debian's nginx and promtool on the PATH or in /usr/sbin (.ci/system-deps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT

CONFIGS = ROOT / "configs"
VENV_BIN = Path(sys.executable).parent


def venv_tool(name: str) -> str:
    path = VENV_BIN / name
    assert path.exists(), f"{name} missing: make install brings it (pyproject.toml dev extra)"
    return str(path)


def system_tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")
    assert found, f"{name} missing: make install brings it (.ci/system-deps)"
    return found


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a checker to completion (bounded); output kept for failure messages."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
