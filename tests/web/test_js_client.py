"""hubbub.js's own tests under Node's test runner (tests/web/js/, ``node --test``),
against real ``hubbub serve`` nodes they start and a redis-server started here."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from tests.procs import ROOT, RedisProc


@functools.cache
def node_command() -> list[str]:
    """``node``, with the flag Node 20 needs for its built-in WebSocket."""
    node = shutil.which("node")
    assert node is not None, "node is not installed: run `make install`"
    probe = subprocess.run(
        [node, "-p", "typeof WebSocket"], capture_output=True, text=True, check=True
    )
    return [node] if probe.stdout.strip() == "function" else [node, "--experimental-websocket"]


def test_client_under_node_test_runner(redis_server: RedisProc) -> None:
    env = dict(os.environ, HUBBUB_TEST_PYTHON=sys.executable, HUBBUB_TEST_REDIS=redis_server.url)
    # Within the suite's 120 s per test; on a timeout the TAP output so far says where.
    command = [*node_command(), "--test", "--test-reporter=tap"]
    try:
        run = subprocess.run(
            [*command, "tests/web/js/"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=110,
        )
    except subprocess.TimeoutExpired as exc:
        partial = f"{exc.stdout!r}\n{exc.stderr!r}"
        raise AssertionError(f"node --test did not finish:\n{partial}") from None
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "\n# fail 0\n" in output and "\n# skipped 0\n" in output, output
