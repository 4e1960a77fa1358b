"""A real worker's /metrics as a person and Prometheus read it: every cx_ family with a HELP
sentence, and every outcome of every input topic counted from 0, before anything happened."""

from __future__ import annotations

import time
from pathlib import Path
from typing import get_args

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.apache_kafka import ApacheKafka
from stream.events import TOPICS
from stream.pipeline import Outcome
from tests.conftest import WorkerFactory
from tests.kafka import SCHEMAS, event_records, http_get, processed, produce, wait_for
from tests.scenario import delivery, opening_hours, scenario
from tests.test_exporter import help_lines, help_problem

pytestmark = pytest.mark.broker

OUTCOMES = ("accepted", "duplicate", "anomaly", "invalid")
"""docs/contract.md section 3, Outcomes."""

PER_WORKER = {
    "cx_events_total",
    "cx_dead_letter_failures_total",
    "cx_consumer_lag",
    "cx_state_entries",
    "cx_first_response_sla_target_seconds",
    "cx_resolution_sla_target_seconds",
    "cx_sla_clock_info",
}
"""The families every worker exports for itself (contract section 4, per worker)."""


def outcome_counts(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["topic"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cx_events_total"
    }


def test_every_outcome_is_counted_from_zero_and_every_family_has_a_help_sentence(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    # every outcome the pipeline gives, and invalid: the contract's list, no more, no less
    assert {*get_args(Outcome), "invalid"} == set(OUTCOMES)
    now = time.time()
    text, _ = opening_hours(now)
    (tmp_path / "hours.yaml").write_text(text)  # the business-time families too
    worker = workers(CX_BUSINESS_HOURS=str(tmp_path / "hours.yaml"))
    topics = [prefix + topic for topic in TOPICS]  # the contract's input topics

    # before any record: "dead letters per second" is 0, not "no data"
    page = wait_for(lambda: http_get(f"{worker.url}/metrics").decode(), 60, "/metrics")
    assert outcome_counts(page) == {
        (topic, outcome): 0.0 for topic in topics for outcome in OUTCOMES
    }

    # valid traffic with duplicates: invalid did not happen, and stays there at 0
    events = delivery(scenario(7, now, tickets=80), 7)
    produce(broker.bootstrap, event_records(events, prefix))
    wait_for(lambda: processed(worker) == len(events), 90, "every record processed")
    counts = outcome_counts(http_get(f"{worker.url}/metrics").decode())
    assert set(counts) == {(topic, outcome) for topic in topics for outcome in OUTCOMES}
    assert [counts[(topic, "invalid")] for topic in topics] == [0.0] * len(topics)
    assert sum(counts[(topic, "duplicate")] for topic in topics) > 0

    # every family the worker exports, once the traffic reached every metric
    # the snapshot schema's metrics (docs/contract.md section 4), each a family on /metrics
    schema = orjson.loads((SCHEMAS / "metrics-snapshot.schema.json").read_bytes())
    names = set(schema["properties"]) - {"window", "team", "channel", "priority", "as_of"}
    windowed = {f"cx_{name.removesuffix('_p50').removesuffix('_p90')}" for name in names}
    wanted = windowed | {"cx_tickets_open"} | PER_WORKER

    def every_family() -> dict[str, str] | None:
        helps = help_lines(http_get(f"{worker.url}/metrics").decode())
        exported = {family for family in helps if family.startswith("cx_")}
        return helps if wanted <= exported else None

    helps = wait_for(every_family, 60, "every cx_ family on /metrics")
    problems = [help_problem(family, text) for family, text in sorted(helps.items())]
    # prometheus-client's own (process_, python_) may be terse, but not their own names
    problems = [
        problem
        for problem in problems
        if problem and ("repeats" in problem or problem.startswith("cx_"))
    ]
    assert not problems, problems
