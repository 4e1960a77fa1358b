"""Kill workers again and again while they work, then require every published number exact.

In the manner of Kafka Streams' system tests: two workers share the partitions, events keep
arriving (invalid records among them), and workers are killed with SIGKILL at random moments
(in the middle of a batch, during the state recovery of a restart, at any time), restarting on
their disk or on a new one. At the end /metrics and the latest cx-metrics snapshots must equal
the independent oracle, with either processing guarantee. With exactly-once, every invalid
record is dead-lettered exactly once and every record counted once under its outcome (the
counts kept with the state, on /health); with at-least-once, every invalid record is
dead-lettered at least once, and a record read again after a kill may count twice.

CX_LONG_TESTS=1 runs it ten times longer (about a million events, 30 kills).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.apache_kafka import ApacheKafka
from stream.events import TOPICS
from tests.conftest import WorkerFactory
from tests.kafka import (
    Record,
    WorkerProcess,
    event_records,
    http_get,
    read_topic,
    send_records,
    split,
    wait_for,
    wait_until_exact,
    wait_until_snapshots_exact,
)
from tests.oracle import Event, outcomes
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker

LONG = bool(os.environ.get("CX_LONG_TESTS"))
TICKETS = 150_000 if LONG else 15_000  # about 7 events each, plus 15% duplicates
KILLS = 30 if LONG else 12
INVALID_SHARE = 0.003
"""Of the records sent, how many are invalid (broken JSON, a score out of range)."""


def processed(worker: WorkerProcess) -> float:
    try:
        samples = worker.samples()
    except OSError:
        return -1  # not serving yet
    return sum(v for (name, _), v in samples.items() if name == "cx_events_total")


def wait_for_progress(worker: WorkerProcess) -> None:
    before = processed(worker)
    wait_for(lambda: processed(worker) > before, 60, "progress", interval=0.02)


def invalid_record(rng: random.Random, prefix: str, number: int) -> Record:
    topic = rng.choice(TOPICS)
    value = rng.choice(
        [b'{"event_id": "broken', orjson.dumps({"event_id": f"bad-{number}", "score": 99})]
    )
    return Record(prefix + topic, f"BAD-{number}".encode(), value)


def expected_counts(delivered: list[Event], invalid: list[Record], prefix: str) -> Counter[Any]:
    """Per (topic, outcome): the records' outcomes, `accepted` and `anomaly` together as
    `first` (which of a ticket's records made a duration negative depends on the order they
    are read in, which a worker reading five topics does not fix; how many of them are not
    duplicates does not)."""
    counts: Counter[Any] = Counter()
    for (topic, _), outcome in zip(delivered, outcomes(delivered), strict=True):
        counts[(prefix + topic, "duplicate" if outcome == "duplicate" else "first")] += 1
    for record in invalid:
        counts[(record.topic, "invalid")] += 1
    return counts


def source_of(letter: Any) -> tuple[str, int, int]:
    """The input record a dead letter stands for: its topic, partition and offset."""
    headers = dict(letter.headers)
    return (
        headers["cx-source-topic"].decode(),
        int(headers["cx-source-partition"]),
        int(headers["cx-source-offset"]),
    )


def counted(workers: list[WorkerProcess]) -> Counter[Any]:
    """The record counts the workers keep with their states (on /health), grouped as
    expected_counts groups them."""
    counts: Counter[Any] = Counter()
    for worker in workers:
        records = orjson.loads(http_get(worker.url + "/health"))["records"]
        for topic, by_outcome in records.items():
            for outcome, count in by_outcome.items():
                group = outcome if outcome in ("duplicate", "invalid") else "first"
                counts[(topic, group)] += count
    return counts


@pytest.mark.timeout(7200 if LONG else 900)
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_every_number_is_exact_after_a_dozen_kills(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path, guarantee: str
) -> None:
    rng = random.Random(808)
    events = scenario(808, time.time(), tickets=TICKETS)
    delivered = delivery(events, 808)
    assert len(delivered) >= 100_000
    invalid = [invalid_record(rng, prefix, n) for n in range(int(len(delivered) * INVALID_SHARE))]
    config = {"CX_MAX_SEGMENT_VALUES": "3", "CX_PROCESSING_GUARANTEE": guarantee}
    running = {name: workers(name, **config) for name in ("a", "b")}
    records = [Record(*record) for record in event_records(delivered, prefix)]
    for record in invalid:  # among the valid ones, anywhere
        records.insert(rng.randrange(len(records) + 1), record)
    chunks = [records[index::KILLS] for index in range(KILLS)]
    placed: dict[Record, tuple[int, int]] = {}
    moments = []
    for kill, chunk in enumerate(chunks):
        placed.update(zip(chunk, send_records(broker.bootstrap, chunk), strict=True))
        name = rng.choice(sorted(running))
        victim = running[name]
        moment = ("mid-batch", "recovery", "any")[kill % 3]
        if moment == "mid-batch":  # while it works through what was just produced
            wait_for_progress(victim)
        elif moment == "recovery":  # a fresh start, killed while it joins and restores
            victim.kill()
            victim = running[name] = workers(name, **config)
            wait_for(lambda w=victim: processed(w) >= 0, 60, "the web server", interval=0.05)  # type: ignore[misc]
            time.sleep(rng.uniform(0.5, 3.0))
        else:
            time.sleep(rng.uniform(0.0, 2.0))
        victim.kill()
        disk = "kept" if rng.random() < 0.6 else "lost"
        if disk == "lost":
            shutil.rmtree(tmp_path / name, ignore_errors=True)
        moments.append((name, moment, disk))
        running[name] = workers(name, **config)

    print(f"{len(records)} records, {len(moments)} kills: {moments}")
    assert {moment for _, moment, _ in moments} == {"mid-batch", "recovery", "any"}
    assert {disk for _, _, disk in moments} == {"kept", "lost"}
    final = list(running.values())
    wait_until_exact(final, events, timeout=600)
    wait_until_snapshots_exact(broker.bootstrap, prefix, events)

    # every invalid record reached the dead-letter topic; nothing valid ever did
    letters = read_topic(broker.bootstrap, prefix + "cx-dead-letter")
    sources = Counter(map(source_of, letters))
    assert set(sources) == {(record.topic, *placed[record]) for record in invalid}
    repeated = sum(count - 1 for count in sources.values())
    print(f"{len(invalid)} invalid records, dead-lettered {sum(sources.values())} times")
    if guarantee == "exactly_once":
        twice = [
            (source, letter.offset, letter.timestamp)
            for letter in letters
            if sources[source := source_of(letter)] > 1
        ]
        assert repeated == 0, f"{repeated} dead letters repeated: {sorted(twice)}"
        # each record counted once, under its outcome, whatever was killed when
        want = expected_counts(delivered, invalid, prefix)
        wait_for(lambda: split(*final), 60, "the two workers to own every partition")
        found: list[Counter[Any]] = []

        def exact_counts() -> bool:
            found.append(counted(final))
            return found[-1] == want

        try:
            wait_for(exact_counts, 60, "the record counts")
        except AssertionError:
            raise AssertionError(
                f"counted but not expected: {found[-1] - want}; expected but not counted: {want - found[-1]}"
            ) from None
