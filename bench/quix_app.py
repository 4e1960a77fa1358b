"""Quix Streams' bare stateless loop: the peer the backlog replay compares the worker with.

    .venv-quix/bin/python -I bench/quix_app.py --bootstrap 127.0.0.1:9092 --group quix-1 \\
        --expected 20000 --state-dir /tmp/quix-1 one-ticket-opened one-ticket-replied ...

Runs in .venv-quix (bench/quix.py makes it), never in the project's venv, and imports nothing
of the project. A stock Application reads the topics from the earliest offset in a consumer
group of its own, one StreamingDataFrame per topic, or with --concat the topics' dataframes
concatenated into one (as a user reading four topics as one stream would write it; Quix then
aligns the topics by timestamp), and the only per-record work is Quix's JSON deserializer and a
counter. It stops itself once it counted --expected records.

stdout has two JSON lines: {"started": true} at the first record (the benchmark starts its CPU
watch on it), then {"events": n, "seconds": s, "version": v} at the last, timed in this process
from the first record to the last. Without records for --start-timeout seconds (before the
first) or --stall-timeout seconds (after), it stops without the second line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import quixstreams
from quixstreams import Application


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def stop_when_stuck(
    app: Application, counted: Callable[[], int], start_timeout: float, stall_timeout: float
) -> None:
    """app.stop() once the count has not moved for the timeout that applies."""
    last, moved = 0, time.monotonic()
    while True:
        time.sleep(1)
        now = counted()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > (stall_timeout if now else start_timeout):
            app.stop()
            return


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/quix_app.py", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="kept out of the working directory")
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--stall-timeout", type=float, default=120.0)
    parser.add_argument("--concat", action="store_true", help="one dataframe of all topics")
    parser.add_argument("topics", nargs="+")
    args = parser.parse_args()
    expected: int = args.expected
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    counted, started = 0, 0.0

    def count(_value: Any) -> None:
        nonlocal counted, started
        if not counted:
            started = time.perf_counter()
            emit({"started": True})
        counted += 1
        if counted == expected:
            seconds = time.perf_counter() - started
            emit({"events": counted, "seconds": seconds, "version": quixstreams.__version__})
            app.stop()

    frames = [app.dataframe(app.topic(name, value_deserializer="json")) for name in args.topics]
    if args.concat:
        joined = frames[0]
        for frame in frames[1:]:
            joined = joined.concat(frame)
        frames = [joined]
    for frame in frames:
        frame.update(count)
    watchdog = (app, lambda: counted, args.start_timeout, args.stall_timeout)
    threading.Thread(target=stop_when_stuck, args=watchdog, daemon=True).start()
    app.run()
    if counted < expected:
        print(f"stopped at {counted} of {expected} records: none came in time", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
