"""The operations stack without a Docker engine: compose, Prometheus, rules, Grafana, runbook.

docker-compose (Debian's, 1.29) validates the compose file offline; promtool checks the
Prometheus configuration and runs the alert unit tests in prometheus/tests/.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DATASOURCE_UID = "cx-prometheus"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(command[0])
    assert tool, f"{command[0]} is not installed; scripts/setup installs it"
    return subprocess.run(
        [tool, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(COMPOSE)
    return config


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text())
        for path in sorted((ROOT / "grafana/dashboards").glob("*.json"))
    }


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = run("docker-compose", "-f", str(COMPOSE), "--profile", "simulator", "config", "-q")
    assert result.returncode == 0, result.stderr


def test_every_file_compose_mounts_or_builds_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            dockerfile = ROOT / service["build"] / "Dockerfile"
            assert dockerfile.exists()
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY"):
                    for source in line.split()[1:-1]:
                        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    for service in services.values():  # images are pinned, never 'latest'
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), image


def test_prometheus_scrapes_both_workers_where_compose_serves_them() -> None:
    services = compose()["services"]
    prometheus = load_yaml(ROOT / "prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {
        target for config in jobs["cx-stream"]["static_configs"] for target in config["targets"]
    }
    workers = {name for name, service in services.items() if service.get("command") == ["worker"]}
    assert workers == {"worker-1", "worker-2"}
    assert targets == {f"{name}:{services[name]['environment']['CX_WEB_PORT']}" for name in workers}
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"] and "alertmanager" in services
    # the rule files Prometheus loads are the ones compose mounts
    assert "./prometheus/rules:/etc/prometheus/rules:ro" in services["prometheus"]["volumes"]
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    services = compose()["services"]
    datasource = load_yaml(ROOT / "grafana/provisioning/datasources/prometheus.yml")["datasources"][
        0
    ]
    assert datasource["uid"] == DATASOURCE_UID
    assert (
        datasource["url"] == "http://prometheus:9090"
        and "9090:9090" in services["prometheus"]["ports"]
    )
    provider = load_yaml(ROOT / "grafana/provisioning/dashboards/cx-stream.yml")["providers"][0]
    assert (
        f"./grafana/dashboards:{provider['options']['path']}:ro" in services["grafana"]["volumes"]
    )
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/wall.json"


def test_prometheus_and_alertmanager_configs_pass_their_checkers() -> None:
    for command in (
        ("promtool", "check", "config", "--syntax-only", "prometheus/prometheus.yml"),
        ("promtool", "check", "rules", "prometheus/rules/cx-stream.yml"),
        ("promtool", "test", "rules", "prometheus/tests/cx-stream.test.yml"),
        ("amtool", "check-config", "alertmanager/alertmanager.yml"),
    ):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ROOT / "prometheus/rules/cx-stream.yml")["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_unit_tested_and_documented() -> None:
    tests = (ROOT / "prometheus/tests/cx-stream.test.yml").read_text()
    runbook = (ROOT / "docs/runbook.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in runbook.splitlines()
        if line.startswith("## ")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert f"alertname: {name}" in tests, f"{name} has no promtool test"
        assert rule["labels"]["severity"] in {"page", "warning"}
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations)
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, annotations["runbook_url"]


@pytest.mark.parametrize("name", ["wall.json", "analyst.json"])
def test_dashboards_are_valid(name: str) -> None:
    board = dashboards()[name]
    assert board["uid"] in {"cx-wall", "cx-analyst"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == DATASOURCE_UID
            assert target["expr"].strip()
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == DATASOURCE_UID


def test_the_wall_is_made_for_a_tv() -> None:
    wall = dashboards()["wall.json"]
    assert wall["refresh"] and not wall["editable"]
    stats = [panel for panel in wall["panels"] if panel["type"] == "stat"]
    assert all(panel["options"]["text"]["valueSize"] >= 60 for panel in stats)
    assert all(
        len(panel["fieldConfig"]["defaults"]["thresholds"]["steps"]) >= 2
        for panel in stats
        if "Backlog" in panel["title"] or "NPS" in panel["title"] or "CSAT" in panel["title"]
    )
    assert any(panel["type"] == "alertlist" for panel in wall["panels"])
