"""Quix Streams' stateless loop (bench/quix_app.py) on the backlog, in a venv of its own.

Quix Streams is not in the project's venv: its requirements overlap the worker's (rocksdict,
orjson, rich), and installing it there could move versions the worker pins. .venv-quix is made
on first use and reused after.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from stream.broker import stop_process
from stream.events import TOPICS

from .context import Suite
from .cpu import CpuWatch
from .processes import REPO_ROOT, Broker, ChildFailed, start_child
from .progress import say
from .rates import STALL_TIMEOUT, START_TIMEOUT, Rate

VENV = REPO_ROOT / ".venv-quix"
REQUIREMENT = "quixstreams>=3.28,<4"
APP = Path(__file__).with_name("quix_app.py")
EXIT_TIMEOUT = 60.0
"""Seconds it may take to commit and leave its group once it counted everything."""


class QuixUnavailable(RuntimeError):
    """.venv-quix could not be made (no python3.11, no network for pip, ...)."""


def _setup(command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise QuixUnavailable(f"{shlex.join(command)}: {error}") from error
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise QuixUnavailable(f"{shlex.join(command)} failed ({result.returncode}): {last}")


def quix_python() -> Path:
    """.venv-quix's interpreter, with REQUIREMENT installed (on first use, or when it changed:
    the file `installed` names what was, and is written only once pip succeeded)."""
    python, installed = VENV / "bin" / "python", VENV / "installed"
    if installed.exists() and installed.read_text() == REQUIREMENT:
        return python
    say(f"installing {REQUIREMENT} into {VENV} (first use; pip, a minute or two)")
    if not python.exists():
        _setup(["python3.11", "-m", "venv", str(VENV)])
    _setup([str(python), "-m", "pip", "install", "--quiet", REQUIREMENT])
    installed.write_text(REQUIREMENT)
    return python


def _lines(output: Path) -> list[dict[str, Any]]:
    """The complete JSON lines the app has written so far."""
    return [orjson.loads(line) for line in output.read_bytes().split(b"\n")[:-1]]


def _exit_status(process: subprocess.Popen[bytes]) -> int | None:
    """Its exit status once it exited, else None. Not reaped here: the CPU watch still reads
    its /proc entry."""
    exited = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return None if exited is None else exited.si_status


def quix_rate(
    python: Path, broker: Broker, suite: Suite, name: str, prefix: str, total: int, concat: bool
) -> tuple[Rate, str]:
    """Records/s of bench/quix_app.py reading the `total` records under `prefix`, and its Quix
    Streams version. Timed in the app from its first record to its last; its and the broker's
    CPU from the benchmark, from the app's mark at its first record to its result (each seen
    within 0.05 s)."""
    output = suite.workdir / f"{name}.out"
    log = suite.workdir / f"{name}.log"
    command = [
        str(python), "-I", str(APP),
        "--bootstrap", broker.bootstrap, "--group", name, "--expected", str(total),
        "--state-dir", str(suite.workdir / name),
        "--start-timeout", str(START_TIMEOUT), "--stall-timeout", str(STALL_TIMEOUT),
        *(["--concat"] if concat else []),
        *(prefix + topic for topic in TOPICS),
    ]  # fmt: skip
    process = start_child(command, os.environ, log, output)
    try:
        watch: CpuWatch | None = None
        while True:
            status = _exit_status(process)  # before the read: once it exited, all is written
            lines = _lines(output)
            if lines and watch is None:
                watch = CpuWatch([process.pid, broker.pid])
            if len(lines) == 2:
                break
            if status is not None:
                raise ChildFailed(f"{name} exited ({status}); see {log}")
            time.sleep(0.05)
        assert watch is not None
        use = watch.stop()
        try:
            process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise ChildFailed(f"{name} did not exit once it counted all; see {log}") from error
    finally:
        stop_process(process, timeout=15)
    result = lines[1]
    cpu, broker_cpu = use.percent
    rate = Rate(result["events"], result["seconds"], (cpu,), broker_cpu, use.others_cores)
    return rate, str(result["version"])
