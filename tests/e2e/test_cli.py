"""The ``hubbub`` command line as an operator meets it (PROTOCOL.md §7): the
console script, exit codes, one-line errors, and draining on signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.e2e.rawclient import JSON, open_tcp, open_ws
from tests.procs import ROOT, NodeProc, start_node

HUBBUB = str(Path(sys.executable).parent / "hubbub")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion (bounded)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    clean.update(env or {})
    return subprocess.run(
        [HUBBUB, *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=15
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"hubbub {version('hubbub')}"


@pytest.mark.parametrize(
    "args",
    [["serve", "--bogus"], [], ["nope"], ["serve", "--log-level", "loud"], ["serve", "--tcp"]],
    ids=["unknown-flag", "no-command", "unknown-command", "bad-choice", "missing-value"],
)
def test_bad_arguments_exit_2_with_usage(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    assert "usage: hubbub" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[limits]\nmax_frames = 1\n", "max_frames"),
        ("[limitz]\nmax_frame = 1\n", "limitz"),
        ("[namespaces.chat]\nhistroy_size = 1\n", "histroy_size"),
        ('[limits]\nmax_frame = "big"\n', "max_frame"),
        ('[limits]\nslow_consumer = "explode"\n', "slow_consumer"),
        ("[limits\n", "TOML"),
    ],
    ids=["unknown-key", "unknown-section", "unknown-namespace-key", "bad-type", "bad-value",
         "bad-toml"],
)
def test_bad_config_exits_1_with_one_line(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = run("serve", "--config", str(path), "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
                 "--admin", "127.0.0.1:0")
    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert names in line and str(path) in line, line


def test_bad_environment_exits_1_with_one_line() -> None:
    for env, names in (
        ({"HUBBUB_LIMITS_MAX_FRAME": "huge"}, "max_frame"),
        ({"HUBBUB_LIMITS_NOPE": "1"}, "HUBBUB_LIMITS_NOPE"),
    ):
        result = run("serve", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
                     "--admin", "127.0.0.1:0", env=env)
        assert result.returncode == 1, result
        line = one_line(result.stderr)
        assert names in line and "environment" in line, line


def test_kubernetes_service_links_start_with_one_warning(
    node_factory: Callable[..., NodeProc],
) -> None:
    links = {"HUBBUB_PORT": "tcp://10.96.0.12:7400", "HUBBUB_PORT_7400_TCP_ADDR": "10.96.0.12",
             "HUBBUB_SERVICE_HOST": "10.96.0.12"}
    node = node_factory(None, env=links)
    warnings = [line for line in node.lines if "environment_ignored" in line]
    assert len(warnings) == 1, node.log_text()
    assert "variables=HUBBUB_PORT,HUBBUB_PORT_7400_TCP_ADDR,HUBBUB_SERVICE_HOST" in warnings[0]
    result = run("serve", env={**links, "HUBBUB_LIMITS_MAX_FRAMES": "1"})
    assert result.returncode == 1, result
    assert "HUBBUB_LIMITS_MAX_FRAMES" in one_line(result.stderr)


def test_missing_config_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = run("serve", "--config", str(path))
    assert result.returncode == 1, result
    assert str(path) in one_line(result.stderr)


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--tcp", f"127.0.0.1:{port}", "--ws", "127.0.0.1:0",
                     "--admin", "127.0.0.1:0")
    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert str(port) in line and "in use" in line, line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_clients_and_exits_0(
    node_factory: Callable[..., NodeProc], sig: signal.Signals
) -> None:
    node = node_factory("[limits]\ndrain_timeout = 2.0\n")
    tcp = await open_tcp(node)
    ws = await open_ws(node, JSON)
    try:
        await tcp.ok("subscribe", channel="news")
        node.signal(sig)
        for client in (tcp, ws):
            push, closed = await client.disconnected()
            assert push["code"] == 3001 and push["reconnect"] is True, push
            assert isinstance(push["after"], int) and 0 <= push["after"] <= 2000, push
        assert closed.code == 3001, closed  # the WebSocket close code
        rc = await asyncio.to_thread(node.wait, 10)
        assert rc == 0, node.log_text()
        assert "Traceback" not in node.log_text()
    finally:
        await tcp.close()
        await ws.close()


async def test_drain_delivers_accepted_publications_before_3001(
    node_factory: Callable[..., NodeProc],
) -> None:
    node = node_factory(
        "[limits]\ndrain_timeout = 2.0\nmessages_per_second = 1e6\nmessage_burst = 1000000\n"
    )
    async with await open_tcp(node) as sub, await open_tcp(node) as pub:
        await sub.ok("subscribe", channel="news")
        for i in range(300):
            await pub.send({"op": "publish", "channel": "news", "data": i})
        await pub.ok("ping")  # every publish before it has been accepted
        node.signal(signal.SIGTERM)
        got, _ = await sub.closed()
        assert [m["data"] for m in got if m.get("push") == "pub"] == list(range(300))
        assert got[-1]["push"] == "disconnect" and got[-1]["code"] == 3001, got[-1]
    assert await asyncio.to_thread(node.wait, 10) == 0, node.log_text()


def test_signal_without_clients_exits_0(node_factory: Callable[..., NodeProc]) -> None:
    node = node_factory(None)
    node.signal(signal.SIGTERM)
    assert node.wait(10) == 0, node.log_text()


def test_serve_raises_its_soft_fd_limit_to_the_hard_one_and_logs_both() -> None:
    import resource

    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    node = start_node(None, nofile=(256, hard))
    try:
        with open(f"/proc/{node.proc.pid}/limits") as fh:
            (line,) = [x for x in fh if x.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)], line
        deadline = time.monotonic() + 5
        want = f"event=fd_limit soft={hard} hard={hard} was=256"
        while want not in node.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert want in node.log_text()
    finally:
        node.stop()
