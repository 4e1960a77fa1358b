"""Freshness: from producing an event to its effect on /metrics, at a steady 500 events/s.

One worker, caught up on a warm-up backlog, receives a steady 500 records/s: backlog records
(old event times: they feed the 7d and 28d windows, as real late traffic would) and, every
25th record, a probe: a ticket-opened event stamped now for team "probe". All probes go to
partition 0 of ticket-opened, so the worker applies them in the order they were sent and the
k-th probe is visible exactly when cx_tickets_opened{window="1h",team="probe"} has grown by k.
A thread polls /metrics; a probe's latency is from just before its send() to the end of the
first scrape that includes it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.simulate import Record

from .context import Suite
from .cpu import cpu_seconds
from .figures import BenchResult, Figure, Target, percentile
from .processes import ServiceProcess, running_broker, worker_process
from .progress import say
from .rates import processing_rate
from .records import create_input_topics, mixed_backlog, produce, rfc3339

RATE = 500.0
"""Records per second, probes included."""
PROBE_EVERY = 25
"""One record in 25 is a probe: 20 probes/s."""
TICK_SECONDS = 0.01
POLL_GAP_SECONDS = 0.1
"""Pause between the end of one scrape and the next. A scrape costs the worker CPU in its
single event loop, so back-to-back polling would slow down what it measures."""
SETTLE_SECONDS = 15.0
"""How long after the last probe a run waits for the stragglers."""
PROBE_TEAM = "probe"


def probe_count(metrics_text: str) -> float:
    """cx_tickets_opened for the probe team over the last hour (0 while not exported)."""
    for line in metrics_text.splitlines():
        if (
            line.startswith("cx_tickets_opened{")
            and f'team="{PROBE_TEAM}"' in line
            and 'window="1h"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class Poller:
    """Scrapes /metrics in a thread: (request start, response end, probe count) per scrape."""

    worker: ServiceProcess
    scrapes: list[tuple[float, float, float]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopping.is_set():
            asked = time.perf_counter()
            try:
                count = probe_count(self.worker.metrics_text())
                self.scrapes.append((asked, time.perf_counter(), count))
            except OSError:
                pass  # the run ends with the probes it saw; a dead worker is found by the caller
            self.stopping.wait(POLL_GAP_SECONDS)

    def latest(self) -> float:
        return self.scrapes[-1][2] if self.scrapes else 0.0


def _probe(run: int, number: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"probe-{run}-{number}",
            "ticket_id": f"PROBE-{run}-{number}",
            "occurred_at": rfc3339(time.time()),
            "team": PROBE_TEAM,
            "channel": "chat",
            "priority": "normal",
        }
    )


async def _steady_traffic(
    bootstrap: str, prefix: str, background: Iterator[Record], seconds: float, run: int
) -> tuple[list[float], int]:
    """Send RATE records/s for `seconds`; returns the probes' send times and records sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    probe_times: list[float] = []
    sent = 0
    try:
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            while sent < elapsed * RATE:
                sent += 1
                if sent % PROBE_EVERY == 0:
                    value = _probe(run, len(probe_times) + 1)
                    probe_times.append(time.perf_counter())
                    await producer.send(prefix + "ticket-opened", value=value, partition=0)
                else:
                    topic, key, value = next(background)
                    await producer.send(prefix + topic, key=key, value=value)
            await asyncio.sleep(TICK_SECONDS)
        await producer.flush()
    finally:
        await producer.stop()
    return probe_times, sent


def _latencies(
    probe_times: list[float], scrapes: list[tuple[float, float, float]], baseline: float
) -> list[float]:
    """Per probe: seconds from its send to the end of the first scrape that counts it."""
    latencies = []
    for number, sent_at in enumerate(probe_times, start=1):
        seen = next(
            (answered for _, answered, count in scrapes if count >= baseline + number), None
        )
        latencies.append(math.inf if seen is None else seen - sent_at)
    return latencies


def freshness_run(
    run: int, worker: ServiceProcess, bootstrap: str, background: Iterator[Record], suite: Suite
) -> dict[str, Any]:
    poller = Poller(worker)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        while not poller.scrapes:
            worker.check_alive()  # the worker was up a moment ago: only death stops a scrape
            time.sleep(0.05)
        baseline = poller.latest()
        cpu_before, started = cpu_seconds(worker.pid), time.perf_counter()
        probe_times, sent = asyncio.run(
            _steady_traffic(bootstrap, "fresh-", background, suite.freshness_seconds, run)
        )
        sending = time.perf_counter() - started
        deadline = time.monotonic() + SETTLE_SECONDS
        while poller.latest() < baseline + len(probe_times) and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = 100 * (cpu_seconds(worker.pid) - cpu_before) / (time.perf_counter() - started)
    finally:
        poller.stopping.set()
        thread.join()
    latencies = _latencies(probe_times, poller.scrapes, baseline)
    cycles = [b[0] - a[0] for a, b in zip(poller.scrapes, poller.scrapes[1:], strict=False)]
    scrape_seconds = [answered - asked for asked, answered, _ in poller.scrapes]
    result = {
        "records_sent": sent,
        "send_rate": sent / sending,
        "probes": len(probe_times),
        "probes_never_seen": sum(1 for latency in latencies if math.isinf(latency)),
        "p50_seconds": percentile(latencies, 0.5),
        "p99_seconds": percentile(latencies, 0.99),
        "max_seconds": max(latencies, default=math.nan),
        "poll_cycle_median_seconds": percentile(cycles, 0.5),
        "scrape_median_seconds": percentile(scrape_seconds, 0.5),
        "worker_cpu_percent": cpu,
        "latencies_seconds": [round(latency, 4) for latency in latencies],
    }
    say(
        f"  freshness run {run}: p50 {result['p50_seconds']:.2f}s, p99 {result['p99_seconds']:.2f}s"
        f" over {len(probe_times)} probes ({result['probes_never_seen']} never seen);"
        f" {result['send_rate']:.0f} records/s; scrape {result['scrape_median_seconds']:.3f}s;"
        f" worker CPU {cpu:.0f}%"
    )
    return result


WARMUP_RECORDS = 20_000


def run_freshness(suite: Suite, quick: bool) -> BenchResult:
    warmup = WARMUP_RECORDS // 4 if quick else WARMUP_RECORDS
    needed = int(RATE * suite.freshness_seconds * suite.runs) + 1
    records = mixed_backlog(warmup + needed, suite.seed + 1, suite.cache_dir)
    say(f"freshness: warm-up {warmup:,} records, then {RATE:.0f} records/s")
    runs = []
    with running_broker(suite.workdir / "broker-freshness.log") as broker:
        create_input_topics(broker.bootstrap, "fresh-", suite.partitions)
        produce(broker.bootstrap, "fresh-", records[:warmup])
        env = {"CX_APP_ID": "fresh", "CX_TOPIC_PREFIX": "fresh-"}
        with worker_process(broker, suite.workdir, "freshness", suite.worker_env, **env) as worker:
            assert broker.process is not None
            processing_rate([worker], warmup, broker.process.pid)
            time.sleep(5)  # a couple of publish intervals: the warm-up's series are exported
            # runs continue where the previous one stopped: no record is sent twice
            background = itertools.cycle(records[warmup:])
            for run in range(1, suite.runs + 1):
                runs.append(freshness_run(run, worker, broker.bootstrap, background, suite))
    return freshness_result(runs, suite)


def freshness_result(runs: list[dict[str, Any]], suite: Suite) -> BenchResult:
    resolution = max(run["poll_cycle_median_seconds"] for run in runs)
    result = BenchResult("freshness")
    result.figures = [
        Figure(
            "freshness.p99",
            f"freshness at {RATE:.0f} events/s: p99, produce to /metrics",
            "s",
            [run["p99_seconds"] for run in runs],
            Target("at most 1 s", 1.0, at_most=True),
            note=f"{suite.freshness_seconds:.0f}s per run",
        ),
        Figure(
            "freshness.p50",
            f"freshness at {RATE:.0f} events/s: p50",
            "s",
            [run["p50_seconds"] for run in runs],
        ),
    ]
    result.details = {"runs": runs, "rate": RATE, "probe_every": PROBE_EVERY}
    result.notes = [
        f"Latency is an upper bound: a probe became visible at some moment between the previous"
        f" scrape and the one that saw it; one poll cycle was {resolution * 1000:.0f} ms (median),"
        f" a scrape plus a {POLL_GAP_SECONDS * 1000:.0f} ms pause.",
    ]
    return result
