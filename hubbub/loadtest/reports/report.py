"""The run's report: one JSON-able dict, written as JSON, CSV and HTML.

Correctness is part of every report: publications sent, deliveries expected,
delivered, lost, duplicated and reordered, per receiver group. ``problems``
lists what makes a run not clean (loss, errors, disconnects, a worker whose
CPU was saturated, ...); ``client_bound`` says whether the numbers measure the
load generator rather than the server.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

from hubbub.loadtest.accounting.aggregate import Aggregate
from hubbub.loadtest.accounting.hist import summary
from hubbub.loadtest.accounting.sequences import StreamInfo, Tally
from hubbub.loadtest.reports.checks import CheckResult
from hubbub.loadtest.running.coordinator import Coordinator

#: A worker at or above this CPU share in a tick is saturated.
SATURATED = 0.9
#: Ticks a worker may be saturated (as a share) before the run is client-bound.
SATURATED_SHARE = 0.2
#: Worst event-loop lag (ms) a worker may show before the run is client-bound.
LAG_LIMIT_MS = 100.0


def _client_bound(agg: Aggregate) -> tuple[list[dict[str, Any]], list[str]]:
    workers, reasons = [], []
    for index, totals in enumerate(agg.per_worker):
        steady = totals.steady(agg.warmup)
        cpu = [t[1] for t in steady]
        lag = max((t[2] for t in steady), default=0.0)
        late = max((t[3] for t in steady), default=0.0)
        saturated = sum(1 for c in cpu if c >= SATURATED)
        mean = sum(cpu) / len(cpu) if cpu else 0.0
        workers.append(
            {
                "worker": index,
                "cpu_mean": round(mean, 3),
                "cpu_max": round(max(cpu), 3) if cpu else 0.0,
                "saturated_ticks": saturated,
                "ticks": len(cpu),
                "loop_lag_max_ms": lag,
                "schedule_late_max_ms": late,
                "received": totals.received,
            }
        )
        if cpu and saturated >= max(1, SATURATED_SHARE * len(cpu)):
            reasons.append(
                f"worker {index} CPU saturated in {saturated} of {len(cpu)} s "
                f"(mean {mean:.0%}): add --workers or machines"
            )
        if lag > LAG_LIMIT_MS:
            reasons.append(f"worker {index} event loop lagged up to {lag:.0f} ms")
    return workers, reasons


def build_report(
    coord: Coordinator, command: str, checks: list[CheckResult] | None = None
) -> dict[str, Any]:
    """Everything known about the finished run."""
    config = coord.config
    agg = coord.aggregate
    duration = coord.elapsed or 0.0
    correctness, total = _correctness(coord)
    summary_block = _summary(coord, correctness["publications_sent"], duration)
    reconnect = _reconnect(coord)
    workers, reasons = _client_bound(agg)
    connect = agg.requests.get("connect")
    problems = _problems(coord, total, summary_block, reconnect, reasons)
    report: dict[str, Any] = {
        "tool": "hubbub-loadtest",
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(coord.started_wall)),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpus(),
        },
        "scenario": Path(config.scenario_file).name if config.scenario_file else config.scenario,
        "config": dataclasses.asdict(config),
        "duration_s": round(duration, 3),
        "summary": summary_block,
        "latency": summary(agg.latency()),
        "latency_excludes_first_s": config.warmup,
        "latency_groups": {
            g: summary(h) for g, h in sorted(agg.groups.items()) if agg.group_received[g]
        },
        "requests": {
            name: {"count": r.count, "failures": r.failures, **_timing(summary(r.hist))}
            for name, r in sorted(agg.requests.items())
        },
        "connect": _timing(summary(connect.hist)) if connect else {},
        "correctness": correctness,
        "reconnect": reconnect,
        "errors": dict(agg.errors.most_common()),
        "disconnects": dict(sorted(agg.disconnects.items())),
        "workers": workers,
        "client_bound": bool(reasons),
        "client_bound_reasons": reasons,
        "events": [dataclasses.asdict(e) for e in coord.events],
        "timeline": agg.rows,
        "problems": problems,
        "clean": not problems,
    }
    if checks is not None:
        report["checks"] = [
            {"check": r.check.text, "actual": r.actual, "passed": r.passed} for r in checks
        ]
        report["passed"] = all(r.passed for r in checks)
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """Why the run counts as failed by Locust's rule (any failed request or
    error): e.g. "38 of 50 publish requests failed". Empty when none did."""
    reasons = [
        f"{r['failures']:,} of {r['count']:,} {name} requests failed"
        for name, r in report["requests"].items()
        if r["failures"]
    ]
    if report["summary"]["connect_failures"] and not report["requests"].get("connect"):
        reasons.append(f"{report['summary']['connect_failures']:,} connections failed")
    if report["errors"]:
        top = ", ".join(f"{k} x{v:,}" for k, v in list(report["errors"].items())[:3])
        reasons.append(f"{report['summary']['errors']:,} errors ({top})")
    return reasons


def _correctness(coord: Coordinator) -> tuple[dict[str, Any], Tally]:
    """The workers' tallies summed per group and in total, beside the publishers' ledger."""
    tallies: dict[str, Tally] = {}
    for final in coord.finals:
        for group, data in final.get("tallies", {}).items():
            tallies.setdefault(group, Tally()).add(Tally.from_wire(data))
    total = Tally()
    for tally in tallies.values():
        total.add(tally)
    streams = [StreamInfo.from_wire(v) for v in coord.streams.values()]
    sent = sum(s.sent for s in streams)
    correctness = {
        "total": total.to_wire(),
        "groups": {g: t.to_wire() for g, t in sorted(tallies.items())},
        "publications_sent": sent,
        "streams": len(streams),
        "consistent": total.delivered + total.lost == total.expected,
        # Which receivers lost what (a sample per worker; times are monotonic).
        "lost_sample": [loss for final in coord.finals for loss in final.get("losses", ())],
    }
    return correctness, total


def _summary(coord: Coordinator, sent: int, duration: float) -> dict[str, Any]:
    """Users, connections, publications and receptions, errors and disconnects."""
    agg = coord.aggregate
    counts = agg.counts
    received = sum(agg.group_received.values())
    return {
        "users_target": coord.config.users,
        "users_peak": agg.peak_users,
        "connected_peak": agg.peak_connected,
        "connect_failures": counts.get("connect_failures", 0),
        "publications_written": counts.get("written", 0),
        "publications_sent": sent,
        "publish_failures": agg.requests["publish"].failures if "publish" in agg.requests else 0,
        "received": received,
        "msgs_out_per_s": round(counts.get("written", 0) / duration, 1) if duration else 0.0,
        "msgs_in_per_s": round(received / duration, 1) if duration else 0.0,
        "errors": sum(agg.errors.values()),
        "disconnects": sum(agg.disconnects.values()),
        "duplicates_seen": counts.get("duplicates", 0),
        "unstamped": counts.get("unstamped", 0),
        "foreign": counts.get("foreign", 0),
    }


def _reconnect(coord: Coordinator) -> dict[str, Any]:
    """Reconnects, how long until every client was back, recovery from history."""
    agg = coord.aggregate
    counts = agg.counts
    downs = [f["first_down"] for f in coord.finals if f.get("first_down") is not None]
    backs = [f["last_back"] for f in coord.finals if f.get("last_back") is not None]
    return {
        "reconnected": agg.requests["reconnect"].count if "reconnect" in agg.requests else 0,
        "still_down": sum(int(f.get("still_down", 0)) for f in coord.finals),
        "all_back_s": round(max(backs) - min(downs), 3) if downs and backs else None,
        "recovered": counts.get("recovered", 0),
        "recovery_failed": counts.get("recovery_failed", 0),
        "lagged": counts.get("lagged", 0),
    }


def _problems(
    coord: Coordinator,
    total: Tally,
    summary_block: dict[str, Any],
    reconnect: dict[str, Any],
    reasons: list[str],
) -> list[str]:
    """What makes the run not clean."""
    problems = list(coord.problems)
    if total.lost:
        problems.append(f"{total.lost} messages lost")
    if total.duplicates:
        problems.append(f"{total.duplicates} duplicate deliveries")
    if total.reordered:
        problems.append(f"{total.reordered} deliveries out of order")
    if summary_block["errors"]:
        problems.append(f"{summary_block['errors']} errors")
    if summary_block["disconnects"]:
        problems.append(f"{summary_block['disconnects']} disconnects")
    if summary_block["connect_failures"]:
        problems.append(f"{summary_block['connect_failures']} connections failed")
    if reconnect["still_down"]:
        problems.append(f"{reconnect['still_down']} clients not connected at the end")
    problems.extend(reasons)
    return problems


def _timing(stats: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in stats.items() if k != "count"}


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def metric(report: dict[str, Any], name: str) -> float | None:
    """The value of a ``--check`` metric (see :mod:`loadtest.reports.checks`), None without data."""
    s, c = report["summary"], report["correctness"]["total"]
    duration = report["duration_s"] or None
    simple: dict[str, float | None] = {
        "loss": c["lost"],
        "dup": c["duplicates"],
        "reorder": c["reordered"],
        "errors": s["errors"],
        "disconnects": s["disconnects"],
        "delivered": c["delivered"],
        "expected": c["expected"],
        "sent": s["publications_sent"],
        "received": s["received"],
        "connect_failures": s["connect_failures"],
        "users": s["users_peak"],
        "lagged": report["reconnect"]["lagged"],
        "recovery_failed": report["reconnect"]["recovery_failed"],
        "client_bound": 1.0 if report["client_bound"] else 0.0,
        "msgs_in": s["received"] / duration if duration else None,
        "msgs_out": s["publications_written"] / duration if duration else None,
        "loss%": 100.0 * c["lost"] / c["expected"] if c["expected"] else None,
    }
    if name in simple:
        return simple[name]
    if name == "errors%":
        requests = sum(r["count"] for r in report["requests"].values())
        return 100.0 * s["errors"] / requests if requests else None
    source, _, stat = _split_stat(name)
    if source in ("", "latency"):
        stats = report["latency"]
    elif source.startswith("latency:"):
        stats = report["latency_groups"].get(source.partition(":")[2], {})
    else:
        stats = report["requests"].get(source, {})
    value = stats.get(stat)
    return float(value) if value is not None else None


def _split_stat(name: str) -> tuple[str, str, str]:
    if name.endswith("p99.9"):
        return name[: -len("p99.9")].rstrip("."), ".", "p99.9"
    source, dot, stat = name.rpartition(".")
    return source, dot, stat


# -- files --------------------------------------------------------------------


def write_json(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


STATS_COLUMNS = [
    "Type",
    "Name",
    "Count",
    "Failures",
    "Min",
    "Mean",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "Max",
]
HISTORY_COLUMNS = [
    "t", "users", "connected", "down", "msgs_out", "msgs_in", "errors", "disconnects",
    "connects", "gaps", "p50", "p90", "p99", "max", "lag_ms", "late_ms",
]  # fmt: skip
CORRECTNESS_COLUMNS = [
    "group", "expected", "delivered", "lost", "duplicates", "reordered", "unconfirmed", "unknown",
]  # fmt: skip


def write_csv(report: dict[str, Any], prefix: str) -> list[str]:
    """Locust-style CSV files ``PREFIX_stats.csv``, ``_history.csv``, ``_correctness.csv``."""
    paths = [f"{prefix}_stats.csv", f"{prefix}_history.csv", f"{prefix}_correctness.csv"]
    with open(paths[0], "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(STATS_COLUMNS)
        rows = [("delivery", "latency", report["latency"], 0)]
        rows += [("delivery", f"latency:{g}", s, 0) for g, s in report["latency_groups"].items()]
        rows += [
            ("request", name, {"count": r["count"], **r}, r["failures"])
            for name, r in report["requests"].items()
        ]
        for kind, name, stats, failures in rows:
            out.writerow(
                [kind, name, stats.get("count", 0), failures]
                + [stats.get(k, "") for k in ("min", "mean", "p50", "p90", "p99", "p99.9", "max")]
            )
    with open(paths[1], "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        workers = [str(w["worker"]) for w in report["workers"]]
        out.writerow(HISTORY_COLUMNS + [f"cpu_worker{w}" for w in workers])
        for row in report["timeline"]:
            out.writerow(
                [row.get(c, "") if row.get(c) is not None else "" for c in HISTORY_COLUMNS]
                + [row["cpu"].get(w, "") for w in workers]
            )
    with open(paths[2], "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(CORRECTNESS_COLUMNS)
        groups = {**report["correctness"]["groups"], "total": report["correctness"]["total"]}
        for group, tally in groups.items():
            out.writerow([group] + [tally.get(c, 0) for c in CORRECTNESS_COLUMNS[1:]])
    return paths
