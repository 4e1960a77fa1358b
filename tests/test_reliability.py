"""Liveness and readiness, a broker outage, and graceful shutdown, on Apache Kafka."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import WorkerProcess, event_records, produce, wait_for, wait_until_exact
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker


def status(url: str) -> tuple[int, dict[str, object]]:
    """HTTP status and JSON body, 503 included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_liveness_comes_first_and_readiness_waits_for_the_group_and_the_tables(
    workers: WorkerFactory,
) -> None:
    worker = workers()
    seen: list[tuple[int, int]] = []

    def ready() -> bool:
        live, _ = status(worker.url + "/health/live")
        code, body = status(worker.url + "/health/ready")
        seen.append((live, code))
        if code == 503:
            assert body["problems"], body
        return code == 200

    wait_for(ready, 90, "readiness", interval=0.05)
    # alive (200) while not yet ready (503): the two are apart
    assert (200, 503) in seen, seen
    code, body = status(worker.url + "/health")
    assert code == 200 and body["status"] == "ok"
    assert body["input_partitions"] == [0, 1, 2, 3]


def test_a_broker_outage_turns_workers_unready_and_they_resume_exactly(
    tmp_path: Path, prefix: str, workers: WorkerFactory
) -> None:
    """A broker of its own, killed (SIGKILL) and started again on its storage, as a machine
    that lost power: topics, changelogs and committed offsets are still there, so producers
    send only what is new, and the workers go on where they were."""
    with ApacheKafka(tmp_path / "kafka") as outage:
        events = scenario(606, time.time(), tickets=150)
        delivered = delivery(events, 606)
        env = {"CX_BROKER": outage.url, "CX_MAX_SEGMENT_VALUES": "3"}
        first, second = workers("first", **env), workers("second", **env)
        half = len(delivered) // 2
        produce(outage.bootstrap, event_records(delivered[:half], prefix))
        wait_for(lambda: all(ready(w) for w in (first, second)), 90, "both workers ready")

        outage.kill(1)
        for worker in (first, second):
            wait_for(lambda w=worker: unready(w), 30, "the broker's absence on /health")  # type: ignore[misc]
        time.sleep(8)  # an outage longer than the group's session timeout (6 s)
        assert all(worker.process and worker.process.poll() is None for worker in (first, second))

        outage.start_node(1)
        outage.wait_until_serving()
        produce(outage.bootstrap, event_records(delivered[half:], prefix))
        wait_until_exact([first, second], events, timeout=180)
        wait_for(lambda: all(ready(w) for w in (first, second)), 60, "both workers ready again")


def ready(worker: WorkerProcess) -> bool:
    return status(worker.url + "/health")[0] == 200


def unready(worker: WorkerProcess) -> bool:
    code, body = status(worker.url + "/health")
    problems = body.get("problems")
    return code == 503 and isinstance(problems, list) and "the brokers do not answer" in problems


def test_sigterm_finishes_the_batch_in_flight_commits_and_exits_in_seconds(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    events = scenario(707, time.time(), tickets=1000)
    delivered = delivery(events, 707, duplicates=0)  # any duplicate later is a re-read record
    produce(broker.bootstrap, event_records(delivered, prefix))
    worker = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_for(lambda: processed(worker) > len(delivered) / 3, 120, "a third", interval=0.05)
    assert worker.process is not None
    stopping = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0
    assert time.monotonic() - stopping < 10, "a graceful stop takes seconds"

    restarted = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_until_exact([restarted], events)
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in restarted.samples().items()
        if name == "cx_events_total"
    }
    # what the first worker processed was committed: nothing was read twice
    assert outcomes.get("duplicate", 0) == 0, outcomes
    assert sum(outcomes.values()) < len(delivered)


def processed(worker: WorkerProcess) -> float:
    return sum(v for (name, _), v in worker.samples().items() if name == "cx_events_total")


def test_sigterm_during_a_takeover_still_exits_in_seconds(workers: WorkerFactory) -> None:
    """A rolling restart: one worker stops, and the other is stopped while it takes over the
    partitions (its consumer thread is in a rebalance callback reading end offsets). The stop
    cancelled that call, the consumer thread died of it, and the worker waited for the thread
    until it was killed."""
    first, second = workers("first"), workers("second")
    wait_for(lambda: all(ready(w) for w in (first, second)), 90, "both workers ready")
    assert first.process is not None and second.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=30) == 0
    second.process.send_signal(signal.SIGTERM)  # while it takes over the first one's partitions
    stopping = time.monotonic()
    assert second.process.wait(timeout=60) == 0
    assert time.monotonic() - stopping < 15, "a stop during a takeover takes seconds"
