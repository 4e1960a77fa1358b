"""What every benchmark needs to know about this invocation of the suite."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

TARGET_EVENTS = 1_000_000
"""The backlog size the targets name."""
TARGET_TICKETS = 1_000_000
"""The ticket count the restart and memory targets name."""
PARTITIONS = 8
"""Partitions of every input topic: the worker's default CX_PARTITIONS, so two workers get four
each; the worker adopts the partition count of existing input topics."""


@dataclass(frozen=True)
class Suite:
    workdir: Path
    """Logs and worker data directories of this invocation."""
    cache_dir: Path
    runs: int
    events: int
    """Records of the backlog replay and the two-worker run."""
    tickets: int
    """Tickets of state for the restart and memory benchmarks."""
    freshness_seconds: float
    """Length of one freshness run at a steady 500 events/s."""
    seed: int = 7
    partitions: int = PARTITIONS
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra CX_* settings for every worker (--worker-env), for experiments."""
    profile: bool = False


def smaller(measured: int, target: int, unit: str) -> str:
    """Target.smaller for a figure measured at `measured` of the `target` size."""
    return f"{measured:,} of {target:,} {unit}" if measured < target else ""
