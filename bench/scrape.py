"""/metrics scrape time with 50 teams x 10 channels x 4 priorities in all four windows, and
again with 1,235 teams (a large organisation's).

The worker exports one dimension at a time (no cross products), so that traffic makes
(1 + 50 + 10 + 4) x 4 windows = 260 series, each with every metric (the records answer,
resolve and survey every ticket within the last hour), or (1 + 1,235 + 10 + 4) x 4 = 5,000.
CX_MAX_SEGMENT_VALUES keeps every team.
Each GET /metrics is on a new connection, timed from the request to the last byte of the
answer, once the page has settled (all its samples there).

The figure judged is from live runs, as Prometheus scrapes a worker under traffic: between
two scrapes a ticket opens in every team (and so every channel and priority), so each scrape
finds every series changed, merged and rendered anew. Back-to-back scrapes of an idle worker
are answered from the page rendered last; they are reported beside it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .context import AT_LEAST_ONCE, Suite
from .figures import BenchResult, Figure, Target, percentile
from .processes import ChildFailed, ServiceProcess, parse_samples, running_broker, worker_process
from .profiling import SAMPLES_PER_SECOND, profiled
from .progress import say
from .rates import processing_rate
from .records import (
    SCRAPE_CHANNELS,
    SCRAPE_PRIORITIES,
    load,
    produce,
    scrape_records,
    scrape_ticket,
)

SCRAPES_PER_RUN = 50
LIVE_SCRAPES_PER_RUN = 20
MERGED_WITHIN = 1.0
"""Seconds a live run waits after opening tickets before it scrapes: the worker ingests them,
publishes its partials (every 0.25 s) and merges those."""
SETTLED_READS = 3
"""Reads, 2 s apart, that must find the same number of samples for the page to count as settled."""
WINDOWS = 4


@dataclass(frozen=True)
class Size:
    teams: int
    name: str
    """Its figures' prefix."""
    target: Target

    @property
    def series(self) -> int:
        return (1 + self.teams + SCRAPE_CHANNELS + len(SCRAPE_PRIORITIES)) * WINDOWS


SIZES = (
    Size(50, "scrape", Target("at most 10 ms", 10.0, at_most=True)),
    Size(1235, "scrape.large", Target("at most 100 ms", 100.0, at_most=True)),
)


def series_count(worker: ServiceProcess) -> tuple[int, int]:
    """(series with a window label, samples) on the worker's /metrics."""
    samples = parse_samples(worker.metrics_text())
    series = {labels for (_, labels), _ in samples.items() if any(k == "window" for k, _ in labels)}
    # a series is its labels without the quantile
    series = {tuple(item for item in labels if item[0] != "quantile") for labels in series}
    return len(series), len(samples)


def settled_page(worker: ServiceProcess, expected: int, timeout: float = 180.0) -> tuple[int, int]:
    """(series, samples) once every series is on /metrics and the sample count stopped moving:
    the last partials of the load are merged."""
    deadline = time.monotonic() + timeout
    reads: list[tuple[int, int]] = []
    while time.monotonic() < deadline:
        reads = [*reads[-(SETTLED_READS - 1) :], series_count(worker)]
        if reads[-1][0] >= expected and reads.count(reads[-1]) == SETTLED_READS:
            return reads[-1]
        time.sleep(2)
    raise ChildFailed(
        f"/metrics not settled after {timeout:.0f}s: {reads[-1][0]} series"
        f" ({expected} expected), {reads[-1][1]:,} samples"
    )


def open_tickets(bootstrap: str, prefix: str, first: int, teams: int) -> None:
    """Open a ticket in every team (numbered from `first`); returns once the broker has them."""
    now = time.time()
    tickets = [scrape_ticket(first + number, now, teams) for number in range(teams)]
    produce(bootstrap, prefix, tickets)


def timed_scrapes(
    worker: ServiceProcess, scrapes: int = SCRAPES_PER_RUN, before: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Scrapes timed; `before` is called before each, untimed."""
    seconds, size = [], 0
    for _ in range(scrapes):
        if before is not None:
            before()
        started = time.perf_counter()
        size = len(worker.get("/metrics"))
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": 1000 * percentile(seconds, 0.5),
        "p99_ms": 1000 * percentile(seconds, 0.99),
        "bytes": size,
        "all_ms": [1000 * value for value in seconds],
    }


def profiled_scrapes(
    worker: ServiceProcess, suite: Suite, before: Callable[[], None], series: int
) -> dict[str, Any] | None:
    """An extra live run of scrapes under py-spy, after the measured ones."""
    with profiled(worker.pid, suite.workdir, "scrape") as top:
        timed_scrapes(worker, LIVE_SCRAPES_PER_RUN, before)
    profile = top()
    if profile is None:
        return None
    caption = (
        f"py-spy record --nonblocking, {SAMPLES_PER_SECOND} Hz, all threads, of the worker"
        f" answering {LIVE_SCRAPES_PER_RUN} GET /metrics, each after a ticket opened in every"
        f" team: {profile.samples:,} samples, {profile.waiting:,} of them waiting."
    )
    return profile.as_details(f"Worker, {LIVE_SCRAPES_PER_RUN} scrapes of {series} series", caption)


def run_scrape(suite: Suite) -> BenchResult:
    result = BenchResult("scrape")
    with running_broker(suite, "scrape") as broker:
        for size in SIZES:
            figures, details = scrape_size(suite, broker, size)
            result.figures += figures
            if "profile" in details:
                result.details["profile"] = details.pop("profile")
            result.details[size.name] = details
    return result


def scrape_size(suite: Suite, broker: Any, size: Size) -> tuple[list[Figure], dict[str, Any]]:
    records = scrape_records(time.time(), size.teams)
    say(f"{size.name}: {len(records):,} records, {size.series} series expected")
    prefix = f"{size.name}-"
    runs, profile = [], None
    load(broker.bootstrap, prefix, records, suite.partitions)
    env = {
        "CX_APP_ID": size.name.replace(".", "-"),
        "CX_TOPIC_PREFIX": prefix,
        "CX_MAX_SEGMENT_VALUES": str(size.teams),
    }
    with worker_process(broker, suite, size.name, env) as worker:
        processing_rate([worker], len(records), broker.pid)
        series, samples = settled_page(worker, size.series)
        idle = [timed_scrapes(worker) for _ in range(suite.runs)]
        opened = itertools.count(step=size.teams)

        def every_series_changed() -> None:
            open_tickets(broker.bootstrap, prefix, next(opened), size.teams)
            time.sleep(MERGED_WITHIN)

        for run in range(1, suite.runs + 1):
            runs.append(timed_scrapes(worker, LIVE_SCRAPES_PER_RUN, every_series_changed))
            say(
                f"  {size.name} run {run}: median {runs[-1]['median_ms']:.1f} ms, p99"
                f" {runs[-1]['p99_ms']:.1f} ms, {runs[-1]['bytes']:,} bytes; idle median"
                f" {idle[run - 1]['median_ms']:.1f} ms"
            )
        if suite.profile and size == SIZES[0]:
            profile = profiled_scrapes(worker, suite, every_series_changed, series)
    details: dict[str, Any] = {
        "series": series,
        "samples": samples,
        "runs": runs,
        "idle_runs": idle,
    }
    if profile is not None:
        details["profile"] = profile
    figures = [
        Figure(
            f"{size.name}.median_ms",
            f"GET /metrics, {series:,} series ({samples:,} samples), each after a ticket opened in"
            f" every team (all series merged and rendered anew): median of {LIVE_SCRAPES_PER_RUN}",
            "ms",
            [run["median_ms"] for run in runs],
            size.target,
            guarantee=AT_LEAST_ONCE,
        ),
        Figure(
            f"{size.name}.p99_ms",
            f"GET /metrics, {series:,} series, each after a ticket opened in every team: p99 of"
            f" {LIVE_SCRAPES_PER_RUN}",
            "ms",
            [run["p99_ms"] for run in runs],
            guarantee=AT_LEAST_ONCE,
        ),
        Figure(
            f"{size.name}.idle_median_ms",
            f"GET /metrics of an idle worker, {series:,} series, back to back (the page rendered"
            f" last): median of {SCRAPES_PER_RUN}",
            "ms",
            [run["median_ms"] for run in idle],
            guarantee=AT_LEAST_ONCE,
        ),
    ]
    return figures, details
