"""py-spy against a running worker, and the top lines of what it saw.

py-spy samples the process from outside (`record --nonblocking`: it never pauses the worker)
and writes collapsed stacks ("frame;frame;frame count"). Own time is where the sampled stack
ended; total time counts a function once per sample that has it on the stack below the event
loop's dispatch.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import REPO_ROOT, start_child

SAMPLES_PER_SECOND = 100


def py_spy_path() -> str | None:
    """py-spy from this virtualenv, else from PATH; None when it is not installed."""
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


WAITING = frozenset({"EpollSelector.select", "Condition.wait", "Event.wait", "Lock.acquire"})
"""Innermost functions that mean the thread was waiting (the event loop for I/O or a timer,
a thread for a lock), not working: py-spy cannot always tell idle threads apart."""
DISPATCH = "Handle._run"
"""asyncio runs each callback and task step under Handle._run: the frames below it say which
part of the worker the time went to; those above it are on every stack."""


@dataclass(frozen=True)
class ProfileTop:
    samples: int
    waiting: int
    """Samples whose innermost function is in WAITING; percentages are of the others."""
    own: list[tuple[str, int]]
    total: list[tuple[str, int]]

    @property
    def busy(self) -> int:
        return self.samples - self.waiting

    def lines(self, heading: str, rows: list[tuple[str, int]]) -> list[str]:
        return [
            f"{heading:>7}  function (file)",
            *(f"{100 * count / max(self.busy, 1):6.1f}%  {frame}" for frame, count in rows),
        ]

    def as_details(self, title: str, caption: str) -> dict[str, Any]:
        return {
            "title": title,
            "caption": caption,
            "samples": self.samples,
            "waiting_samples": self.waiting,
            "own_lines": self.lines("own", self.own),
            "total_lines": self.lines("total", self.total),
        }


def _short(frame: str) -> str:
    """py-spy's --nolineno frame "function (path/to/file.py)", with a shorter path."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    for prefix in ("site-packages/", "python3.11/", f"{REPO_ROOT}/"):
        path = path.split(prefix, 1)[-1]
    return f"{name} ({path})"


def _below_dispatch(frames: list[str]) -> list[str]:
    for index, frame in enumerate(frames):  # outermost first
        if frame.startswith(DISPATCH + " "):
            return frames[index + 1 :] or frames
    return frames


def top_of_profile(raw_path: Path, count: int = 15) -> ProfileTop:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = waiting = 0
    for line in raw_path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        weight = int(number)
        frames = [_short(frame) for frame in stack.split(";")]
        samples += weight
        if frames[-1].split(" (")[0] in WAITING:
            waiting += weight
            continue
        own[frames[-1]] += weight
        for frame in set(_below_dispatch(frames)):
            total[frame] += weight
    return ProfileTop(samples, waiting, own.most_common(count), total.most_common(count))


class PySpy:
    """`py-spy record` attached to `pid` until stop(); SIGINT makes it write its output."""

    def __init__(self, executable: str, pid: int, output: Path, log_path: Path) -> None:
        command = [
            executable, "record", "--pid", str(pid), "--format", "raw", "--nolineno",
            "--nonblocking", "--rate", str(SAMPLES_PER_SECOND), "--output", str(output),
        ]  # fmt: skip
        self.output = output
        self.process = start_child(command, dict(os.environ), log_path)

    def stop(self) -> bool:
        """Stop sampling; True when a profile was written."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output.exists() and self.output.stat().st_size > 0


@contextmanager
def profiled(pid: int, workdir: Path, name: str) -> Iterator[Callable[[], ProfileTop | None]]:
    """py-spy on `pid` for the duration of the block; call the yielded function after the
    block for the top of the profile (None when py-spy is missing or could not attach)."""
    executable = py_spy_path()
    output = workdir / f"{name}.pyspy.txt"
    spy = PySpy(executable, pid, output, workdir / f"{name}.pyspy.log") if executable else None
    written = False

    def top() -> ProfileTop | None:
        return top_of_profile(output) if written else None

    try:
        yield top
    finally:
        written = spy is not None and spy.stop()
