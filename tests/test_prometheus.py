"""A real Prometheus (Debian's) scraping a real worker fed by the simulator: every expression
of every dashboard panel and every rule works against what the processor exports."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.apache_kafka import ApacheKafka
from stream.broker import free_port
from stream.simulate import Traffic
from tests.kafka import WorkerProcess, produce, wait_for
from tests.servers import get_json, serving

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {"$window": "24h", "$__rate_interval": "1m"}
SELECTOR = re.compile(r"\b(cx_[a-z0-9_]+|up|probe_success)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"instance", "job"}


def query(base: str, expression: str) -> list[Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    body = get_json(url)
    assert body["status"] == "success", (expression, body)
    result: list[Any] = body["data"]["result"]
    return result


def dashboard_expressions(segment: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"].replace("$segment", segment)
                for name, value in VARIABLES.items():
                    expression = expression.replace(name, value)
                found.append((f"{path.name}: {panel['title']}", expression))
    return found


def segment_options(base: str) -> dict[str, str]:
    """The analyst dashboard's segment choices (text -> value) as Grafana 11 makes them from a
    query_result() variable: each result printed as `{label="value",...} value time` (labels in
    Prometheus's sorted order), then the variable's regex picks text and value."""
    board = json.loads((ROOT / "grafana/dashboards/analyst.json").read_text())
    variable = next(v for v in board["templating"]["list"] if v["name"] == "segment")
    inner = re.fullmatch(r"query_result\((.*)\)", variable["query"]["query"], re.DOTALL)
    assert inner
    pattern = re.compile(variable["regex"].strip("/").replace("(?<", "(?P<"))
    options = {}
    for sample in query(base, inner.group(1)):
        labels = ",".join(f'{name}="{value}"' for name, value in sample["metric"].items())
        match = pattern.search(f"{{{labels}}} {sample['value'][1]} {sample['value'][0] * 1000}")
        assert match, labels
        options[match["text"]] = match["value"]
    return options


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "prometheus/rules/cx-stream.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def fed_worker(
    broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker with opening hours and the business SLA clock, fed three hours of simulated
    traffic, shared by this module's tests."""
    prefix = "prometheus-"
    workdir = tmp_path_factory.mktemp("prometheus-worker")
    hours = workdir / "hours.yaml"
    hours.write_text(
        'default: {timezone: Europe/Berlin, hours: {mon-fri: ["09:00-17:00"]}}\n'
        'teams: {billing: {timezone: America/New_York, hours: {mon-sun: ["00:00-24:00"]}}}\n'
    )
    worker = WorkerProcess(
        broker.url,
        workdir,
        "worker",
        CX_TOPIC_PREFIX=prefix,
        CX_BUSINESS_HOURS=str(hours),
        CX_SLA_CLOCK="business",
    ).start()
    try:
        wait_for(lambda: _get(worker.url + "/health"), 60, "the worker")  # it creates the topics
        traffic = Traffic(events_per_second=10, seed=5)
        now = time.time()
        traffic.backfill(now - 3 * 3600, now)
        records = [(prefix + topic, key, value) for topic, key, value in traffic.due(now)]
        records += [(prefix + "ticket-opened", b"bad", b"not json")] * 3  # for dead letters
        produce(broker.bootstrap, records)

        def processed() -> bool:
            samples = worker.samples()
            total = sum(v for (name, _), v in samples.items() if name == "cx_events_total")
            return total >= len(records)

        wait_for(processed, 120, "the simulated traffic to be processed")
        yield worker
    except BaseException:
        print(f"--- {worker.log_path.name} ---\n{worker.log_tail()}")
        raise
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def prometheus(
    fed_worker: WorkerProcess, broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus scraping the worker and, through a blackbox exporter, probing the broker (up)
    and a port nobody listens on (down), with the shipped external labels and rules."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    shipped = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    kafka = next(job for job in shipped["scrape_configs"] if job["job_name"] == "kafka")
    with serving(
        "prometheus-blackbox-exporter",
        f"--config.file={ROOT / 'prometheus/blackbox.yml'}",
        log=tmp_path / "blackbox.log",
    ) as blackbox:
        kafka["static_configs"] = [{"targets": [broker.bootstrap, f"127.0.0.1:{free_port()}"]}]
        kafka["relabel_configs"][-1]["replacement"] = blackbox.split("://")[1]
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "external_labels": shipped["global"]["external_labels"],
            },
            "rule_files": [str(ROOT / "prometheus/rules/cx-stream.yml")],
            "scrape_configs": [
                {
                    "job_name": "cx-stream",
                    "static_configs": [{"targets": [f"127.0.0.1:{fed_worker.port}"]}],
                },
                kafka,
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with serving(
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            log=tmp_path / "prometheus.log",
        ) as base:
            wait_for(
                lambda: query(base, 'up{job="cx-stream"} == 1') and query(base, "probe_success"),
                60,
                "Prometheus to scrape the worker and the prober",
            )
            time.sleep(
                6
            )  # a few scrapes and rule evaluations: rate() and recording rules have data
            yield base


def test_every_dashboard_expression_returns_data_for_every_segment(prometheus: str) -> None:
    """For the whole organisation, and for some team, some channel and some priority (not
    every one: a small segment may have had no CES response in 24 hours). The old separate
    team, channel and priority choices gave no data for any two at once."""
    options = segment_options(prometheus)
    assert options["all"] == 'channel="all",priority="all",team="all"'

    def empty(segment: str) -> list[tuple[str, str]]:
        return [
            (where, expression)
            for where, expression in dashboard_expressions(segment)
            if not query(prometheus, expression)
        ]

    assert not empty(options["all"]), f"no data for: {empty(options['all'])}"
    for dimension in ("team", "channel", "priority"):
        segments = {text: value for text, value in options.items() if text.startswith(dimension)}
        assert segments and all(value.count('"all"') == 2 for value in segments.values())
        gaps = {text: empty(value) for text, value in segments.items()}
        assert min(map(len, gaps.values())) == 0, f"every {dimension} lacks data: {gaps}"


def test_every_rule_evaluates_on_exported_metrics_and_labels(prometheus: str) -> None:
    exported_labels: dict[str, set[str]] = {}
    for rule in rules():
        expression = rule["expr"]
        query(prometheus, expression)  # evaluates without error
        for name, matchers in SELECTOR.findall(expression):
            series = query(prometheus, name + matchers)
            assert series, (
                f"{rule.get('alert') or rule.get('record')}: {name}{matchers} has no data"
            )
            exported_labels.setdefault(name, set()).update(*(s["metric"] for s in series))
        labels = set().union(
            *(exported_labels.get(name, set()) for name, _ in SELECTOR.findall(expression))
        )
        for clause in GROUPING.findall(expression):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                assert label in labels | TARGET_LABELS, (
                    f"{expression!r} groups by unknown label {label}"
                )
        if "record" in rule:
            assert query(prometheus, rule["record"]), f"recording rule {rule['record']} has no data"


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def test_kafka_probe_tells_up_from_down(prometheus: str) -> None:
    probes = {
        sample["metric"]["instance"]: sample["value"][1]
        for sample in query(prometheus, 'probe_success{job="kafka"}')
    }
    assert sorted(probes.values()) == ["0", "1"], probes
    down = next(instance for instance, value in probes.items() if value == "0")
    rule = next(r for r in rules() if r.get("alert") == "CxKafkaDown")
    assert [s["metric"]["instance"] for s in query(prometheus, rule["expr"])] == [down]


def test_alerts_carry_absolute_runbook_urls(prometheus: str) -> None:
    base = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())["global"][
        "external_labels"
    ]["runbook_base"]
    alerts = wait_for(
        lambda: get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"], 30, "the watchdog"
    )
    watchdog = next(a for a in alerts if a["labels"]["alertname"] == "CxWatchdog")
    assert watchdog["annotations"]["runbook_url"] == base + "#cxwatchdog"
