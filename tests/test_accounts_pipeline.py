"""Accounts end to end on Apache Kafka: subscription events in any order, with duplicates, through
real workers; /metrics and the cx-metrics account snapshots against the oracle at the instant
they say they are at; two workers, one killed (SIGKILL) with its disk kept, then lost."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from stream.windows import parse_windows
from tests.account_oracle import SubscriptionFields, assert_same, expected_accounts
from tests.conftest import WorkerFactory
from tests.kafka import (
    Record,
    WorkerProcess,
    assert_dead_lettered,
    dead_letters,
    processed,
    produce,
    read_topic,
    send_records,
    split,
    wait_for,
)

pytestmark = pytest.mark.broker

WINDOWS = parse_windows("30d,90d,365d")
WINDOW_SECONDS = {spec.name: spec.seconds for spec in WINDOWS}
DAY = 86400.0
CONFIG = {"CX_ACCOUNT_INTERVAL": "1s"}
LABEL_OF = {"mrr_movements": "movement", "account_movements": "movement"}


def histories(seed: int, now: float, accounts: int) -> list[SubscriptionFields]:
    """Accounts with one to three subscriptions over 400 days: trials that convert or lapse,
    upgrades, downgrades, pauses, cancellations and returns, some changes at one instant."""
    rng = random.Random(seed)
    events: list[SubscriptionFields] = []
    for number in range(accounts):
        account = f"ACC-{seed}-{number:04d}"
        for sub in range(rng.randint(1, 3)):
            at = now - rng.uniform(20, 400) * DAY
            for change in range(rng.randint(1, 6)):
                events.append(
                    {
                        "event_id": f"{account}-{sub}-{change}",
                        "account_id": account,
                        "subscription_id": f"{account}-S{sub}",
                        "at": round(at),  # whole seconds: instants shared by subscriptions
                        "status": rng.choice(
                            ["active", "active", "trialing", "paused", "canceled"]
                        ),
                        "mrr": rng.choice([0, 29, 99, 249.5, 1200]),
                    }
                )
                at += rng.choice([0, 1, 7, 30, 90]) * DAY
                at = min(at, now - 60)
    return events


def records(events: list[SubscriptionFields], prefix: str) -> list[tuple[str, bytes, bytes]]:
    """As a billing system keys them: by account."""
    result = []
    for event in events:
        fields = {k: v for k, v in event.items() if k != "at"}
        fields["occurred_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["at"]))
        result.append(
            (prefix + "subscription-updated", event["account_id"].encode(), orjson.dumps(fields))
        )
    return result


def account_numbers(workers: list[WorkerProcess]) -> tuple[float, dict[str, dict[str, Any]]]:
    """The account numbers on /metrics (exported by exactly one worker): their instant, and
    per window the numbers as a snapshot holds them."""
    exporting = []
    for worker in workers:
        samples = worker.samples()
        if any(name == "cx_account_metrics_as_of_seconds" for name, _ in samples):
            exporting.append(samples)
    assert len(exporting) == 1, f"{len(exporting)} workers export the account numbers"
    samples = exporting[0]
    common: dict[str, Any] = {"arpa": None}
    windows: dict[str, dict[str, Any]] = {name: {} for name in WINDOW_SECONDS}
    as_of = 0.0
    for (name, labels), value in samples.items():
        label = dict(labels)
        if name == "cx_account_metrics_as_of_seconds":
            as_of = value
        elif name in ("cx_mrr", "cx_accounts_paying", "cx_arpa"):
            common[name[3:]] = value
        elif name.startswith("cx_") and "window" in label and "team" not in label:
            short = name[3:]
            if short in LABEL_OF:
                windows[label["window"]].setdefault(short, {})[label[LABEL_OF[short]]] = value
            else:
                windows[label["window"]][short] = value
    for values in windows.values():
        values.update(common)
        for absent in (
            "account_churn_ratio",
            "customer_retention_ratio",
            "gross_revenue_retention_ratio",
            "net_revenue_retention_ratio",
            "customer_lifetime_value",
        ):
            values.setdefault(absent, None)
    return as_of, windows


def wait_until_accounts_exact(
    workers: list[WorkerProcess],
    events: list[SubscriptionFields],
    records_sent: int,
    timeout: float = 90,
) -> float:
    """Once every record is processed, the numbers of a later instant equal the oracle's at
    that instant; returns it."""
    wait_for(
        lambda: sum(map(processed, workers)) >= records_sent, timeout, "every record processed"
    )
    processed_by = time.time()
    failure: list[str] = []

    def check() -> float | None:
        as_of, got = account_numbers(workers)
        if as_of <= processed_by:
            return None
        want = expected_accounts(events, as_of, WINDOW_SECONDS)
        try:
            for name in WINDOW_SECONDS:
                assert_same(got[name], want[name], name)
        except AssertionError as error:
            failure[:] = [str(error)]
            return None
        return as_of

    try:
        return wait_for(check, timeout, "the oracle's account numbers")
    except AssertionError as error:
        raise AssertionError(f"{error}; last mismatch: {failure}") from None


def latest_account_snapshots(bootstrap: str, prefix: str) -> dict[str, dict[str, Any]]:
    latest = {}
    for record in read_topic(bootstrap, prefix + "cx-metrics"):
        if record.key.startswith(b"accounts,") and record.value is not None:
            latest[record.key.decode()] = orjson.loads(record.value)
    return latest


def test_one_worker_equals_the_oracle_on_metrics_and_snapshots(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    now = time.time()
    events = histories(1, now, accounts=60)
    rng = random.Random(1)
    delivered = events + rng.sample(events, len(events) // 5)  # re-sent states
    rng.shuffle(delivered)
    worker = workers(**CONFIG)
    produce(broker.bootstrap, records(delivered, prefix))
    # invalid ones, as for every input topic: dead-lettered intact, with a bounded reason
    valid = orjson.loads(records(events[:1], prefix)[0][2])
    topic = prefix + "subscription-updated"
    invalid = {
        "currency EUR is not CX_CURRENCY": Record(
            topic, b"ACC-X", orjson.dumps(valid | {"currency": "EUR"})
        ),
        "schema": Record(topic, b"ACC-X", orjson.dumps(valid | {"mrr": -1})),
        "JSON": Record(topic, b"ACC-X", b'{"event_id": "broken'),
    }
    placed = dict(zip(invalid, send_records(broker.bootstrap, list(invalid.values())), strict=True))
    as_of = wait_until_accounts_exact([worker], events, len(delivered) + len(invalid))
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in worker.samples().items()
        if name == "cx_events_total" and dict(labels)["topic"] == topic
    }
    assert outcomes.get("duplicate") == len(delivered) - len(events)
    assert outcomes.get("accepted") == len(events)
    assert outcomes.get("invalid") == len(invalid)
    letters = dead_letters(broker.bootstrap, prefix + "cx-dead-letter")
    for reason, record in invalid.items():
        assert reason in assert_dead_lettered(letters[(topic, *placed[reason])], record)

    def snapshots_at_or_after() -> dict[str, dict[str, Any]] | None:
        latest = latest_account_snapshots(broker.bootstrap, prefix)
        if set(latest) != {f"accounts,window={name}" for name in WINDOW_SECONDS}:
            return None
        moments = {snapshot["as_of"] for snapshot in latest.values()}
        return latest if len(moments) == 1 and _seconds(moments.pop()) >= as_of else None

    snapshots = wait_for(snapshots_at_or_after, 30, "the account snapshots")
    instant = _seconds(next(iter(snapshots.values()))["as_of"])
    want = expected_accounts(events, instant, WINDOW_SECONDS)
    for name in WINDOW_SECONDS:
        snapshot = snapshots[f"accounts,window={name}"]
        assert snapshot["window"] == name
        assert_same(snapshot, want[name], name)


def test_two_workers_stay_exact_through_sigkill_with_the_disk_kept_and_lost(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    now = time.time()
    events = histories(2, now, accounts=120)
    rng = random.Random(2)
    delivered = events + rng.sample(events, len(events) // 10)
    rng.shuffle(delivered)
    thirds = [delivered[index::3] for index in range(3)]
    first, second = workers("first", **CONFIG), workers("second", **CONFIG)
    produce(broker.bootstrap, records(thirds[0], prefix))
    wait_for(lambda: split(first, second), 90, "the partitions to split")
    sent = {event["event_id"] for event in thirds[0]}
    wait_until_accounts_exact(
        [first, second], [e for e in events if e["event_id"] in sent], len(thirds[0])
    )

    first.kill()  # its disk kept
    restarted = workers("first", **CONFIG)
    produce(broker.bootstrap, records(thirds[1], prefix))
    sent |= {event["event_id"] for event in thirds[1]}
    wait_for(lambda: split(restarted, second), 90, "the restarted worker back in")
    so_far = [e for e in events if e["event_id"] in sent]
    wait_until_accounts_exact([restarted, second], so_far, 0)

    second.kill()
    shutil.rmtree(tmp_path / "second")  # its disk lost: restored from the changelogs
    again = workers("second", **CONFIG)
    produce(broker.bootstrap, records(thirds[2], prefix))
    wait_for(lambda: split(restarted, again), 90, "the new worker in")
    wait_until_accounts_exact([restarted, again], events, 0)


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
