"""``hubbub-loadtest``: the command line (Locust-like flags).

Exit status, Locust's convention: 0 when the run finished with no failed
request or error and every ``--check`` passed; 1 when a check failed; when a
request failed or an error was counted, ``--exit-code-on-error`` (default 1;
0 keeps such a run green, e.g. when the disruption is the point and
``--check`` judges it); 2 when the run could not be made (bad flags, a
scenario that does not load, workers that died). The summary's last line says
why a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from hubbub.loadtest.config import RunConfig, default_workers, parse_duration, parse_option
from hubbub.loadtest.reports.checks import CheckError, evaluate, parse_checks
from hubbub.loadtest.running.coordinator import Coordinator, RunFailed
from hubbub.loadtest.scenarios import BUILTIN

EPILOG = """\
examples:
  hubbub-loadtest --scenario livefeed -u 1001 -r 500 -t 30s --rate 100 --html report.html
  hubbub-loadtest --scenario chat -u 10000 -r 1000 -t 60s --host ws://10.0.0.5:7401/ws
  hubbub-loadtest -f myscenario.py -u 200 -t 1m --check "p99<50ms,loss==0"
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hubbub-loadtest",
        description="A locust-style load generator for hubbub: scenarios, honest latency, "
        "and an account of every message.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _what_to_run(p.add_argument_group("what to run"))
    _how(p.add_argument_group("how"))
    _output(p.add_argument_group("output"))
    return p


def _what_to_run(what: argparse._ArgumentGroup) -> None:
    """The scenario, the hosts, the users and what they publish."""
    what.add_argument("--scenario", default=None, help=f"built-in scenario: {', '.join(BUILTIN)}")
    what.add_argument(
        "-f", "--scenario-file", metavar="FILE", help="scenario file with User classes"
    )
    what.add_argument(
        "--host",
        action="append",
        metavar="URL",
        help="tcp://HOST:PORT or ws://HOST:PORT/ws; repeat (or comma-separate) "
        "for a cluster [tcp://127.0.0.1:7400]",
    )
    what.add_argument("-u", "--users", type=_positive_int, default=1, help="users in all [1]")
    what.add_argument(
        "-r",
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second [users, i.e. all in the first second]",
    )
    what.add_argument(
        "-t",
        "--run-time",
        type=_duration,
        default=None,
        help="run time from the first spawn, e.g. 30s, 2m [until Ctrl-C]",
    )
    what.add_argument(
        "--rate",
        type=float,
        default=None,
        help="task rate per publishing user, per second (scenario default)",
    )
    what.add_argument("--size", type=int, default=100, help="payload bytes per publication [100]")
    _shape(what)


def _shape(what: argparse._ArgumentGroup) -> None:
    """How the scenario's users are laid out: publishers, channels, rooms, options."""
    what.add_argument(
        "--publishers",
        type=_positive_int,
        default=None,
        help="publishing users (livefeed, reconnect-storm, slow-consumers) [1]",
    )
    what.add_argument("--channels", type=_positive_int, default=None, help="channels [1]")
    what.add_argument("--rooms", type=_positive_int, default=None, help="chat rooms [users/20]")
    what.add_argument(
        "--slow-fraction",
        type=float,
        default=0.1,
        help="share of slow subscribers (slow-consumers) [0.1]",
    )
    what.add_argument("--namespace", default="", help="channel namespace (scenario default)")
    what.add_argument(
        "--encoding",
        choices=("msgpack", "json"),
        default="msgpack",
        help="WebSocket encoding of scenario-file users [msgpack]",
    )
    what.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario option (self.options), repeatable",
    )
    what.add_argument("--seed", type=int, default=1, help="random seed [1]")


def _how(how: argparse._ArgumentGroup) -> None:
    """Workers, addresses, timeouts, the disruption."""
    how.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help=f"worker processes [{default_workers()}: the core count]",
    )
    how.add_argument(
        "--source-ips",
        type=_positive_int,
        default=0,
        metavar="N",
        help="spread client source addresses over 127.0.0.1..N (more ports)",
    )
    how.add_argument("--connect-timeout", type=_duration, default=10.0)
    how.add_argument(
        "--warmup",
        type=_duration,
        default=0.0,
        metavar="TIME",
        help="leave the first TIME out of the latency summary (the plots keep it)",
    )
    how.add_argument(
        "--grace",
        type=_duration,
        default=3.0,
        help="longest wait after the stop for in-flight messages [3s]",
    )
    how.add_argument(
        "--disrupt-at",
        type=_duration,
        default=None,
        metavar="TIME",
        help="when to run --disrupt-cmd, from the start",
    )
    how.add_argument(
        "--disrupt-cmd",
        default="",
        metavar="CMD",
        help="shell command that restarts or drains a node",
    )


def _output(out: argparse._ArgumentGroup) -> None:
    """Report files, checks, the live view."""
    out.add_argument("--json", metavar="FILE", help="write the report as JSON")
    out.add_argument("--csv", metavar="PREFIX", help="write PREFIX_stats/_history/_correctness.csv")
    out.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    out.add_argument(
        "--check", metavar="EXPR", help='thresholds, e.g. "p99<50ms,loss==0"; a failure exits 1'
    )
    out.add_argument(
        "--exit-code-on-error",
        type=int,
        default=1,
        metavar="CODE",
        help="exit status when a request failed or an error was counted (Locust's flag) [1]",
    )
    out.add_argument("--no-live", action="store_true", help="no live view while running")
    out.add_argument("-q", "--quiet", action="store_true", help="print only problems and checks")
    out.add_argument("--list-scenarios", action="store_true", help="list built-in scenarios")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    hosts = [h.strip() for item in (args.host or ["tcp://127.0.0.1:7400"]) for h in item.split(",")]
    hosts = [h for h in hosts if h]
    for host in hosts:
        if not host.startswith(("tcp://", "ws://")):
            raise ValueError(f"--host must be tcp://HOST:PORT or ws://HOST:PORT/ws: {host!r}")
    if args.scenario and args.scenario_file:
        raise ValueError("give --scenario or -f, not both")
    if args.scenario_file and not os.path.isfile(args.scenario_file):
        raise ValueError(f"no scenario file {args.scenario_file!r}")
    if args.scenario_file is None and (args.scenario or "chat") not in BUILTIN:
        raise ValueError(f"unknown scenario {args.scenario!r}: one of {', '.join(BUILTIN)}")
    if args.disrupt_cmd and args.disrupt_at is None:
        raise ValueError("--disrupt-cmd needs --disrupt-at")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be > 0")
    workers = args.workers if args.workers else default_workers()
    options = dict(parse_option(o) for o in args.option)
    return RunConfig(
        hosts=tuple(hosts),
        users=args.users,
        spawn_rate=args.spawn_rate if args.spawn_rate else float(max(1, args.users)),
        run_time=args.run_time,
        scenario="" if args.scenario_file else (args.scenario or "chat"),
        scenario_file=os.path.abspath(args.scenario_file) if args.scenario_file else "",
        rate=args.rate,
        size=args.size,
        workers=max(1, min(workers, max(1, args.users))),
        encoding=args.encoding,
        namespace=args.namespace,
        publishers=args.publishers,
        channels=args.channels,
        rooms=args.rooms,
        slow_fraction=args.slow_fraction,
        source_ips=args.source_ips,
        connect_timeout=args.connect_timeout,
        grace=args.grace,
        warmup=args.warmup,
        seed=args.seed,
        run_id=random.SystemRandom().randrange(1, 1 << 32),
        options=options,
    )


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(argv))


def run_cli(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_scenarios:
        from hubbub.loadtest.scenarios import load

        for name in BUILTIN:
            print(f"{name:16} {load(RunConfig(scenario=name)).description}")
        return 0
    try:
        config = config_from_args(args)
        checks = parse_checks(args.check) if args.check else None
    except (ValueError, CheckError) as exc:
        parser.print_usage(sys.stderr)
        print(f"hubbub-loadtest: error: {exc}", file=sys.stderr)
        return 2
    command = "hubbub-loadtest " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    return asyncio.run(_run(config, args, checks, command))


async def _run(
    config: RunConfig, args: argparse.Namespace, checks: list | None, command: str
) -> int:
    from hubbub.loadtest.reports.html import write_html
    from hubbub.loadtest.reports.live import LiveView, print_summary
    from hubbub.loadtest.reports.report import build_report, metric, write_csv, write_json

    err = Console(stderr=True)
    out = Console()
    if not out.is_terminal:  # files and pipes get wide tables, not 80 columns
        out = Console(width=120)
    live_on = not (args.no_live or args.quiet) and err.is_terminal
    view = (
        LiveView(config.scenario_file or config.scenario, config.run_time, err) if live_on else None
    )

    def log(line: str) -> None:
        if view is not None:
            view.log(line)
        else:
            print(line, file=sys.stderr)

    def on_row(row: dict, coord: Coordinator) -> None:
        if view is not None:
            agg = coord.aggregate
            view.update(row, dict(agg.disconnects), sum(agg.errors.values()))

    coord = Coordinator(
        config, log=log, on_row=on_row, disrupt_at=args.disrupt_at, disrupt_cmd=args.disrupt_cmd
    )
    try:
        if view is not None:
            with view:
                await coord.run()
        else:
            await coord.run()
    except RunFailed as exc:
        print(f"hubbub-loadtest: {exc}", file=sys.stderr)
        return 2
    report = build_report(coord, command)
    results = None
    if checks is not None:
        results = evaluate(checks, lambda name: metric(report, name))
        report = build_report(coord, command, results)
    report["exit"] = verdict(report, results, args.exit_code_on_error)
    if not args.quiet:
        print_summary(report, out)
    else:
        if not report["clean"]:
            print("problems: " + "; ".join(report["problems"]))
        for r in results or []:
            print(r.describe())
    reasons = "; ".join(report["exit"]["reasons"])
    if report["exit"]["code"]:
        print(f"run failed (exit {report['exit']['code']}): {reasons}")
    elif reasons:
        print(f"exit 0 (--exit-code-on-error 0) despite: {reasons}")
    if args.json:
        write_json(report, args.json)
    if args.csv:
        write_csv(report, args.csv)
    if args.html:
        write_html(report, args.html)
    return int(report["exit"]["code"])


def verdict(report: dict[str, Any], results: list | None, on_error: int) -> dict[str, Any]:
    """The exit status and its reasons: failed checks (1), then failed
    requests and errors (``on_error``, Locust's ``--exit-code-on-error``)."""
    from hubbub.loadtest.reports.report import failures

    failed_checks = [r.describe() for r in results or [] if not r.passed]
    failed = failures(report)
    code = 1 if failed_checks else (on_error if failed else 0)
    return {"code": code, "reasons": failed_checks + failed}
