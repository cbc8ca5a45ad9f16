"""The HTML report: one self-contained file (inline CSS and SVG, no scripts)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from hubbub.loadtest.reports.svg import STYLE, Series, line_chart

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#f6f6f6}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;white-space:pre-wrap}
.ok{background:#e8f6e8;border:1px solid #9c9;padding:8px 12px}
.bad{background:#fdecea;border:1px solid #e99;padding:8px 12px}
.warn{background:#fff6e0;border:1px solid #db6;padding:8px 12px;margin-top:8px}
.muted{color:#666} svg{display:block;margin:8px 0}
"""


def _num(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_STATS = ["count", "min", "mean", "p50", "p90", "p99", "p99.9", "max"]


def _latency_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = [["all receivers", *(report["latency"].get(k) for k in _STATS)]]
    groups = report["latency_groups"]
    if len(groups) > 1:
        rows += [[f"group {g}", *(s.get(k) for k in _STATS)] for g, s in groups.items()]
    return rows


def _charts(report: dict[str, Any]) -> list[str]:
    rows = report["timeline"]
    events = [(e["t"], e["what"]) for e in report["events"] if e["what"] != "start"]

    def pts(key: str) -> list[tuple[float, float | None]]:
        return [(r["t"], r.get(key)) for r in rows]

    workers = [str(w["worker"]) for w in report["workers"]]
    return [
        line_chart(
            "Messages received per second (all receivers)",
            [Series("received", pts("msgs_in"))],
            y_label="msgs/s",
            events=events,
        ),
        line_chart(
            "Publications per second",
            [Series("written", pts("msgs_out")), Series("confirmed", pts("sent_ok"))],
            y_label="pubs/s",
            events=events,
        ),
        line_chart(
            "Delivery latency, per second (ms, from the intended send time)",
            [
                Series("p50", pts("p50")),
                Series("p90", pts("p90")),
                Series("p99", pts("p99")),
                Series("max", pts("max")),
            ],
            y_label="ms",
            events=events,
        ),
        line_chart(
            "Connections",
            [
                Series("users", pts("users")),
                Series("connected", pts("connected")),
                Series("reconnecting", pts("down")),
            ],
            y_label="clients",
            events=events,
        ),
        line_chart(
            "Errors and disconnects (per second)",
            [Series("errors", pts("errors")), Series("disconnects", pts("disconnects"))],
            y_label="count",
            events=events,
        ),
        line_chart(
            "Load generator CPU per worker (%)",
            [
                Series(
                    f"worker {w}",
                    [(r["t"], 100 * r["cpu"][w] if w in r["cpu"] else None) for r in rows],
                )
                for w in workers
            ],
            y_label="% of one core",
            events=events,
        ),
    ]


def _head(report: dict[str, Any]) -> list[str]:
    """The document's head, the title and what ran."""
    return [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>hubbub-loadtest: {escape(report['scenario'])}</title>",
        f"<style>{_CSS}{STYLE}</style></head><body>",
        f"<h1>hubbub-loadtest report: {escape(report['scenario'])}</h1>",
        f"<div class=muted>started {escape(report['started'])}, ran "
        f"{report['duration_s']:.1f} s on {report['machine']['cpus']} CPUs, Python "
        f"{escape(report['machine']['python'])}</div>",
        f"<pre>{escape(report['command'])}</pre>",
    ]


def _verdict(report: dict[str, Any]) -> list[str]:
    """Clean or the problems; client-bound or not; the ``--check`` results."""
    parts = []
    if report["clean"]:
        parts.append(
            "<div class=ok><b>Clean run</b>: nothing lost, duplicated or reordered; "
            "no errors or disconnects.</div>"
        )
    else:
        items = "".join(f"<li>{escape(p)}</li>" for p in report["problems"])
        parts.append(f"<div class=bad><b>Problems</b><ul>{items}</ul></div>")
    if report["client_bound"]:
        parts.append(
            "<div class=warn><b>Client-bound</b>: the load generator itself was a "
            "bottleneck, so these numbers understate the server.<ul>"
            + "".join(f"<li>{escape(r)}</li>" for r in report["client_bound_reasons"])
            + "</ul></div>"
        )
    if "checks" in report:
        rows = [
            [r["check"], r["actual"], "pass" if r["passed"] else "FAIL"] for r in report["checks"]
        ]
        parts.append("<h2>Checks</h2>" + _table(["check", "actual", "result"], rows))
    return parts


def _summary(report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    rows: list[list[Any]] = [
        ["users (target / peak)", f"{s['users_target']:,} / {s['users_peak']:,}"],
        ["connections at peak", s["connected_peak"]],
        ["connect failures", s["connect_failures"]],
        ["publications sent (confirmed)", s["publications_sent"]],
        ["messages received", s["received"]],
        ["published per second (mean)", s["msgs_out_per_s"]],
        ["received per second (mean)", s["msgs_in_per_s"]],
        ["errors", s["errors"]],
        ["disconnects", s["disconnects"]],
    ]
    return ["<h2>Summary</h2>", _table(["", "value"], rows)]


_TALLY = ["expected", "delivered", "lost", "duplicates", "reordered", "unconfirmed"]


def _correctness(report: dict[str, Any]) -> list[str]:
    """Expected, delivered, lost ... per group of receivers and in total."""
    c = report["correctness"]
    groups = {**c["groups"], "total": c["total"]} if len(c["groups"]) > 1 else {"total": c["total"]}
    rows = [[g, *(t[k] for k in _TALLY)] for g, t in groups.items()]
    return [
        "<h2>Correctness</h2>",
        _table(["receivers", *_TALLY], rows),
        f"<p class=muted>{c['publications_sent']:,} publications confirmed on {c['streams']} "
        "streams. Expected = what each subscriber should have received from the publications "
        "the server confirmed while it was subscribed; delivered + lost = expected"
        f"{' (holds)' if c['consistent'] else ' (DOES NOT HOLD)'}.</p>",
    ]


def _latency(report: dict[str, Any]) -> list[str]:
    """Delivery latency and request timings."""
    parts = ["<h2>Latency (ms)</h2>"]
    if report.get("latency_excludes_first_s"):
        parts.append(
            f"<p class=muted>Requests and deliveries of the first "
            f"{report['latency_excludes_first_s']:g} s (ramp-up) are left out here "
            "(connects excepted); the plots show every second.</p>"
        )
    parts.append(_table(["delivery", *_STATS], _latency_rows(report)))
    req_rows = [
        [name, r["count"], r["failures"], *(r.get(k) for k in _STATS[1:])]
        for name, r in report["requests"].items()
    ]
    if req_rows:
        parts.append(_table(["request", "count", "failures", *_STATS[1:]], req_rows))
    return parts


def _reconnects(report: dict[str, Any]) -> list[str]:
    rc = report["reconnect"]
    if not (rc["reconnected"] or rc["recovered"] or rc["recovery_failed"] or rc["still_down"]):
        return []
    rows = [
        ["clients reconnected", rc["reconnected"]],
        ["time until every client was back (s)", rc["all_back_s"]],
        ["still disconnected at the end", rc["still_down"]],
        ["publications recovered from history", rc["recovered"]],
        ["recoveries refused (recovered: false)", rc["recovery_failed"]],
        ["publications dropped by the server (lag)", rc["lagged"]],
    ]
    return ["<h2>Reconnects</h2>", _table(["", "value"], rows)]


def _errors(report: dict[str, Any]) -> list[str]:
    if not (report["errors"] or report["disconnects"]):
        return []
    return [
        "<h2>Errors and disconnects</h2>",
        _table(["error", "count"], [[k, v] for k, v in report["errors"].items()]),
        _table(["disconnect code", "count"], [[k, v] for k, v in report["disconnects"].items()]),
    ]


_WORKER = ["worker", "CPU mean", "CPU max", "saturated s", "loop lag max ms", "late max ms"]


def _generator(report: dict[str, Any]) -> list[str]:
    """Each worker's CPU, loop lag and schedule lateness."""
    rows = [
        [
            w["worker"],
            f"{w['cpu_mean']:.0%}",
            f"{w['cpu_max']:.0%}",
            f"{w['saturated_ticks']} / {w['ticks']}",
            w["loop_lag_max_ms"],
            w["schedule_late_max_ms"],
            w["received"],
        ]
        for w in report["workers"]
    ]
    return ["<h2>Load generator</h2>", _table([*_WORKER, "received"], rows)]


def _configuration(report: dict[str, Any]) -> list[str]:
    config = report["config"]
    return [
        "<details><summary>Configuration</summary>"
        + _table(["setting", "value"], [[k, str(v)] for k, v in config.items()])
        + "</details>"
    ]


def render(report: dict[str, Any]) -> str:
    """The report as a complete HTML document."""
    parts = [
        *_head(report),
        *_verdict(report),
        *_summary(report),
        *_correctness(report),
        *_latency(report),
        "<h2>Over time</h2>",
        *_charts(report),
        *_reconnects(report),
        *_errors(report),
        *_generator(report),
        *_configuration(report),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_html(report: dict[str, Any], path: str) -> None:
    Path(path).write_text(render(report), encoding="utf-8")
