"""/metrics scrape time with 50 teams x 10 channels x 4 priorities in all four windows.

The worker exports one dimension at a time (no cross products), so that traffic makes
(1 + 50 + 10 + 4) x 4 windows = 260 series, each with every metric (the records answer,
resolve and survey every ticket within the last hour). CX_MAX_SEGMENT_VALUES=50 keeps all 50
teams. Each GET /metrics is on a new connection, timed from the request to the last byte of the
answer, once the page has settled (all its samples there).

The figure judged is from live runs: new tickets trickle in, and the scrapes are a partials
cycle apart, so each finds changed series and the page rendered anew, as Prometheus' scrapes of
a worker under traffic do. Back-to-back scrapes of an idle worker are answered from the page
rendered last; they are reported beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer

from .context import Suite
from .figures import BenchResult, Figure, Target, percentile
from .processes import ChildFailed, ServiceProcess, parse_samples, running_broker, worker_process
from .profiling import SAMPLES_PER_SECOND, profiled
from .progress import say
from .rates import processing_rate
from .records import (
    SCRAPE_CHANNELS,
    SCRAPE_PRIORITIES,
    SCRAPE_TEAMS,
    create_input_topics,
    produce,
    scrape_records,
    scrape_ticket,
)

SCRAPES_PER_RUN = 50
LIVE_PAUSE = 0.3
"""Seconds between the scrapes of a live run: more than a partials cycle (0.25 s)."""
LIVE_TICKETS_PER_SECOND = 20
SETTLED_READS = 3
"""Reads, 2 s apart, that must find the same number of samples for the page to count as settled."""
WINDOWS = 4
EXPECTED_SERIES = (1 + SCRAPE_TEAMS + SCRAPE_CHANNELS + len(SCRAPE_PRIORITIES)) * WINDOWS


def series_count(worker: ServiceProcess) -> tuple[int, int]:
    """(series with a window label, samples) on the worker's /metrics."""
    samples = parse_samples(worker.metrics_text())
    series = {labels for (_, labels), _ in samples.items() if any(k == "window" for k, _ in labels)}
    # a series is its labels without the quantile
    series = {tuple(item for item in labels if item[0] != "quantile") for labels in series}
    return len(series), len(samples)


def settled_page(worker: ServiceProcess, timeout: float = 120.0) -> tuple[int, int]:
    """(series, samples) once every series is on /metrics and the sample count stopped moving:
    the last partials of the load are merged."""
    deadline = time.monotonic() + timeout
    reads: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        reads = [*reads[-(SETTLED_READS - 1) :], series_count(worker)]
        if reads[-1][0] >= EXPECTED_SERIES and reads.count(reads[-1]) == SETTLED_READS:
            return reads[-1]
        time.sleep(2)
    raise ChildFailed(
        f"/metrics not settled after {timeout:.0f}s: {reads[-1][0]} series"
        f" ({EXPECTED_SERIES} expected), {reads[-1][1]:,} samples"
    )


@contextlib.contextmanager
def new_tickets(bootstrap: str, prefix: str) -> Iterator[None]:
    """A trickle of newly opened tickets, LIVE_TICKETS_PER_SECOND of them, while the block runs."""
    stopping = threading.Event()

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            number = 0
            while not stopping.is_set():
                topic, key, value = scrape_ticket(number, time.time())
                await producer.send_and_wait(prefix + topic, key=key, value=value)
                number += 1
                await asyncio.sleep(1 / LIVE_TICKETS_PER_SECOND)
        finally:
            await producer.stop()

    sender = threading.Thread(target=asyncio.run, args=(send(),), name="new-tickets")
    sender.start()
    try:
        yield
    finally:
        stopping.set()
        sender.join()


def timed_scrapes(worker: ServiceProcess, pause: float = 0.0) -> dict[str, Any]:
    seconds, size = [], 0
    for _ in range(SCRAPES_PER_RUN):
        time.sleep(pause)
        started = time.perf_counter()
        size = len(worker.get("/metrics"))
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": 1000 * percentile(seconds, 0.5),
        "p99_ms": 1000 * percentile(seconds, 0.99),
        "bytes": size,
        "all_ms": [1000 * value for value in seconds],
    }


def profiled_scrapes(worker: ServiceProcess, suite: Suite) -> dict[str, Any] | None:
    """An extra run of scrapes under py-spy, after the measured ones."""
    with profiled(worker.pid, suite.workdir, "scrape") as top:
        timed_scrapes(worker, LIVE_PAUSE)
    profile = top()
    if profile is None:
        return None
    caption = (
        f"py-spy record --nonblocking, {SAMPLES_PER_SECOND} Hz, all threads, of the worker"
        f" answering {SCRAPES_PER_RUN} GET /metrics {LIVE_PAUSE} s apart while new tickets come"
        f" in: {profile.samples:,} samples,"
        f" {profile.waiting:,} of them waiting."
    )
    return profile.as_details(
        f"Worker, {SCRAPES_PER_RUN} scrapes of {EXPECTED_SERIES} series", caption
    )


def run_scrape(suite: Suite) -> BenchResult:
    records = scrape_records(time.time())
    say(f"scrape: {len(records):,} records, {EXPECTED_SERIES} series expected")
    runs = []
    with running_broker(suite.workdir / "broker-scrape.log") as broker:
        create_input_topics(broker.bootstrap, "scrape-", suite.partitions)
        produce(broker.bootstrap, "scrape-", records)
        env = {"CX_APP_ID": "scrape", "CX_TOPIC_PREFIX": "scrape-", "CX_MAX_SEGMENT_VALUES": "50"}
        with worker_process(broker, suite.workdir, "scrape", suite.worker_env, **env) as worker:
            assert broker.process is not None
            processing_rate([worker], len(records), broker.process.pid)
            series, samples = settled_page(worker)
            idle = [timed_scrapes(worker) for _ in range(suite.runs)]
            with new_tickets(broker.bootstrap, "scrape-"):
                for run in range(1, suite.runs + 1):
                    runs.append(timed_scrapes(worker, LIVE_PAUSE))
                    say(
                        f"  scrape run {run}: median {runs[-1]['median_ms']:.1f} ms, p99"
                        f" {runs[-1]['p99_ms']:.1f} ms, {runs[-1]['bytes']:,} bytes; idle median"
                        f" {idle[run - 1]['median_ms']:.1f} ms"
                    )
                profile = profiled_scrapes(worker, suite) if suite.profile else None
    result = BenchResult("scrape")
    if profile is not None:
        result.details["profile"] = profile
    result.figures = [
        Figure(
            "scrape.median_ms",
            f"GET /metrics, {series} series ({samples:,} samples), each rendered anew while"
            f" tickets come in: median of {SCRAPES_PER_RUN}",
            "ms",
            [run["median_ms"] for run in runs],
            Target("at most 50 ms", 50.0, at_most=True),
        ),
        Figure(
            "scrape.p99_ms",
            f"GET /metrics: p99 of {SCRAPES_PER_RUN}",
            "ms",
            [run["p99_ms"] for run in runs],
        ),
        Figure(
            "scrape.idle_median_ms",
            f"GET /metrics of an idle worker, back to back (the page rendered last): median of"
            f" {SCRAPES_PER_RUN}",
            "ms",
            [run["median_ms"] for run in idle],
        ),
    ]
    result.details |= {"series": series, "samples": samples, "runs": runs, "idle_runs": idle}
    return result
