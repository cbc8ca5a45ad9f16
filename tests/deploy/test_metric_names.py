"""Every metric the Grafana dashboard and the alert rules name is exported by a
real node's /metrics (a renamed metric would leave a panel empty and an alert
silent), and the metrics added for them carry samples."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import CONFIGS
from tests.e2e.probes import http_get, metric, wait_for
from tests.procs import NodeProc, RedisProc

#: Sample names each family type exports (prometheus-client's text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "untyped": ("",),
}
NAME = re.compile(r"\b((?:hubbub|process)_[a-z_]+)\b")


def named_in_dashboard_and_rules() -> set[str]:
    dashboard = json.loads((CONFIGS / "grafana" / "dashboards" / "hubbub.json").read_text())
    text = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    text += (CONFIGS / "prometheus" / "alerts.yml").read_text()
    return set(NAME.findall(text))


def exported(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_of_the_dashboard_and_rules_is_exported(
    node_factory: Callable[..., NodeProc], redis_server: RedisProc
) -> None:
    # A short handshake_timeout makes the sweeper (and its loop-lag sample) run often.
    node = node_factory("[limits]\nhandshake_timeout = 0.4\n", redis=[redis_server.url])
    await wait_for(lambda: metric(node, "hubbub_event_loop_lag_seconds_count") >= 2,
                   what="two loop-lag samples")
    status, text = http_get(node.admin_url + "/metrics")
    assert status == 200
    wanted = named_in_dashboard_and_rules()
    assert len(wanted) >= 15, wanted
    assert wanted - exported(text) == set()
    for name in ("process_open_fds", "process_max_fds", "hubbub_broker_shard_up"):
        assert re.search(rf"^{name}(\{{.*\}})? [0-9.e+]+$", text, re.M), name
    assert metric(node, "hubbub_ready") == 1.0
    assert metric(node, "hubbub_event_loop_lag_seconds_bucket", le="+Inf") >= 2
