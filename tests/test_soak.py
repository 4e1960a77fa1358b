"""A steady load with the retention horizon shortened: state and memory stay flat.

CX_LONG_TESTS=1 runs it for ten minutes instead of one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.apache_kafka import ApacheKafka
from tests.conftest import WorkerFactory
from tests.kafka import WorkerProcess, wait_for

pytestmark = pytest.mark.broker

SECONDS = 600.0 if os.environ.get("CX_LONG_TESTS") else 60.0
TICKETS_PER_SECOND = 50  # about 200 events/s
RETENTION = 20.0  # the horizon: windows of 5s and 15s, retention 20s, a sweep every 2s


def resident_megabytes(worker: WorkerProcess) -> float:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    kilobytes = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
    return int(kilobytes) / 1024


def state_kept(worker: WorkerProcess) -> float:
    samples = worker.samples()
    return sum(value for (name, _), value in samples.items() if name == "cx_state_entries")


async def steady_load(bootstrap: str, prefix: str, seconds: float) -> int:
    """Tickets opened, answered, resolved and rated as they happen, at a steady rate."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    numbers = itertools.count()
    sent = 0
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            now = time.time()
            for _ in range(TICKETS_PER_SECOND // 10):
                ticket = f"soak-{next(numbers)}"
                events: list[tuple[str, float, dict[str, object]]] = [
                    ("ticket-opened", now - 3, {"team": "billing"}),
                    ("ticket-replied", now - 2, {"author": "agent"}),
                    ("ticket-resolved", now - 1, {}),
                ]
                if sent % 3 == 0:
                    events.append(("survey-answered", now, {"survey": "csat", "score": 5}))
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
    wait_for(lambda: state_kept(worker) >= 0, 60, "the worker")
    figures: list[tuple[float, float, float]] = []

    async def load_and_watch() -> int:
        load = asyncio.create_task(steady_load(broker.bootstrap, prefix, SECONDS))
        started = time.monotonic()
        while not load.done():
            await asyncio.sleep(5)
            kept = await asyncio.to_thread(state_kept, worker)
            figures.append((time.monotonic() - started, resident_megabytes(worker), kept))
        return await load

    sent = asyncio.run(load_and_watch())
    # past the horizon (plus a sweep and some lag) the state kept is a plateau
    plateau = [figure for figure in figures if figure[0] > 2 * RETENTION]
    (_, first_rss, first_kept), (_, last_rss, last_kept) = plateau[0], plateau[-1]
    print(f"soak: {sent} events in {SECONDS:.0f}s; (seconds, RSS MB, state entries): {figures}")
    assert first_kept < 4 * RETENTION * TICKETS_PER_SECOND, "old state was forgotten"
    assert abs(last_kept - first_kept) < 0.3 * first_kept + 50, "the state kept is flat"
    assert last_rss < first_rss + 25, "resident memory is flat"
    exported = worker.samples()[("process_resident_memory_bytes", ())] / 1024**2
    assert abs(exported - resident_megabytes(worker)) < 5, "the worker exports its own memory"
