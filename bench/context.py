"""What every benchmark needs to know about this invocation of the suite."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stream.config import GUARANTEES, ProcessingGuarantee

TARGET_EVENTS = 1_000_000
"""The backlog size the targets name."""
TARGET_TICKETS = 1_000_000
"""The ticket count the restart and memory targets name."""
PARTITIONS = 8
"""Partitions of every input topic: the worker's default CX_PARTITIONS, so two workers get four
each; the worker adopts the partition count of existing input topics."""

BROKERS = ("kafka", "tansu")
"""--broker: Apache Kafka's own broker (stream.apache_kafka, the default), or the embedded
Tansu broker (stream.broker.EmbeddedBroker) with the worker's workarounds for it."""
AT_LEAST_ONCE: ProcessingGuarantee = "at_least_once"
"""The worker's default guarantee: every figure that names no other is for it."""
EXACTLY_ONCE: ProcessingGuarantee = "exactly_once"


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
    broker: str = "kafka"
    """One of BROKERS."""

    @property
    def guarantees(self) -> tuple[ProcessingGuarantee, ...]:
        """The processing guarantees to measure: exactly-once needs Kafka's transactions,
        which Tansu lacks (the worker refuses it there)."""
        return GUARANTEES if self.broker == "kafka" else (AT_LEAST_ONCE,)


def alternated(guarantees: tuple[ProcessingGuarantee, ...], run: int) -> list[ProcessingGuarantee]:
    """The guarantees in the order run `run` (from 1) measures them: reversed every other run,
    so that neither is always measured first (on a fresher broker, a cooler machine)."""
    return list(guarantees if run % 2 else reversed(guarantees))


def smaller(measured: int, target: int, unit: str) -> str:
    """Target.smaller for a figure measured at `measured` of the `target` size."""
    return f"{measured:,} of {target:,} {unit}" if measured < target else ""
