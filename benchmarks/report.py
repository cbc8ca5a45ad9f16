"""The figures as a plain-text table, checked against the targets of the issue."""

from __future__ import annotations

import math
from typing import Any

#: The targets on this 2-core machine (BENCHMARKS.md, the benchmark issue).
TARGET_DELIVERIES = 200_000  # held without loss
TARGET_CPU_US = 5.0  # server CPU per delivery
TARGET_KB = {"tcp": 10.0, "ws": 20.0}  # per idle connection
TARGET_CLUSTER_P50_MS = 1.0  # the cluster path's p50 over the single-node path
#: The servers' core busy at or above this share (%) is full: latency then queues.
CORE_FULL_PCT = 95.0
#: Other processes' CPU during a run (% of one core) that makes its figures noisy.
NOISY_PCT = 10.0


def _num(value: float, fmt: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (format(value, fmt))
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def render(report: dict[str, Any]) -> str:
    """The whole report: fan-out runs, idle memory, targets met or missed."""
    m = report["machine"]
    lines = [
        f"hubbub benchmarks  {report['date']}  {m['cpus']} CPUs, Python {m['python']}, "
        f"pinned={m['pinned']}{'  (QUICK smoke run)' if report.get('quick') else ''}",
        "",
    ]
    verdicts: list[str] = []
    if report.get("fanout"):
        lines += render_fanout(report["fanout"], verdicts)
    if report.get("idle"):
        lines += render_idle(report["idle"], verdicts)
    if report.get("cluster"):
        lines += render_cluster(report["cluster"], verdicts)
    if report.get("floor"):
        lines += render_floor(report["floor"], report.get("fanout") or [])
    if report.get("rediscluster"):
        lines += render_rediscluster(report["rediscluster"], verdicts)
    if report.get("workloads"):
        lines += render_workloads(report["workloads"])
    if report.get("publish"):
        lines += render_publish(report["publish"])
    if verdicts:
        lines += ["Targets:", *[f"  - {v}" for v in verdicts]]
    return "\n".join(lines)


_FANOUT_HEADER = [
    "subs x pub/s",
    "offered/s",
    "delivered/s",
    "loss",
    "p50 ms",
    "p99 ms",
    "max ms",
    "srv µs/dlv",
    "srv CPU %",
    "srv kernel %",
    "gen CPU %",
    "other CPU %",
    "note",
]


def _fanout_row(r: dict[str, Any]) -> list[str]:
    notes = []
    if r["client_bound"]:
        notes.append("CLIENT-BOUND")
    if r["other_cpu_pct"] >= NOISY_PCT:
        notes.append("NOISY")
    note = " ".join(notes)
    if r["disconnected"]:
        note = (note + f" {r['disconnected']} disconnected").strip()
    return [
        f"{r['subscribers']} x {r['rate']:g}",
        f"{r['offered']:,.0f}",
        f"{r['deliveries_per_s']:,.0f}",
        f"{r['loss']} ({r['loss_pct']:.2f}%)",
        _num(r["p50_ms"], ".1f"),
        _num(r["p99_ms"], ".1f"),
        _num(r["max_ms"], ".1f"),
        _num(r["server_cpu_us_per_delivery"], ".2f"),
        _num(r["server_cpu_pct"], ".0f"),
        _num(100 * r["server_system_share"], ".0f"),
        _num(r["generator_cpu_pct"], ".0f"),
        _num(r["other_cpu_pct"], ".0f"),
        note,
    ]


def render_fanout(runs: list[dict[str, Any]], verdicts: list[str]) -> list[str]:
    """The fan-out table; its verdicts (loss, CPU per delivery) are appended to ``verdicts``."""
    lines = [
        "Fan-out: WebSocket subscribers on one channel, 100-byte publications, "
        "latency from the intended send time",
        *_table(_FANOUT_HEADER, [_fanout_row(r) for r in runs]),
        "  CPU % = share of one core; srv µs/dlv = server CPU / deliveries; "
        "srv kernel % = its system-time share;",
        "  CLIENT-BOUND = generator (receivers + publisher) >= 90 % of its core;",
        f"  NOISY = other processes used >= {NOISY_PCT:g} % of a core meanwhile "
        "(a busier core batches more: rerun on a quiet machine)",
        "",
    ]
    top = max(runs, key=lambda r: r["offered"])
    caveat = (
        f" -- NOT CONCLUSIVE: other processes used {top['other_cpu_pct']:.0f} % of a core"
        if top["other_cpu_pct"] >= NOISY_PCT
        else ""
    )
    if top["offered"] >= TARGET_DELIVERIES:
        ok = top["loss"] == 0 and not top["disconnected"]
        bound = " (client-bound: generator saturated)" if top["client_bound"] else ""
        verdicts.append(
            f"no loss at {top['offered']:,.0f} deliveries/s: {'met' if ok else 'MISSED'}"
            f"{bound}{'' if ok else caveat}"
        )
    us = top["server_cpu_us_per_delivery"]
    others = ", ".join(
        f"{r['server_cpu_us_per_delivery']:.2f} at {r['offered']:,.0f}/s"
        for r in runs
        if r is not top
    )
    verdicts.append(
        f"server CPU <= {TARGET_CPU_US:g} µs per delivery at "
        f"{top['offered']:,.0f}/s: {'met' if us <= TARGET_CPU_US else 'MISSED'} "
        f"({us:.2f} µs{'; ' + others if others else ''}){caveat}"
    )
    return lines


def render_floor(floor: list[dict[str, Any]], fanout: list[dict[str, Any]]) -> list[str]:
    """The kernel floor beside hubbub's fan-out figure at the same rate."""
    hubbub = {r["rate"]: r["server_cpu_us_per_delivery"] for r in fanout}
    rows = []
    for r in floor:
        ours = hubbub.get(r["rate"], float("nan"))
        rows.append(
            [
                f"{r['sockets']} x {r['rate']:g}",
                _num(r["sends_per_s"], ",.0f"),
                _num(r["cpu_us_per_send"], ".2f"),
                _num(100 * r["system_share"], ".0f"),
                _num(ours, ".2f"),
                _num(ours / r["cpu_us_per_send"], ".2f"),
            ]
        )
    header = ["socks x msg/s", "sends/s", "µs/send", "kernel %", "hubbub µs/dlv", "ratio"]
    return [
        "Kernel floor: a bare loop of 100-byte send()s, one per socket per message "
        "(sender on the server's core)",
        *_table(header, rows),
        "  ratio = hubbub's server CPU per delivery (fan-out above, same rate)"
        " / the floor's per send",
        "",
    ]


def render_workloads(rows: list[dict[str, Any]]) -> list[str]:
    """Chat, the Redis fan-out and write_delay: one row each."""
    table = []
    for row in rows:
        r = row["result"]
        table.append(
            [
                row["workload"],
                row["broker"],
                row["setting"],
                f"{r['subscribers']} x {r['rate']:g}",
                _num(r["deliveries_per_s"], ",.0f"),
                f"{r['loss']} ({r['loss_pct']:.2f}%)",
                _num(r["p50_ms"], ".1f"),
                _num(r["p99_ms"], ".1f"),
                _num(r["server_cpu_us_per_delivery"], ".2f"),
                _num(row["server_cpu_us_per_publication"], ".1f"),
                _num(r["server_cpu_pct"], ".0f"),
                _num(r["other_cpu_pct"], ".0f"),
                "CLIENT-BOUND" if r["client_bound"] else "",
            ]
        )
    header = [
        "workload", "broker", "setting", "subs x pub/s", "delivered/s", "loss",
        "p50 ms", "p99 ms", "µs/dlv", "µs/pub", "srv CPU %", "other CPU %", "note",
    ]  # fmt: skip
    return [
        "Workloads: chat rooms, fan-out through Redis, write_delay "
        "(server CPU includes its redis-server)",
        *_table(header, table),
        "  µs/pub = server CPU per publication (deliveries included)",
        "",
    ]


def render_publish(rows: list[dict[str, Any]]) -> list[str]:
    """Publications one node accepts from 1, 10 and 100 connections."""
    table = [
        [
            r["broker"],
            r["client"],
            str(r["connections"]),
            _num(r["publishes_per_s"], ",.0f"),
            str(r["errors"]),
            _num(r["node_us_per_publish"], ".1f"),
            _num(r["redis_us_per_publish"], ".1f"),
            _num(r["node_cpu_pct"], ".0f"),
            _num(r["generator_cpu_pct"], ".0f"),
        ]
        for r in rows
    ]
    header = [
        "broker", "client", "connections", "publishes/s", "errors", "node µs/pub", "redis µs/pub",
        "node CPU %", "gen CPU %",
    ]  # fmt: skip
    return [
        "Publish throughput, no subscribers: TCP (lean) connections each keeping 32 publishes "
        "in flight; WS-JSON (asyncio client) connections 8 each",
        *_table(header, table),
        "",
    ]


def render_idle(idle: list[dict[str, Any]], verdicts: list[str]) -> list[str]:
    """The idle-memory table; its verdicts (KB per connection) are appended to ``verdicts``."""
    header = [
        "transport",
        "idle connections",
        "RSS before KiB",
        "RSS after KiB",
        "KiB per connection",
        "target",
    ]
    rows = []
    for r in idle:
        target = TARGET_KB[r["transport"]]
        rows.append(
            [
                r["transport"],
                f"{r['connections']:,}",
                f"{r['rss_before_kb']:,}",
                f"{r['rss_after_kb']:,}",
                f"{r['kb_per_connection']:.1f}",
                f"<= {target:g}",
            ]
        )
        met = r["kb_per_connection"] <= target and r["still_open"] == r["connections"]
        verdicts.append(
            f"<= {target:g} KB per idle {r['transport']} connection: "
            f"{'met' if met else 'MISSED'} ({r['kb_per_connection']:.1f} KB"
            f"{'' if r['still_open'] == r['connections'] else ', some closed'})"
        )
    return ["Idle memory: server VmRSS per idle connection", *_table(header, rows), ""]


def _per_pub(value: float) -> str:
    return _num(value, ".3f")


def render_cluster(data: dict[str, Any], verdicts: list[str]) -> list[str]:
    """The cluster part's two tables; its verdicts are appended to ``verdicts``."""
    runs = data.get("runs", [])
    levels = data.get("throughput", [])
    lines = _cluster_runs(data, runs)
    if levels:
        lines += _throughput_table(levels)
    verdicts += _cluster_verdicts(runs)
    if levels:
        verdicts.append(_throughput_verdict(levels))
    return lines


_CLUSTER_HEADER = [
    "setup",
    "subs x pub/s",
    "delivered/s",
    "loss",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p50 +ms",
    "srv µs/dlv",
    "nodes CPU %",
    "redis CPU %",
    "core 0 %",
    "gen CPU %",
    "other CPU %",
    "PUBLISH/pub",
    "EVALSHA/pub",
    "note",
]


def _cluster_row(r: dict[str, Any], b: dict[str, Any] | None) -> list[str]:
    """One setup at one rate; ``b`` is the 1-node in-memory run at the same rate."""
    notes = []
    if r["client_bound"]:
        notes.append("CLIENT-BOUND")
    if r["other_cpu_pct"] >= NOISY_PCT:
        notes.append("NOISY")
    if r["server_core_pct"] >= CORE_FULL_PCT:
        notes.append("CORE-0 FULL")
    if r["disconnected"]:
        notes.append(f"{r['disconnected']} disconnected")
    return [
        r["setup"],
        f"{r['subscribers']} x {r['rate']:g}",
        f"{r['deliveries_per_s']:,.0f}",
        f"{r['loss']} ({r['loss_pct']:.2f}%)",
        _num(r["p50_ms"], ".1f"),
        _num(r["p99_ms"], ".1f"),
        _num(r["max_ms"], ".1f"),
        _num(r["p50_ms"] - b["p50_ms"], "+.1f") if b is not None and r is not b else "",
        _num(r["server_cpu_us_per_delivery"], ".2f"),
        "+".join(f"{c:.0f}" for c in r["node_cpu_pct"]),
        _num(r["redis_cpu_pct"], ".0f") if r["redis"] else "",
        _num(r["server_core_pct"], ".0f"),
        _num(r["generator_cpu_pct"], ".0f"),
        _num(r["other_cpu_pct"], ".0f"),
        _per_pub(r["publish_per_publication"]) if r["redis"] else "",
        _per_pub(r["evalsha_per_publication"]) if r["redis"] else "",
        " ".join(notes),
    ]


def _cluster_runs(data: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """The fan-out table of the three setups."""
    base = {r["rate"]: r for r in runs if not r["redis"]}
    rows = [_cluster_row(r, base.get(r["rate"])) for r in runs]
    return [
        f"Cluster: {runs[0]['subscribers'] if runs else '?'} WebSocket subscribers of "
        f"{data['channel']} (history {data['history_size']}), publisher on the first node; "
        f"Redis {data.get('redis_version', '?')}",
        *_table(_CLUSTER_HEADER, rows),
        "  p50 +ms = p50 minus the 1-node in-memory p50 at the same rate; srv µs/dlv and "
        "nodes/redis CPU count every node and redis-server;",
        "  core 0 % = the servers' core busy, by anyone (minus nodes and redis: others on it); "
        f"CORE-0 FULL = core 0 >= {CORE_FULL_PCT:g} %: publications queue;",
        f"  {data['pinning']};",
        "  PUBLISH/EVALSHA per publication from INFO commandstats (a script's PUBLISH counts "
        "as cmdstat_publish); SUBSCRIBE calls while subscribing: "
        + ", ".join(f"{k}: {v}" for k, v in data.get("subscribe_calls", {}).items()),
        "",
    ]


_THROUGHPUT_HEADER = [
    "connections x depth",
    "publishes/s",
    "node CPU %",
    "redis CPU %",
    "other nodes %",
    "gen CPU %",
    "other CPU %",
    "node µs/pub",
    "redis µs/pub",
    "EVALSHA/pub",
    "errors",
]


def _throughput_table(levels: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            f"{t['connections']} x {t['depth']}",
            f"{t['publishes_per_s']:,.0f}",
            _num(t["node_cpu_pct"], ".0f"),
            _num(t["redis_cpu_pct"], ".0f"),
            _num(t["other_nodes_cpu_pct"], ".0f"),
            _num(t["generator_cpu_pct"], ".0f"),
            _num(t["other_cpu_pct"], ".0f"),
            _num(t["node_us_per_publish"], ".1f"),
            _num(t["redis_us_per_publish"], ".1f"),
            _per_pub(t["evalsha_per_publish"]),
            str(t["errors"]),
        ]
        for t in levels
    ]
    return [
        "Publish throughput through the Lua script: TCP connections to one node, each "
        "keeping `depth` publishes with ids in flight (channel without subscribers)",
        *_table(_THROUGHPUT_HEADER, rows),
        "",
    ]


def _cluster_verdicts(runs: list[dict[str, Any]]) -> list[str]:
    """The p50 the cluster adds, and PUBLISH per publication."""
    verdicts = []
    base = {r["rate"]: r for r in runs if not r["redis"]}
    cluster = [r for r in runs if r["nodes"] > 1]
    hop = {r["rate"]: r for r in runs if r["redis"] and r["nodes"] == 1}
    noisy = sorted({f"{r['rate']:g}/s" for r in runs if r["other_cpu_pct"] >= NOISY_PCT})
    # A verdict on latency from a noisy run says nothing, met or missed.
    caveat = f" -- NOT CONCLUSIVE: noisy runs at {', '.join(noisy)}" if noisy else ""
    added = [r for r in cluster if r["rate"] in base]
    if added:
        deltas = [r["p50_ms"] - base[r["rate"]]["p50_ms"] for r in added]
        ok = all(d <= TARGET_CLUSTER_P50_MS for d in deltas)
        parts = []
        for r, d in zip(added, deltas, strict=True):
            rate = r["rate"]
            h = hop.get(rate)
            via = f" (1 node + Redis: {h['p50_ms'] - base[rate]['p50_ms']:+.1f})" if h else ""
            full = ", core 0 full" if r["server_core_pct"] >= CORE_FULL_PCT else ""
            parts.append(f"{d:+.1f} ms at {rate:g}/s{via}{full}")
        verdicts.append(
            f"cluster path adds <= {TARGET_CLUSTER_P50_MS:g} ms p50 over the single-node path: "
            f"{'met' if ok else 'MISSED'} ({'; '.join(parts)}){caveat}"
        )
    redis_runs = [r for r in runs if r["redis"]]
    if redis_runs:
        ok = all(r["publish_per_publication"] == 1.0 for r in redis_runs)
        verdicts.append(
            f"one Redis PUBLISH per publication: {'met' if ok else 'MISSED'} ("
            + ", ".join(
                f"{r['publish_per_publication']:.3f} with {r['nodes']} node(s) at {r['rate']:g}/s"
                for r in redis_runs
            )
            + ")"
        )
    return verdicts


def _throughput_verdict(levels: list[dict[str, Any]]) -> str:
    """The peak publish rate and what limits it."""
    peak = max(levels, key=lambda t: t["publishes_per_s"])
    node_us, redis_us = peak["node_us_per_publish"], peak["redis_us_per_publish"]
    core0 = peak["node_cpu_pct"] + peak["redis_cpu_pct"] + peak["other_nodes_cpu_pct"]
    if peak["generator_cpu_pct"] >= 100 * 0.9:
        limit = "the generator (client-bound)"
    elif core0 >= 90:
        limit = (
            f"core 0 full, node {peak['node_cpu_pct']:.0f} % vs redis-server "
            f"{peak['redis_cpu_pct']:.0f} %: the {'node' if node_us >= redis_us else 'Redis'}"
        )
    else:
        limit = f"neither core full (core 0 at {core0:.0f} %): round trips"
    return (
        f"publish throughput (no target): peak {peak['publishes_per_s']:,.0f} publishes/s "
        f"on one node at {peak['connections']} connections; limit: {limit}; per publish node "
        f"{node_us:.1f} µs, Redis {redis_us:.1f} µs: a core of Redis's own would take "
        f"~{1e6 / redis_us:,.0f}/s, what ~{node_us / redis_us:.1f} nodes with a core each "
        "publish flat out"
    )


_REDISCLUSTER_HEADER = [
    "setup",
    "pub/s",
    "delivered/s",
    "errors",
    "nodes µs/pub",
    "redis µs/pub",
    "busiest redis µs/pub",
    "nodes CPU %",
    "redis CPU %",
    "gen CPU %",
    "other CPU %",
    "PUBLISH/pub",
    "SPUBLISH/pub",
    "EVALSHA/pub",
]


def render_rediscluster(data: dict[str, Any], verdicts: list[str]) -> list[str]:
    """One Redis vs a Redis Cluster under the same closed loop (benchmarks.rediscluster)."""
    rows = [
        [
            r["setup"],
            _num(r["publications_per_s"], ",.0f"),
            _num(r["deliveries_per_s"], ",.0f"),
            str(r["errors"]),
            _num(r["nodes_us_per_publication"], ".1f"),
            _num(r["redis_us_per_publication"], ".1f"),
            _num(r["busiest_redis_us_per_publication"], ".1f"),
            _num(r["nodes_cpu_pct"], ".0f"),
            _num(r["redis_cpu_pct"], ".0f"),
            _num(r["generator_cpu_pct"], ".0f"),
            _num(r["other_cpu_pct"], ".0f"),
            _per_pub(r["publish_per_publication"]),
            _per_pub(r["spublish_per_publication"]),
            _per_pub(r["evalsha_per_publication"]),
        ]
        for r in data.get("runs", [])
    ]
    lines = [
        f"Redis Cluster: {data['nodes']} nodes, {data['channels']} channels over all slots, "
        f"a subscriber per channel on each node, a publisher per channel ({data['depth']} in "
        f"flight), closed loop; {data['pinning']} (2 cores shared by everything)",
        *_table(_REDISCLUSTER_HEADER, rows),
        "",
    ]
    for r in data.get("runs", []):
        sent = r["publish_per_publication"] + r["spublish_per_publication"]
        if sent == sent:  # not NaN
            verdicts.append(
                f"{r['setup']}: {sent:.2f} PUBLISH/SPUBLISH per publication "
                f"({'met' if abs(sent - 1) < 0.01 else 'MISSED'}: must stay 1)"
            )
    return lines
