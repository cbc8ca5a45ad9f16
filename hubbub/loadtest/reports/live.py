"""The terminal: a live view while running (rich) and the final summary tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


class LiveView:
    """A panel redrawn with each completed second (on stderr, so stdout stays clean)."""

    def __init__(self, scenario: str, run_time: float | None, console: Console) -> None:
        self.scenario = scenario
        self.run_time = run_time
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.disconnects: dict[str, int] = {}
        self.errors = 0

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def log(self, line: str) -> None:
        self.console.print(Text(line, style="dim"))

    def update(self, row: dict[str, Any], disconnects: dict[str, int], errors: int) -> None:
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        total = f" / {self.run_time:g}s" if self.run_time else ""
        cpu = " ".join(f"{100 * c:.0f}%" for c in row["cpu"].values())
        by_code = ", ".join(f"{k}: {v}" for k, v in sorted(disconnects.items())) or "none"
        table.add_row(
            Text(f"hubbub-loadtest {self.scenario}", style="bold"),
            f"{row['t']}s{total}",
            f"users {row['users']:,}",
            f"connected {row['connected']:,} (reconnecting {row['down']:,})",
        )
        table.add_row(
            f"msgs/s out {row['msgs_out']:,}",
            f"in {row['msgs_in']:,}",
            f"p50 {_ms(row['p50'])}  p99 {_ms(row['p99'])}",
            f"max {_ms(row['max'])}",
        )
        table.add_row(
            f"errors {errors:,}",
            f"open gaps {row['gaps']:,}",
            f"disconnects {by_code}",
            f"worker CPU {cpu}",
        )
        self.live.update(Group(table))


def print_summary(report: dict[str, Any], console: Console) -> None:
    """The final tables: summary, correctness, latency, requests, problems, checks."""
    console.print(_head_table(report))
    console.print(_latency_table(report))
    console.print(_correctness_table(report))
    _print_outcome(report, console)


def _head_table(report: dict[str, Any]) -> Table:
    s = report["summary"]
    head = Table(title=f"hubbub-loadtest: {report['scenario']} ({report['duration_s']:.1f} s)")
    for name in ("users", "connected", "published/s", "received/s", "errors", "disconnects"):
        head.add_column(name, justify="right")
    head.add_row(
        f"{s['users_peak']:,}/{s['users_target']:,}",
        f"{s['connected_peak']:,}",
        f"{s['msgs_out_per_s']:,.1f}",
        f"{s['msgs_in_per_s']:,.1f}",
        f"{s['errors']:,}",
        f"{s['disconnects']:,}",
    )
    return head


_STATS = ("count", "p50", "p90", "p99", "p99.9", "max")


def _cells(values: dict[str, Any]) -> list[str]:
    return [
        f"{values[k]:,}"
        if k == "count" and k in values
        else (f"{values[k]:,.2f}" if values.get(k) is not None else "-")
        for k in _STATS
    ]


def _latency_table(report: dict[str, Any]) -> Table:
    lat = Table(title="latency (ms)")
    lat.add_column("what")
    lat.add_column("failures", justify="right")
    for name in _STATS:
        lat.add_column(name, justify="right")
    lat.add_row("delivery", "", *_cells(report["latency"]))
    if len(report["latency_groups"]) > 1:
        for group, values in report["latency_groups"].items():
            lat.add_row(Text(f"delivery [{group}]"), "", *_cells(values))
    for name, values in report["requests"].items():
        lat.add_row(name, f"{values['failures']:,}", *_cells({**values}))
    return lat


def _correctness_table(report: dict[str, Any]) -> Table:
    c = report["correctness"]
    corr = Table(title="correctness (every message accounted)")
    for name in ("receivers", "expected", "delivered", "lost", "dup", "reordered"):
        corr.add_column(name, justify="right")
    groups = {**c["groups"], "total": c["total"]} if len(c["groups"]) > 1 else {"total": c["total"]}
    for group, t in groups.items():
        corr.add_row(
            group,
            f"{t['expected']:,}",
            f"{t['delivered']:,}",
            f"{t['lost']:,}",
            f"{t['duplicates']:,}",
            f"{t['reordered']:,}",
        )
    return corr


def _print_outcome(report: dict[str, Any], console: Console) -> None:
    """Reconnects, errors, disconnects, client-bound, clean or the problems, checks."""
    rc = report["reconnect"]
    if rc["reconnected"] or rc["recovered"] or rc["recovery_failed"]:
        console.print(
            f"reconnects: {rc['reconnected']:,} back (all within {rc['all_back_s']} s), "
            f"{rc['still_down']:,} still down, {rc['recovered']:,} publications recovered, "
            f"{rc['recovery_failed']:,} recoveries refused"
        )
    if report["errors"]:
        console.print("errors: " + ", ".join(f"{k} x{v}" for k, v in report["errors"].items()))
    if report["disconnects"]:
        console.print(
            "disconnects: " + ", ".join(f"{k} x{v}" for k, v in report["disconnects"].items())
        )
    if report["client_bound"]:
        console.print(
            Text("CLIENT-BOUND: " + "; ".join(report["client_bound_reasons"]), "bold yellow")
        )
    if report["clean"]:
        console.print(Text("clean run", style="green"))
    else:
        console.print(Text("problems: " + "; ".join(report["problems"]), style="red"))
    for check in report.get("checks", []):
        style = "green" if check["passed"] else "bold red"
        seen = "no data" if check["actual"] is None else f"{check['actual']:g}"
        console.print(
            Text(f"{'PASS' if check['passed'] else 'FAIL'} {check['check']} (actual {seen})", style)
        )
