"""Restart after SIGKILL, and resident memory, of a worker holding a month of ticket state.

One worker (CX_DATA_DIR on local disk) processes the ticket-heavy traffic of `tickets`
tickets spread over ~27 days (bench.records.ticket_heavy_records). Once its /metrics are
settled, the 28d window of every exported series and the backlog gauge are the reference. Then,
once per run: SIGKILL, start a new process with the same data directory and consumer group, and
time from its start until its 28d numbers equal the reference exactly and it is ready. The 1h,
24h and 7d windows are not compared: their lower edges move while the worker is down, so their
numbers legitimately change; nothing in the data is near the 28d edge.

Resident memory (VmRSS) is read when the first worker is settled, and after each restart.

Then, once per run, a restart whose windows' checkpoint cannot be trusted: the windows listed
in the other order (CX_WINDOWS is a new configuration, its series exported in another order),
so the worker derives its windows from every state, as a worker on a new disk does once Faust
has recovered its tables from their changelogs (that recovery, about 5,000 changelog records/s
in Faust, would make each run minutes long at 1,000,000 tickets). Its "windows restored" log
line gives the states read and the seconds taken.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from stream.broker import free_port

from .context import AT_LEAST_ONCE, TARGET_TICKETS, Suite, smaller
from .cpu import rss_megabytes
from .figures import BenchResult, Figure, Target
from .processes import (
    Broker,
    ChildFailed,
    Samples,
    ServiceProcess,
    parse_samples,
    running_broker,
    wait_until_ready,
    worker_process,
)
from .progress import say
from .rates import processing_rate
from .records import load, ticket_heavy_records

RESTART_TIMEOUT = 300.0
"""A restart not correct after this long is reported as failed (the target is 10 s)."""
POLL_SECONDS = 0.5
"""Scrapes during a restart: each costs the recovering worker some CPU; 0.5 s is the
resolution of the restart time."""
SETTLE_TIMEOUT = 120.0


def reference(samples: Samples) -> Samples:
    """What must be equal after a restart: the 28d window of every series, and the backlog."""
    return {
        key: value
        for key, value in samples.items()
        if ("window", "28d") in key[1] or key[0] == "cx_tickets_open"
    }


def same_numbers(got: Samples, want: Samples) -> bool:
    """Every series and value of `want`, counts exactly, sums and what is derived from them to
    a relative 1e-9 (the tests' tolerance): a derived window adds the same durations in another
    order than the running totals did, which moves the last bits of a float sum."""
    return got.keys() == want.keys() and all(
        math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-9) for key, value in want.items()
    )


def _samples(worker: ServiceProcess) -> Samples | None:
    try:
        return parse_samples(worker.metrics_text())
    except OSError:
        return None


def settled_reference(worker: ServiceProcess, tickets: int) -> Samples:
    """Poll until two scrapes a few publish intervals apart agree and count every ticket."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    previous: Samples = {}
    current: Samples = {}
    while time.monotonic() < deadline:
        worker.check_alive()
        previous, current = current, reference(_samples(worker) or {})
        if current and current == previous and _opened_28d(current) == tickets:
            return current
        time.sleep(5)
    moving = sorted(
        key for key in current.keys() | previous.keys() if current.get(key) != previous.get(key)
    )
    raise ChildFailed(
        f"/metrics did not settle at {tickets} tickets opened in 28d within {SETTLE_TIMEOUT:.0f}s"
        f" (last: {_opened_28d(current)}; {len(moving)} samples still moving, e.g. {moving[:3]})"
    )


ALL_SEGMENTS = {("window", "28d"), ("team", "all"), ("channel", "all"), ("priority", "all")}


def _opened_28d(samples: Samples) -> float | None:
    """cx_tickets_opened over 28 days for the whole organisation."""
    for (name, labels), value in samples.items():
        if name == "cx_tickets_opened" and set(labels) == ALL_SEGMENTS:
            return value
    return None


def state_entries(worker: ServiceProcess) -> float | None:
    """cx_state_entries{table="tickets"} when the worker exports it."""
    samples = _samples(worker) or {}
    return samples.get(("cx_state_entries", (("table", "tickets"),)))


def _successor(killed: ServiceProcess, name: str, **env: str) -> ServiceProcess:
    """The same command, data directory (unless `env` names another) and consumer group; a
    fresh HTTP port."""
    env = {**killed.env, "CX_WEB_PORT": str(free_port()), **env}
    return ServiceProcess(name, killed.command, env, killed.log_path.parent)


WINDOWS = ("1h,24h,7d,28d", "28d,7d,24h,1h")
"""The default windows, and the same in the other order: a configuration the checkpoint was
not made with."""


def timed_restart(
    killed: ServiceProcess, want: Samples, number: int, derive: bool = False
) -> tuple[ServiceProcess, dict[str, float]]:
    """SIGKILL `killed`, start its successor on the same disk, and time it back to service:
    /metrics equal to the reference, and ready again (/health: 200 with its input partitions;
    assigned, tables restored, windows restored: processing). The merge stage restores its
    series table on its own, so the numbers can be right before the worker processes anything;
    both must hold. With `derive`, the successor's windows are listed in the order its
    predecessor's were not, so that it derives them from every state."""
    killed.kill()
    base = killed.name.split("@")[0]
    if derive:
        windows = (
            WINDOWS[1] if killed.env.get("CX_WINDOWS", WINDOWS[0]) == WINDOWS[0] else WINDOWS[0]
        )
        # (at info, for its "windows restored" line)
        successor = _successor(
            killed, f"{base}@derive-{number}", CX_WINDOWS=windows, CX_LOG_LEVEL="info"
        )
    else:
        successor = _successor(killed, f"{base}@{number}")
    started = time.perf_counter()
    successor.start()
    phases = dict.fromkeys(("http_up_seconds", "ready_seconds", "correct_seconds"), math.nan)
    while (elapsed := time.perf_counter() - started) < RESTART_TIMEOUT:
        successor.check_alive()
        if math.isnan(phases["ready_seconds"]) and successor.ready():
            phases["ready_seconds"] = elapsed
        if math.isnan(phases["correct_seconds"]):
            samples = _samples(successor)
            if samples is not None and math.isnan(phases["http_up_seconds"]):
                phases["http_up_seconds"] = elapsed
            if samples is not None and same_numbers(reference(samples), want):
                phases["correct_seconds"] = elapsed
        if not any(math.isnan(seconds) for seconds in phases.values()):
            rss = rss_megabytes(successor.pid)
            if derive:
                derived = _windows_derived(successor.log_path)
                say(
                    f"  restart {number} with other windows: back after {elapsed:.1f}s,"
                    f" windows derived from {derived['states_read']:,} states in"
                    f" {derived['derive_seconds']:.1f}s; RSS {rss:.0f} MB"
                )
                return successor, {"seconds": elapsed, **phases, **derived, "rss_mb": rss}
            say(
                f"  restart {number}: back after {elapsed:.1f}s (HTTP up"
                f" {phases['http_up_seconds']:.1f}s, numbers correct"
                f" {phases['correct_seconds']:.1f}s, input partitions recovered"
                f" {phases['ready_seconds']:.1f}s); RSS {rss:.0f} MB"
            )
            return successor, {"seconds": elapsed, **phases, "rss_mb": rss}
        time.sleep(POLL_SECONDS)
    say(f"  restart {number}: not back after {RESTART_TIMEOUT:.0f}s: {phases}")
    return successor, {"seconds": math.inf, **phases, "rss_mb": math.nan}


def _windows_derived(log_path: Path) -> dict[str, float]:
    """The states read and the seconds taken by the worker's restore of its windows (its
    "windows restored" log line, which comes before it reports ready), which must have derived
    them from the states: no checkpoint loaded."""
    for line in log_path.read_bytes().splitlines():
        if line.startswith(b"{") and b'"windows restored"' in line:
            entry = orjson.loads(line)
            if entry.get("checkpoints_loaded") or not entry.get("states_read"):
                raise ChildFailed(f"{log_path}: the windows were not derived anew: {entry}")
            return {"states_read": entry["states_read"], "derive_seconds": entry["seconds"]}
    raise ChildFailed(f"no 'windows restored' line in {log_path}")


def _rss_when_ready(worker: ServiceProcess) -> float:
    """RSS when the worker first reports ready: start-up, little or no state yet."""
    wait_until_ready(worker)
    return rss_megabytes(worker.pid)


SESSION_TIMEOUT = "6s"
"""CX_KAFKA_SESSION_TIMEOUT of the restarted worker, as the tests set it (Kafka's least, and
what the worker sets itself against Tansu): the group coordinator waits this long for the
killed process before the new one gets its partitions, where production's 45 s would be most
of the restart time."""


def load_and_restart(broker: Broker, suite: Suite, total: int) -> dict[str, Any]:
    env = {
        "CX_APP_ID": "restart",
        "CX_TOPIC_PREFIX": "state-",
        "CX_KAFKA_SESSION_TIMEOUT": SESSION_TIMEOUT,
    }
    worker = worker_process(broker, suite, "restart", env)
    worker.start()
    try:
        rss_empty = _rss_when_ready(worker)
        loading = processing_rate([worker], total, broker.pid)
        say(f"  loaded {total:,} records at {loading.per_second:,.0f} events/s")
        want = settled_reference(worker, suite.tickets)
        loaded = {"rss_mb": rss_megabytes(worker.pid), "state_entries": state_entries(worker)}
        say(f"  settled: RSS {loaded['rss_mb']:.0f} MB (at start {rss_empty:.0f} MB)")
        restarts = []
        for number in range(1, suite.runs + 1):
            worker, restart = timed_restart(worker, want, number)
            restarts.append(restart)
            if math.isinf(restart["seconds"]):
                break  # its state is not what it was: the next restart would measure nothing
        derived = []
        for number in range(1, suite.runs + 1):
            worker, restart = timed_restart(worker, want, number, derive=True)
            derived.append(restart)
            if math.isinf(restart["seconds"]):
                break
    finally:
        worker.stop()
    return {
        "records": total,
        "load_events_per_second": loading.per_second,
        "rss_empty_mb": rss_empty,
        "loaded": loaded,
        "reference_samples": len(want),
        "restarts": restarts,
        "derived_restarts": derived,
    }


def run_restart(suite: Suite) -> BenchResult:
    records = ticket_heavy_records(suite.tickets, suite.seed, suite.cache_dir)
    say(f"restart and memory: {suite.tickets:,} tickets, {len(records):,} ticket-heavy events")
    with running_broker(suite, "restart") as broker:
        load(broker.bootstrap, "state-", records, suite.partitions)
        details = load_and_restart(broker, suite, len(records))
    details["tickets"] = suite.tickets
    return restart_result(details, suite.tickets)


def restart_result(details: dict[str, Any], tickets: int) -> BenchResult:
    size = smaller(tickets, TARGET_TICKETS, "tickets")
    restarts = details["restarts"]
    derived = details["derived_restarts"]
    held = details["loaded"]["state_entries"] or tickets
    rss = [details["loaded"]["rss_mb"], *(r["rss_mb"] for r in restarts + derived)]
    figures = [
        Figure(
            "restart.seconds",
            f"restart after SIGKILL with {tickets:,} tickets: start to correct /metrics and"
            " processing",
            "s",
            [r["seconds"] for r in restarts],
            Target("at most 10 s", 10.0, at_most=True, smaller=size),
            guarantee=AT_LEAST_ONCE,
        ),
        Figure(
            "restart.derive_states_per_second",
            f"a worker deriving its windows from {held:,.0f} tickets' states, as on a new disk"
            " (here a restart with the windows in another order): states read / seconds of its"
            " restore",
            "states/s",
            [r["states_read"] / r["derive_seconds"] for r in derived if "states_read" in r],
            Target("at least 100,000 states/s", 100_000.0, at_most=False, smaller=size),
            guarantee=AT_LEAST_ONCE,
        ),
        Figure(
            "restart.derive_seconds",
            f"restart after SIGKILL with {tickets:,} tickets and other windows: start to correct"
            " /metrics and processing, the windows derived from every state",
            "s",
            [r["seconds"] for r in derived],
            guarantee=AT_LEAST_ONCE,
        ),
        Figure(
            "memory.rss_mb",
            f"resident memory with {held:,.0f} tickets of state (after load, after each restart)",
            "MB",
            rss,
            Target("at most 250 MB", 250.0, at_most=True, worst_case=True, smaller=size),
            guarantee=AT_LEAST_ONCE,
        ),
    ]
    empty = details["rss_empty_mb"]
    details["rss_growth_mb_per_1000_tickets"] = (details["loaded"]["rss_mb"] - empty) * 1000 / held
    notes = [
        f"Restart phases (median from the new process's start): HTTP answering after"
        f" {_median(restarts, 'http_up_seconds')}, 28d numbers correct after"
        f" {_median(restarts, 'correct_seconds')}, ready (/health 200 with its input"
        f" partitions) after {_median(restarts, 'ready_seconds')}; the figure is the later of"
        " the last two. Loading the state ran at"
        f" {details['load_events_per_second']:,.0f} events/s. RSS was {empty:.0f} MB when the"
        f" first worker was ready, {details['loaded']['rss_mb']:.0f} MB with the state loaded.",
    ]
    return BenchResult("restart", figures, details, notes)


def _median(restarts: list[dict[str, float]], name: str) -> str:
    values = [r[name] for r in restarts if math.isfinite(r[name])]
    return _seconds(statistics.median(values)) if values else "n/a"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if math.isfinite(value) else "n/a"
