"""Metric math: NPS with its margin of error, CSAT with its Wilson interval, the difference
of two proportions with Newcombe's interval; and the score categories (NPS promoters, CSAT
satisfied, CES low effort), which are the core's, where the windows count them.

Pure functions; nothing here knows about Kafka or time.
"""

from __future__ import annotations

import math

from ._core import is_ces_low_effort, is_csat_satisfied, nps_category

__all__ = [
    "is_ces_low_effort",
    "is_csat_satisfied",
    "newcombe_interval",
    "nps",
    "nps_category",
    "nps_margin_of_error",
    "ratio",
    "wilson_interval",
]

Z_95 = 1.96


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
