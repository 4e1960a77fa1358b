"""Figures: one number per run, reported as the median of the runs with their spread."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them at or below.
    No interpolation, so a p99 is a latency that was really observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class Target:
    """A figure's target: `limit` as an upper (`at_most`) or lower bound on the median."""

    text: str
    limit: float
    at_most: bool
    worst_case: bool = False
    """Judge the worst run (largest for an upper bound), not the median: for a ceiling that
    must hold all the time, such as resident memory."""
    smaller: str = ""
    """When this run used a smaller size than the target names (e.g. --quick), which size:
    "200,000 of 1,000,000 events"."""

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.limit if self.at_most else value >= self.limit


@dataclass
class Figure:
    key: str
    """Stable identifier in the JSON file, e.g. backlog.worker_to_noop."""
    title: str
    unit: str
    values: list[float]
    target: Target | None = None
    note: str = ""
    guarantee: str = ""
    """The worker's processing guarantee the figure is for ("at_least_once", "exactly_once",
    or both for a ratio between them); "" for a baseline, which keeps no state."""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def low(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def high(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def judged(self) -> float:
        """The value the target is judged on: the median, or the worst run."""
        if self.target is None or not self.target.worst_case:
            return self.median
        return self.high if self.target.at_most else self.low

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "median": _finite(self.median),
            "min": _finite(self.low),
            "max": _finite(self.high),
            "runs": [_finite(value) for value in self.values],
            "target": None
            if self.target is None
            else {
                "text": self.target.text,
                "limit": self.target.limit,
                "at_most": self.target.at_most,
                "measured_at_smaller_size": self.target.smaller or None,
                "judged_on": "worst run" if self.target.worst_case else "median",
                "met": self.target.met(self.judged),
            },
            "note": self.note,
            "guarantee": self.guarantee or None,
        }


def ratio(
    key: str,
    title: str,
    over: list[float],
    under: list[float],
    guarantee: str,
    target: Target | None = None,
) -> Figure:
    """Per run, a figure of `over` / the same run's `under` (same records, minutes apart)."""
    values = [a / b for a, b in zip(over, under, strict=True)]
    return Figure(key, title, "x", values, target, guarantee=guarantee)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a figure that could not be measured is null."""
    return value if math.isfinite(value) else None


@dataclass
class BenchResult:
    """What one benchmark hands to the report: its figures, raw details and method notes."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
