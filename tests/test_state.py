"""The production state store on the embedded broker: restarts with and without the disk,
and retention that forgets old settled state without changing a published number."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import WorkerProcess, event_records, produce, wait_for, wait_until_exact
from tests.oracle import Event, settled_before
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker

RETENTION = 35 * 86400.0  # the default: the largest window (28d) + 7 days


def state_entries(worker: WorkerProcess) -> dict[str, float]:
    return {
        dict(labels)["table"]: value
        for (name, labels), value in worker.samples().items()
        if name == "cx_state_entries"
    }


def health(worker: WorkerProcess) -> dict[str, object]:
    with urllib.request.urlopen(worker.url + "/health", timeout=5) as response:
        body: dict[str, object] = orjson.loads(response.read())
        return body


def kept_by_oracle(events: list[Event], horizon: float) -> dict[str, float]:
    everything = settled_before(events, float("inf"))
    tickets = {fields["ticket_id"] for topic, fields in events if topic != "survey-answered"}
    old_tickets, old_slots = settled_before(events, horizon)
    return {
        "tickets": len(tickets - old_tickets),
        "surveys": len(everything[1]) - len(old_slots),
    }


def test_a_killed_worker_restarts_from_its_disk_and_from_the_changelogs(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    events = scenario(303, time.time(), tickets=200)
    delivered = delivery(events, 303)
    parts = [
        delivered[: len(delivered) // 3],
        delivered[len(delivered) // 3 : 2 * len(delivered) // 3],
    ]
    parts.append(delivered[2 * len(delivered) // 3 :])
    seen: list[Event] = []

    def sent(part: list[Event]) -> list[Event]:
        produce(broker.bootstrap, event_records(part, prefix))
        seen.extend(part)
        ids = {fields["event_id"] for _, fields in seen}
        return [event for event in events if event[1]["event_id"] in ids]

    worker = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_until_exact([worker], sent(parts[0]))
    worker.kill()

    so_far = sent(parts[1])
    restarted = workers("w", CX_MAX_SEGMENT_VALUES="3")  # the same data directory: disk kept
    wait_until_exact([restarted], so_far)
    restarted.kill()

    shutil.rmtree(tmp_path / "w")  # the disk is lost: everything comes from the changelogs
    everything = sent(parts[2])
    fresh = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_until_exact([fresh], everything)
    assert state_entries(fresh) == kept_by_oracle(everything, float("-inf"))


def test_old_settled_state_is_forgotten_and_no_number_changes(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    now = time.time()
    events = scenario(404, now, tickets=250)  # 60 days of history
    worker = workers(CX_MAX_SEGMENT_VALUES="3", CX_RETENTION_SWEEP_INTERVAL="2")
    produce(broker.bootstrap, event_records(delivery(events, 404), prefix))
    want = kept_by_oracle(events, now - RETENTION)
    assert want != kept_by_oracle(events, float("-inf")), "nothing to forget"
    wait_for(lambda: state_entries(worker) == want, 120, f"the state kept to be {want}")
    assert health(worker)["state_entries"] == want
    # forgetting changed no number: long-open tickets stay in the backlog, windows as before
    wait_until_exact([worker], events)


def test_killed_in_the_middle_of_a_backlog_the_numbers_stay_exact(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    """SIGKILL while batches are in flight (state written, changelog sent, offsets not yet
    committed, in any mix), then again during the restart's own catch-up, disk lost."""
    events = scenario(505, time.time(), tickets=1000)
    delivered = delivery(events, 505)
    produce(broker.bootstrap, event_records(delivered, prefix))

    def processed(worker: WorkerProcess) -> float:
        return sum(v for (name, _), v in worker.samples().items() if name == "cx_events_total")

    worker = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_for(lambda: processed(worker) > len(delivered) / 3, 120, "a third of the backlog", 0.05)
    worker.kill()
    restarted = workers("w", CX_MAX_SEGMENT_VALUES="3")  # disk kept
    wait_for(lambda: processed(restarted) > 0, 120, "the restart to process records", 0.05)
    restarted.kill()
    shutil.rmtree(tmp_path / "w")  # disk lost
    fresh = workers("w", CX_MAX_SEGMENT_VALUES="3")
    wait_until_exact([fresh], events, timeout=180)
