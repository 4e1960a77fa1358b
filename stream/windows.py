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
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .events import Segment
from .stats import QuantileSketch, is_ces_low_effort, is_csat_satisfied, nps_category, sketch_key
from .tickets import Observation

BUCKETS_PER_WINDOW = 120

PACK_AFTER_TICKS = 20
"""Calls of `advance` (the partials timer, every 0.25 s: so about 5 s) a bucket stays unpacked after
it was last written. A replayed backlog writes the same buckets batch after batch; packing them
after one idle tick cost 12% of its time in packing and unpacking."""

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


DIMENSIONS = ("all", "team", "channel", "priority")
"""The dimensions of `segment_keys`, in its order."""


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

    def quantiles(self, name: str, qs: Sequence[float]) -> list[float | None]:
        """QuantileSketch.quantiles of the named sketch; None for each q if it has none."""
        sketch = self.sketches.get(name)
        return [None] * len(qs) if sketch is None else sketch.quantiles(qs)

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
        if not counts and sign == 1:
            counts.update(other.counts)
        else:
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

    def add_json(self, data: dict[str, Any]) -> None:
        """Add a tally's counts and sketches in its to_json() form, without building it first
        (see QuantileSketch.add_json); `observations` is not in that form and stays as it is."""
        counts = self.counts
        if not counts:
            counts.update(data["counts"])
        else:
            for name, amount in data["counts"].items():
                counts[name] = counts.get(name, 0) + amount
        sketches = self.sketches
        for name, sketch in data["sketches"].items():
            mine = sketches.get(name)
            if mine is None:
                sketches[name] = QuantileSketch.from_json(sketch)
            else:
                mine.add_json(sketch)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        tally.add_json(data)
        return tally


Bucket = Tally | bytes
"""A bucket's tally while batches write to it, packed (compressed JSON) once they have moved
on. Most buckets of a long window are written for a while and then only read when they expire:
packed, they take about a tenth of the memory. With a month of history the buckets were most of
a worker's memory (165 MB of windows for 200,000 tickets, 34 MB packed)."""


def _pack(tally: Tally) -> bytes:
    # compressed, which also copies it out of orjson's larger buffer
    return zlib.compress(orjson.dumps([tally.observations, tally.to_json()]), 1)


def _packed(bucket: Bucket) -> bytes:
    return bucket if isinstance(bucket, bytes) else _pack(bucket)


def _unpacked(bucket: Bucket) -> Tally:
    if isinstance(bucket, Tally):
        return bucket
    observations, data = orjson.loads(zlib.decompress(bucket))
    tally = Tally.from_json(data)
    tally.observations = observations
    return tally


@dataclass(slots=True)
class _Window:
    buckets: dict[int, Bucket] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)


@dataclass(slots=True)
class SegmentWindows:
    """One series' state: how many tickets and responses refer to it, its backlog, its windows."""

    windows: list[_Window]
    references: int = 0
    tickets_open: int = 0


_REFERENCING_KINDS = frozenset({"opened", "nps", "csat", "ces"})

StagedKey = tuple[Segment, int, int]
"""(segment, window position, bucket index) of observations not yet in the series."""

BucketPlace = tuple[SegmentKey, int, int]
"""(series, window position, bucket index) of a bucket."""

META_KEY = b"m"
"""The key of a checkpoint's series counts and waiting observations; see `checkpoint_entries`."""

CHECKPOINT_FORMAT = 1
"""The layout of a checkpoint and how observations are tallied: a release that changes either
raises it, and its first start derives the windows from the states again."""
_BUCKET_TAG, _TOTAL_TAG = b"b", b"t"


class PartitionWindows:
    """All series of one input partition, kept current as observations come and go.

    An observation counts in four series (the whole, its team, channel and priority) and, in
    each, in a bucket and a running total per window: sixteen tallies. So `observe` only stages
    it, once per window, under its full segment; `flush` then adds each staged tally to the
    series it counts in. Observations of a batch (or of a rebuild) that share a segment and a
    bucket are added up first, which makes a replayed backlog several times cheaper. Every
    read (`partial`, `segments` after `flush`) and every move of the clock flushes first.
    """

    def __init__(self, specs: Sequence[WindowSpec], now: float) -> None:
        self.specs = tuple(specs)
        self.segments: dict[SegmentKey, SegmentWindows] = {}
        self.changed: set[SegmentKey] = set()
        self.now = now
        self._bucket_seconds = [spec.bucket_seconds for spec in self.specs]
        self._lowest = [self._lowest_bucket(spec, now) for spec in self.specs]
        self._staged: dict[StagedKey, Tally] = {}
        self._staged_counts: dict[Segment, list[int]] = {}
        """Per segment: [references, tickets_open] added since the last flush."""
        self._unpacked: dict[BucketPlace, int] = {}
        """Buckets held as tallies, with the clock tick (`advance`) they were last written in."""
        self._dirty: set[BucketPlace] = set()
        """Buckets changed (or gone) since the last `checkpoint_entries`."""
        self._superseded: set[bytes] = set()
        """Stored entries of an earlier checkpoint that the next one deletes."""
        self._gone: set[SegmentKey] = set()
        """Series removed since the last checkpoint: their totals are deleted with it."""
        self._tick = 0
        # observations stamped after `now` (clock skew, up to five minutes): not in any
        # window yet, kept exactly until the clock reaches them
        self._pending: Counter[Observation] = Counter()

    @staticmethod
    def _lowest_bucket(spec: WindowSpec, now: float) -> int:
        return math.floor((now - spec.seconds) / spec.bucket_seconds)

    def observe(self, observation: Observation, sign: int) -> None:
        """Stage adding (sign=1) or retracting (sign=-1) one observation in each series it
        counts in; `flush` applies what is staged."""
        kind = observation.kind
        segment = observation.segment
        if kind in _REFERENCING_KINDS or kind == "backlog":
            counts = self._staged_counts.get(segment)
            if counts is None:
                counts = self._staged_counts[segment] = [0, 0]
            counts[kind == "backlog"] += sign
            if kind == "backlog":
                return
        if observation.at > self.now:
            self._pending[observation] += sign
            if not self._pending[observation]:
                del self._pending[observation]
            return
        self._stage(observation, sign)

    def _stage(self, observation: Observation, sign: int) -> None:
        adds = contribution(observation)
        at, segment, staged = observation.at, observation.segment, self._staged
        for position, bucket_seconds in enumerate(self._bucket_seconds):
            index = math.floor(at / bucket_seconds)
            if index < self._lowest[position]:
                continue  # older than the window: still in ticket state, in no window
            key = (segment, position, index)
            tally = staged.get(key)
            if tally is None:
                tally = staged[key] = Tally()
            tally.add(adds, sign)

    def flush(self, totals: bool = True) -> None:
        """Add what is staged to the buckets and totals of every series it counts in.

        With `totals` False only the buckets change: a rebuild stages and flushes a whole
        partition, then sums each window's buckets once with `sum_buckets`."""
        staged_counts, self._staged_counts = self._staged_counts, {}
        staged, self._staged = self._staged, {}
        touched: set[SegmentKey] = set()
        for segment, (references, tickets_open) in staged_counts.items():
            for key in segment_keys(segment):
                series = self._series(key)
                series.references += references
                series.tickets_open += tickets_open
                touched.add(key)
        for (segment, position, index), tally in staged.items():
            for key in segment_keys(segment):
                window = self._series(key).windows[position]
                packed = window.buckets.get(index)
                if packed is None:
                    if tally.observations < 0:
                        continue  # retracted after its bucket expired
                    bucket = Tally()
                else:
                    bucket = _unpacked(packed)
                place = (key, position, index)
                window.buckets[index] = bucket
                self._unpacked[place] = self._tick
                self._dirty.add(place)
                bucket.merge(tally)
                if totals:
                    window.total.merge(tally)
                if not bucket.observations:
                    del window.buckets[index]
                    del self._unpacked[place]
                touched.add(key)
        for key in touched:
            series = self.segments[key]
            if series.references <= 0 and series.tickets_open <= 0:
                for position, window in enumerate(series.windows):
                    self._dirty.update((key, position, index) for index in window.buckets)
                self._gone.add(key)
                del self.segments[key]
        self.changed |= touched

    def _series(self, key: SegmentKey) -> SegmentWindows:
        series = self.segments.get(key)
        if series is None:
            series = self.segments[key] = SegmentWindows([_Window() for _ in self.specs])
        return series

    def advance(self, now: float) -> None:
        """Move the windows to wall-clock `now`: expire old buckets, count what came due, and
        pack the buckets nothing was written to since the previous call."""
        self.flush()
        self.pack()
        if now <= self.now:
            return
        self.now = now
        for position, spec in enumerate(self.specs):
            lowest = self._lowest_bucket(spec, now)
            if lowest != self._lowest[position]:
                self._lowest[position] = lowest
                self._expire(position)
        self._stage_due()
        self.flush()

    def _expire(self, position: int) -> None:
        """Drop the buckets of one window that are older than its lowest bucket."""
        lowest = self._lowest[position]
        for key, series in self.segments.items():
            window = series.windows[position]
            for index in [index for index in window.buckets if index < lowest]:
                window.total.merge(_unpacked(window.buckets.pop(index)), -1)
                self._unpacked.pop((key, position, index), None)
                self._dirty.add((key, position, index))
                self.changed.add(key)

    def _stage_due(self) -> None:
        due = [observation for observation in self._pending if observation.at <= self.now]
        for observation in due:
            self._stage(observation, self._pending.pop(observation))

    def sum_buckets(self) -> None:
        """Set every window's running total to the sum of its buckets."""
        for series in self.segments.values():
            for window in series.windows:
                window.total = Tally()
                for bucket in window.buckets.values():
                    window.total.merge(_unpacked(bucket))

    def pack(self, idle_only: bool = True) -> None:
        """Pack the buckets nothing was written to in the last PACK_AFTER_TICKS calls (or all
        of them)."""
        for place, tick in list(self._unpacked.items()):
            if idle_only and tick > self._tick - PACK_AFTER_TICKS:
                continue
            del self._unpacked[place]
            key, position, index = place
            series = self.segments.get(key)
            if series is None:
                continue
            buckets = series.windows[position].buckets
            bucket = buckets.get(index)
            if isinstance(bucket, Tally):
                buckets[index] = _pack(bucket)
        self._tick += 1

    def partial(self, key: SegmentKey) -> dict[str, Any] | None:
        """The series' current totals as JSON, or None when no state refers to it any more."""
        self.flush()
        series = self.segments.get(key)
        return None if series is None else series_partial(self.specs, [series])

    def checkpoint_entries(self, meta: Mapping[str, Any]) -> dict[bytes, bytes | None]:
        """What changed since the last checkpoint, as store entries (None: delete), with
        `meta` (which must say what the windows were derived with) stored alongside.

        Written in the same store write as the states they add up, a checkpoint lets a
        restart load the windows (`restore`) instead of deriving them from every state. The
        buckets go packed, and each window's running total with them, so that loading unpacks
        nothing but the totals."""
        self.flush()
        entries: dict[bytes, bytes | None] = dict.fromkeys(self._superseded)
        totals = {(key, position) for key in self._gone for position in range(len(self.specs))}
        for key, position, index in self._dirty:
            series = self.segments.get(key)
            bucket = None if series is None else series.windows[position].buckets.get(index)
            entries[_BUCKET_TAG + orjson.dumps([*key, position, index])] = (
                None if bucket is None else _packed(bucket)
            )
            totals.add((key, position))
        for key, position in totals:
            series = self.segments.get(key)
            entries[_TOTAL_TAG + orjson.dumps([*key, position])] = (
                None if series is None else _pack(series.windows[position].total)
            )
        # the caller writes these entries or stops the worker: either way they are not needed
        self._superseded, self._dirty, self._gone = set(), set(), set()
        entries[META_KEY] = orjson.dumps(
            {
                **meta,
                "format": CHECKPOINT_FORMAT,
                "now": self.now,
                "series": [
                    [*key, series.references, series.tickets_open]
                    for key, series in self.segments.items()
                ],
                "pending": [
                    [observation.kind, observation.at, [*observation.segment], *observation[3:], n]
                    for observation, n in self._pending.items()
                ],
            }
        )
        return entries

    def supersede(self, stored: Iterable[tuple[bytes, bytes]]) -> None:
        """Have the next checkpoint replace the stored one (entries of `restore`) entirely."""
        self._superseded.update(key for key, _ in stored)

    @classmethod
    def restore(
        cls,
        specs: Sequence[WindowSpec],
        now: float,
        entries: Iterable[tuple[bytes, bytes]],
        derived_with: str,
    ) -> tuple[PartitionWindows, dict[str, Any]] | None:
        """The windows a checkpoint's entries hold, moved to `now`, and its meta. None when
        there is no checkpoint to trust: none at all, one of another format or derived with
        other settings (`derived_with`), one made at a later time (the clock went back), or
        one that cannot be read."""
        entries = list(entries)
        try:
            meta = next((orjson.loads(value) for key, value in entries if key == META_KEY), None)
            if (
                meta is None
                or meta.get("format") != CHECKPOINT_FORMAT
                or meta.get("derived_with") != derived_with
                or meta["now"] > now
            ):
                return None
            return cls._loaded(specs, now, entries, meta), meta
        except (ValueError, KeyError, IndexError, TypeError, zlib.error):  # unreadable
            return None

    @classmethod
    def _loaded(
        cls,
        specs: Sequence[WindowSpec],
        now: float,
        entries: list[tuple[bytes, bytes]],
        meta: dict[str, Any],
    ) -> PartitionWindows:
        windows = cls(specs, now)
        for dimension, name, references, tickets_open in meta["series"]:
            series = windows._series((dimension, name))
            series.references, series.tickets_open = references, tickets_open
        for key, value in entries:
            tag = key[:1]
            if tag not in (_BUCKET_TAG, _TOTAL_TAG):
                continue
            dimension, name, position, *index = orjson.loads(key[1:])
            held = windows.segments.get((dimension, name))
            if held is None:  # of a series gone before the checkpoint: delete it
                windows._superseded.add(key)
            elif tag == _BUCKET_TAG:
                held.windows[position].buckets[index[0]] = value
            else:
                held.windows[position].total = _unpacked(value)
        for kind, at, (team, channel, priority), *rest, count in meta["pending"]:
            observation = Observation(kind, at, Segment(team, channel, priority), *rest)
            windows._pending[observation] = count
        for position in range(len(windows.specs)):
            windows._expire(position)
        windows._stage_due()
        windows.flush()
        windows.changed = set(windows.segments)
        return windows


def series_partial(specs: Sequence[WindowSpec], parts: Sequence[SegmentWindows]) -> dict[str, Any]:
    """The totals of a series held in parts (by state table) as one partial's JSON."""
    windows: dict[str, Any] = {}
    for position, spec in enumerate(specs):
        totals = [part.windows[position].total for part in parts]
        if len(totals) > 1:
            merged = Tally()
            for total in totals:
                merged.merge(total)
            totals = [merged]
        windows[spec.name] = totals[0].to_json()
    return {"tickets_open": sum(part.tickets_open for part in parts), "windows": windows}


class CombinedWindows:
    """The windows of one input partition, kept per state table (each is checkpointed with
    its table's states) and read as one."""

    def __init__(self, specs: Sequence[WindowSpec], parts: Mapping[str, PartitionWindows]) -> None:
        self.specs = tuple(specs)
        self.parts = dict(parts)

    def advance(self, now: float) -> None:
        for windows in self.parts.values():
            windows.advance(now)

    def take_changed(self) -> set[SegmentKey]:
        """The series changed since the last call."""
        changed: set[SegmentKey] = set()
        for windows in self.parts.values():
            changed |= windows.changed
            windows.changed = set()
        return changed

    def series_keys(self) -> set[SegmentKey]:
        return {key for windows in self.parts.values() for key in windows.segments}

    def partial(self, key: SegmentKey) -> dict[str, Any] | None:
        """The series' current totals as JSON, or None when no state refers to it any more."""
        found = []
        for windows in self.parts.values():
            windows.flush()
            series = windows.segments.get(key)
            if series is not None:
                found.append(series)
        return series_partial(self.specs, found) if found else None
