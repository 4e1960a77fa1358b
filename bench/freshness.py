"""Freshness: from producing an event to its effect on /metrics, at a steady 500 events/s.

One worker, caught up on a warm-up backlog, receives a steady 500 records/s: backlog records
(old event times: they feed the 7d and 28d windows, as real late traffic would) and, every
25th record, a probe: a ticket-opened event stamped now for team "probe". All probes go to
partition 0 of ticket-opened, so the worker applies them in the order they were sent and the
k-th probe is visible exactly when cx_tickets_opened{window="1h",team="probe"} has grown by k.
A thread polls /metrics; a probe's latency is from just before its send() to the end of the
first scrape that includes it.

On Kafka there is one such worker per processing guarantee, each with its own topics, on one
broker; their runs alternate (the order reversed every other run), each worker receiving the
same records, while the other idles.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.config import ProcessingGuarantee
from stream.simulate import Record

from .context import AT_LEAST_ONCE, EXACTLY_ONCE, Suite, alternated
from .cpu import CpuWatch
from .figures import BenchResult, Figure, Target, percentile
from .processes import ServiceProcess, running_broker, worker_process
from .progress import say
from .rates import processing_rate
from .records import load, mixed_backlog, rfc3339

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
    run: int,
    worker: ServiceProcess,
    bootstrap: str,
    background: Iterator[Record],
    suite: Suite,
    idle: Sequence[ServiceProcess] = (),
) -> dict[str, Any]:
    """One run of steady traffic to `worker`'s topics (its CX_TOPIC_PREFIX), with the CPU the
    `idle` workers (the other guarantee's) used meanwhile."""
    prefix = worker.env["CX_TOPIC_PREFIX"]
    poller = Poller(worker)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    try:
        while not poller.scrapes:
            worker.check_alive()  # the worker was up a moment ago: only death stops a scrape
            time.sleep(0.05)
        baseline = poller.latest()
        watch = CpuWatch([worker.pid, *(other.pid for other in idle)])
        started = watch.started
        probe_times, sent = asyncio.run(
            _steady_traffic(bootstrap, prefix, background, suite.freshness_seconds, run)
        )
        sending = time.perf_counter() - started
        deadline = time.monotonic() + SETTLE_SECONDS
        while poller.latest() < baseline + len(probe_times) and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu, *idle_cpu = watch.stop().percent
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
        "idle_workers_cpu_percent": idle_cpu,
        "latencies_seconds": [round(latency, 4) for latency in latencies],
    }
    say(
        f"  freshness run {run}, {worker.env['CX_PROCESSING_GUARANTEE']}:"
        f" p50 {result['p50_seconds']:.2f}s, p99 {result['p99_seconds']:.2f}s"
        f" over {len(probe_times)} probes ({result['probes_never_seen']} never seen);"
        f" {result['send_rate']:.0f} records/s; scrape {result['scrape_median_seconds']:.3f}s;"
        f" worker CPU {cpu:.0f}%"
    )
    return result


WARMUP_RECORDS = 20_000
PREFIXES: dict[ProcessingGuarantee, str] = {AT_LEAST_ONCE: "fresh-", EXACTLY_ONCE: "fresh-eos-"}
KEY_SUFFIXES: dict[ProcessingGuarantee, str] = {AT_LEAST_ONCE: "", EXACTLY_ONCE: "_exactly_once"}
"""Figure keys: freshness.p99 is at-least-once's, as before both were measured."""


def run_freshness(suite: Suite, quick: bool) -> BenchResult:
    warmup = WARMUP_RECORDS // 4 if quick else WARMUP_RECORDS
    needed = int(RATE * suite.freshness_seconds * suite.runs) + 1
    records = mixed_backlog(warmup + needed, suite.seed + 1, suite.cache_dir)
    say(f"freshness: warm-up {warmup:,} records, then {RATE:.0f} records/s")
    runs: dict[ProcessingGuarantee, list[dict[str, Any]]] = {}
    with running_broker(suite, "freshness") as broker, contextlib.ExitStack() as started:
        workers: dict[ProcessingGuarantee, ServiceProcess] = {}
        for guarantee in suite.guarantees:  # each on topics of its own, caught up on the warm-up
            prefix = PREFIXES[guarantee]
            load(broker.bootstrap, prefix, records[:warmup], suite.partitions)
            env = {"CX_APP_ID": "fresh", "CX_TOPIC_PREFIX": prefix}
            worker = worker_process(broker, suite, f"freshness-{guarantee}", env, guarantee)
            workers[guarantee] = started.enter_context(worker)
            processing_rate([worker], warmup, broker.pid)
            runs[guarantee] = []
        time.sleep(5)  # a couple of publish intervals: the warm-up's series are exported
        # runs continue where the previous one stopped: no record is sent twice to a worker,
        # and each worker gets the same records
        background = {guarantee: itertools.cycle(records[warmup:]) for guarantee in workers}
        for run in range(1, suite.runs + 1):
            for guarantee in alternated(suite.guarantees, run):
                worker, sent = workers[guarantee], background[guarantee]
                idle = [other for other in workers.values() if other is not worker]
                runs[guarantee].append(
                    freshness_run(run, worker, broker.bootstrap, sent, suite, idle)
                )
    return freshness_result(runs, suite)


def freshness_result(
    runs: dict[ProcessingGuarantee, list[dict[str, Any]]], suite: Suite
) -> BenchResult:
    every_run = [run for its_runs in runs.values() for run in its_runs]
    resolution = max(run["poll_cycle_median_seconds"] for run in every_run)
    result = BenchResult("freshness")
    for guarantee, its_runs in runs.items():
        key = KEY_SUFFIXES[guarantee]
        result.figures += [
            Figure(
                f"freshness.p99{key}",
                f"freshness at {RATE:.0f} events/s: p99, produce to /metrics",
                "s",
                [run["p99_seconds"] for run in its_runs],
                Target("at most 0.5 s", 0.5, at_most=True),
                note=f"{suite.freshness_seconds:.0f}s per run",
                guarantee=guarantee,
            ),
            Figure(
                f"freshness.p50{key}",
                f"freshness at {RATE:.0f} events/s: p50",
                "s",
                [run["p50_seconds"] for run in its_runs],
                guarantee=guarantee,
            ),
        ]
        result.details[f"runs{key}"] = its_runs
    result.details |= {"rate": RATE, "probe_every": PROBE_EVERY}
    result.notes = [
        f"Latency is an upper bound: a probe became visible at some moment between the previous"
        f" scrape and the one that saw it; one poll cycle was {resolution * 1000:.0f} ms (median),"
        f" a scrape plus a {POLL_GAP_SECONDS * 1000:.0f} ms pause.",
    ]
    idle_cpu = [percent for run in every_run for percent in run["idle_workers_cpu_percent"]]
    if idle_cpu:
        result.notes.append(
            f"Freshness: the worker of the other guarantee, idle during a run, used"
            f" {min(idle_cpu):.0f}-{max(idle_cpu):.0f}% of a core meanwhile."
        )
    return result
