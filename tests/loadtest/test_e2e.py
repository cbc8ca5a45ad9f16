"""hubbub-loadtest against real ``hubbub serve`` processes (and a real redis-server).

Each run is a few seconds of the real tool (coordinator and worker processes)
started as a user would start it; the assertions are on its reports: they
parse, every message is accounted for (``delivered + lost == expected``, and
``expected == sent x subscribers`` when everyone subscribed before publishing
began), and a broken target shows up as loss or disconnects, never as a clean
report. Nothing here asserts on timing.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.procs import ROOT, NodeProc, RedisProc, free_port, start_node

HERE = Path(__file__).parent


def run_tool(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    """Run ``python -m loadtest ARGS --json ...``; exit code, report, output."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "hubbub.loadtest", *args, "--json", str(report), "--no-live"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert report.exists(), f"no report (exit {proc.returncode}):\n{output}"
    return proc.returncode, json.loads(report.read_text()), output


def assert_consistent(report: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = report["correctness"]["total"]
    assert total["delivered"] + total["lost"] == total["expected"], total
    assert report["correctness"]["consistent"]
    groups = report["correctness"]["groups"].values()
    assert sum(g["expected"] for g in groups) == total["expected"]
    return total


def test_livefeed_accounts_for_every_message(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    node = node_factory()
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "livefeed", "-u", "21", "-r", "100", "-t", "2s", "--rate", "20",
        "--workers", "2", "--host", node.tcp_url,
        "--csv", str(tmp_path / "run"), "--html", str(tmp_path / "run.html"),
        "--check", "loss==0,dup==0,reorder==0,errors==0,p99<60s",
    )  # fmt: skip
    assert code == 0, out
    sent = report["summary"]["publications_sent"]
    assert sent > 0
    total = assert_consistent(report)
    assert total["expected"] == sent * 20  # every subscriber was in place before publishing
    assert total["delivered"] == total["expected"] and total["lost"] == 0
    assert total["duplicates"] == 0 and total["reordered"] == 0
    assert report["summary"]["received"] == sent * 20
    assert report["latency"]["count"] == sent * 20
    assert report["clean"] and report["passed"]
    assert len(report["workers"]) == 2
    assert report["requests"]["publish"]["count"] == sent
    assert sum(row["msgs_in"] for row in report["timeline"]) == sent * 20
    with open(tmp_path / "run_history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(int(r["msgs_in"]) for r in rows) == sent * 20
    with open(tmp_path / "run_correctness.csv", newline="") as fh:
        assert [r["lost"] for r in csv.DictReader(fh)][-1] == "0"
    page = (tmp_path / "run.html").read_text()
    assert page.count("<svg") == 6 and "Clean run" in page and "<script" not in page


def test_chat_over_websocket(node: NodeProc, tmp_path: Path) -> None:
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "chat", "-u", "40", "-r", "80", "-t", "2.5s", "--rate", "2",
        "--rooms", "5", "--workers", "1", "--host", node.ws_url,
    )  # fmt: skip
    assert code == 0, out
    total = assert_consistent(report)
    assert total["lost"] == 0 and total["duplicates"] == 0
    sent = report["summary"]["publications_sent"]
    assert sent > 0 and report["summary"]["received"] > sent  # rooms fan out
    assert report["requests"]["subscribe"]["count"] == 40
    assert report["requests"]["subscribe"]["failures"] == 0
    assert report["requests"]["connect"]["count"] == 40
    assert report["summary"]["errors"] == 0, report["errors"]


def test_connect_storm_counts_connects_and_refusals(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    node = node_factory("[limits]\nmax_connections = 250\n")
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "connect-storm", "-u", "300", "-r", "300", "-t", "2s",
        "--workers", "2", "--source-ips", "4", "--host", node.tcp_url,
        "--exit-code-on-error", "0",  # the 50 refusals are the point (Locust's rule: exit 1)
    )  # fmt: skip
    assert code == 0, out
    connect = report["requests"]["connect"]
    assert connect["count"] == 300
    assert connect["failures"] == 50  # the node's limit: 3007
    assert report["errors"] == {"connect 3007": 50}
    assert report["summary"]["users_peak"] == 250
    assert not report["clean"]


def test_user_scenario_file_with_the_friendly_client(node: NodeProc, tmp_path: Path) -> None:
    code, report, out = run_tool(
        tmp_path,
        "-f", str(HERE / "scenarios" / "friendly.py"), "-u", "8", "-t", "2s",
        "--workers", "2", "--host", node.ws_url, "--encoding", "json",
    )  # fmt: skip
    assert code == 0, out
    total = assert_consistent(report)
    assert total["lost"] == 0 and total["expected"] > 0
    assert report["summary"]["unstamped"] == 0  # JSON's {"$b64"} came back as bytes
    assert report["requests"]["ping"]["count"] > 0
    assert report["requests"]["history-direct"]["failures"] == 0
    assert report["scenario"] == "friendly.py"


def test_reconnect_storm_through_a_node_restart(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    config = "[limits]\ndrain_timeout = 0.5\n[namespaces.chat]\nhistory_size = 1000\n"
    port = free_port()
    args = ["--tcp", f"127.0.0.1:{port}"]
    first = node_factory(config, args=args)
    restarted: list[NodeProc] = []

    def restart_when_gone() -> None:  # "the user" brings the node back after the drain
        first.proc.wait(30)
        restarted.append(start_node(config, args=args))

    watcher = threading.Thread(target=restart_when_gone, daemon=True)
    watcher.start()
    try:
        code, report, out = run_tool(
            tmp_path,
            "--scenario", "reconnect-storm", "-u", "13", "-r", "100", "-t", "4s",
            "--rate", "20", "--workers", "2", "--host", first.tcp_url,
            "--disrupt-at", "1s", "--disrupt-cmd", f"kill -TERM {first.proc.pid}",
            "--exit-code-on-error", "0",  # requests fail while the node restarts: the point
        )  # fmt: skip
    finally:
        watcher.join(30)
        for node in restarted:
            node.stop()
    assert code == 0, out
    assert any(e["what"].startswith("disrupt") for e in report["events"])
    assert report["disconnects"].get("3001") == 13  # every client was told to move
    rc = report["reconnect"]
    assert rc["reconnected"] > 0
    assert rc["reconnected"] + rc["still_down"] == 13
    # The restarted in-memory node has a new history epoch: recovery is refused
    # (and counted), and whatever was missed meanwhile counts as lost.
    assert rc["recovery_failed"] > 0
    assert_consistent(report)
    assert not report["clean"]


def test_a_node_killed_mid_run_is_not_a_clean_report(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    node = node_factory()
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "livefeed", "-u", "11", "-t", "2.5s", "--rate", "20", "--workers", "1",
        "--host", node.tcp_url, "--disrupt-at", "1s",
        "--disrupt-cmd", f"kill -KILL {node.proc.pid}",
        "--check", "loss==0,disconnects==0",
    )  # fmt: skip
    assert code == 1, out  # the disconnects check fails the run
    assert report["passed"] is False
    assert not report["clean"]
    assert report["disconnects"].get("lost") == 11
    assert report["reconnect"]["still_down"] == 11
    assert report["summary"]["publish_failures"] > 0
    assert report["errors"].get("publish not-connected", 0) > 0
    assert_consistent(report)
    assert node.proc.poll() == -signal.SIGKILL


def test_slow_consumers_do_not_hold_back_the_fast_ones(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    # 256 KB: a slow reader (4 KB receive buffer, 0.2 s pauses) passes it within
    # about 0.2 s of 1.4 MB/s; 64 KB also cut fast readers starved of CPU by a loaded machine.
    node = node_factory('[limits]\noutbound_buffer = 262144\nslow_consumer = "disconnect"\n')
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "slow-consumers", "-u", "10", "-t", "2.5s", "--rate", "90",
        "--publishers", "2", "--size", "16000", "--slow-fraction", "0.25",
        "--workers", "1", "--host", node.tcp_url,
    )  # fmt: skip
    assert code == 0, out
    assert_consistent(report)
    groups = report["correctness"]["groups"]
    assert set(groups) == {"fast", "slow"}
    fast, slow = groups["fast"], groups["slow"]
    assert fast["expected"] == report["summary"]["publications_sent"] * 6
    assert fast["lost"] == 0 and fast["delivered"] == fast["expected"], (fast, node.log_text())
    assert slow["lost"] > 0  # far behind: not everything arrived
    assert set(report["latency_groups"]) == {"fast", "slow"}


def test_livefeed_on_a_two_node_redis_cluster(
    node_factory: Callable[..., NodeProc],
    redis_server: RedisProc,
    tmp_path: Path,
) -> None:
    a = node_factory(redis=[redis_server.url])
    b = node_factory(redis=[redis_server.url])
    code, report, out = run_tool(
        tmp_path,
        "--scenario", "livefeed", "-u", "21", "-r", "100", "-t", "2s", "--rate", "20",
        "--workers", "2", "--host", a.tcp_url, "--host", b.ws_url,
    )  # fmt: skip
    assert code == 0, out
    sent = report["summary"]["publications_sent"]
    total = assert_consistent(report)
    assert sent > 0 and total["expected"] == sent * 20  # half the subscribers are on node b
    assert total["lost"] == 0 and total["duplicates"] == 0 and total["reordered"] == 0
    assert report["clean"], report["problems"]


def test_bad_invocations_exit_2(tmp_path: Path) -> None:
    for args in (
        ["--scenario", "nope"],
        ["--check", "p99<<3"],
        ["--host", "http://x:1"],
        ["-f", str(tmp_path / "missing.py"), "-t", "1s"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "hubbub.loadtest", *args, "--no-live"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "120"},
        )  # fmt: skip
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)


def test_a_sigkilled_node_fails_the_run_even_when_loss_is_zero(
    node_factory: Callable[..., NodeProc], tmp_path: Path
) -> None:
    """Issue 11 item 6: ``--check "loss==0"`` alone passed a run in which the
    node was SIGKILLed (loss counts only accepted publications). Locust's rule:
    any failed request exits 1, and the summary says why; ``--exit-code-on-error
    0`` keeps such a run green when the disruption is the point."""
    for on_error, expected in (("1", 1), ("0", 0)):
        node = node_factory()
        code, report, out = run_tool(
            tmp_path,
            "--scenario", "livefeed", "-u", "6", "-t", "2.5s", "--rate", "20", "--workers", "1",
            "--host", node.tcp_url, "--disrupt-at", "1s",
            "--disrupt-cmd", f"kill -KILL {node.proc.pid}",
            "--check", "loss==0", "--exit-code-on-error", on_error,
        )  # fmt: skip
        assert code == expected, out
        assert report["passed"] is True  # the check itself passes: nothing accepted was lost
        assert report["exit"]["code"] == expected
        assert any("publish requests failed" in r for r in report["exit"]["reasons"]), report[
            "exit"
        ]
        line = "run failed (exit 1): " if expected else "exit 0 (--exit-code-on-error 0) despite: "
        assert line in out, out
