"""The support experience of accounts end to end on Apache Kafka (docs/contract.md 7.4, 7.5):
tickets, responses and subscriptions shuffled, duplicated and interleaved, through two workers
under exactly-once, the observations crossing partitions on cx-account-experience; churn by
driver and by band on /metrics and every account's latest cx-account-health record against
tests/experience_oracle.py; one worker SIGKILLed with its disk lost in the middle."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from stream.experience import parse_weights
from stream.exporter import rfc3339
from tests.account_oracle import SubscriptionFields
from tests.conftest import WorkerFactory
from tests.experience_oracle import expected_experience, experience_series
from tests.kafka import (
    WorkerProcess,
    event_records,
    processed,
    produce,
    read_topic,
    split,
    wait_for,
)
from tests.oracle import Event, seconds
from tests.scenario import delivery, scenario
from tests.test_accounts_pipeline import records as subscription_records
from tests.test_experience import subscriptions, with_accounts

pytestmark = pytest.mark.broker

DAY = 86400.0
WINDOWS = {"7d": 7 * DAY, "14d": 14 * DAY}
LOOKBACK = 10 * DAY
WEIGHTS = "csat=2,reopens=0.5,ces=0"
CONFIG = {
    "CX_ACCOUNT_INTERVAL": "1s",
    "CX_ACCOUNT_WINDOWS": "7d,14d",
    "CX_EXPERIENCE_LOOKBACK": "10d",
    "CX_HEALTH_WEIGHTS": WEIGHTS,
    "CX_PROCESSING_GUARANTEE": "exactly_once",
}


def on_half_hours(events: list[Event], now: float) -> list[Event]:
    """The events moved to half past an hour before `now`: every boundary an evaluation draws
    (whole days before its instant) then stays half an hour from every event while the test
    runs, so the numbers cannot change under it."""
    moved = []
    for topic, fields in events:
        age = round((now - seconds(fields["occurred_at"])) / 3600) * 3600 + 1800
        moved.append((topic, {**fields, "occurred_at": rfc3339(now - age)}))
    return moved


def subscriptions_on_half_hours(now: float, rng: random.Random) -> list[SubscriptionFields]:
    return [{**event, "at": event["at"] - 1800} for event in subscriptions(rng, round(now))]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def by_driver_and_band(workers: list[WorkerProcess]) -> tuple[float, Samples]:
    """The 7.4 families on /metrics (of the one worker exporting them), by (name, labels)."""
    for worker in workers:
        samples = worker.samples()
        as_of = [
            v for (name, _), v in samples.items() if name == "cx_account_metrics_as_of_seconds"
        ]
        if as_of:
            found = {
                (name, frozenset(labels)): value
                for (name, labels), value in samples.items()
                if "driver" in dict(labels) or "band" in dict(labels)
            }
            return as_of[0], found
    return 0.0, {}


def same(got: Samples, want: Samples) -> str | None:
    if set(got) != set(want):
        return (
            f"only on /metrics: {sorted(set(got) - set(want))[:3]};"
            f" only in the oracle: {sorted(set(want) - set(got))[:3]}"
        )
    for key, value in want.items():
        if got[key] != pytest.approx(value, rel=1e-9, abs=1e-12):
            return f"{key}: {got[key]} != {value}"
    return None


def wait_until_experience_exact(
    workers: list[WorkerProcess],
    events: list[Event],
    subs: list[SubscriptionFields],
    records_sent: int,
) -> tuple[float, dict[str, Any]]:
    """Once every input record is processed, the numbers of a later instant equal the
    oracle's there; returns the instant and the oracle's numbers."""
    wait_for(lambda: sum(map(processed, workers)) >= records_sent, 120, "every record processed")
    processed_by = time.time()
    failure: list[str] = []

    def check() -> tuple[float, dict[str, Any]] | None:
        as_of, got = by_driver_and_band(workers)
        if as_of <= processed_by:
            return None
        want = expected_experience(events, subs, as_of, WINDOWS, LOOKBACK, parse_weights(WEIGHTS))
        mismatch = same(got, experience_series(want))
        failure[:] = [mismatch or ""]
        return None if mismatch else (as_of, want)

    try:
        return wait_for(check, 120, "the oracle's churn by driver and band")
    except AssertionError as error:
        raise AssertionError(f"{error}; last mismatch: {failure}") from None


def latest_health(bootstrap: str, prefix: str) -> dict[str, dict[str, Any] | None]:
    latest: dict[str, dict[str, Any] | None] = {}
    for record in read_topic(bootstrap, prefix + "cx-account-health"):
        latest[record.key.decode()] = None if record.value is None else orjson.loads(record.value)
    return latest


def test_two_workers_through_a_sigkill_match_the_oracle_on_metrics_and_cx_account_health(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    now = time.time()
    rng = random.Random(31)
    events = on_half_hours(with_accounts(scenario(31, now, tickets=200), rng), now)
    subs = subscriptions_on_half_hours(now, rng)
    delivered = event_records(delivery(events, 31), prefix) + subscription_records(
        subs + rng.sample(subs, len(subs) // 5), prefix
    )
    rng.shuffle(delivered)
    halves = [delivered[: len(delivered) // 2], delivered[len(delivered) // 2 :]]

    first, second = workers("first", **CONFIG), workers("second", **CONFIG)
    wait_for(lambda: split(first, second), 90, "the partitions to split")
    produce(broker.bootstrap, halves[0])
    wait_for(lambda: sum(map(processed, (first, second))) >= len(halves[0]), 120, "half processed")

    second.kill()
    shutil.rmtree(tmp_path / "second")  # its disk lost: restored from the changelogs
    again = workers("second", **CONFIG)
    produce(broker.bootstrap, halves[1])
    wait_for(lambda: split(first, again), 90, "the new worker in")
    running = [first, again]
    as_of, want = wait_until_experience_exact(running, events, subs, 0)
    assert not read_topic(broker.bootstrap, prefix + "cx-dead-letter")

    # every account with a subscription event has its latest record equal to the oracle's
    # (nothing changes between instants here: see on_half_hours), and no other account has one
    def health_exact() -> dict[str, Any] | None:
        latest = latest_health(broker.bootstrap, prefix)
        if set(latest) != set(want["health"]):
            return None
        for account_id, values in want["health"].items():
            record = latest[account_id]
            if record is None or seconds(record.pop("as_of")) > as_of + 60:
                return None
            record["factors"] = {k: pytest.approx(v) for k, v in record["factors"].items()}
            if "score" in record:
                record["score"] = pytest.approx(record["score"], abs=1e-6)
            if record != values:
                return None
        return latest

    wait_for(health_exact, 60, "every account's latest cx-account-health record")


def test_a_forgotten_account_leaves_a_tombstone_on_cx_account_health(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    """An account no longer paying and silent for CX_ACCOUNT_RETENTION is forgotten (7.2), and
    its cx-account-health record gets a tombstone (7.5); an account still paying keeps its
    record. Windows of seconds, so that retention is seconds too."""
    now = time.time()

    def event(account: str, number: int, age: float, status: str) -> SubscriptionFields:
        return {
            "event_id": f"{account}-{number}",
            "account_id": account,
            "subscription_id": f"{account}-main",
            "at": round(now - age),
            "status": status,
            "mrr": 99,
        }

    leaving = [event("LEAVING", 1, 60, "active"), event("LEAVING", 2, 2, "canceled")]
    staying = [event("STAYING", 1, 60, "active")]
    worker = workers(
        CX_ACCOUNT_INTERVAL="1s",
        CX_ACCOUNT_WINDOWS="10s",
        CX_EXPERIENCE_LOOKBACK="10s",
        CX_ACCOUNT_RETENTION="20s",
        CX_RETENTION_SWEEP_INTERVAL="1",
    )
    wait_for(lambda: split(worker), 90, "the worker to own every partition")
    produce(broker.bootstrap, subscription_records(leaving + staying, prefix))

    def both() -> dict[str, dict[str, Any] | None] | None:
        found = latest_health(broker.bootstrap, prefix)
        return found if found.keys() == {"LEAVING", "STAYING"} else None

    first = wait_for(both, 60, "both accounts' health records")
    assert first["LEAVING"] is not None and first["LEAVING"]["paying"] is False
    assert first["STAYING"] is not None and first["STAYING"]["paying"] is True
    wait_for(
        lambda: latest_health(broker.bootstrap, prefix).get("LEAVING", {}) is None,
        60,
        "a tombstone for the forgotten account",
    )
    assert latest_health(broker.bootstrap, prefix)["STAYING"] is not None
    assert processed(worker) == len(leaving + staying)
