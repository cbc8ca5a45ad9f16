"""The report from merged worker ticks: numbers, checks, JSON, CSV, HTML (no sockets)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from hubbub.loadtest.accounting.sequences import StreamInfo, Tally
from hubbub.loadtest.accounting.stats import WorkerStats
from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.reports.checks import evaluate, parse_checks
from hubbub.loadtest.reports.html import render
from hubbub.loadtest.reports.report import build_report, metric, write_csv, write_json
from hubbub.loadtest.running.coordinator import Coordinator, Event


def _tick(stats: WorkerStats, k: int) -> dict:
    tick = stats.tick()
    tick.update(type="tick", k=k, cpu=0.25)  # not the test process's own CPU
    return tick


def make_coordinator() -> Coordinator:
    config = RunConfig(users=4, workers=2, scenario="livefeed", run_time=2.0)
    coord = Coordinator(config, log=lambda line: None)
    rows = []
    for k in (1, 2, 3):
        for worker in (0, 1):
            stats = WorkerStats()
            stats.users = stats.connected = 2
            group = stats.group("all")
            for ms in range(1, 11):
                group.hist.record_value(ms * 1000 * k)
            group.received += 10
            stats.counts["written"] += 5
            stats.request("publish", 0.001)
            if k == 2 and worker == 1:
                stats.disconnects["3001"] += 1
                stats.error("publish 503")
            rows += coord.aggregate.add_tick(worker, _tick(stats, k))
    assert [r["t"] for r in rows] == [1, 2, 3]  # each complete once both workers sent it
    coord.elapsed = 3.0
    coord.started_wall = 1_700_000_000.0
    coord.events = [Event(0.0, "start"), Event(1.5, "disrupt: restart node 2"), Event(3.0, "stop")]
    coord.streams = {"65536": StreamInfo("feed:live-0", 1.0, 15, frozenset({4})).to_wire()}
    coord.finals = [
        {"tallies": {"all": Tally(expected=30, delivered=29, lost=1).to_wire()}, "still_down": 0},
        {"tallies": {"all": Tally(expected=30, delivered=30).to_wire()}, "still_down": 0},
    ]
    return coord


def test_report_numbers() -> None:
    report = build_report(make_coordinator(), "hubbub-loadtest --scenario livefeed")
    assert report["summary"]["received"] == 60
    assert report["summary"]["publications_sent"] == 14
    assert report["summary"]["msgs_in_per_s"] == 20.0
    assert report["latency"]["count"] == 60
    assert 29.9 < report["latency"]["max"] < 30.1
    assert report["correctness"]["total"]["lost"] == 1
    assert report["correctness"]["consistent"]
    assert report["disconnects"] == {"3001": 1}
    assert not report["clean"]
    assert "1 messages lost" in report["problems"]
    assert not report["client_bound"]
    assert len(report["timeline"]) == 3


def test_metrics_and_checks_against_a_report() -> None:
    report = build_report(make_coordinator(), "x")
    assert metric(report, "loss") == 1
    assert metric(report, "loss%") == 100 / 60
    assert metric(report, "disconnects") == 1
    assert metric(report, "publish.p99") is not None
    assert metric(report, "connect.p99") is None  # no such request: "no data"
    assert metric(report, "p99.9") == report["latency"]["p99.9"]
    results = evaluate(parse_checks("p99<50ms,loss==0,connect.p99<1s"), lambda m: metric(report, m))
    assert [r.passed for r in results] == [True, False, False]
    with_checks = build_report(make_coordinator(), "x", results)
    assert with_checks["passed"] is False and len(with_checks["checks"]) == 3


def read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_client_bound_when_a_worker_is_saturated() -> None:
    coord = make_coordinator()
    for k in (4, 5, 6):
        for worker in (0, 1):
            tick = _tick(WorkerStats(), k)
            tick["cpu"] = 0.97 if worker == 1 else 0.3
            coord.aggregate.add_tick(worker, tick)
    report = build_report(coord, "x")
    assert report["client_bound"]
    assert report["client_bound_reasons"][0].startswith("worker 1 CPU saturated")
    assert metric(report, "client_bound") == 1.0


def test_files(tmp_path: Path) -> None:
    report = build_report(make_coordinator(), "hubbub-loadtest --scenario livefeed")
    write_json(report, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["received"] == 60
    paths = write_csv(report, str(tmp_path / "r"))
    stats = read_csv(paths[0])
    assert {row["Name"] for row in stats} >= {"latency", "publish"}
    history = read_csv(paths[1])
    assert [row["msgs_in"] for row in history] == ["20", "20", "20"]
    assert "cpu_worker1" in history[0]
    correctness = read_csv(paths[2])
    assert correctness[-1]["group"] == "total" and correctness[-1]["lost"] == "1"


def test_html_is_self_contained_with_plots() -> None:
    page = render(build_report(make_coordinator(), "hubbub-loadtest <&> livefeed"))
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 6
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"?https?:", page)  # nothing to download
    assert "hubbub-loadtest &lt;&amp;&gt; livefeed" in page  # escaped
    assert "messages lost" in page and "disrupt" in page
    assert "<polyline" in page


def test_warmup_seconds_stay_out_of_the_summary_but_not_the_plots() -> None:
    config = RunConfig(users=2, workers=1, warmup=1.0)
    coord = Coordinator(config, log=lambda line: None)
    for k, ms in ((1, 500), (2, 5)):  # a slow ramp-up second, then a fast one
        stats = WorkerStats()
        stats.group("all").hist.record_value(ms * 1000)
        stats.group("all").received += 1
        stats.request("publish", ms / 1000)
        coord.aggregate.add_tick(0, _tick(stats, k))
    coord.elapsed = 2.0
    report = build_report(coord, "x")
    assert report["latency"]["count"] == 1 and report["latency"]["max"] < 6
    assert report["requests"]["publish"]["count"] == 2  # counted, but only timed after
    assert report["requests"]["publish"]["max"] < 6
    assert [row["max"] > 400 for row in report["timeline"]] == [True, False]
    assert report["latency_excludes_first_s"] == 1.0
