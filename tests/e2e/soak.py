"""``make soak``: delivery under churn, end to end (issue 11).

Three ``hubbub serve`` nodes on one real redis-server, thousands of
``hubbub-loadtest`` clients (raw TCP, WebSocket msgpack and WebSocket JSON,
spread over the nodes, each reconnecting to the others and recovering from
history), a steady open-loop publish stream on history channels, and, while
it runs: a rolling SIGTERM restart of every node, a SIGKILL (and restart) of
one node, and a SIGKILL + restart of Redis (no persistence: the history is
wiped, so clients are told ``recovered: false`` and reload). The load tester
accounts for every publication the server accepted; the figures are printed
and the exit status is non-zero on any loss or duplicate, on a drained node
that does not exit 0, or on a broken run.

    python -m tests.e2e.soak            # the full run (make soak)
    python -m tests.e2e.soak --short    # 300 clients, about 30 s (tests/e2e/test_soak.py)
    python -m tests.e2e.soak --short --faults redis --report r.json
                                        # one kind of fault; keep the JSON (lost_sample)
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.procs import ROOT, NodeProc, RedisProc, free_port, start_node, start_redis

CONFIG = """
[limits]
drain_timeout = {drain}
messages_per_second = 100000
message_burst = 100000

[namespaces.feed]
history_size = 20000
history_ttl = 600
"""


#: The faults, in the order they come: rolling SIGTERM restart, node SIGKILL, Redis SIGKILL.
FAULTS = ("restart", "kill", "redis")


@dataclass(frozen=True)
class Plan:
    users: int
    publishers: int
    channels: int
    rate: float  # per publisher
    duration: float  # seconds of publishing
    settle: float  # seconds between faults
    drain: float  # drain_timeout
    workers: int
    faults: tuple[str, ...] = FAULTS


FULL = Plan(
    users=3000, publishers=20, channels=20, rate=10, duration=60, settle=6, drain=3, workers=2
)
SHORT = Plan(
    users=300, publishers=6, channels=6, rate=10, duration=26, settle=1.5, drain=1, workers=1
)


@dataclass
class Slot:
    """One node's fixed addresses, so a restarted node is found where it was."""

    tcp: int = field(default_factory=free_port)
    ws: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    proc: NodeProc | None = None

    def args(self) -> list[str]:
        return [
            "--tcp", f"127.0.0.1:{self.tcp}", "--ws", f"127.0.0.1:{self.ws}",
            "--admin", f"127.0.0.1:{self.admin}",
        ]  # fmt: skip


@dataclass
class Events:
    """What the fault driver did and saw, for the summary."""

    lines: list[str] = field(default_factory=list)
    drains: list[tuple[int, float]] = field(default_factory=list)  # exit code, seconds
    ready_after: dict[str, float] = field(default_factory=dict)  # fault -> s until all ready
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)


def ready(slot: Slot) -> bool:
    try:
        url = f"http://127.0.0.1:{slot.admin}/readyz"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_ready(slots: list[Slot], timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not all(ready(s) for s in slots):
        if time.monotonic() - start > timeout:
            raise RuntimeError("nodes not ready")
        time.sleep(0.05)
    return time.monotonic() - start


def start(slot: Slot, config: str, redis: RedisProc) -> None:
    slot.proc = start_node(config, redis=[redis.url], args=slot.args())


def drive(
    plan: Plan, slots: list[Slot], config: str, redis: RedisProc, events: Events, go: float
) -> None:
    """The faults, one after another, each once the cluster settled again."""
    time.sleep(max(0.0, go - time.monotonic()))
    if "restart" in plan.faults:
        rolling_restart(plan, slots, config, redis, events)
    if "kill" in plan.faults:
        kill_node(plan, slots, config, redis, events)
    if "redis" in plan.faults:
        kill_redis(plan, slots, redis, events)


def rolling_restart(
    plan: Plan, slots: list[Slot], config: str, redis: RedisProc, events: Events
) -> None:
    """SIGTERM each node in turn (it drains), start it again, wait until all are ready."""
    for i, slot in enumerate(slots):
        assert slot.proc is not None
        began = time.monotonic()
        slot.proc.signal(signal.SIGTERM)
        code = slot.proc.wait(plan.drain + 30)
        took = time.monotonic() - began
        events.drains.append((code, took))
        events.log(f"node {i} SIGTERM: drained, exit {code} after {took:.2f} s")
        if code != 0:
            events.failures.append(f"node {i} drained with exit {code}")
        slot.proc.stop()
        start(slot, config, redis)
        events.ready_after[f"restart {i}"] = wait_ready(slots)
        time.sleep(plan.settle)


def kill_node(plan: Plan, slots: list[Slot], config: str, redis: RedisProc, events: Events) -> None:
    """SIGKILL node 1, start it again a little later."""
    victim = slots[1]
    assert victim.proc is not None
    victim.proc.signal(signal.SIGKILL)
    victim.proc.wait(10)
    events.log("node 1 SIGKILL")
    time.sleep(plan.settle / 2)
    victim.proc.stop()
    start(victim, config, redis)
    events.ready_after["node SIGKILL"] = wait_ready(slots)
    events.log("node 1 back")
    time.sleep(plan.settle)


def kill_redis(plan: Plan, slots: list[Slot], redis: RedisProc, events: Events) -> None:
    """SIGKILL redis-server and start it again, empty (no persistence)."""
    redis.kill()
    events.log("redis SIGKILL")
    time.sleep(plan.settle / 2)
    began = time.monotonic()
    redis.start()
    events.ready_after["redis SIGKILL"] = wait_ready(slots)
    events.log(f"redis back (empty), every node ready after {time.monotonic() - began:.2f} s")


def loadtest(plan: Plan, slots: list[Slot], report: Path) -> subprocess.Popen[str]:
    hosts = []
    for i, slot in enumerate(slots):  # one transport per node, each client moves on failure
        hosts += [f"tcp://127.0.0.1:{slot.tcp}", f"ws://127.0.0.1:{slot.ws}/ws"][: 2 if i else 1]
    cmd = [
        sys.executable, "-m", "hubbub.loadtest", "--scenario", "livefeed",
        "-u", str(plan.users), "-r", str(max(200, plan.users)), "-t", f"{plan.duration}s",
        "--rate", str(plan.rate), "--publishers", str(plan.publishers),
        "--channels", str(plan.channels), "--size", "200",
        "--workers", str(plan.workers), "--host", ",".join(hosts),
        "--grace", "10s", "--json", str(report), "--no-live", "-q",
        "--exit-code-on-error", "0",  # the faults make requests fail: judged below
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, text=True)


def summary(report: dict[str, Any], events: Events, plan: Plan) -> tuple[list[str], bool]:
    total = report["correctness"]["total"]
    s, rc = report["summary"], report["reconnect"]
    reconnect = report["requests"].get("reconnect", {})
    lines = [
        f"clients {plan.users:,} (peak connected {s['connected_peak']:,}) on 3 nodes, "
        f"{plan.channels} history channels, {plan.publishers} publishers x {plan.rate:g}/s, "
        f"{report['duration_s']:.0f} s",
        f"publications accepted {s['publications_sent']:,}; publish requests failed "
        f"{s['publish_failures']:,} (refused or unanswered during the faults: not expected)",
        f"expected {total['expected']:,}  delivered {total['delivered']:,}  "
        f"lost {total['lost']:,}  duplicated {total['duplicates']:,}  "
        f"reordered {total['reordered']:,}  reloaded {total.get('reloaded', 0):,} "
        f"(after the history was wiped)",
        f"reconnects {rc['reconnected']:,} (p50 {reconnect.get('p50', '-')} ms, "
        f"p99 {reconnect.get('p99', '-')} ms, max {reconnect.get('max', '-')} ms), "
        f"recovered from history {rc['recovered']:,}, "
        f"recoveries refused {rc['recovery_failed']:,}, still down at the end {rc['still_down']:,}",
        "drains: " + ", ".join(f"exit {c} in {t:.2f} s" for c, t in events.drains),
        "every node ready again after: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in events.ready_after.items()),
        f"disconnects by code: {report['disconnects']}",
    ]
    ok = (
        total["lost"] == 0
        and total["duplicates"] == 0
        and total["expected"] > 0
        and not events.failures
        and report["correctness"]["consistent"]
    )
    return lines, ok


def run(plan: Plan, keep: str | None = None) -> int:
    events = Events()
    events.log(f"start (monotonic {events.started:.3f}; the report's times are monotonic)")
    config = CONFIG.format(drain=plan.drain)
    redis = start_redis()
    slots = [Slot() for _ in range(3)]
    try:
        for slot in slots:
            start(slot, config, redis)
        wait_ready(slots)
        with tempfile.TemporaryDirectory(prefix="hubbub-soak-") as tmp:
            report_path = Path(tmp) / "report.json"
            tool = loadtest(plan, slots, report_path)
            # Publishing starts once every user is in place; the faults a little later.
            go = time.monotonic() + 3 + plan.users / max(200, plan.users) + plan.settle
            error: list[BaseException] = []

            def faults() -> None:
                try:
                    drive(plan, slots, config, redis, events, go)
                except BaseException as exc:  # reported below
                    error.append(exc)

            driver = threading.Thread(target=faults, daemon=True)
            driver.start()
            code = tool.wait(plan.duration + 120)
            driver.join(60)
            if error:
                events.failures.append(f"fault driver: {error[0]!r}")
            if code == 2 or not report_path.exists():
                print(f"soak: hubbub-loadtest failed (exit {code})", file=sys.stderr)
                return 2
            report = json.loads(report_path.read_text())
            if keep:
                Path(keep).write_text(report_path.read_text())
        lines, ok = summary(report, events, plan)
        print("\n".join(["", "soak:", *("  " + line for line in lines)]))
        for failure in events.failures:
            print(f"  FAILED: {failure}")
        print("  result: " + ("0 lost, 0 duplicated" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        for slot in slots:
            if slot.proc is not None:
                slot.proc.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="300 clients, about 30 s")
    parser.add_argument("--users", type=int, help="override the number of clients")
    parser.add_argument("--report", metavar="FILE", help="keep hubbub-loadtest's JSON report")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help="which faults, comma-separated (to isolate one): restart (rolling SIGTERM), "
        "kill (node SIGKILL), redis (Redis SIGKILL + restart); '' for none",
    )
    args = parser.parse_args()
    plan = SHORT if args.short else FULL
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    plan = Plan(**{**plan.__dict__, "faults": faults})
    if args.users:
        plan = Plan(**{**plan.__dict__, "users": args.users})
    sys.exit(run(plan, args.report))


if __name__ == "__main__":
    main()
