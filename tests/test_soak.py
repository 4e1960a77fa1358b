"""A steady load with the retention horizon shortened: state and memory stay flat.

CX_LONG_TESTS=1 runs it for ten minutes instead of one.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import WorkerProcess, wait_for

pytestmark = pytest.mark.broker

SECONDS = 600.0 if os.environ.get("CX_LONG_TESTS") else 60.0
TICKETS_PER_SECOND = 50  # about 170 events/s: a third of the tickets get a survey
RETENTION = 20.0  # the horizon: windows of 5s and 15s, retention 20s, a sweep every 2s
SWEEP_LATE = 10.0
"""How long after crossing the horizon a state may still be kept: the sweep interval, the
sweep itself, a timer late on a busy machine."""
LAG = 5.0
"""How long a record may take to reach the worker's state."""


class Figure(NamedTuple):
    elapsed: float
    resident_mb: float
    kept: dict[str, float]
    """State entries by table, scraped between `before` and `after` (wall clock)."""
    before: float
    after: float


def resident_megabytes(worker: WorkerProcess) -> float:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
    return int(kilobytes) / 1024


def state_kept(worker: WorkerProcess) -> dict[str, float]:
    samples = worker.samples()
    return {
        dict(labels)["table"]: value
        for (name, labels), value in samples.items()
        if name == "cx_state_entries"
    }


def between(times: list[float], start: float, end: float) -> int:
    """How many of the sorted `times` are in [start, end]."""
    return bisect.bisect_right(times, end) - bisect.bisect_left(times, start)


async def steady_load(
    bootstrap: str, prefix: str, seconds: float, born: list[tuple[float, str]]
) -> int:
    """Tickets opened, answered, resolved and (a third of them) rated as they happen, at a
    steady rate; `born` gets each state's latest event time and table, as it is sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    numbers = itertools.count()
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            now = time.time()
            for _ in range(TICKETS_PER_SECOND // 10):
                number = next(numbers)
                ticket = f"soak-{number}"
                events: list[tuple[str, float, dict[str, object]]] = [
                    ("ticket-opened", now - 3, {"team": "billing"}),
                    ("ticket-replied", now - 2, {"author": "agent"}),
                    ("ticket-resolved", now - 1, {}),
                ]
                born.append((now - 1, "tickets"))
                if number % 3 == 0:
                    events.append(("survey-answered", now, {"survey": "csat", "score": 5}))
                    born.append((now, "surveys"))
                for kind, at, fields in events:
                    value = {
                        "event_id": f"{ticket}-{kind}",
                        "ticket_id": ticket,
                        "occurred_at": datetime.fromtimestamp(at, UTC).isoformat(),
                        **fields,
                    }
                    await producer.send(
                        prefix + kind, key=ticket.encode(), value=orjson.dumps(value)
                    )
                    sent += 1
            await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


@pytest.mark.timeout(SECONDS + 120)
def test_a_steady_load_keeps_state_and_memory_flat(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory
) -> None:
    worker = workers(
        CX_WINDOWS="5s,15s",
        CX_STATE_RETENTION=f"{RETENTION:.0f}s",
        CX_RETENTION_SWEEP_INTERVAL="2",
    )
    wait_for(lambda: state_kept(worker), 60, "the worker")
    figures: list[Figure] = []
    born: list[tuple[float, str]] = []

    async def load_and_watch() -> int:
        load = asyncio.create_task(steady_load(broker.bootstrap, prefix, SECONDS, born))
        started = time.monotonic()
        while not load.done():
            await asyncio.sleep(2.5)
            before = time.time()
            kept = await asyncio.to_thread(state_kept, worker)
            after = time.time()
            elapsed = time.monotonic() - started
            figures.append(Figure(elapsed, resident_megabytes(worker), kept, before, after))
        return await load

    sent = asyncio.run(load_and_watch())
    print(f"soak: {sent} events in {SECONDS:.0f}s; (seconds, RSS MB, state entries):")
    print([(round(f.elapsed), round(f.resident_mb), f.kept) for f in figures])
    # past the horizon (plus a sweep and some lag), each table keeps what is younger than the
    # horizon, and nothing much older: surveys are forgotten by their time as tickets are
    plateau = [figure for figure in figures if figure.elapsed > 2 * RETENTION]
    assert len(plateau) >= 4
    for table in ("tickets", "surveys"):
        times = sorted(at for at, kind in born if kind == table)
        for figure in plateau:
            # sent, and not past the horizon by more than a late sweep
            most = between(times, figure.before - RETENTION - SWEEP_LATE, figure.after)
            # well inside the horizon, and sent long enough ago to be in the state
            young = between(times, figure.after - RETENTION + 2, figure.before - LAG)
            kept = figure.kept[table]
            assert kept <= most, f"{table}: old state was forgotten, at {figure}: {most}"
            assert kept >= young / 2, f"{table}: young state is kept, at {figure}: {young}"
    first, last = plateau[0], plateau[-1]
    first_kept, last_kept = sum(first.kept.values()), sum(last.kept.values())
    assert abs(last_kept - first_kept) < 0.3 * first_kept + 50, "the state kept is flat"
    assert last.resident_mb < first.resident_mb + 25, "resident memory is flat"
    exported = worker.samples()[("process_resident_memory_bytes", ())] / 1024**2
    assert abs(exported - resident_megabytes(worker)) < 5, "the worker exports its own memory"
