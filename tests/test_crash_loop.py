"""Kill workers again and again while they work, then require every published number exact.

In the manner of Kafka Streams' system tests: two workers share the partitions, events keep
arriving, and workers are killed with SIGKILL at random moments (in the middle of a batch,
during the state recovery of a restart, at any time), restarting on their disk or on a new
one. At the end /metrics and the latest cx-metrics snapshots must equal the independent oracle.

CX_LONG_TESTS=1 runs it ten times longer (about a million events, 30 kills).
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import (
    WorkerProcess,
    assert_snapshots_match,
    event_records,
    produce,
    read_topic,
    wait_for,
    wait_until_exact,
)
from tests.oracle import expected
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker

LONG = bool(os.environ.get("CX_LONG_TESTS"))
TICKETS = 150_000 if LONG else 15_000  # about 7 events each, plus 15% duplicates
KILLS = 30 if LONG else 12


def processed(worker: WorkerProcess) -> float:
    try:
        samples = worker.samples()
    except OSError:
        return -1  # not serving yet
    return sum(v for (name, _), v in samples.items() if name == "cx_events_total")


def wait_for_progress(worker: WorkerProcess) -> None:
    before = processed(worker)
    wait_for(lambda: processed(worker) > before, 60, "progress", interval=0.02)


@pytest.mark.timeout(7200 if LONG else 600)
def test_every_number_is_exact_after_a_dozen_kills(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, tmp_path: Path
) -> None:
    rng = random.Random(808)
    events = scenario(808, time.time(), tickets=TICKETS)
    delivered = delivery(events, 808)
    assert len(delivered) >= 100_000
    config = {"CX_MAX_SEGMENT_VALUES": "3"}
    running = {name: workers(name, **config) for name in ("a", "b")}
    chunks = [delivered[index::KILLS] for index in range(KILLS)]
    moments = []
    for kill, chunk in enumerate(chunks):
        produce(broker.bootstrap, event_records(chunk, prefix))
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

    print(f"{len(delivered)} records, {len(moments)} kills: {moments}")
    assert {moment for _, moment, _ in moments} == {"mid-batch", "recovery", "any"}
    assert {disk for _, _, disk in moments} == {"kept", "lost"}
    wait_until_exact(list(running.values()), events, timeout=600)
    time.sleep(2.5)  # two snapshot intervals: the latest state is published
    assert_snapshots_match(broker.bootstrap, prefix, expected(events, time.time(), cap=3))
    # every record was valid: none was ever dead-lettered, however often it was read
    assert read_topic(broker.bootstrap, prefix + "cx-dead-letter") == []
