"""The deploy kit under configs/, each file checked by the tool that owns its format
(docs/deploy.md): hadolint (Dockerfile), the compose-spec schema (compose.yaml),
kubernetes-validate (every Kubernetes manifest), promtool (scrape configs, alert
rules and their unit tests, the dashboard's queries), nginx -t (nginx.conf), and
hubbub's own loader (every hubbub.toml). Each checker is also shown a broken file,
so a test cannot pass because the tool checks nothing. The timeouts that must
nest (nginx > keepalive, grace periods > drain) are checked across files."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from hubbub.server.config import from_mapping, load, validate
from tests.deploy.tools import CONFIGS, ROOT, run, system_tool, venv_tool
from tests.e2e.nginx import render_nginx_conf

K8S = CONFIGS / "k8s"
PROMETHEUS = CONFIGS / "prometheus"
DASHBOARD = CONFIGS / "grafana" / "dashboards" / "hubbub.json"


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of configs/k8s by ``kind/name``."""
    out = {}
    for path in manifests():
        for doc in yaml.safe_load_all(path.read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    assert match, text
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


# -- Dockerfile -------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = venv_tool("hadolint")
    result = run(hadolint, "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    assert run(hadolint, str(bad)).returncode != 0  # hadolint does check


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .*", text, re.M)
    assert len(stages) == 2 and " AS build" in stages[0]  # multi-stage
    assert "--no-index --find-links=/wheels hubbub" in text  # installs the built wheel only
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)


# -- Docker Compose -------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIGS / "compose" / "compose.yaml").read_text())
    return data


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    checker = venv_tool("check-jsonschema")
    path = CONFIGS / "compose" / "compose.yaml"
    result = run(checker, "--builtin-schema", "vendor.compose-spec", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text(path.read_text().replace("stop_grace_period:", "stop_grace_periode:"))
    assert run(checker, "--builtin-schema", "vendor.compose-spec", str(bad)).returncode != 0


def test_compose_brings_up_the_whole_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "hubbub-1", "hubbub-2", "hubbub-3", "nginx",
                             "prometheus", "grafana"}
    node_config = load(str(CONFIGS / "compose" / "hubbub.toml"), {})
    for name in ("hubbub-1", "hubbub-2", "hubbub-3"):
        node = services[name]
        assert node["read_only"] is True and node["environment"]["HUBBUB_NODE_ID"] == name
        assert seconds(node["stop_grace_period"]) > node_config.limits.drain_timeout
        assert "ports" not in node  # clients come through nginx; admin stays private
    nginx_ip = services["nginx"]["networks"]["hubbub"]["ipv4_address"]
    assert node_config.server.trusted_proxies == (nginx_ip,)
    assert node_config.server.proxy_protocol is True
    assert node_config.broker.redis == ("redis://redis:6379/0",)
    # Every file compose mounts is in the repo.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (CONFIGS / "compose" / source).exists(), source


def test_grafana_is_provisioned_with_the_dashboard_and_data_source() -> None:
    provisioning = CONFIGS / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    providers = yaml.safe_load((provisioning / "dashboards" / "hubbub.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]


# -- Kubernetes -----------------------------------------------------------------


def test_every_manifest_is_valid_kubernetes(tmp_path: Path) -> None:
    validator = venv_tool("kubernetes-validate")
    paths = [str(p) for p in manifests()]
    result = run(validator, "--strict", *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readinessProbe", "readyProbe"))
    assert run(validator, "--strict", str(bad)).returncode != 0


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests())


def test_deployment_drains_within_its_grace_period() -> None:
    objects = k8s_objects()
    pod = objects["Deployment/hubbub"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    toml = tomllib.loads(objects["ConfigMap/hubbub-config"]["data"]["hubbub.toml"])
    config = validate(from_mapping(toml, "configmap"), "configmap")
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + config.limits.drain_timeout
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]
    secret_keys = set(objects["Secret/hubbub-secrets"]["stringData"])
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == secret_keys == {"hmac_secret", "api_key"}
    ports = {p["name"] for p in objects["Service/hubbub"]["spec"]["ports"]}
    assert ports == {"tcp", "ws"}
    assert {"PodDisruptionBudget/hubbub", "HorizontalPodAutoscaler/hubbub"} <= set(objects)


# -- Prometheus and Grafana ------------------------------------------------------


def test_prometheus_configs_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = system_tool("promtool")
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        result = run(promtool, "check", "config", name, cwd=PROMETHEUS)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "alerts.yml"
    bad.write_text((PROMETHEUS / "alerts.yml").read_text().replace("== 0", "=== 0", 1))
    assert run(promtool, "check", "rules", str(bad)).returncode != 0


def test_alert_rules_unit_tests_pass() -> None:
    result = run(system_tool("promtool"), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    rules = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    assert tested == rules  # every alert has a unit test


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule (Grafana's
    ``$__rate_interval`` and ``$__range`` replaced by a duration)."""
    rules = [
        {"record": f"dashboard:query{i}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for i, expr in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(system_tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"])
    for words in ("Connections by transport", "Publications/s and deliveries/s",
                  "p50 / p99 by op", "Disconnects/s by code", "Limits hit", "shards up",
                  "Pub/sub reconnects", "Event-loop lag", "Resident memory", "File descriptors"):
        assert words in titles, (words, titles)


# -- nginx -------------------------------------------------------------------------


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = system_tool("nginx")
    ports = {"ws": 1, "tcp": 2, "upstream_ws": [3, 4, 5], "upstream_tcp": [6, 7, 8]}
    conf = render_nginx_conf(tmp_path, **ports)
    result = run(nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", "error_log stderr;")
    assert result.returncode == 0, result.stdout + result.stderr
    conf.write_text(conf.read_text().replace("least_conn;", "least_conns;", 1))
    assert run(nginx, "-t", "-p", str(tmp_path), "-c", str(conf)).returncode != 0


def test_nginx_timeouts_outlast_the_keepalive() -> None:
    text = (CONFIGS / "nginx" / "nginx.conf").read_text()
    limits = load(str(CONFIGS / "compose" / "hubbub.toml"), {}).limits
    keepalive = limits.ping_interval + limits.ping_timeout
    for key in ("proxy_read_timeout", "proxy_send_timeout", "proxy_timeout"):
        (value,) = re.findall(rf"^\s*{key} (\w+);", text, re.M)
        assert seconds(value) > keepalive, key
    for needed in ("proxy_set_header Upgrade $http_upgrade;", "proxy_buffering off;",
                   "X-Forwarded-For $proxy_add_x_forwarded_for", "proxy_protocol on;",
                   "proxy_next_upstream error timeout"):
        assert needed in text, needed
    assert text.count("least_conn;") == 2
    assert ":7402" not in text  # the admin API is not proxied


def test_every_hubbub_toml_loads() -> None:
    paths = sorted(CONFIGS.rglob("*.toml"))
    assert len(paths) >= 2
    for path in paths:
        load(str(path), {})
