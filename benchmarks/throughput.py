"""Backlog throughput of one worker, as a ratio to a raw aiokafka consumer in the same run.

    .venv/bin/python benchmarks/throughput.py --events 30000

Both read the same simulated backlog from the same embedded broker, one after the other; the
machine is shared, so the ratio is what to compare between runs, not the absolute rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream.broker import EmbeddedBroker, free_port
from stream.events import TOPICS
from stream.simulate import Traffic


def backlog(events: int) -> list[tuple[str, bytes, bytes]]:
    """At least `events` simulated records, history of the last days."""
    now = time.time()
    hours = 1.0
    while True:
        traffic = Traffic(events_per_second=20, seed=7, duplicates=0.01)
        traffic.backfill(now - hours * 3600, now)
        records = list(traffic.due(now))
        if len(records) >= events:
            return records[:events]
        hours *= 1.5


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def raw_consumer_seconds(bootstrap: str, count: int) -> float:
    """Baseline: the same records read and JSON-decoded by a bare aiokafka consumer."""
    consumer = AIOKafkaConsumer(
        *TOPICS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id="raw-baseline"
    )
    await consumer.start()
    try:
        started, seen = time.perf_counter(), 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for messages in batches.values():
                for message in messages:
                    orjson.loads(message.value or b"null")
                seen += len(messages)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def processed(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cx_events_total"
    )


def worker_seconds(broker: EmbeddedBroker, count: int, workdir: Path) -> float:
    """One `cx-stream worker` on the backlog: from its first processed record to the last."""
    port = free_port()
    env = {
        **os.environ,
        "CX_BROKER": broker.url,
        "CX_EMBEDDED_BROKER": os.environ.get("BENCH_EMBEDDED", "1"),
        "CX_WEB_HOST": "127.0.0.1",
        "CX_WEB_PORT": str(port),
        "CX_DATA_DIR": str(workdir),
        "CX_PARTITIONS": "4",
        "CX_LOG_LEVEL": "warning",
    }
    with open(workdir / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"], env=env, stdout=log, stderr=log
        )
    try:
        while processed(port) <= 0:
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited; see {workdir / 'worker.log'}")
            time.sleep(0.05)
        started = time.perf_counter()
        while processed(port) < count:
            time.sleep(0.1)
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cx-bench-"))
    records = backlog(args.events)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        # the broker creates the input topics; the worker sizes its tables to them
        asyncio.run(produce(broker.bootstrap, records))
        baseline = asyncio.run(raw_consumer_seconds(broker.bootstrap, len(records)))
        worker = worker_seconds(broker, len(records), workdir)
    result = {
        "events": len(records),
        "raw_consumer_events_per_second": round(len(records) / baseline),
        "worker_events_per_second": round(len(records) / worker),
        "worker_to_raw_consumer_ratio": round(baseline / worker, 4),
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
