"""Event-time rolling windows: buckets of mergeable tallies, with retraction. No Kafka here.

A window W covers event times (now - W, now]. Each window keeps buckets W/120 wide, so the
error at its lower edge is at most W/120 (the contract allows W/60), plus a running total of
its buckets: adding an observation touches one bucket and the total, and moving the clock
forward subtracts the buckets that fell out. The upper edge is exact: an event stamped in the
future (up to five minutes is valid) waits, unbucketed, until the clock reaches it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import Segment
from .stats import QuantileSketch, is_ces_low_effort, is_csat_satisfied, nps_category, sketch_key
from .tickets import Observation

BUCKETS_PER_WINDOW = 120

SegmentKey = tuple[str, str]
"""(dimension, value): ("all", "all"), ("team", "billing"), ("channel", "chat"), ..."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '7d', '2w' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h, 7d or 2w")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    seconds: float

    @property
    def bucket_seconds(self) -> float:
        return self.seconds / BUCKETS_PER_WINDOW


def parse_windows(text: str) -> tuple[WindowSpec, ...]:
    """'1h,24h,7d,28d' -> window specs, ordered as given; names are the labels exported."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no windows given; expected a list like 1h,24h,7d,28d")
    if len(set(names)) != len(names):
        raise ValueError(f"windows {text!r} name a window twice")
    return tuple(WindowSpec(name, parse_duration(name)) for name in names)


def segment_keys(segment: Segment) -> tuple[SegmentKey, ...]:
    """The series an observation counts in: the whole, and each single dimension value."""
    return (
        ("all", "all"),
        ("team", segment.team),
        ("channel", segment.channel),
        ("priority", segment.priority),
    )


_NPS_COUNTS = {
    "promoter": "nps_promoters",
    "passive": "nps_passives",
    "detractor": "nps_detractors",
}


@dataclass(frozen=True, slots=True)
class _DurationFields:
    """Where a duration observation of one kind is tallied."""

    count: str
    seconds_sum: str
    breaches: str
    sketch: str
    business_sum: str
    business_sketch: str


def _duration_fields(name: str) -> _DurationFields:
    return _DurationFields(
        f"{name}_count",
        f"{name}_seconds_sum",
        f"{name}_sla_breaches",
        f"{name}_seconds",
        f"{name}_business_seconds_sum",
        f"{name}_business_seconds",
    )


_DURATIONS = {name: _duration_fields(name) for name in ("first_response", "resolution")}


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one observation adds to every tally it counts in, worked out once: the counts and
    sums it moves, and the sketch buckets its durations fall in (None: the zero bucket)."""

    counts: tuple[tuple[str, float], ...]
    sketches: tuple[tuple[str, int | None], ...] = ()


def contribution(observation: Observation) -> Contribution:
    kind, value = observation.kind, observation.value
    counts: list[tuple[str, float]] = []
    sketches: list[tuple[str, int | None]] = []
    if kind == "opened":
        counts.append(("tickets_opened", 1))
    elif kind == "first_response" or kind == "resolution":
        fields = _DURATIONS[kind]
        counts += [(fields.count, 1), (fields.seconds_sum, value)]
        counts.append((fields.breaches, observation.flag))
        sketches.append((fields.sketch, sketch_key(value)))
        if observation.business is not None:
            counts.append((fields.business_sum, observation.business))
            sketches.append((fields.business_sketch, sketch_key(observation.business)))
    elif kind == "full_resolution":
        counts += [("full_resolution_count", 1), ("full_resolution_seconds_sum", value)]
        sketches.append(("full_resolution_seconds", sketch_key(value)))
    elif kind == "resolved":
        counts += [
            ("tickets_resolved", 1),
            ("one_touch_tickets", observation.flag),
            ("reopened_tickets", observation.reopened),
            ("first_contact_resolutions", observation.flag and not observation.reopened),
        ]
    elif kind == "reopen":
        counts.append(("ticket_reopens", 1))
    elif kind == "nps":
        counts.append((_NPS_COUNTS[nps_category(int(value))], 1))
    elif kind == "csat":
        counts += [("csat_responses", 1), ("csat_score_sum", value)]
        counts.append(("csat_satisfied", is_csat_satisfied(int(value))))
    elif kind == "ces":
        counts += [("ces_responses", 1), ("ces_score_sum", value)]
        counts.append(("ces_low_effort", is_ces_low_effort(int(value))))
    return Contribution(tuple((name, amount) for name, amount in counts if amount), tuple(sketches))


class Tally:
    """What a set of observations adds up to: counts, sums and duration sketches."""

    __slots__ = ("counts", "observations", "sketches")

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.sketches: dict[str, QuantileSketch] = {}
        """Durations by metric name (first_response_seconds, ...), for their quantiles."""
        self.observations = 0
        """How many observations it holds: a bucket at 0 can go."""

    def quantile(self, name: str, q: float) -> float | None:
        sketch = self.sketches.get(name)
        return None if sketch is None else sketch.quantile(q)

    def add(self, contribution: Contribution, sign: int) -> None:
        """Add (sign=1) or retract (sign=-1) one observation's contribution."""
        self.observations += sign
        counts = self.counts
        for name, amount in contribution.counts:
            counts[name] = counts.get(name, 0) + sign * amount
        for name, key in contribution.sketches:
            sketch = self.sketches.get(name)
            if sketch is None:
                sketch = self.sketches[name] = QuantileSketch()
            sketch.add_key(key, sign)

    def merge(self, other: Tally, sign: int = 1) -> None:
        self.observations += sign * other.observations
        counts = self.counts
        for name, amount in other.counts.items():
            counts[name] = counts.get(name, 0) + sign * amount
        for name, sketch in other.sketches.items():
            mine = self.sketches.get(name)
            if mine is None:
                mine = self.sketches[name] = QuantileSketch()
            mine.merge(sketch, sign)

    def count(self, name: str) -> int:
        return round(self.counts.get(name, 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": {name: amount for name, amount in self.counts.items() if amount},
            "sketches": {
                name: sketch.to_json() for name, sketch in self.sketches.items() if sketch.count
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        tally.counts = dict(data["counts"])
        tally.sketches = {
            name: QuantileSketch.from_json(sketch) for name, sketch in data["sketches"].items()
        }
        return tally


@dataclass(slots=True)
class _Window:
    buckets: dict[int, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)


@dataclass(slots=True)
class SegmentWindows:
    """One series' state: how many tickets and responses refer to it, its backlog, its windows."""

    windows: list[_Window]
    references: int = 0
    tickets_open: int = 0


_REFERENCING_KINDS = frozenset({"opened", "nps", "csat", "ces"})


class PartitionWindows:
    """All series of one input partition, kept current as observations come and go."""

    def __init__(self, specs: Sequence[WindowSpec], now: float) -> None:
        self.specs = tuple(specs)
        self.segments: dict[SegmentKey, SegmentWindows] = {}
        self.changed: set[SegmentKey] = set()
        self.now = now
        self._lowest = [self._lowest_bucket(spec, now) for spec in self.specs]
        # observations stamped after `now` (clock skew, up to five minutes): not in any
        # window yet, kept exactly until the clock reaches them
        self._pending: Counter[Observation] = Counter()

    @staticmethod
    def _lowest_bucket(spec: WindowSpec, now: float) -> int:
        return math.floor((now - spec.seconds) / spec.bucket_seconds)

    def observe(self, observation: Observation, sign: int, totals: bool = True) -> None:
        """Add (sign=1) or retract (sign=-1) one observation in each series it counts in.

        With `totals` False only the buckets change (a rebuild adds many observations, then
        sums the buckets once with `sum_buckets`)."""
        windowed = observation.kind != "backlog"
        if windowed and observation.at > self.now:
            self._pending[observation] += sign
            if not self._pending[observation]:
                del self._pending[observation]
            windowed = False
        if windowed:
            indices = self._bucket_indices(observation.at)
            adds = contribution(observation)
        for key in segment_keys(observation.segment):
            segment = self.segments.get(key)
            if segment is None:
                segment = self.segments[key] = SegmentWindows([_Window() for _ in self.specs])
            self.changed.add(key)
            if observation.kind in _REFERENCING_KINDS:
                segment.references += sign
            elif observation.kind == "backlog":
                segment.tickets_open += sign
            if windowed:
                self._observe_windows(segment, adds, sign, indices, totals)
            if segment.references <= 0 and segment.tickets_open <= 0:
                del self.segments[key]

    def _bucket_indices(self, at: float) -> list[int | None]:
        """The bucket of time `at` in each window, None where it is older than the window."""
        indices: list[int | None] = []
        for spec, lowest in zip(self.specs, self._lowest, strict=True):
            index = math.floor(at / spec.bucket_seconds)
            indices.append(index if index >= lowest else None)
        return indices

    def _observe_windows(
        self,
        segment: SegmentWindows,
        adds: Contribution,
        sign: int,
        indices: list[int | None],
        totals: bool = True,
    ) -> None:
        for index, window in zip(indices, segment.windows, strict=True):
            if index is None:
                continue  # older than the window: still in ticket state, in no window
            bucket = window.buckets.get(index)
            if bucket is None:
                if sign < 0:
                    continue  # its bucket expired since it was added
                bucket = window.buckets[index] = Tally()
            bucket.add(adds, sign)
            if totals:
                window.total.add(adds, sign)
            if not bucket.observations:
                del window.buckets[index]

    def sum_buckets(self) -> None:
        """Set every window's running total to the sum of its buckets."""
        for segment in self.segments.values():
            for window in segment.windows:
                window.total = Tally()
                for bucket in window.buckets.values():
                    window.total.merge(bucket)

    def advance(self, now: float) -> None:
        """Move the windows to wall-clock `now`: expire old buckets, count what came due."""
        if now <= self.now:
            return
        self.now = now
        for position, spec in enumerate(self.specs):
            lowest = self._lowest_bucket(spec, now)
            if lowest == self._lowest[position]:
                continue
            self._lowest[position] = lowest
            for key, segment in self.segments.items():
                window = segment.windows[position]
                for index in [index for index in window.buckets if index < lowest]:
                    window.total.merge(window.buckets.pop(index), -1)
                    self.changed.add(key)
        due = [observation for observation in self._pending if observation.at <= now]
        for observation in due:
            count = self._pending.pop(observation)
            indices = self._bucket_indices(observation.at)
            adds = contribution(observation)
            for key in segment_keys(observation.segment):
                self.changed.add(key)
                for _ in range(abs(count)):
                    sign = 1 if count > 0 else -1
                    self._observe_windows(self.segments[key], adds, sign, indices)

    def partial(self, key: SegmentKey) -> dict[str, Any] | None:
        """The series' current totals as JSON, or None when no state refers to it any more."""
        segment = self.segments.get(key)
        if segment is None:
            return None
        return {
            "tickets_open": segment.tickets_open,
            "windows": {
                spec.name: window.total.to_json()
                for spec, window in zip(self.specs, segment.windows, strict=True)
            },
        }
