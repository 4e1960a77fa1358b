"""/metrics scrape time with 50 teams x 10 channels x 4 priorities in all four windows.

The worker exports one dimension at a time (no cross products), so that traffic makes
(1 + 50 + 10 + 4) x 4 windows = 260 series, each with every metric (the records answer,
resolve and survey every ticket within the last hour). CX_MAX_SEGMENT_VALUES=50 keeps all 50
teams. Each run is 50 back-to-back GET /metrics on a new connection, timed from the request to
the last byte of the answer.
"""

from __future__ import annotations

import time
from typing import Any

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
)

SCRAPES_PER_RUN = 50
WINDOWS = 4
EXPECTED_SERIES = (1 + SCRAPE_TEAMS + SCRAPE_CHANNELS + len(SCRAPE_PRIORITIES)) * WINDOWS


def series_count(worker: ServiceProcess) -> tuple[int, int]:
    """(series with a window label, samples) on the worker's /metrics."""
    samples = parse_samples(worker.metrics_text())
    series = {labels for (_, labels), _ in samples.items() if any(k == "window" for k, _ in labels)}
    # a series is its labels without the quantile
    series = {tuple(item for item in labels if item[0] != "quantile") for labels in series}
    return len(series), len(samples)


def wait_for_series(worker: ServiceProcess, timeout: float = 60.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    found = (0, 0)
    while time.monotonic() < deadline:
        found = series_count(worker)
        if found[0] >= EXPECTED_SERIES:
            return found
        time.sleep(2)
    raise ChildFailed(
        f"{found[0]} series on /metrics after {timeout:.0f}s, {EXPECTED_SERIES} expected"
    )


def timed_scrapes(worker: ServiceProcess) -> dict[str, Any]:
    seconds, size = [], 0
    for _ in range(SCRAPES_PER_RUN):
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
        timed_scrapes(worker)
    profile = top()
    if profile is None:
        return None
    caption = (
        f"py-spy record --nonblocking, {SAMPLES_PER_SECOND} Hz, all threads, of the worker"
        f" answering {SCRAPES_PER_RUN} back-to-back GET /metrics: {profile.samples:,} samples,"
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
            series, samples = wait_for_series(worker)
            for run in range(1, suite.runs + 1):
                runs.append(timed_scrapes(worker))
                say(
                    f"  scrape run {run}: median {runs[-1]['median_ms']:.1f} ms, p99"
                    f" {runs[-1]['p99_ms']:.1f} ms, {runs[-1]['bytes']:,} bytes"
                )
            profile = profiled_scrapes(worker, suite) if suite.profile else None
    result = BenchResult("scrape")
    if profile is not None:
        result.details["profile"] = profile
    result.figures = [
        Figure(
            "scrape.median_ms",
            f"GET /metrics, {series} series ({samples:,} samples): median of {SCRAPES_PER_RUN}",
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
    ]
    result.details |= {"series": series, "samples": samples, "runs": runs}
    return result
