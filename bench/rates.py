"""Events per second of a backlog: a raw aiokafka consumer, or Faust processes polled over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer

from stream.events import TOPICS

from .cpu import BusyMeter, CpuWatch
from .processes import ChildFailed, ServiceProcess

START_TIMEOUT = 180.0
"""Seconds a process may take to process its first record (start-up, group join, recovery)."""
STALL_TIMEOUT = 120.0
"""Seconds without progress after which a run is declared stuck."""
REGULAR_POLL_SECONDS = 5.0
BUSY_SAMPLE_SECONDS = 0.1
IDLE_BELOW_CORES = 0.3
"""A process using less CPU than this (per process, over the last sample) may be done."""
IDLE_POLL_GAP = 0.25


@dataclass(frozen=True)
class Rate:
    events: float
    """Records of the backlog processed in `seconds`."""
    seconds: float
    cpu_percent: tuple[float, ...] = ()
    """Per process, CPU time / wall time over the same interval (100 = one core)."""
    broker_cpu_percent: float = 0.0
    others_cores: float = 0.0
    """CPU used meanwhile by processes the benchmark did not start, in cores."""

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _raw_rate(bootstrap: str, prefix: str, total: int, broker_pid: int) -> Rate:
    # no consumer group: all partitions are assigned at once, no join to wait for
    consumer = AIOKafkaConsumer(
        *(prefix + topic for topic in TOPICS),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen, watch, last_progress = 0, None, time.monotonic()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batches and watch is None:
                watch = CpuWatch([broker_pid])
            for messages in batches.values():
                for message in messages:
                    orjson.loads(message.value or b"null")
                seen += len(messages)
                last_progress = time.monotonic()
            if time.monotonic() - last_progress > STALL_TIMEOUT:
                raise ChildFailed(f"the raw consumer stalled at {seen} of {total} records")
        assert watch is not None
        use = watch.stop()
        seconds = time.perf_counter() - watch.started
        return Rate(seen, seconds, (use.own_percent,), use.percent[0], use.others_cores)
    finally:
        await consumer.stop()


def raw_consumer_rate(bootstrap: str, prefix: str, total: int, broker_pid: int) -> Rate:
    """The client's limit: every record fetched and its JSON value decoded with orjson,
    timed from the first fetched batch to the last record."""
    return asyncio.run(_raw_rate(bootstrap, prefix, total, broker_pid))


def _processed(services: Sequence[ServiceProcess]) -> float | None:
    counts = []
    for service in services:
        service.check_alive()
        counts.append(service.processed())
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _wait_until_started(services: Sequence[ServiceProcess], broker_pid: int) -> CpuWatch:
    """Poll until one of them is ready or has processed something; a CpuWatch started when
    that poll was sent.

    Not when it was answered: a worker busy with a batch answers only after it, and the time
    of the answer would leave out the work done meanwhile (seen: a 20,000-record fetch
    processed in one 3 s stretch). Every poll before found nothing processed."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        watch = CpuWatch([*(service.pid for service in services), broker_pid])
        if _processed(services) or any(service.ready() for service in services):
            return watch
        if time.monotonic() > deadline:
            names = ", ".join(service.name for service in services)
            raise ChildFailed(f"{names} did not start processing in {START_TIMEOUT:.0f}s")
        time.sleep(0.05)


def processing_rate(services: Sequence[ServiceProcess], total: int, broker_pid: int) -> Rate:
    """Records/s of started processes working through `total` records (summed over them).

    Timed from the moment the first poll that finds one of them ready (partitions assigned,
    tables recovered) or with a record processed was sent, to the first poll that finds all
    records processed: start-up and group join are excluded, as for the raw consumer. Counters
    may move a fetch at a time, hence readiness rather than the first processed record.

    A /metrics scrape costs the worker about as much CPU as a hundred records, so polling it
    often would slow down what it measures. Progress is read every REGULAR_POLL_SECONDS, and
    whenever the processes' CPU use (free to read from /proc) drops, which is what the end of
    a backlog looks like: the end is seen within about IDLE_POLL_GAP seconds.
    """
    watch = _wait_until_started(services, broker_pid)
    started = watch.started
    meter = BusyMeter([service.pid for service in services])
    count, last_poll, last_progress = 0.0, started, started
    while count < total:
        time.sleep(BUSY_SAMPLE_SECONDS)
        idle = meter.cores() / len(services) < IDLE_BELOW_CORES
        now = time.perf_counter()
        if (idle and now - last_poll >= IDLE_POLL_GAP) or now - last_poll >= REGULAR_POLL_SECONDS:
            counted = _processed(services) or count
            last_poll = time.perf_counter()
            if counted > count:
                count, last_progress = counted, last_poll
            elif last_poll - last_progress > STALL_TIMEOUT:
                raise ChildFailed(f"processing stalled at {count:.0f} of {total} records")
    seconds = time.perf_counter() - started
    use = watch.stop()
    *cpu, broker_cpu = use.percent
    # replays after a rebalance are not progress: count the backlog's records only
    return Rate(total, seconds, tuple(cpu), broker_cpu, use.others_cores)
