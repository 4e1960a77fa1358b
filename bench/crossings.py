"""Python C-API calls per event made by the compiled core, counted with callgrind.

.venv/bin/python -m bench.crossings          # 2,000 and 4,000 simulated records

The pipeline takes the records in batches of 500, as the worker's ingest does (decoded in one
call into the core, their states' changes folded into the windows in one call per table and
partition), once under callgrind with n records and once with 2n; the calls from
stream._core's code into libpython that the second run made beyond the first, divided by n,
are the calls per event (the module's set-up and the first batch's cancel out). Instruction
counts, not time: the same on a busy machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from stream.pipeline import Checkpoint, InputRecord, Pipeline, StoredState, TableName
from stream.tickets import TicketRules
from stream.windows import parse_windows

from .records import mixed_backlog

CACHE = Path(tempfile.gettempdir()) / "cx-bench-records"
CALLEE = re.compile(r"\((\d+)\)(?: (.*))?")


BATCH = 500
PARTITIONS = 4


class _States:
    """The pipeline's states in dicts, without checkpoints: all a batch's processing reads."""

    def __init__(self) -> None:
        self.tables: dict[tuple[TableName, int], dict[str, StoredState]] = {}

    def get(self, table: TableName, partition: int, key: str) -> StoredState | None:
        return self.tables.get((table, partition), {}).get(key)

    def put(self, table: TableName, partition: int, key: str, value: StoredState | None) -> None:
        entries = self.tables.setdefault((table, partition), {})
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value

    def items(self, table: TableName, partition: int) -> Iterator[tuple[str, StoredState]]:
        yield from self.tables.get((table, partition), {}).items()

    def load_checkpoint(self, table: TableName, partition: int) -> Checkpoint:
        return Checkpoint([], {})


def _process(records: int) -> None:
    """The measured process: `records` simulated records through the pipeline, a batch at a
    time, after a first batch that sets up what later ones reuse."""
    mixed = mixed_backlog(records + BATCH, seed=7, cache_dir=CACHE)
    judged_at = time.time() + 86400.0  # no record is in the future
    inputs: list[InputRecord] = [
        (topic, zlib.crc32(key) % PARTITIONS, value, judged_at, None) for topic, key, value in mixed
    ]
    pipeline = Pipeline(parse_windows("1h,24h,7d,28d"), TicketRules(), _States())
    for start in range(0, len(inputs), BATCH):
        pipeline.process(inputs[start : start + BATCH])
        pipeline.settle(judged_at)


def core_calls(profile: Path) -> Counter[str]:
    """Calls from stream._core's code into libpython, by the libpython function called."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}

    def name(kind: str, text: str) -> str:
        found = CALLEE.match(text)
        if found is None:
            return text
        if found.group(2):
            names[kind][found.group(1)] = found.group(2)
        return names[kind].get(found.group(1), text)

    calls: Counter[str] = Counter()
    caller_object = callee_object = callee = ""
    for line in profile.read_text().splitlines():
        field, _, value = line.partition("=")
        if field == "ob":
            caller_object, callee_object = name("ob", value), ""
        elif field == "fn":
            callee_object = ""
        elif field == "cob":
            callee_object = name("ob", value)
        elif field == "cfn":
            callee = name("fn", value)
        elif field == "calls":
            if "_core" in caller_object and "libpython" in (callee_object or caller_object):
                calls[callee] += int(value.split()[0])
            callee_object = ""
    return calls


def _profile(records: int, folder: Path) -> Counter[str]:
    out = folder / f"callgrind.{records}"
    subprocess.run(
        [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, "-m", "bench.crossings", "--run", str(records)),
        ],
        check=True,
        capture_output=True,
    )
    return core_calls(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crossings", description=__doc__)
    parser.add_argument("--records", type=int, default=2000, help="n (default 2,000)")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured process
    options = parser.parse_args()
    if options.run is not None:
        _process(options.run)
        return
    n = options.records
    with tempfile.TemporaryDirectory() as folder:
        once, twice = _profile(n, Path(folder)), _profile(2 * n, Path(folder))
    extra = {callee: twice[callee] - once[callee] for callee in twice}
    print(f"Python C-API calls by the core per event: {sum(extra.values()) / n:.2f}")
    for callee, count in sorted(extra.items(), key=lambda item: -item[1]):
        if count / n >= 0.01:
            print(f"  {count / n:6.2f}  {callee}")


if __name__ == "__main__":
    main()
