"""Metric math: NPS with its margin of error, CSAT with its Wilson interval, the difference
of two proportions with Newcombe's interval, and the score categories (NPS promoters, CSAT
satisfied, CES low effort). All of it is the core's (`core/src/stats.rs`), where the windows
and the merge stage use it; the accounts' figures read it from here.
"""

from __future__ import annotations

from ._core import (
    is_ces_low_effort,
    is_csat_satisfied,
    newcombe_interval,
    nps,
    nps_category,
    nps_margin_of_error,
    ratio,
    wilson_interval,
)

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
