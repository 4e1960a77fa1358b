"""Backlog replay: one worker per guarantee, the baselines and (optionally) two workers, on the
same records.

Each run is a round on a fresh broker: the backlog is produced once per worker configuration
(a topic prefix each, because the prefix also names cx-partials, which must not carry a previous
worker's partials into the next), then read by the raw consumer, Quix Streams' stateless loop
(bench/quix.py), the no-op Faust agent, the no-op batch handler, one worker with each
processing guarantee (at-least-once and, on Kafka, exactly-once; which goes first alternates
from round to round) and, for the scaling figure, two workers in one group. All of a round's
numbers come from the same records on the same broker minutes apart, so their ratios are what
to compare between machines and commits; absolute rates move with whatever else the machine
is doing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from stream.config import ProcessingGuarantee
from stream.simulate import Record

from .context import AT_LEAST_ONCE, EXACTLY_ONCE, TARGET_EVENTS, Suite, alternated, smaller
from .figures import BenchResult, Figure, Target, ratio
from .processes import (
    Broker,
    ServiceProcess,
    batch_noop_process,
    noop_process,
    running_broker,
    wait_until_ready,
    worker_process,
)
from .profiling import SAMPLES_PER_SECOND, profiled
from .progress import say
from .quix import QuixUnavailable, quix_python, quix_rate
from .rates import Rate, processing_rate, raw_consumer_rate
from .records import load

WORKERS: dict[ProcessingGuarantee, tuple[str, str]] = {
    AT_LEAST_ONCE: ("worker", "one-"),
    EXACTLY_ONCE: ("worker_exactly_once", "eos-"),
}
"""Per guarantee, the one worker's rate (its key in the JSON file) and its topic prefix. The
at-least-once worker shares its topics with the baselines, which create no cx-partials."""
TITLES = {
    "raw": "raw aiokafka consumer + orjson",
    "quix": "Quix Streams stateless loop, a dataframe per topic, JSON decode + count",
    "quix_concat": "Quix Streams stateless loop, the topics as one dataframe, JSON decode + count",
    "noop": "no-op Faust agent",
    "batch_noop": "no-op batch handler",
    "worker": "cx-stream worker, at_least_once",
    "worker_exactly_once": "cx-stream worker, exactly_once",
}


def _report(what: str, rate: Rate) -> None:
    cpu = "+".join(f"{percent:.0f}%" for percent in rate.cpu_percent)
    say(
        f"  {what}: {rate.per_second:,.0f} events/s in {rate.seconds:.1f}s; CPU {cpu}"
        f" of a core, broker {rate.broker_cpu_percent:.0f}%, others {rate.others_cores:.2f} cores"
    )


def one_process_runs(
    number: int, broker: Broker, suite: Suite
) -> list[tuple[str, Callable[[], ServiceProcess]]]:
    """The framework's floors, then one worker per guarantee (their order alternated from run
    to run): each its own consumer group, so each reads from offset 0 with fresh changelogs."""
    makers: list[tuple[str, str, Callable[..., ServiceProcess]]] = [
        ("noop", "one-", noop_process),
        ("batch_noop", "one-", batch_noop_process),
    ]
    for guarantee in alternated(suite.guarantees, number):
        key, prefix = WORKERS[guarantee]
        makers.append((key, prefix, partial(worker_process, guarantee=guarantee)))
    return [
        (
            key,
            partial(
                make, broker, suite, f"{key}-{number}",
                {"CX_APP_ID": f"{key}-{number}", "CX_TOPIC_PREFIX": prefix,
                 "CX_PARTITIONS": str(suite.partitions)},
            ),
        )
        for key, prefix, make in makers
    ]  # fmt: skip


def backlog_round(
    number: int, records: list[Record], suite: Suite, scaling: bool, quix: Path | None
) -> dict[str, Any]:
    """One run; `quix` is .venv-quix's interpreter (None: Quix Streams is not measured)."""
    total = len(records)
    say(f"backlog run {number}/{suite.runs}: {total:,} records")
    with running_broker(suite, f"backlog-{number}") as broker:
        prefixes = [WORKERS[guarantee][1] for guarantee in suite.guarantees]
        for prefix in prefixes + ["two-"] * scaling:
            load(broker.bootstrap, prefix, records, suite.partitions)
        rates: dict[str, Rate] = {}
        rates["raw"] = raw_consumer_rate(broker.bootstrap, "one-", total, broker.pid)
        _report(TITLES["raw"], rates["raw"])
        versions: dict[str, str] = {}
        if quix is not None:
            for key, concat in (("quix", False), ("quix_concat", True)):
                rates[key], versions["quix_version"] = quix_rate(
                    quix, broker, suite, f"{key}-{number}", "one-", total, concat
                )
                _report(TITLES[key], rates[key])
        for key, process in one_process_runs(number, broker, suite):
            with process() as running:
                rates[key] = processing_rate([running], total, broker.pid)
            _report(TITLES[key], rates[key])
        split: list[int] = []
        if scaling:
            rates["two_workers"], split = two_workers_rate(number, broker, total, suite)
            _report(
                f"two cx-stream workers ({'+'.join(map(str, split))} partitions)",
                rates["two_workers"],
            )
    order = alternated(suite.guarantees, number)
    return {"two_workers_partitions": split, "guarantee_order": order, **versions} | {
        name: {
            "events": rate.events,
            "seconds": rate.seconds,
            "events_per_second": rate.per_second,
            "cpu_percent": list(rate.cpu_percent),
            "broker_cpu_percent": rate.broker_cpu_percent,
            "others_cores": rate.others_cores,
        }
        for name, rate in rates.items()
    }


def two_workers_rate(
    number: int, broker: Broker, total: int, suite: Suite
) -> tuple[Rate, list[int]]:
    """Two at-least-once workers in one consumer group, started together so both join the
    first generation. Also how many input partitions each owned at the end (4 and 4 when the
    group split them)."""
    env = {
        "CX_APP_ID": f"scale-{number}",
        "CX_TOPIC_PREFIX": "two-",
        "CX_PARTITIONS": str(suite.partitions),
    }
    workers = [worker_process(broker, suite, f"two-{number}-{index}", env) for index in (1, 2)]
    try:
        for worker in workers:
            worker.start()
        rate = processing_rate(workers, total, broker.pid)
        return rate, [len(worker.input_partitions()) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()


BUSY_MACHINE_CORES = 0.25
"""Others' CPU above which the report says the machine was not quiet."""


def _measured(round_: dict[str, Any]) -> list[dict[str, Any]]:
    return [value for value in round_.values() if isinstance(value, dict)]


def _rates(rounds: list[dict[str, Any]], name: str) -> list[float]:
    return [float(r[name]["events_per_second"]) for r in rounds]


def backlog_figures(rounds: list[dict[str, Any]], events: int, scaling: bool) -> list[Figure]:
    size = smaller(events, TARGET_EVENTS, "events")
    raw, noop, worker = _rates(rounds, "raw"), _rates(rounds, "noop"), _rates(rounds, "worker")
    batch_noop = _rates(rounds, "batch_noop")
    figures = [
        Figure("backlog.raw_consumer", "raw aiokafka consumer + orjson decode", "events/s", raw),
        Figure("backlog.noop_agent", "no-op per-event Faust agent", "events/s", noop),
        Figure(
            "backlog.batch_noop",
            "no-op handler behind cx-stream's batch dispatch (its Faust floor)",
            "events/s",
            batch_noop,
        ),
        Figure(
            "backlog.worker",
            "cx-stream worker, all metrics",
            "events/s",
            worker,
            guarantee=AT_LEAST_ONCE,
        ),
        ratio(
            "backlog.worker_to_noop",
            "backlog replay: worker / no-op Faust agent (same run)",
            worker,
            noop,
            AT_LEAST_ONCE,
            Target("at least 6x", 6.0, at_most=False, smaller=size),
        ),
        ratio(
            "backlog.worker_to_batch_noop",
            "backlog replay: worker / no-op batch handler (same run)",
            worker,
            batch_noop,
            AT_LEAST_ONCE,
        ),
        ratio(
            "backlog.worker_to_raw",
            "backlog replay: worker / raw aiokafka consumer (same run)",
            worker,
            raw,
            AT_LEAST_ONCE,
        ),
    ]
    if "quix" in rounds[0]:
        version = rounds[0]["quix_version"]
        quix, concat = _rates(rounds, "quix"), _rates(rounds, "quix_concat")
        figures += [
            Figure(
                "backlog.quix_concat",
                f"Quix Streams {version} stateless loop, the four topics concatenated into one"
                " StreamingDataFrame (as the issue measured its 12,760 events/s): JSON decode +"
                " count (timed in its process, first record to last)",
                "events/s",
                concat,
            ),
            ratio(
                "backlog.worker_to_quix",
                "backlog replay: worker / Quix Streams' stateless loop over the four topics as one"
                " stream, JSON decode + count (same run; the worker timed from the poll that finds"
                " it ready to the poll that finds all processed, Quix in its process from its"
                " first record to its last)",
                worker,
                concat,
                AT_LEAST_ONCE,
                Target("at least 1x", 1.0, at_most=False, smaller=size),
            ),
            Figure(
                "backlog.quix",
                f"Quix Streams {version} stateless loop, one StreamingDataFrame per topic (no time"
                " alignment between the topics): JSON decode + count",
                "events/s",
                quix,
            ),
            ratio(
                "backlog.worker_to_quix_per_topic",
                "backlog replay: worker / Quix Streams' stateless loop, a dataframe per topic",
                worker,
                quix,
                AT_LEAST_ONCE,
            ),
        ]
    if "worker_exactly_once" in rounds[0]:
        exactly = _rates(rounds, "worker_exactly_once")
        figures += [
            Figure(
                "backlog.worker_exactly_once",
                "cx-stream worker, all metrics, a Kafka transaction per input partition and batch",
                "events/s",
                exactly,
                guarantee=EXACTLY_ONCE,
            ),
            ratio(
                "backlog.exactly_once_to_at_least_once",
                "backlog replay: the worker's exactly-once rate / its at-least-once rate"
                " (same run): the cost of exactly-once",
                exactly,
                worker,
                f"{EXACTLY_ONCE} / {AT_LEAST_ONCE}",
            ),
            ratio(
                "backlog.worker_exactly_once_to_noop",
                "backlog replay: worker / no-op Faust agent (same run)",
                exactly,
                noop,
                EXACTLY_ONCE,
                Target("at least 6x", 6.0, at_most=False, smaller=size),
            ),
        ]
    if scaling:
        two = _rates(rounds, "two_workers")
        figures += [
            Figure(
                "scaling.two_workers",
                "two workers, one group",
                "events/s",
                two,
                guarantee=AT_LEAST_ONCE,
            ),
            ratio(
                "scaling.two_to_one",
                "two workers on the two cores / one worker (same run)",
                two,
                worker,
                AT_LEAST_ONCE,
                Target("at least 1.8x", 1.8, at_most=False, smaller=size),
            ),
        ]
    return figures


def run_backlog(records: list[Record], suite: Suite, scaling: bool) -> BenchResult:
    notes: list[str] = []
    quix: Path | None = None
    try:
        quix = quix_python()
    except QuixUnavailable as error:  # the peer is missing, the worker's figures still count
        say(f"Quix Streams not measured: {error}")
        notes.append(f"Quix Streams not measured: {error}")
    rounds = [
        backlog_round(number, records, suite, scaling, quix) for number in range(1, suite.runs + 1)
    ]
    result = BenchResult("backlog", backlog_figures(rounds, len(records), scaling), notes=notes)
    result.details = {"events": len(records), "partitions": suite.partitions, "runs": rounds}
    others = max(rate["others_cores"] for r in rounds for rate in _measured(r))
    if others > BUSY_MACHINE_CORES:
        result.notes.append(
            f"The machine was shared during the backlog runs: up to {others:.2f} cores used by"
            " processes the benchmark did not start (see the per-run table). Rates are then"
            " lower than on a quiet machine; same-run ratios suffer less, but do not cancel it."
        )
    if scaling:
        splits = ", ".join("+".join(map(str, r["two_workers_partitions"])) for r in rounds)
        result.notes.append(
            f"Two workers: input partitions owned at the end of each run: {splits}."
        )
    return result


PROFILED_RECORDS = 300_000
"""Enough for a steady profile; more would only make the suite longer."""


def run_profile(records: list[Record], suite: Suite) -> BenchResult:
    """One extra worker run under py-spy (not one of the measured runs: sampling costs CPU)."""
    subset = records[:PROFILED_RECORDS]
    result = BenchResult("profile")
    say(f"profile: a worker on {len(subset):,} records under py-spy")
    with running_broker(suite, "profile") as broker:
        load(broker.bootstrap, "prof-", subset, suite.partitions)
        env = {"CX_APP_ID": "profile", "CX_TOPIC_PREFIX": "prof-"}
        with worker_process(broker, suite, "profile", env) as worker:
            wait_until_ready(worker)
            with profiled(worker.pid, suite.workdir, "backlog") as top:
                processing_rate([worker], len(subset), broker.pid)
    profile = top()
    if profile is None:
        result.notes.append("No backlog profile: py-spy is not installed or could not attach.")
        return result
    caption = (
        f"py-spy record --nonblocking, {SAMPLES_PER_SECOND} Hz, all threads, of the worker"
        f" ({AT_LEAST_ONCE}) replaying {len(subset):,} records from the moment it was ready:"
        f" {profile.samples:,} samples, {profile.waiting:,} of them waiting for I/O, timers or"
        " locks."
    )
    result.details["profile"] = profile.as_details("Worker, backlog replay", caption)
    return result
