"""A real Prometheus (Debian's) scraping a real worker fed by the simulator: every expression
of every dashboard panel and every rule works against what the processor exports."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.broker import EmbeddedBroker, free_port
from stream.simulate import Traffic
from tests.conftest import WorkerFactory
from tests.kafka import WorkerProcess, produce, wait_for

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parent.parent
VARIABLES = {
    "$window": "24h",
    "$team": "all",
    "$channel": "all",
    "$priority": "all",
    "$__rate_interval": "1m",
}
SELECTOR = re.compile(r"\b(cx_[a-z0-9_]+|up)\b(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
TARGET_LABELS = {"instance", "job"}


def query(base: str, expression: str) -> list[Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", (expression, body)
    result: list[Any] = body["data"]["result"]
    return result


def dashboard_expressions() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "grafana/dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expression = target["expr"]
                for name, value in VARIABLES.items():
                    expression = expression.replace(name, value)
                found.append((f"{path.name}: {panel['title']}", expression))
    return found


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((ROOT / "prometheus/rules/cx-stream.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture
def fed_worker(broker: EmbeddedBroker, prefix: str, workers: WorkerFactory) -> WorkerProcess:
    worker = workers()
    wait_for(lambda: _get(worker.url + "/health"), 60, "the worker")  # it creates the topics
    traffic = Traffic(events_per_second=10, seed=5)
    now = time.time()
    traffic.backfill(now - 3 * 3600, now)
    records = [(prefix + topic, key, value) for topic, key, value in traffic.due(now)]
    records += [(prefix + "ticket-opened", b"bad", b"not json")] * 3  # something for dead letters
    produce(broker.bootstrap, records)

    def processed() -> bool:
        samples = worker.samples()
        return sum(v for (name, _), v in samples.items() if name == "cx_events_total") >= len(
            records
        )

    wait_for(processed, 120, "the simulated traffic to be processed")
    return worker


@pytest.fixture
def prometheus(fed_worker: WorkerProcess, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is not installed; scripts/test installs it"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "prometheus/rules/cx-stream.yml")],
        "scrape_configs": [
            {
                "job_name": "cx-stream",
                "static_configs": [{"targets": [f"127.0.0.1:{fed_worker.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with open(tmp_path / "prometheus.log", "wb") as log:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: query(base, 'up{job="cx-stream"} == 1'), 60, "Prometheus to scrape the worker"
        )
        time.sleep(6)  # a few scrapes and rule evaluations, so rate() and recording rules have data
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_every_dashboard_expression_returns_data(prometheus: str) -> None:
    empty = [
        (where, expression)
        for where, expression in dashboard_expressions()
        if not query(prometheus, expression)
    ]
    assert not empty, f"no data for: {empty}"


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
