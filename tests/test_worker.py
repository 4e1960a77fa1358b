"""The processor end to end on Apache Kafka: /metrics and cx-metrics against the oracle."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import (
    event_records,
    events_total,
    processed,
    produce,
    produce_in_rounds,
    read_topic,
    split,
    wait_for,
    wait_until_exact,
    wait_until_snapshots_exact,
)
from tests.oracle import outcomes
from tests.scenario import delivery, opening_hours, rounds, scenario, skewed

pytestmark = pytest.mark.broker


def test_one_worker_equals_the_oracle_on_metrics_and_snapshots(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    """With reopens, clock skew and opening hours configured: business-time FRT and TTR too,
    and every record's outcome."""
    now = time.time()
    events = scenario(101, now, tickets=250) + skewed(101, now, tickets=60)
    # each ticket's records in rounds (a worker reads its topics in no set order): the first
    # round is a backlog, the others are live traffic, each sent once the last is processed
    first, *later = rounds(delivery(events, 101))
    produce(broker.bootstrap, event_records(first, prefix))
    text, hours = opening_hours(now)
    (tmp_path / "hours.yaml").write_text(text)
    worker = workers(CX_MAX_SEGMENT_VALUES="3", CX_BUSINESS_HOURS=str(tmp_path / "hours.yaml"))
    produce_in_rounds(broker.bootstrap, prefix, later, worker, already=len(first))
    arrived = [record for batch in (first, *later) for record in batch]
    wait_for(lambda: processed(worker) == len(arrived), 120, "every record processed")
    # each record's outcome, as the oracle replays the order of arrival
    want = Counter(
        (prefix + topic, outcome)
        for (topic, _), outcome in zip(arrived, outcomes(arrived), strict=True)
    )
    assert {outcome for _, outcome in want} == {"accepted", "duplicate", "anomaly"}
    assert events_total(worker) == want
    samples = wait_until_exact([worker], events, hours=hours)

    # five teams over a cap of three: the last two in sorted order fold into 'other'
    teams = {dict(labels).get("team") for name, labels in samples if name == "cx_tickets_opened"}
    assert teams == {"all", "accounts", "billing", "onboarding", "other"}

    # the latest snapshot of every series equals the oracle too, and its own schema
    wait_until_snapshots_exact(broker.bootstrap, prefix, events, hours=hours)


def test_every_kind_of_invalid_record_reaches_the_dead_letter_topic(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    bad = [
        ("ticket-opened", b"T1", b"\xff\xfe not json"),
        ("ticket-opened", b"T2", b"[1, 2, 3]"),
        (
            "ticket-replied",
            b"T3",
            b'{"event_id": "r", "ticket_id": "T3", "occurred_at": "2026-01-01T00:00:00Z", "author": "martian"}',
        ),
        ("ticket-resolved", None, b'{"event_id": "z", "occurred_at": "2026-01-01T00:00:00Z"}'),
        (
            "survey-answered",
            b"S1",
            b'{"event_id": "s", "occurred_at": "2026-01-01T00:00:00Z", "survey": "nps", "score": 12}',
        ),
        (
            "ticket-opened",
            b"T4",
            f'{{"event_id": "o", "ticket_id": "T4", "occurred_at": "{future}"}}'.encode(),
        ),
        ("ticket-opened", b"T5", None),
    ]
    good = (
        "ticket-opened",
        b"T9",
        orjson.dumps(
            {
                "event_id": "ok",
                "ticket_id": "T9",
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ),
    )
    worker = workers()
    produce(broker.bootstrap, [(prefix + topic, key, value) for topic, key, value in [*bad, good]])
    wait_for(lambda: processed(worker) == len(bad) + 1, 90, "every record processed")

    def dead_letters() -> list[Any] | None:
        records = read_topic(broker.bootstrap, prefix + "cx-dead-letter")
        return records if len(records) >= len(bad) else None

    dead = wait_for(dead_letters, 30, "dead letters")
    assert len(dead) == len(bad)
    by_value = {record.value: record for record in dead}
    for topic, key, value in bad:
        record = by_value[value]
        headers = {name: content.decode() for name, content in record.headers}
        assert record.key == key
        assert headers["cx-source-topic"] == prefix + topic
        assert headers["cx-error"]
        assert int(headers["cx-source-partition"]) in range(4)
        assert int(headers["cx-source-offset"]) >= 0
    invalid = sum(
        value
        for (name, labels), value in worker.samples().items()
        if name == "cx_events_total" and dict(labels)["outcome"] == "invalid"
    )
    assert invalid == len(bad)
    # the partition went on: the valid ticket behind the bad ones is counted
    wait_for(
        lambda: (
            worker.samples().get(
                ("cx_tickets_open", (("channel", "all"), ("priority", "all"), ("team", "all")))
            )
            == 1.0
        ),
        30,
        "the valid ticket",
    )


def test_two_workers_split_the_work_and_survive_sigkill(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    """With reopens, and SLA breaches judged in business time."""
    now = time.time()
    events = scenario(202, now, tickets=200)
    text, hours = opening_hours(now)
    (tmp_path / "hours.yaml").write_text(text)
    config = {
        "CX_MAX_SEGMENT_VALUES": "3",
        "CX_BUSINESS_HOURS": str(tmp_path / "hours.yaml"),
        "CX_SLA_CLOCK": "business",
    }
    first, second = workers("first", **config), workers("second", **config)
    delivered = delivery(events, 202)
    half = len(delivered) // 2
    produce(broker.bootstrap, event_records(delivered[:half], prefix))

    wait_for(lambda: split(first, second), 90, "the partitions to split between the two workers")
    sent = {fields["event_id"] for _, fields in delivered[:half]}
    so_far = [event for event in events if event[1]["event_id"] in sent]
    wait_until_exact([first, second], so_far, hours=hours, sla_clock="business")

    first.kill()
    produce(broker.bootstrap, event_records(delivered[half:], prefix))
    # the survivor took over every partition
    wait_until_exact([second], events, timeout=120, hours=hours, sla_clock="business")

    restarted = workers("first", **config)
    wait_for(lambda: split(restarted, second), 90, "the restarted worker to take partitions back")
    wait_until_exact([restarted, second], events, timeout=120, hours=hours, sla_clock="business")


def test_a_series_folded_into_other_leaves_cx_metrics(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    """Exported first under its own label, then folded into `other` when three teams that
    sort before it come: its snapshots are deleted (tombstones), or the compacted topic would
    keep them for good."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))

    def opened(ticket: str, team: str) -> tuple[str, dict[str, Any]]:
        return (
            "ticket-opened",
            {"event_id": f"o-{ticket}", "ticket_id": ticket, "occurred_at": at, "team": team},
        )

    worker = workers(CX_MAX_SEGMENT_VALUES="3")
    first = [opened("T1", "shipping")]
    produce(broker.bootstrap, event_records(first, prefix))
    wait_until_snapshots_exact(broker.bootstrap, prefix, first)
    everything = [
        *first,
        *(opened(f"T{n}", team) for n, team in enumerate(("accounts", "billing", "onboarding"), 2)),
    ]
    produce(broker.bootstrap, event_records(everything[1:], prefix))
    wait_until_exact([worker], everything)
    wait_until_snapshots_exact(broker.bootstrap, prefix, everything)
