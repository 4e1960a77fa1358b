"""Metric math: NPS with its margin of error, CSAT with its Wilson interval, the difference
of two proportions with Newcombe's interval. All of it is the core's (`core/src/stats.rs`),
where the merge stage uses it; the accounts' revenue figures read it from here.
"""

from __future__ import annotations

from ._core import newcombe_interval, nps, nps_margin_of_error, ratio, wilson_interval

__all__ = ["newcombe_interval", "nps", "nps_margin_of_error", "ratio", "wilson_interval"]
