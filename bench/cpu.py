"""CPU time and memory of processes, from /proc: free to read, so it can be read often."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


class ProcGone(RuntimeError):
    """A process has no /proc entry any more."""


def rss_megabytes(pid: int) -> float:
    """Resident set size from /proc (VmRSS, in kB), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise ProcGone(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class CpuUse:
    percent: list[float]
    """Per watched pid: CPU time / wall time (100 = one core)."""
    own_percent: float
    """The benchmark process itself (the raw consumer runs in it)."""
    others_cores: float
    """CPU used by everything else on the machine, in cores."""


class CpuWatch:
    """CPU used by the watched processes, by this one and by everything else, over a span.

    The machine is shared: 'others' (CPU used by processes the benchmark did not start) says
    how much a figure may have been slowed by someone else's work.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.perf_counter()
        self.before = [cpu_seconds(pid) for pid in pids]
        self.machine_before = _machine_busy_seconds()
        self.own_before = _own_cpu_seconds()

    def stop(self) -> CpuUse:
        wall = time.perf_counter() - self.started
        used = [
            cpu_seconds(pid) - before for pid, before in zip(self.pids, self.before, strict=True)
        ]
        own = _own_cpu_seconds() - self.own_before
        machine = _machine_busy_seconds() - self.machine_before
        others = max(machine - sum(used) - own, 0.0) / wall
        return CpuUse([100 * seconds / wall for seconds in used], 100 * own / wall, others)


class BusyMeter:
    """How many cores some processes used since the previous reading (from /proc: free)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.last_cpu = self._cpu()
        self.last_at = time.perf_counter()

    def _cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def cores(self) -> float:
        cpu, at = self._cpu(), time.perf_counter()
        used = (cpu - self.last_cpu) / max(at - self.last_at, 1e-6)
        self.last_cpu, self.last_at = cpu, at
        return used
