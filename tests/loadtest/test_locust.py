"""HubbubUser under real Locust, headless, for a few seconds.

Locust monkey-patches the process it runs in (gevent), so it runs as its own
process here, as a user runs it; its CSV must show hubbub's requests and the
received publications.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT, NodeProc

HERE = Path(__file__).parent


def test_hubbub_user_reports_through_locust_events(node: NodeProc, tmp_path: Path) -> None:
    locust = Path(sys.executable).parent / "locust"
    proc = subprocess.run(
        [
            str(locust), "-f", str(HERE / "locustfile.py"), "--headless", "-u", "4", "-r", "4",
            "-t", "3s", "--host", node.tcp_url, "--csv", str(tmp_path / "run"),
            "--only-summary", "--loglevel", "WARNING",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out  # Locust exits 1 when any request failed
    with open(tmp_path / "run_stats.csv", newline="") as fh:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(fh)}
    for key in [("HUBBUB", "connect"), ("HUBBUB", "subscribe"), ("HUBBUB", "publish"),
                ("HUBBUB", "presence"), ("RECV", "chat:locust")]:  # fmt: skip
        assert key in rows, (key, sorted(rows), out)
        assert int(rows[key]["Request Count"]) > 0
        assert int(rows[key]["Failure Count"]) == 0
    assert int(rows[("HUBBUB", "connect")]["Request Count"]) == 4
    # Four subscribers each receive every publication.
    assert int(rows[("RECV", "chat:locust")]["Request Count"]) >= int(
        rows[("HUBBUB", "publish")]["Request Count"]
    )
