"""Python C-API calls per event made by the compiled core, counted with callgrind.

.venv/bin/python -m bench.crossings          # 2,000 and 4,000 simulated records

The core decodes a batch of records once under callgrind with n records and once with 2n;
the calls from stream._core's code into libpython that the second run made beyond the first,
divided by n, are the calls per event (the module's set-up and the first call's cancel out).
Instruction counts, not time: the same on a busy machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .records import mixed_backlog

CACHE = Path(tempfile.gettempdir()) / "cx-bench-records"
CALLEE = re.compile(r"\((\d+)\)(?: (.*))?")


def _decode(records: int) -> None:
    """The measured process: one batch of `records` simulated records through the decoder."""
    from stream.events import decode

    mixed = mixed_backlog(max(records, 10), seed=7, cache_dir=CACHE)[:records]
    judged_at = time.time() + 86400.0  # no record is in the future
    batch = [(topic, value, judged_at) for topic, _, value in mixed]
    decode(batch[:10])  # the core's first call sets up what later calls reuse
    decode(batch)


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
        _decode(options.run)
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
