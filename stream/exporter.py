"""From merged window totals to what people read: Prometheus gauges and cx-metrics snapshots.

Both read the same rows (`series_rows`), so the latest snapshot of a series equals what
/metrics showed at the snapshot's as_of.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from .stats import nps, nps_margin_of_error, ratio, wilson_interval
from .windows import SegmentKey, Tally

LABELS = ("window", "team", "channel", "priority")
OTHER = "other"
RESERVED = frozenset({"all", OTHER})
"""Segment labels with a meaning of their own."""

MetricValues = dict[str, float | None]

P50_P90 = (0.5, 0.9)
"""The quantiles exported of every duration (the _p50 and _p90 metrics)."""
QUANTILES = {f"_p{round(q * 100)}": str(q) for q in P50_P90}
"""Each quantile metric's name suffix, and the quantile label of its samples."""


@dataclass(slots=True)
class MergedSeries:
    tickets_open: int = 0
    windows: dict[str, Tally] = field(default_factory=dict)

    def add(self, partial: dict[str, Any]) -> None:
        """Add one partial, as it came from cx-partials."""
        self.tickets_open += partial["tickets_open"]
        windows = self.windows
        for name, data in partial["windows"].items():
            tally = windows.get(name)
            if tally is None:
                windows[name] = Tally.from_json(data)
            else:
                tally.add_json(data)


def folded_values(values: Iterable[str], cap: int) -> dict[str, str]:
    """Which label each value of one dimension is exported under.

    The first `cap` values in sorted order keep their own label and the rest fold into
    'other'. Sorting (not arrival order) keeps the choice a function of the set of values.
    'all' and 'other' are labels of their own (the whole, the folded values): a value spelled
    like one of them is folded, so that it is never taken for the whole or exported twice.
    """
    ordered = sorted(set(values) - RESERVED)
    labels = {value: value if index < cap else OTHER for index, value in enumerate(ordered)}
    return labels | dict.fromkeys(set(values) & RESERVED, OTHER)


def series_keys(entries: Iterable[dict[str, Any]], cap: int) -> list[SegmentKey]:
    """The series each partial counts in, after folding values over the cap."""
    entries = list(entries)
    values_by_dimension: dict[str, set[str]] = {}
    for entry in entries:
        values_by_dimension.setdefault(entry["dimension"], set()).add(entry["value"])
    labels = {
        dimension: folded_values(values, cap) if dimension != "all" else {"all": "all"}
        for dimension, values in values_by_dimension.items()
    }
    return [(entry["dimension"], labels[entry["dimension"]][entry["value"]]) for entry in entries]


def merge_partials(entries: Iterable[dict[str, Any]], cap: int) -> dict[SegmentKey, MergedSeries]:
    """Sum the per-partition partials of each series, after folding values over the cap."""
    entries = list(entries)
    merged: dict[SegmentKey, MergedSeries] = {}
    for key, entry in zip(series_keys(entries, cap), entries, strict=True):
        merged.setdefault(key, MergedSeries()).add(entry)
    return merged


def window_metrics(tally: Tally, business_hours: bool = False) -> MetricValues:
    """Every windowed metric of docs/contract.md section 4 for one series and window; the
    business-time ones only with `business_hours` (a schedule is configured).

    Counts are always present; a ratio, average or quantile is None while its count is 0.
    """
    count = tally.count
    promoters, passives, detractors = (
        count("nps_promoters"),
        count("nps_passives"),
        count("nps_detractors"),
    )
    csat_responses, satisfied = count("csat_responses"), count("csat_satisfied")
    interval = wilson_interval(satisfied, csat_responses)
    first_responses, resolutions = count("first_response_count"), count("resolution_count")
    ces_responses, resolved = count("ces_responses"), count("tickets_resolved")
    full_resolutions = count("full_resolution_count")
    sums = tally.counts
    first_response_p50, first_response_p90 = tally.quantiles("first_response_seconds", P50_P90)
    resolution_p50, resolution_p90 = tally.quantiles("resolution_seconds", P50_P90)
    full_resolution_p50, full_resolution_p90 = tally.quantiles("full_resolution_seconds", P50_P90)
    metrics: MetricValues = {
        "nps": nps(promoters, passives, detractors),
        "nps_margin_of_error": nps_margin_of_error(promoters, passives, detractors),
        "nps_responses": promoters + passives + detractors,
        "nps_promoters": promoters,
        "nps_passives": passives,
        "nps_detractors": detractors,
        "csat_ratio": ratio(satisfied, csat_responses),
        "csat_ratio_lower": None if interval is None else interval[0],
        "csat_ratio_upper": None if interval is None else interval[1],
        "csat_responses": csat_responses,
        "csat_satisfied": satisfied,
        "csat_score_avg": ratio(sums.get("csat_score_sum", 0), csat_responses),
        "ces_score_avg": ratio(sums.get("ces_score_sum", 0), ces_responses),
        "ces_low_effort_ratio": ratio(count("ces_low_effort"), ces_responses),
        "ces_responses": ces_responses,
        "first_response_seconds_p50": first_response_p50,
        "first_response_seconds_p90": first_response_p90,
        "first_response_seconds_avg": ratio(
            sums.get("first_response_seconds_sum", 0), first_responses
        ),
        "first_response_count": first_responses,
        "resolution_seconds_p50": resolution_p50,
        "resolution_seconds_p90": resolution_p90,
        "resolution_seconds_avg": ratio(sums.get("resolution_seconds_sum", 0), resolutions),
        "resolution_count": resolutions,
        "tickets_opened": count("tickets_opened"),
        "tickets_resolved": resolved,
        "first_response_sla_breach_ratio": ratio(
            count("first_response_sla_breaches"), first_responses
        ),
        "resolution_sla_breach_ratio": ratio(count("resolution_sla_breaches"), resolutions),
        "one_touch_ratio": ratio(count("one_touch_tickets"), resolved),
        "first_response_sla_breaches": count("first_response_sla_breaches"),
        "resolution_sla_breaches": count("resolution_sla_breaches"),
        "one_touch_tickets": count("one_touch_tickets"),
        "full_resolution_seconds_p50": full_resolution_p50,
        "full_resolution_seconds_p90": full_resolution_p90,
        "full_resolution_seconds_avg": ratio(
            sums.get("full_resolution_seconds_sum", 0), full_resolutions
        ),
        "full_resolution_count": full_resolutions,
        "ticket_reopens": count("ticket_reopens"),
        "reopened_ratio": ratio(count("reopened_tickets"), resolved),
        "reopened_tickets": count("reopened_tickets"),
        "first_contact_resolution_ratio": ratio(count("first_contact_resolutions"), resolved),
        "first_contact_resolutions": count("first_contact_resolutions"),
    }
    if business_hours:
        for name, responses in (
            ("first_response", first_responses),
            ("resolution", resolutions),
        ):
            sketch = f"{name}_business_seconds"
            p50, p90 = tally.quantiles(sketch, P50_P90) if responses else (None, None)
            metrics[f"{sketch}_p50"], metrics[f"{sketch}_p90"] = p50, p90
            metrics[f"{sketch}_avg"] = ratio(sums.get(f"{sketch}_sum", 0), responses)
    return metrics


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One (window, segment) series: its labels, windowed metrics and the segment's backlog."""

    labels: dict[str, str]
    metrics: MetricValues
    tickets_open: int

    @property
    def key(self) -> str:
        """The cx-metrics record key: window=1h,team=all,channel=all,priority=all."""
        return ",".join(f"{name}={self.labels[name]}" for name in LABELS)


def segment_labels(key: SegmentKey) -> dict[str, str]:
    dimension, value = key
    labels = {"team": "all", "channel": "all", "priority": "all"}
    if dimension != "all":
        labels[dimension] = value
    return labels


def series_rows(
    merged: dict[SegmentKey, MergedSeries], windows: Sequence[str], business_hours: bool = False
) -> list[SeriesRow]:
    rows = []
    for key in sorted(merged):
        series = merged[key]
        for window in windows:
            tally = series.windows.get(window) or Tally()
            rows.append(
                SeriesRow(
                    {"window": window, **segment_labels(key)},
                    window_metrics(tally, business_hours),
                    series.tickets_open,
                )
            )
    return rows


def snapshot(row: SeriesRow, as_of: float) -> dict[str, Any]:
    """The cx-metrics value of a series (schemas/metrics-snapshot.schema.json)."""
    return {
        **row.labels,
        **row.metrics,
        "tickets_open": row.tickets_open,
        "as_of": rfc3339(as_of),
    }


def rfc3339(moment: float) -> str:
    """A snapshot's as_of: RFC 3339 in UTC, milliseconds."""
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


Samples = dict[str, str]
"""Sample lines of the Prometheus text format by metric family, each line ending in a newline."""


def series_samples(rows: Sequence[SeriesRow]) -> Samples:
    """The cx_* gauge samples of `rows` (cx_tickets_open once per segment), as generate_latest()
    would write GaugeMetricFamily objects of them, built directly: a scrape of 260 series is
    over 10,000 samples, and prometheus-client's per-sample objects and label checks cost
    300 ms. Absent values (None) are left out."""
    families: dict[str, list[str]] = {}
    backlog: dict[str, int] = {}
    for row in rows:
        segment = ",".join(f'{name}="{_escape(row.labels[name])}"' for name in LABELS[1:])
        labels = f'window="{_escape(row.labels["window"])}",{segment}'
        backlog[segment] = row.tickets_open
        for name, value in row.metrics.items():
            if value is not None:
                family, more_labels = _family_of(name)
                families.setdefault(family, []).append(
                    f"{family}{{{labels}{more_labels}}} {float(value)!r}\n"
                )
    if backlog:
        families["cx_tickets_open"] = [
            f"cx_tickets_open{{{segment}}} {float(count)!r}\n" for segment, count in backlog.items()
        ]
    return {family: "".join(samples) for family, samples in families.items()}


@cache
def _family_of(metric: str) -> tuple[str, str]:
    """The metric family a metric's samples belong to, and the labels they add to a series'."""
    quantile = QUANTILES.get(metric[-4:])
    if quantile is None:
        return f"cx_{metric}", ""
    return f"cx_{metric[:-4]}", f',quantile="{quantile}"'


def render_series(parts: Iterable[Samples]) -> str:
    """The samples of every part, each family's together under its HELP and TYPE lines:
    the worker keeps each series' samples and renders again only the series that changed."""
    families: dict[str, list[str]] = {}
    for part in parts:
        for family, samples in part.items():
            families.setdefault(family, []).append(samples)
    return "".join(
        f"# HELP {family} {_help_text(family)}\n# TYPE {family} gauge\n{''.join(samples)}"
        for family, samples in families.items()
    )


def _help_text(family: str) -> str:
    return _HELP.get(family, family).replace("\\", "\\\\").replace("\n", "\\n")


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_HELP = {
    "cx_nps": "Net Promoter Score (-100 to 100) of the window's NPS survey responses:"
    " promoters minus detractors, as a percentage of all responses",
    "cx_nps_margin_of_error": "95% margin of error of the NPS, in NPS points either side",
    "cx_nps_responses": "NPS survey responses counted in the window (a ticket's latest answer)",
    "cx_nps_promoters": "NPS responses in the window that scored 9 or 10 (promoters)",
    "cx_nps_passives": "NPS responses in the window that scored 7 or 8 (passives)",
    "cx_nps_detractors": "NPS responses in the window that scored 0 to 6 (detractors)",
    "cx_csat_ratio": "Share (0-1) of the window's CSAT responses that scored 4 or 5",
    "cx_csat_ratio_lower": "Lower end of the 95% Wilson interval of the CSAT ratio",
    "cx_csat_ratio_upper": "Upper end of the 95% Wilson interval of the CSAT ratio",
    "cx_csat_responses": "CSAT survey responses counted in the window (a ticket's latest answer)",
    "cx_csat_satisfied": "CSAT responses in the window that scored 4 or 5 (satisfied)",
    "cx_csat_score_avg": "Mean CSAT score (1-5) of the window's responses",
    "cx_ces_score_avg": "Mean Customer Effort Score (1-7) of the window's responses",
    "cx_ces_low_effort_ratio": "Share (0-1) of the window's CES responses that scored 5 to 7",
    "cx_ces_responses": "Customer Effort Score survey responses counted in the window",
    "cx_first_response_seconds": "First response time in seconds (opened to the first public"
    " agent reply), quantiles over the first replies made in the window",
    "cx_first_response_seconds_avg": "Mean first response time in seconds of the first replies"
    " made in the window",
    "cx_first_response_count": "Tickets whose first public agent reply was made in the window",
    "cx_resolution_seconds": "Time to resolution in seconds (opened to the first resolution),"
    " quantiles over the tickets first resolved in the window",
    "cx_resolution_seconds_avg": "Mean time to resolution in seconds of the tickets first"
    " resolved in the window",
    "cx_resolution_count": "Tickets first resolved in the window whose opening is known"
    " (the ones a time to resolution is measured for)",
    "cx_tickets_opened": "Tickets opened in the window",
    "cx_tickets_resolved": "Tickets resolved for the first time in the window",
    "cx_first_response_sla_breach_ratio": "Share (0-1) of the window's first responses slower"
    " than the SLA target of their ticket's priority",
    "cx_resolution_sla_breach_ratio": "Share (0-1) of the window's first resolutions slower"
    " than the SLA target of their ticket's priority",
    "cx_one_touch_ratio": "Share (0-1) of the tickets first resolved in the window that had at"
    " most one public agent reply before it",
    "cx_first_response_sla_breaches": "First responses in the window slower than the SLA"
    " target of their ticket's priority",
    "cx_resolution_sla_breaches": "First resolutions in the window slower than the SLA target"
    " of their ticket's priority",
    "cx_one_touch_tickets": "Tickets first resolved in the window with at most one public"
    " agent reply before it",
    "cx_full_resolution_seconds": "Full resolution time in seconds (opened to the latest"
    " resolution, of tickets resolved now), quantiles over latest resolutions in the window",
    "cx_full_resolution_seconds_avg": "Mean full resolution time in seconds of the tickets"
    " resolved now whose latest resolution was in the window",
    "cx_full_resolution_count": "Tickets resolved now whose latest resolution was in the window",
    "cx_ticket_reopens": "Reopens of resolved tickets in the window",
    "cx_reopened_ratio": "Share (0-1) of the tickets first resolved in the window that were"
    " reopened since",
    "cx_reopened_tickets": "Tickets first resolved in the window and reopened since",
    "cx_first_contact_resolution_ratio": "Share (0-1) of the tickets first resolved in the"
    " window that were one-touch and never reopened",
    "cx_first_contact_resolutions": "Tickets first resolved in the window that were one-touch"
    " and never reopened (first contact resolutions)",
    "cx_first_response_business_seconds": "First response time in business seconds (inside"
    " the team's opening hours), quantiles over the first replies made in the window",
    "cx_first_response_business_seconds_avg": "Mean first response time in business seconds"
    " of the first replies made in the window",
    "cx_resolution_business_seconds": "Time to resolution in business seconds (inside the"
    " team's opening hours), quantiles over the tickets first resolved in the window",
    "cx_resolution_business_seconds_avg": "Mean time to resolution in business seconds of the"
    " tickets first resolved in the window",
    "cx_tickets_open": "Tickets open now, the backlog: opened and not resolved, or reopened"
    " after their last resolution",
}
"""Each metric family's HELP line: what a person reads in Grafana's metric browser."""
