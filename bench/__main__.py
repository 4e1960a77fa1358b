"""Run the benchmark suite against Apache Kafka; write docs/benchmarks.md and .json.

.venv/bin/python -m bench                  # every benchmark at the targets' sizes
.venv/bin/python -m bench --quick          # small sizes, one run: a smoke test
.venv/bin/python -m bench --broker tansu   # against the embedded broker (at-least-once only)
.venv/bin/python -m bench --only backlog,scaling --events 200000 --runs 5 --profile
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from stream.apache_kafka import KafkaUnavailable, resolve
from stream.simulate import Record

from .accounts import run_accounts
from .backlog import run_backlog, run_profile
from .context import BROKERS, TARGET_EVENTS, TARGET_TICKETS, Suite
from .figures import BenchResult
from .freshness import run_freshness
from .processes import REPO_ROOT, stop_all_children, stop_children_on_signals
from .progress import say
from .records import mixed_backlog
from .report import Invocation, worker_code, write
from .restart import run_restart
from .scrape import run_scrape

BENCHMARKS = ("backlog", "scaling", "freshness", "restart", "memory", "scrape", "accounts")
QUICK = {"events": 20_000, "tickets": 5_000, "runs": 1, "freshness_seconds": 10.0}
FULL = {"events": TARGET_EVENTS, "tickets": TARGET_TICKETS, "runs": 3, "freshness_seconds": 30.0}


def _names(text: str) -> set[str]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(BENCHMARKS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(sorted(unknown))} (known: {', '.join(BENCHMARKS)})"
        )
    return names


SET_BY_THE_SUITE = {
    "CX_BROKER": "--broker chooses the broker",
    "CX_EMBEDDED_BROKER": "--broker tansu sets it",
    "CX_PROCESSING_GUARANTEE": "each figure says which guarantee it measured",
}


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("CX_"):
        raise argparse.ArgumentTypeError(f"{text!r} is not CX_NAME=value")
    if name in SET_BY_THE_SUITE:
        raise argparse.ArgumentTypeError(f"{name} is set by the suite: {SET_BY_THE_SUITE[name]}")
    return name, value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, help=f"backlog records (default {TARGET_EVENTS:,})")
    parser.add_argument(
        "--tickets", type=int, help=f"tickets of state, restart/memory (default {TARGET_TICKETS:,})"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    parser.add_argument(
        "--freshness-seconds", type=float, help="length of one freshness run (default 30)"
    )
    parser.add_argument(
        "--only", type=_names, default=set(BENCHMARKS), help=f"subset of {','.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20k events, 5k tickets, 1 run, 10 s freshness"
    )
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default="kafka",
        help="Apache Kafka's own broker (default; both processing guarantees), or the embedded"
        " Tansu broker (at-least-once only: it has no transactions)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the worker")
    parser.add_argument(
        "--worker-env", type=_setting, action="append", default=[], metavar="CX_NAME=VALUE",
        help="a setting for every worker (repeatable), e.g. CX_SNAPSHOT_INTERVAL=1",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "docs" / "benchmarks.json")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "cx-stream-bench-cache"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep logs and data directories")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.runs < 1 or args.events < 1 or args.tickets < 1:
        parser.error("--runs, --events and --tickets must be positive")
    return args


def suite_from(args: argparse.Namespace, workdir: Path) -> Suite:
    return Suite(
        workdir=workdir,
        cache_dir=args.cache_dir,
        runs=args.runs,
        events=args.events,
        tickets=args.tickets,
        freshness_seconds=args.freshness_seconds,
        seed=args.seed,
        worker_env=dict(args.worker_env),
        profile=args.profile,
        broker=args.broker,
    )


def planned(args: argparse.Namespace, suite: Suite) -> list[tuple[str, Callable[[], BenchResult]]]:
    """The benchmarks to run, in order: short ones first, so a failure shows early."""
    only: set[str] = args.only
    plan: list[tuple[str, Callable[[], BenchResult]]] = []
    if "accounts" in only:
        plan.append(("accounts", lambda: run_accounts(suite)))
    if "scrape" in only:
        plan.append(("scrape", lambda: run_scrape(suite)))
    if "freshness" in only:
        plan.append(("freshness", lambda: run_freshness(suite, args.quick)))
    if only & {"restart", "memory"}:
        plan.append(("restart and memory", lambda: run_restart(suite)))
    if only & {"backlog", "scaling"}:
        scaling = "scaling" in only
        plan.append(("backlog", lambda: run_backlog(backlog_records(suite), suite, scaling)))
    if args.profile:
        plan.append(("profile", lambda: run_profile(backlog_records(suite), suite)))
    return plan


def backlog_records(suite: Suite) -> list[Record]:
    return mixed_backlog(suite.events, suite.seed, suite.cache_dir)


def run_plan(plan: list[tuple[str, Callable[[], BenchResult]]]) -> tuple[list[BenchResult], bool]:
    """Each benchmark on its own: one that fails is reported, and the others still run."""
    results, failed = [], False
    for name, benchmark in plan:
        code = worker_code()
        say(f"== {name} (worker code {code})")
        try:
            result = benchmark()
        except Exception as error:  # a failed benchmark is a finding; the rest still count
            failed = True
            say(f"{name} failed: {error}")
            traceback.print_exc(file=sys.stderr)
            result = BenchResult(name, notes=[f"**{name} failed**: {error}"])
        finally:
            stop_all_children()
        code_after = worker_code()
        result.details["worker_code"] = code if code == code_after else f"{code} -> {code_after}"
        results.append(result)
    return results, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.broker == "kafka":
        try:
            resolve()  # Java and the broker's jars (Maven, the first time), before anything else
        except KafkaUnavailable as error:
            say(f"cannot run against Apache Kafka: {error} (or use --broker tansu)")
            return 2
    stop_children_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="cx-bench-"))
    suite = suite_from(args, workdir)
    started, clock, load = datetime.now(UTC), time.monotonic(), os.getloadavg()
    say(f"logs and data in {workdir}; record cache in {suite.cache_dir}")
    failed = True
    try:
        results, failed = run_plan(planned(args, suite))
        invocation = Invocation(
            command=".venv/bin/python -m bench "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            started=started.strftime("%Y-%m-%d %H:%M"),
            minutes=(time.monotonic() - clock) / 60,
            suite=suite,
            quick=args.quick,
            load_at_start=load,
        )
        write(results, invocation, args.out, args.json)
        say(f"wrote {args.out} and {args.json}")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (Interrupted)
        say("interrupted: stopping every process this run started")
        return 130
    finally:
        stop_all_children()
        if failed or args.keep:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
