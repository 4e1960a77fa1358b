"""The operations stack without a Docker engine: compose, Prometheus, rules, Alertmanager,
Grafana, runbook.

docker-compose (Debian's, 1.29) validates and resolves the compose file offline; promtool checks
the Prometheus configuration and runs the alert unit tests in prometheus/tests/; amtool checks
the Alertmanager configuration and its routes, and a real Alertmanager shows the grouping and
inhibition of the alerts those unit tests fire.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from stream.apache_kafka import kafka_version
from tests.kafka import wait_for
from tests.servers import get_json, post_json, serving
from tests.test_dashboards import ACCOUNT_METRICS, contract_problems

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DATASOURCE_UID = "cx-prometheus"
PASSWORD = "a-test-password"


def run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(command[0])
    assert tool, f"{command[0]} is not installed; scripts/test installs it"
    return subprocess.run(
        [tool, *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], **env},
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose(**env: str) -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables set)."""
    env.setdefault("GRAFANA_ADMIN_PASSWORD", PASSWORD)
    result = run("docker-compose", "-f", str(COMPOSE), "--profile", "simulator", "config", **env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


# --- compose -------------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = run(
        "docker-compose",
        "-f",
        str(COMPOSE),
        "--profile",
        "simulator",
        "config",
        "-q",
        GRAFANA_ADMIN_PASSWORD=PASSWORD,
    )
    assert result.returncode == 0, result.stderr


def test_published_ports_bind_loopback_unless_widened() -> None:
    for env, address in (({}, "127.0.0.1"), ({"CX_BIND_ADDRESS": "0.0.0.0"}, "0.0.0.0")):
        published = [
            port
            for service in compose(**env)["services"].values()
            for port in service.get("ports", [])
        ]
        assert len(published) >= 6
        for port in published:
            host = port.get("host_ip") if isinstance(port, dict) else port.rsplit(":", 2)[0]
            assert host == address, (env, port)


def test_grafana_admin_password_comes_from_the_environment() -> None:
    result = run("docker-compose", "-f", str(COMPOSE), "config", "-q")
    assert result.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in result.stderr
    grafana = compose()["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD
    assert PASSWORD not in COMPOSE.read_text()
    for ignore in (".gitignore", ".dockerignore"):  # where docs/operations.md says to put it
        assert ".env" in (ROOT / ignore).read_text().split()


def test_the_image_is_built_once() -> None:
    """Compose v2 builds services through Bake concurrently: two builds of one tag collide."""
    services = compose()["services"]
    builders: dict[str, list[str]] = {}
    for name, service in services.items():
        if "build" in service:
            builders.setdefault(service["image"], []).append(name)
    assert builders == {"cx-stream:0.1.0": ["worker-1"]}, builders
    users = {name for name, service in services.items() if service["image"] == "cx-stream:0.1.0"}
    assert users == {"worker-1", "worker-2", "simulator"}


def test_stateful_services_keep_their_data_in_named_volumes() -> None:
    config = compose()
    services, volumes = config["services"], set(config["volumes"])

    def named_volume_at(service: str, path: str) -> None:
        mounts = {
            target: source
            for source, target, *_ in (v.split(":") for v in services[service]["volumes"])
        }
        assert mounts.get(path) in volumes, f"{service} keeps {path} in no named volume"

    named_volume_at("kafka", services["kafka"]["environment"]["KAFKA_LOG_DIRS"])
    command = {
        name: dict(arg.lstrip("-").split("=", 1) for arg in services[name]["command"])
        for name in ("prometheus", "alertmanager")
    }
    named_volume_at("prometheus", command["prometheus"]["storage.tsdb.path"])
    named_volume_at("alertmanager", command["alertmanager"]["storage.path"])
    named_volume_at("grafana", "/var/lib/grafana")


def test_startup_order_waits_for_health() -> None:
    services = compose()["services"]
    healthcheck = services["kafka"]["healthcheck"]
    assert not any("kafka" in part and ".sh" in part for part in healthcheck["test"]), (
        "a Kafka CLI starts a JVM on every check"
    )
    assert int(healthcheck["interval"].rstrip("s")) >= 10
    for name in ("worker-1", "worker-2", "simulator"):
        assert services[name]["depends_on"]["kafka"] == {"condition": "service_healthy"}
    simulator = services["simulator"]["depends_on"]
    workers = [name for name in simulator if name.startswith("worker")]
    assert workers and all(simulator[name]["condition"] == "service_healthy" for name in workers)
    for name in workers:
        # readiness: joined, restored and reaching the brokers, not merely started
        assert "/health/ready" in " ".join(services[name]["healthcheck"]["test"])


def test_every_file_compose_mounts_or_builds_exists() -> None:
    services = load_yaml(COMPOSE)["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):  # else a named volume
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            dockerfile = ROOT / service["build"] / "Dockerfile"
            assert dockerfile.exists()
            for line in dockerfile.read_text().splitlines():
                if line.startswith("COPY") and "--from=" not in line:
                    for source in line.split()[1:-1]:
                        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    for service in compose()["services"].values():  # images are pinned, never 'latest'
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), image


def test_compose_runs_the_kafka_version_the_tests_run() -> None:
    """stream/kafka/pom.xml pins Apache Kafka for the tests, the benchmarks and the demo; the compose
    stack's broker is the same release."""
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_prometheus_scrapes_the_workers_and_probes_kafka_where_compose_serves_them() -> None:
    services = compose()["services"]
    prometheus = load_yaml(ROOT / "prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {
        target for config in jobs["cx-stream"]["static_configs"] for target in config["targets"]
    }
    workers = {name for name, service in services.items() if service.get("command") == ["worker"]}
    assert workers == {"worker-1", "worker-2"}
    assert targets == {f"{name}:{services[name]['environment']['CX_WEB_PORT']}" for name in workers}
    # the Kafka probe: the listener the workers use, through the blackbox service
    kafka = jobs["kafka"]
    broker = services["worker-1"]["environment"]["CX_BROKER"].split("://")[1]
    assert kafka["static_configs"] == [{"targets": [broker]}]
    assert kafka["relabel_configs"][-1]["replacement"] == "blackbox:9115" and "blackbox" in services
    modules = load_yaml(ROOT / "prometheus/blackbox.yml")["modules"]
    assert modules[kafka["params"]["module"][0]]["prober"] == "tcp"
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"] and "alertmanager" in services
    # the rule files Prometheus loads are the ones compose mounts
    mounts = [volume.split(":")[1] for volume in services["prometheus"]["volumes"]]
    assert "/etc/prometheus/rules" in mounts
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    services = compose()["services"]
    datasource = load_yaml(ROOT / "grafana/provisioning/datasources/prometheus.yml")["datasources"][
        0
    ]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    provider = load_yaml(ROOT / "grafana/provisioning/dashboards/cx-stream.yml")["providers"][0]
    mounts = {
        target: source
        for source, target, *_ in (v.split(":") for v in services["grafana"]["volumes"])
    }
    assert mounts[provider["options"]["path"]] == str(ROOT / "grafana/dashboards")
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/wall.json"


# --- rules and Alertmanager ----------------------------------------------------------------

RULES = ROOT / "prometheus/rules/cx-stream.yml"
RULE_TESTS = ROOT / "prometheus/tests/cx-stream.test.yml"
ALERTMANAGER = ROOT / "alertmanager/alertmanager.yml"
EXAMPLE = ROOT / "alertmanager/examples/pagerduty-slack.yml"
PAGES = {"CxKafkaDown", "CxAllWorkersDown", "CxProcessingStalled", "CxNoSeriesExported"}
BUSINESS = {"CxCsatDrop", "CxNpsDrop", "CxFirstResponseSlowerThanSla", "CxBacklogGrowing"}
CUSTOMER_SUCCESS = {"CxNetRevenueRetentionLow", "CxMrrAtRisk"}
CONTRACT = (ROOT / "docs/contract.md").read_text()
SECTION_4 = set(
    re.findall(r"cx_[a-z_]+", CONTRACT[CONTRACT.index("## 4.") : CONTRACT.index("## 5.")])
)
"""docs/contract.md section 4's metric names (their labels: tests/test_prometheus.py, on data)."""


def test_prometheus_and_alertmanager_configs_pass_their_checkers() -> None:
    for command in (
        ("promtool", "check", "config", "--syntax-only", "prometheus/prometheus.yml"),
        ("promtool", "check", "rules", str(RULES)),
        ("promtool", "test", "rules", str(RULE_TESTS)),
        ("amtool", "check-config", str(ALERTMANAGER), str(EXAMPLE)),
        (
            "prometheus-blackbox-exporter",
            "--config.file=prometheus/blackbox.yml",
            "--config.check",
        ),
    ):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def runbook_anchors() -> set[str]:
    return {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs/runbook.md").read_text().splitlines()
        if line.startswith("## ")
    }


def test_every_alert_is_unit_tested_labelled_and_documented() -> None:
    tests = RULE_TESTS.read_text()
    documented = (ROOT / "docs/operations.md").read_text()
    anchors = runbook_anchors()
    for rule in alert_rules():
        name, labels, annotations = rule["alert"], rule["labels"], rule["annotations"]
        assert f"alertname: {name}" in tests, f"{name} has no promtool test"
        if name == "CxWatchdog":
            assert labels == {"severity": "none"}
        else:
            assert labels["severity"] in {"critical", "warning", "info"}, name
            assert labels["audience"] in {"oncall", "support-lead", "cs-lead"}, name
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert "{{" not in annotations["summary"], f"{name}: summary is a fixed headline"
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base == "{{ $externalLabels.runbook_base }}" and anchor in anchors, name
        assert f"| `{name}` | {labels['severity']} |" in documented, (
            f"docs/operations.md lacks {name}"
        )


def test_runbook_urls_are_absolute_from_one_base() -> None:
    base = load_yaml(ROOT / "prometheus/prometheus.yml")["global"]["external_labels"][
        "runbook_base"
    ]
    assert re.fullmatch(r"https://[^\s#]+/docs/runbook\.md", base), base


def test_what_pages_is_chosen() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    critical = {name for name, rule in rules.items() if rule["labels"]["severity"] == "critical"}
    assert critical == PAGES
    for name in BUSINESS:  # business signals go to the support lead, never to the pager
        assert rules[name]["labels"]["audience"] == "support-lead"
    for name in CUSTOMER_SUCCESS:  # revenue and retention to the customer-success lead
        assert rules[name]["labels"]["audience"] == "cs-lead"
    assert {"CxKafkaDown", "CxWatchdog", "CxNoSeriesExported"} <= set(rules)
    assert set(rules) >= CUSTOMER_SUCCESS
    expected = {"CxWatchdog": "deadmansswitch"} | {
        name: "oncall-pager"
        if name in PAGES
        else "support-lead"
        if name in BUSINESS
        else "cs-lead"
        if name in CUSTOMER_SUCCESS
        else "oncall-chat"
        for name in rules
        if name != "CxWatchdog"
    }
    for name, receiver in expected.items():
        labels = [f"{key}={value}" for key, value in rules[name]["labels"].items()]
        result = run(
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER}",
            f"alertname={name}",
            *labels,
        )
        assert result.stdout.split() == [receiver], (name, result.stdout, result.stderr)


def without_comments(expression: str) -> str:
    return re.sub(r"#[^\n]*", "", expression)


def test_every_rule_reads_only_what_the_contract_names() -> None:
    """Section 4's metrics, or 7.5's with their labels and label values: a rule on a name the
    worker will never export stays silent for good (tests/test_prometheus.py runs the rules
    on what a real worker exports; the 7.4 numbers are not exported yet)."""
    groups = load_yaml(RULES)["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        name = rule.get("alert") or rule.get("record")
        expression = without_comments(rule["expr"])
        metrics = set(re.findall(r"\bcx_[a-z0-9_]+", expression))
        assert metrics <= SECTION_4 | set(ACCOUNT_METRICS), (name, metrics - SECTION_4)
        if metrics & set(ACCOUNT_METRICS):  # an account rule reads account numbers only
            assert metrics <= set(ACCOUNT_METRICS), name
            assert not contract_problems(expression, ACCOUNT_METRICS), (
                name,
                contract_problems(expression, ACCOUNT_METRICS),
            )


def test_customer_success_thresholds_are_named_in_the_rule_and_quoted() -> None:
    """Each threshold of an account alert is a number in its expression followed by a comment
    naming it, explained in a comment above the rule, and its description says the same."""
    text = RULES.read_text()
    for rule in alert_rules():
        if rule["alert"] not in CUSTOMER_SUCCESS:
            continue
        named = re.findall(r"(\d+(?:\.\d+)?)\s*#\s*([A-Z][A-Z_]+)\b", rule["expr"])
        assert named, f"{rule['alert']} names no threshold"
        description = rule["annotations"]["description"]
        for value, constant in named:
            assert f"# {constant}: " in text, f"{constant} is not explained above its rule"
            number = float(value)
            quoted = f"{number * 100:g}%" if number <= 1 else f"{number:g}"
            assert quoted in description, (rule["alert"], constant, quoted, description)


def test_recording_rules_are_named_level_metric_operations() -> None:
    groups = load_yaml(RULES)["groups"]
    records = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
    assert records
    for name in records:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z_]+", level) and re.fullmatch(r"[a-z_0-9]+", operations), name
        assert metric.startswith("cx_") and not metric.endswith("_total"), name


def test_the_delivering_example_keeps_the_routing_and_inhibitions() -> None:
    shipped, example = load_yaml(ALERTMANAGER), load_yaml(EXAMPLE)
    assert example["route"] == shipped["route"]
    assert example["inhibit_rules"] == shipped["inhibit_rules"]
    names = [receiver["name"] for receiver in shipped["receivers"]]
    assert [receiver["name"] for receiver in example["receivers"]] == names
    assert all(len(receiver) > 1 for receiver in example["receivers"]), "a receiver sends nowhere"


def fired(test_name: str) -> list[dict[str, str]]:
    """The alerts a named promtool test case expects, as Prometheus would send them."""
    case = next(t for t in load_yaml(RULE_TESTS)["tests"] if t.get("name") == test_name)
    return [
        {"alertname": check["alertname"], **alert["exp_labels"]}
        for check in case["alert_rule_test"]
        for alert in check["exp_alerts"]
    ]


def pipeline_alert(name: str, **labels: str) -> dict[str, str]:
    rule = next(rule for rule in alert_rules() if rule["alert"] == name)
    return {"alertname": name, **rule["labels"], **labels}


def test_alertmanager_sends_one_notification_per_outage(tmp_path: Path) -> None:
    """A real Alertmanager, fed the alerts an outage fires: one group per alert name, and only
    the root cause left un-inhibited."""
    csat = fired("organisation-wide CSAT drop")
    assert len(csat) == 4  # the rule fires for the organisation and three segments
    at_risk = fired("MRR at risk")
    assert [alert["alertname"] for alert in at_risk] == ["CxMrrAtRisk"]
    pipeline = [
        pipeline_alert("CxKafkaDown", job="kafka", instance="kafka:29092"),
        *(
            pipeline_alert("CxWorkerDown", job="cx-stream", instance=f"worker-{n}:6066")
            for n in (1, 2)
        ),
        pipeline_alert("CxProcessingStalled", instance="worker-1:6066"),
        pipeline_alert("CxWatchdog"),
    ]
    with serving(
        "prometheus-alertmanager",
        f"--config.file={ALERTMANAGER}",
        f"--storage.path={tmp_path / 'data'}",
        "--cluster.listen-address=",
        log=tmp_path / "alertmanager.log",
    ) as base:
        wait_for(lambda: _ready(base), 30, "Alertmanager")

        def active_after(alerts: list[dict[str, str]], expected: list[str]) -> None:
            post_json(f"{base}/api/v2/alerts", [{"labels": labels} for labels in alerts])

            def active() -> list[str]:
                return sorted(
                    " ".join(
                        value
                        for key in ("alertname", "team", "channel", "priority")
                        if (value := alert["labels"].get(key))
                    )
                    for alert in get_json(f"{base}/api/v2/alerts")
                    if alert["status"]["state"] == "active"
                )

            wait_for(lambda: active() == expected or None, 20, f"only {expected} active")
            time.sleep(1)  # and no later change of mind
            assert active() == expected

        # the organisation-wide drop alone is left, not one per team, channel and priority;
        # the customer-success lead's alert is not muted by a support alert
        active_after(csat + at_risk, ["CxCsatDrop all all all", "CxMrrAtRisk"])
        # Kafka down: one page; the workers' symptoms and the stale business numbers, support's
        # and customer success's, are muted
        active_after(pipeline, ["CxKafkaDown", "CxWatchdog"])
        groups = get_json(f"{base}/api/v2/alerts/groups")
        by_alert = {group["labels"]["alertname"]: len(group["alerts"]) for group in groups}
        assert by_alert["CxCsatDrop"] == 4 and by_alert["CxWorkerDown"] == 2, by_alert
        assert by_alert["CxMrrAtRisk"] == 1, by_alert
        assert len(groups) == len(by_alert), "an alert name split into several notifications"


def _ready(base: str) -> bool | None:
    try:
        get_json(f"{base}/api/v2/status")
    except OSError:
        return None
    return True
