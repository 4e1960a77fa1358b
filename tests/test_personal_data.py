"""No personal data leaves the processor (docs/operations.md, Personal data): ticket ids, event ids and
unknown fields (free text) appear in none of its logs, /metrics, /health, cx-metrics snapshots
or cx-partials. cx-dead-letter carries the original invalid records, on purpose."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import (
    Record,
    create_topic,
    http_get,
    processed,
    read_topic,
    send_records,
    wait_for,
    wait_until_exact,
    wait_until_snapshots_exact,
)

pytestmark = pytest.mark.broker

MARKER = "PII-MARKER-7f3a"


def test_ids_and_free_text_stay_out_of_logs_metrics_health_and_snapshots(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    ticket = f"{MARKER}-ticket"
    said = {"comment": f"call me on {MARKER}", MARKER: "an unknown field's name"}

    def record(topic: str, key: str | None, value: dict[str, Any] | bytes) -> Record:
        body = value if isinstance(value, bytes) else orjson.dumps(value)
        return Record(prefix + topic, None if key is None else key.encode(), body)

    valid = [
        record(
            "ticket-opened",
            ticket,
            {
                "event_id": f"{MARKER}-1",
                "ticket_id": ticket,
                "occurred_at": at,
                "team": "billing",
                **said,
            },
        ),
        record(
            "ticket-replied",
            ticket,
            {
                "event_id": f"{MARKER}-2",
                "ticket_id": ticket,
                "occurred_at": at,
                "author": "agent",
                **said,
            },
        ),
        record(
            "ticket-resolved",
            ticket,
            {"event_id": f"{MARKER}-3", "ticket_id": ticket, "occurred_at": at},
        ),
        record(
            "ticket-reopened",
            ticket,
            {"event_id": f"{MARKER}-4", "ticket_id": ticket, "occurred_at": at},
        ),
        record(
            "survey-answered",
            ticket,
            {
                "event_id": f"{MARKER}-5",
                "ticket_id": ticket,
                "occurred_at": at,
                "survey": "csat",
                "score": 2,
                **said,
            },
        ),
        record(
            "survey-answered",
            f"{MARKER}-6",
            {"event_id": f"{MARKER}-6", "occurred_at": at, "survey": "nps", "score": 9, **said},
        ),
    ]
    dead_lettered = [
        # too long: the validator's reason quotes it, and cx-error may carry that quote
        record(
            "ticket-opened",
            ticket,
            {"event_id": f"{MARKER}-7", "ticket_id": MARKER * 10, "occurred_at": at},
        ),
        record(
            "survey-answered",
            ticket,
            {"event_id": f"{MARKER}-8", "occurred_at": at, "survey": "nps", "score": 11, **said},
        ),
        record("ticket-replied", ticket, f'{{"ticket_id": "{MARKER}", '.encode()),
    ]
    # too large to dead-letter: the error is logged, the record is not
    unsendable = record(
        "ticket-opened", ticket, {"event_id": f"{MARKER}-9", "comment": MARKER * 80_000}
    )
    # Kafka refuses records over 1 MiB unless the topic allows more: an operator raised it
    create_topic(broker.bootstrap, prefix + "ticket-opened", max_message_bytes=str(2 * 1024**2))
    worker = workers(CX_LOG_LEVEL="debug")  # the most the logs ever say
    records = [*valid, *dead_lettered, unsendable]
    send_records(broker.bootstrap, records, max_request_size=2 * 1024 * 1024)
    wait_for(lambda: processed(worker) == len(records), 60, "every record processed")
    # everything the valid records make is out: /metrics, and the cx-metrics snapshots (so the
    # partials they were merged from) of every series, as the oracle has them
    events = [(r.topic.removeprefix(prefix), orjson.loads(r.value or b"")) for r in valid]
    wait_until_exact([worker], events, timeout=30)
    wait_until_snapshots_exact(broker.bootstrap, prefix, events)

    marker = MARKER.encode()
    assert marker not in http_get(worker.url + "/metrics")
    assert marker not in http_get(worker.url + "/health")
    for topic in ("cx-metrics", "cx-partials"):
        published = read_topic(broker.bootstrap, prefix + topic)
        assert published, topic
        assert not [r for r in published if marker in r.key + r.value + repr(r.headers).encode()]
    partials = [
        orjson.loads(r.value)
        for r in read_topic(broker.bootstrap, prefix + "cx-partials")
        if r.key != b"accounts"  # totals over accounts, of no segment
    ]
    carried = {(p["dimension"], p["value"]) for m in partials for p in m.get("partials", [m])}
    assert {("team", "billing"), ("team", "unassigned"), ("channel", "unknown")} <= carried
    assert b"could not send a record to the dead-letter topic" in worker.log_path.read_bytes()
    assert marker not in worker.log_path.read_bytes()
    # on purpose: the dead letters are the original records
    letters = read_topic(broker.bootstrap, prefix + "cx-dead-letter")
    assert Counter(letter.value for letter in letters) == Counter(r.value for r in dead_lettered)
