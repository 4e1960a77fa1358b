"""Dead letters that fail to send: retried, and if they still fail, reported without stopping
the partition; and large invalid records, near Kafka's size limits, that must arrive intact."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.types import Message
from prometheus_client import CollectorRegistry, Counter

from stream.apache_kafka import ApacheKafka
from stream.ingest import (
    DEAD_LETTER_RETRY_DELAYS,
    BatchStates,
    Headers,
    Ingest,
)
from stream.pipeline import STATE_TABLES, Pipeline
from stream.store import OUTCOMES_KEY
from tests.conftest import WorkerFactory
from tests.helpers import new_pipeline, states_of
from tests.kafka import (
    Record,
    assert_dead_lettered,
    create_topic,
    dead_letters,
    processed,
    send_records,
    wait_for,
    worker_log,
)
from tests.stores import Changelog, close, open_stores

ATTEMPTS = 1 + len(DEAD_LETTER_RETRY_DELAYS)


class FlakyProducer:
    """Fails the first `failures` attempts at each record, alternately refusing the send and
    losing the delivery, then delivers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.delivered: list[tuple[str, bytes | None, bytes | None, Headers | None]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Headers | None,
    ) -> Awaitable[Any]:
        self.attempts += 1
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.attempts > self.failures:
            self.delivered.append((topic, key, value, headers))
            delivery.set_result(None)
        elif self.attempts % 2:
            raise RuntimeError("refused")
        else:
            delivery.set_exception(RuntimeError("lost"))
        return delivery


def run_ingest(
    producer: FlakyProducer,
    message: Message,
    datadir: Path,
    pipeline: Pipeline | None = None,
) -> CollectorRegistry:
    """One batch of one record through Ingest, on the production store; returns the registry
    of its counters. The record changes no state, only the partition's record counts."""
    registry = CollectorRegistry()
    stores = open_stores(datadir)
    changelog = Changelog()
    try:
        ingest = Ingest(
            pipeline or new_pipeline(),
            BatchStates(stores),
            producer,
            lambda: changelog,
            {name: f"{name}-changelog" for name in STATE_TABLES},
            {message.topic: message.topic},
            "cx-dead-letter",
            Counter("cx_events", "", ["topic", "outcome"], registry=registry),
            Counter("cx_dead_letter_failures", "", ["topic"], registry=registry),
        )
        asyncio.run(ingest.process([message]))
        counted = {message.topic: {"invalid": 1}}
        assert changelog.records == {
            ("surveys-changelog", 2): [(OUTCOMES_KEY, orjson.dumps(counted))]
        }
        assert BatchStates(stores).record_counts(2) == counted  # as the store now has them
    finally:
        close(stores)
    return registry


def counts(registry: CollectorRegistry, topic: str) -> tuple[float | None, float | None]:
    """(invalid records, dead-letter failures) of `topic`."""
    return (
        registry.get_sample_value("cx_events_total", {"topic": topic, "outcome": "invalid"}),
        registry.get_sample_value("cx_dead_letter_failures_total", {"topic": topic}),
    )


INVALID = Message(
    "ticket-opened", 2, 17, time.time(), 0, [("trace", b"\x00\xff")], b"T1", b"{oops", None
)


def test_a_failed_dead_letter_is_sent_again(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    producer = FlakyProducer(failures=ATTEMPTS - 1)
    registry = run_ingest(producer, INVALID, tmp_path)
    assert producer.attempts == ATTEMPTS
    [(topic, key, value, headers)] = producer.delivered
    assert (topic, key, value) == ("cx-dead-letter", b"T1", b"{oops")
    assert headers is not None and headers[0] == ("trace", b"\x00\xff")
    assert counts(registry, "ticket-opened") == (1, None)  # no failure counted
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_dead_letter_that_keeps_failing_is_reported_and_counted(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    producer = FlakyProducer(failures=ATTEMPTS)
    registry = run_ingest(producer, INVALID, tmp_path)  # returns: the partition goes on
    assert producer.attempts == ATTEMPTS and not producer.delivered
    assert counts(registry, "ticket-opened") == (1, 1)
    [report] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    fields = vars(report)
    assert (fields["topic"], fields["partition"], fields["offset"]) == ("ticket-opened", 2, 17)
    assert "oops" not in str(fields)


def test_an_internal_error_is_dead_lettered_and_logged_without_the_record(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "a customer's words"
    pipeline = new_pipeline()

    def bug(*args: Any, **kwargs: Any) -> str:
        raise KeyError(secret)  # an error's message may quote the record

    monkeypatch.setattr(pipeline, "_subscription", bug)  # (accounts are Python's)
    changed = {
        "event_id": "e1",
        "account_id": "A1",
        "subscription_id": "S1",
        "occurred_at": "2026-01-01T00:00:00Z",
        "status": "active",
        "mrr": 10,
        "currency": "USD",
    }
    valid = Message(
        "subscription-updated", 2, 17, time.time(), 0, [], b"A1", orjson.dumps(changed), None
    )
    producer = FlakyProducer(failures=0)
    registry = run_ingest(producer, valid, tmp_path, pipeline)
    [(_, _, _, headers)] = producer.delivered
    assert headers is not None and ("cx-error", b"internal error: KeyError") in headers
    assert counts(registry, "subscription-updated") == (1, None)
    [report] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    fields = vars(report)
    assert (fields["topic"], fields["partition"], fields["offset"]) == (
        "subscription-updated",
        2,
        17,
    )
    assert "raise KeyError(secret)" in fields["stack"]  # where, not what
    assert secret not in str(fields) and report.exc_info is None


def test_a_state_that_fails_to_settle_costs_its_records_and_changes_nothing(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The batch's states are folded into the windows after its records were read: a state
    whose observations cannot be worked out (here a stored state of a priority no release
    knows) dead-letters the records that changed it, and keeps its old value."""
    pipeline = new_pipeline()
    stored = {
        "partition": 2,
        "opened": [time.time() - 120, "E0"],
        "segment": ["billing", "email", "someday"],
        "agent_replies": [],
        "status": [],
        "seen": [1],
        "latest": time.time() - 120,
        "account": None,
    }
    states_of(pipeline).put("tickets", 2, "T1", orjson.dumps(stored))
    before = dict(states_of(pipeline).tables[("tickets", 2)])
    fields = {"event_id": "E1", "occurred_at": rfc3339(time.time() - 60), "ticket_id": "T1"}
    valid = Message("ticket-opened", 2, 17, time.time(), 0, None, b"T1", orjson.dumps(fields), None)
    producer = FlakyProducer(failures=0)
    registry = run_ingest(producer, valid, tmp_path, pipeline)
    [(topic, _, value, headers)] = producer.delivered
    assert topic == "cx-dead-letter" and value == valid.value
    assert headers is not None and ("cx-error", b"internal error: RuntimeError") in headers
    assert counts(registry, "ticket-opened") == (1, None)
    assert states_of(pipeline).tables == {("tickets", 2): before}
    assert all(not windows.series_keys() for windows in pipeline.partitions[2].parts.values())


def rfc3339(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@pytest.mark.broker
def test_large_invalid_records_arrive_intact_and_those_that_cannot_are_reported(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    now = rfc3339(time.time())
    huge = "x" * 900_000

    def record(topic: str, key: bytes | None, value: bytes | None) -> Record:
        return Record(prefix + topic, key, value, (("source", b"helpdesk"),))

    deliverable = [
        record(
            "ticket-opened",
            b"T1",
            orjson.dumps({"event_id": "e1", "ticket_id": "T1", "occurred_at": now, "team": huge}),
        ),
        record(
            "ticket-opened",
            b"T2",
            orjson.dumps({"event_id": "e2", "ticket_id": huge, "occurred_at": now}),
        ),
        record(
            "ticket-replied",
            b"T3",
            orjson.dumps(
                {"event_id": huge, "ticket_id": "T3", "occurred_at": now, "author": "agent"}
            ),
        ),
        # above Faust's default producer limit (1,000,000 bytes), within Kafka's default 1 MiB
        record(
            "survey-answered",
            b"S4",
            orjson.dumps(
                {
                    "event_id": "e4",
                    "occurred_at": now,
                    "survey": "nps",
                    "score": 11,
                    "comment": "y" * 1_046_000,
                }
            ),
        ),
    ]
    undeliverable = [
        # larger than any dead letter: on Kafka only with a raised limit on the input topic
        record("ticket-opened", b"T5", b"{" + b" " * 1_200_000),
        # neither key nor value: aiokafka refuses to send such a record
        record("ticket-resolved", None, None),
    ]
    # behind them, in every partition, valid records that must be counted
    valid = [
        Record(
            prefix + "ticket-opened",
            f"V{n}".encode(),
            orjson.dumps({"event_id": f"v{n}", "ticket_id": f"V{n}", "occurred_at": now}),
        )
        for n in range(16)
    ]
    # Kafka refuses records over 1 MiB unless the topic allows more: an operator raised it
    create_topic(broker.bootstrap, prefix + "ticket-opened", max_message_bytes=str(2 * 1024**2))
    worker = workers()
    records = [*deliverable, *undeliverable, *valid]
    placed = send_records(broker.bootstrap, records, max_request_size=2 * 1024 * 1024)
    assert {partition for partition, _ in placed[-len(valid) :]} == {0, 1, 2, 3}
    wait_for(lambda: processed(worker) == len(records), 90, "every record processed")

    dead = dead_letters(broker.bootstrap, prefix + "cx-dead-letter")
    assert len(dead) == len(deliverable)
    for item, (partition, offset) in zip(deliverable, placed[: len(deliverable)], strict=True):
        assert_dead_lettered(dead[(item.topic, partition, offset)], item)
    samples = worker.samples()
    failures = {
        dict(labels)["topic"]: value
        for (name, labels), value in samples.items()
        if name == "cx_dead_letter_failures_total" and value
    }
    assert failures == {prefix + "ticket-opened": 1, prefix + "ticket-resolved": 1}
    invalid = sum(
        value
        for (name, labels), value in samples.items()
        if name == "cx_events_total" and dict(labels)["outcome"] == "invalid"
    )
    assert invalid == len(deliverable) + len(undeliverable)
    reported = {
        (line["topic"], line["partition"], line["offset"])
        for line in worker_log(worker)
        if line["message"].startswith("could not send a record to the dead-letter topic")
    }
    assert reported == {
        (item.topic, *where)
        for item, where in zip(undeliverable, placed[len(deliverable) : -len(valid)], strict=True)
    }
    opened = ("cx_tickets_open", (("channel", "all"), ("priority", "all"), ("team", "all")))
    wait_for(lambda: worker.samples().get(opened) == len(valid), 30, "the valid tickets")
