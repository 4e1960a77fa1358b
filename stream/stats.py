"""Metric math: NPS with its margin of error, CSAT with its Wilson interval, CES, quantiles,
the difference of two proportions with Newcombe's interval.

Pure functions and one small mergeable class; nothing here knows about Kafka or time.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from ddsketch.mapping import LogarithmicMapping

Z_95 = 1.96
SKETCH_RELATIVE_ACCURACY = 0.01
"""The contract allows 2% relative error on quantiles; the sketch guarantees 1%."""

_MAPPING = LogarithmicMapping(SKETCH_RELATIVE_ACCURACY)


class QuantileSketch:
    """DDSketch-style log-bucketed histogram of non-negative values.

    Unlike ddsketch.DDSketch it keeps exact integer counts per bucket, so a value can be
    removed again (a retraction) and two sketches can be added or subtracted exactly.
    Any quantile is within SKETCH_RELATIVE_ACCURACY of the matching order statistic.
    """

    __slots__ = ("bins", "zeros")

    def __init__(self, bins: dict[int, int] | None = None, zeros: int = 0) -> None:
        self.bins: dict[int, int] = bins if bins is not None else {}
        self.zeros = zeros

    @property
    def count(self) -> int:
        return self.zeros + sum(self.bins.values())

    def add(self, value: float, weight: int = 1) -> None:
        self.add_key(sketch_key(value), weight)

    def add_key(self, key: int | None, weight: int = 1) -> None:
        """Add `weight` values to bucket `key` of sketch_key (None: the zero bucket)."""
        if key is None:
            self.zeros += weight
            return
        count = self.bins.get(key, 0) + weight
        if count:
            self.bins[key] = count
        else:
            del self.bins[key]

    def merge(self, other: QuantileSketch, sign: int = 1) -> None:
        """Add (sign=1) or subtract (sign=-1) every value of `other`."""
        self.zeros += sign * other.zeros
        if not self.bins and sign == 1:
            self.bins.update(other.bins)  # in C: merging into a new sketch is the common case
            return
        for key, weight in other.bins.items():
            count = self.bins.get(key, 0) + sign * weight
            if count:
                self.bins[key] = count
            else:
                del self.bins[key]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """For each q, the value at rank floor(q * (n - 1)) (0-based); None when empty."""
        keys = sorted(self.bins)
        # below[i]: how many values lie below bucket keys[i] (below[-1]: all of them)
        below = list(accumulate(map(self.bins.__getitem__, keys), initial=self.zeros))
        total = below[-1]
        if total <= 0:
            return [None] * len(qs)
        values: list[float | None] = []
        for q in qs:
            index = bisect_right(below, math.floor(q * (total - 1)))
            values.append(0.0 if index == 0 else float(_MAPPING.value(keys[index - 1])))
        return values

    def to_json(self) -> list[object]:
        """[zeros, [[key, count], ...]]: the pairs as tuples, which orjson writes as arrays
        (built in C: partials carry hundreds of buckets per sketch, several times a second)."""
        return [self.zeros, list(self.bins.items())]

    def add_json(self, data: list[Any]) -> None:
        """Add every value of a sketch in its to_json() form, without building it first: the
        merge stage adds up thousands of small sketches for a scrape."""
        zeros, pairs = data
        self.zeros += zeros
        bins = self.bins
        if not bins:
            bins.update(pairs)
            return
        for key, weight in pairs:  # to_json() writes buckets > 0 only: none reaches 0 here
            bins[key] = bins.get(key, 0) + weight

    @classmethod
    def from_json(cls, data: list[Any]) -> QuantileSketch:
        sketch = cls()
        sketch.add_json(data)
        return sketch


def sketch_key(value: float) -> int | None:
    """The bucket of a non-negative value in every QuantileSketch (None: the zero bucket)."""
    if value <= _MAPPING.min_possible:
        return None
    key: int = _MAPPING.key(value)
    return key


def nps(promoters: int, passives: int, detractors: int) -> float | None:
    responses = promoters + passives + detractors
    if responses == 0:
        return None
    return 100.0 * (promoters - detractors) / responses


def nps_margin_of_error(promoters: int, passives: int, detractors: int) -> float | None:
    """95% half-width: 1.96 x 100 x sqrt(((p + d) - (p - d)^2) / n), p and d as shares."""
    responses = promoters + passives + detractors
    if responses == 0:
        return None
    p = promoters / responses
    d = detractors / responses
    variance = max((p + d) - (p - d) ** 2, 0.0)  # never below 0 but for float rounding
    return Z_95 * 100.0 * math.sqrt(variance / responses)


def nps_category(score: int) -> str:
    if score >= 9:
        return "promoter"
    if score >= 7:
        return "passive"
    return "detractor"


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (CSAT's satisfied share)."""
    if trials == 0:
        return None
    share = successes / trials
    z2 = z * z
    centre = share + z2 / (2 * trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    denominator = 1 + z2 / trials
    return (max((centre - spread) / denominator, 0.0), min((centre + spread) / denominator, 1.0))


def newcombe_interval(
    successes1: int, trials1: int, successes2: int, trials2: int, z: float = Z_95
) -> tuple[float, float, float] | None:
    """The difference of two independent proportions p1 - p2 with Newcombe's hybrid score
    interval (Newcombe 1998, method 10), built from each group's Wilson interval; None while
    a group is empty."""
    first, second = wilson_interval(successes1, trials1, z), wilson_interval(successes2, trials2, z)
    if first is None or second is None:
        return None
    (low1, high1), (low2, high2) = first, second
    p1, p2 = successes1 / trials1, successes2 / trials2
    difference = p1 - p2
    return (
        difference,
        difference - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2),
        difference + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2),
    )


def ratio(part: float, whole: float) -> float | None:
    return None if whole == 0 else part / whole


def is_csat_satisfied(score: int) -> bool:
    return score >= 4


def is_ces_low_effort(score: int) -> bool:
    return score >= 5
