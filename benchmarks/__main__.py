"""``python -m benchmarks [PART ...] [--quick]``: run, print a table, save JSON.

Parts: fanout, idle, floor, chat, redis, write_delay, publish, cluster, rediscluster
(all by default).

The generator pins itself to core 1 and each server to core 0
(BENCHMARKS.md; in the cluster part every node and redis-server share core 0),
raises its open-file limit to the hard limit (servers inherit it), and writes
the figures to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import cluster, fanout, floor, idle, launcher, procstat, rediscluster, workloads
from benchmarks.report import render

PARTS = (
    "fanout",
    "idle",
    "floor",
    "chat",
    "redis",
    "write_delay",
    "publish",
    "cluster",
    "rediscluster",
)
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

Plan = tuple[int, tuple[float, ...], float, float, int]
#: (subscribers, rates, warm-up s, measured s, idle connections)
FULL: Plan = (1000, (50.0, 100.0, 200.0), 2.0, 6.0, 10000)
QUICK: Plan = (1000, (50.0, 200.0), 1.0, 2.0, 2000)
#: Cluster part: (rates, throughput warm-up s, throughput measured s per level);
#: warm-up and measured window per rate as above.
CLUSTER_FULL: tuple[tuple[float, ...], float, float] = ((50.0, 100.0), 0.5, 1.5)
CLUSTER_QUICK: tuple[tuple[float, ...], float, float] = ((50.0, 100.0), 0.3, 0.7)
#: Redis Cluster part: (warm-up s, measured s) of each setup's closed loop.
REDISCLUSTER_FULL = (1.0, 3.0)
REDISCLUSTER_QUICK = (0.5, 1.5)
#: Chat part: (rooms, subscribers per room, publications/s spread over the rooms).
CHAT: tuple[int, int, tuple[float, ...]] = (100, 10, (2000.0, 5000.0))
#: The one-channel rows through Redis and with write_delay: publications/s.
REDIS_RATE, WRITE_DELAY_RATE = 200.0, 100.0
WRITE_DELAYS = (0.0, 0.01, 0.05)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("parts", nargs="*", metavar="PART", help=", ".join(PARTS) + " [all]")
    parser.add_argument("--quick", action="store_true", help="a ~1 min smoke run")
    parser.add_argument("--subscribers", type=int, help="fan-out subscribers [1000]")
    parser.add_argument("--rates", help="publications/s, comma-separated [50,100,200]")
    parser.add_argument("--measure", type=float, help="measured seconds per rate [6]")
    parser.add_argument(
        "--cluster-rates", help="publications/s of the cluster part, comma-separated [50,100]"
    )
    parser.add_argument(
        "--idle", type=int, dest="idle_conns", help="idle connections per transport [10000]"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file [{RESULTS}]")
    return parser


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM ends the run like Ctrl-C: cancelled, every server stopped on the way out.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    subs, rates, warmup, measure, idle_conns = QUICK if args.quick else FULL
    subs = args.subscribers or subs
    if args.rates:
        rates = tuple(float(r) for r in args.rates.split(","))
    measure = args.measure or measure
    idle_conns = args.idle_conns or idle_conns
    parts = args.parts or PARTS
    out: dict[str, Any] = {}
    if "fanout" in parts:
        results = await fanout.run_fanout(
            subscribers=subs, rates=rates, warmup=warmup, measure=measure, log=_log
        )
        out["fanout"] = fanout.as_json(results)
    if "idle" in parts:
        out["idle"] = idle.as_json(await idle.run_idle(connections=idle_conns, log=_log))
    if "floor" in parts:
        sends = await floor.run_floor(
            sockets=subs, rates=rates, warmup=warmup, measure=measure, log=_log
        )
        out["floor"] = floor.as_json(sends)
    out.update(await _workloads(parts, subs, warmup, measure, args.quick))
    if "cluster" in parts:
        c_rates, tp_warm, tp_measure = CLUSTER_QUICK if args.quick else CLUSTER_FULL
        if args.cluster_rates:
            c_rates = tuple(float(r) for r in args.cluster_rates.split(","))
        data = await cluster.run_cluster(
            subscribers=subs,
            rates=c_rates,
            warmup=warmup,
            measure=measure,
            throughput_warm=tp_warm,
            throughput_measure=tp_measure,
            log=_log,
        )
        out["cluster"] = cluster.as_json(data)
    if "rediscluster" in parts:
        warm, window = REDISCLUSTER_QUICK if args.quick else REDISCLUSTER_FULL
        data = await rediscluster.run_rediscluster(warm=warm, measure=window, log=_log)
        out["rediscluster"] = rediscluster.as_json(data)
    return out


async def _workloads(
    parts: tuple[str, ...] | list[str], subs: int, warmup: float, measure: float, quick: bool
) -> dict[str, Any]:
    """The performance issue's rows: chat, Redis fan-out, write_delay, publish throughput."""
    out: dict[str, Any] = {}
    rows: list[workloads.WorkloadRow] = []
    if "chat" in parts:
        rooms, per_room, chat_rates = CHAT
        rows += await workloads.run_chat(
            rooms=rooms,
            per_room=per_room,
            rates=chat_rates[-1:] if quick else chat_rates,
            warmup=warmup,
            measure=measure,
            log=_log,
        )
    if "redis" in parts:
        rows += await workloads.run_one_channel(
            "redis",
            subscribers=subs,
            rate=REDIS_RATE,
            warmup=warmup,
            measure=measure,
            settings=workloads.REDIS_SETTINGS,
            log=_log,
        )
    if "write_delay" in parts:
        rows += await workloads.run_one_channel(
            "write_delay",
            subscribers=subs,
            rate=WRITE_DELAY_RATE,
            warmup=warmup,
            measure=measure,
            settings=workloads.write_delay_settings(WRITE_DELAYS),
            log=_log,
        )
    if rows:
        out["workloads"] = workloads.as_json(rows)
    if "publish" in parts:
        warm, tp_measure = (0.3, 0.7) if quick else (0.5, 2.0)
        out["publish"] = workloads.as_json(
            await workloads.run_publish(warm=warm, measure=tp_measure, log=_log)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        choices = ", ".join(PARTS)
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))} (choose from {choices})")
    nofile = procstat.raise_nofile()
    pinned = procstat.pinning_available() and procstat.pin(0, procstat.GENERATOR_CORE)
    if not pinned:
        _log("benchmarks: fewer than 2 cores available: server and generator NOT pinned")
    started = time.monotonic()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "pinned": pinned,
            "nofile": nofile,
        },
    }
    try:
        report.update(uvloop.run(_run(args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _log("benchmarks: interrupted")
        return 130
    finally:
        launcher.stop_all()
    report["seconds"] = round(time.monotonic() - started, 1)
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _log(f"benchmarks: wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
