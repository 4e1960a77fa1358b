"""Generates the Grafana dashboards in grafana/dashboards/ with Grafana's own dashboards-as-code
library, grafana-foundation-sdk, in its build for Grafana 11.2 (the version compose runs).

    .venv/bin/python grafana/generate.py   # rewrites wall, analyst and customer-success.json

The JSON files are what Grafana provisions; edit this file, not them (tests/test_dashboards.py
fails when they differ from what this file generates).

The wall is read from across a room and must only show what is true now: instant queries
reduced with `last`, "no data" when a series is gone, thresholds colouring only the main value
of a panel, per-team bars sorted and capped. The analyst dashboard has one segment choice,
because the processor exports one dimension at a time (no cross products), and one kind of
quantity per panel, so that counts and ratios never share an axis. The customer-success
dashboard reads only the account numbers of docs/contract.md 7.5: revenue and retention per
account window, and what the support experience does to churn.

The SDK has no builder for the alert-list panel (none of its builds, 10.1 to 11.6 and next, has
one): the alert lists are its generic panel builder with the options written out here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as options
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus as promql
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="cx-prometheus")
DATASOURCE_NAME = "Prometheus"  # the alert-list panel filters by name, not uid
ORGANISATION = 'team="all", channel="all", priority="all"'
NO_DATA = "no data"
WATCHDOG = "CxWatchdog"
ON_THE_WALL = f'alertname!="{WATCHDOG}", audience!="cs-lead"'
"""The alerts the wall counts and lists: not the always-firing watchdog, nor the customer-success
lead's, which last for days (the customer-success dashboard lists those)."""
CURRENCY = "USD"
"""CX_CURRENCY of the workers: the unit amounts are shown in (Grafana's `currencyUSD`, ...)."""

Panel = Builder[model.Panel]


@dataclass(frozen=True)
class Kind:
    """The unit and axis range of one kind of quantity; a panel shows one kind."""

    unit: str
    min: float | None = None
    max: float | None = None
    decimals: float | None = None

    def properties(self) -> list[model.DynamicConfigValue]:
        """As field overrides (for a secondary value of a stat panel)."""
        return [
            model.DynamicConfigValue(id_val=name, value=value)
            for name, value in (
                ("unit", self.unit),
                ("min", self.min),
                ("max", self.max),
                ("decimals", self.decimals),
            )
            if value is not None
        ]


KINDS: dict[str, Kind] = {
    "ratio": Kind("percentunit", 0, 1),
    "count": Kind("short", 0, decimals=0),
    "seconds": Kind("s", 0),
    "nps": Kind("none", -100, 100, 0),
    "csat_score": Kind("none", 1, 5, 2),
    "ces_score": Kind("none", 1, 7, 2),
    "rate": Kind("ops", 0),
    "up": Kind("none", 0, 1, 0),
    # the customer-success dashboard
    "money": Kind(f"currency{CURRENCY}"),  # movements lost are drawn below 0
    "revenue_retention": Kind("percentunit", 0),  # NRR is above 100% when accounts grow
    "difference": Kind("percentunit", -1, 1),  # of two churn ratios
}


class Fields(Protocol):
    """The field defaults every panel builder of the SDK sets."""

    def unit(self, unit: str) -> Self: ...
    def min(self, min_val: float) -> Self: ...
    def max(self, max_val: float) -> Self: ...
    def decimals(self, decimals: float) -> Self: ...
    def no_value(self, no_value: str) -> Self: ...
    def color_scheme(self, color: Builder[model.FieldColor]) -> Self: ...
    def thresholds(self, thresholds: Builder[model.ThresholdsConfig]) -> Self: ...
    def override_by_query(
        self, query_ref_id: str, properties: list[model.DynamicConfigValue]
    ) -> Self: ...


F = TypeVar("F", bound=Fields)


def of_kind(panel: F, kind: str) -> F:
    """The panel's field defaults: its kind's unit and range, and "no data" for a missing series."""
    spec = KINDS[kind]
    panel = panel.unit(spec.unit).no_value(NO_DATA)
    if spec.min is not None:
        panel = panel.min(spec.min)
    if spec.max is not None:
        panel = panel.max(spec.max)
    if spec.decimals is not None:
        panel = panel.decimals(spec.decimals)
    return panel


def gauge(metric: str, selector: str = "") -> str:
    """One series per segment, whichever worker exports it (a rebalance can briefly give two)."""
    return (
        f"max without (instance) ({metric}{{{selector}}})"
        if selector
        else f"max without (instance) ({metric})"
    )


@dataclass
class Query:
    expr: str
    legend: str
    kind: str


def ref_id(index: int) -> str:
    return chr(ord("A") + index)


def targets(
    queries: Sequence[Query], instant: bool, as_table: bool = False
) -> list[Builder[Dataquery]]:
    """Prometheus queries A, B, ...: instant (the value now) or over the time range; a table
    query returns one row per series, its labels as columns."""
    made: list[Builder[Dataquery]] = []
    for index, query in enumerate(queries):
        target = (
            promql.Dataquery()
            .datasource(DATASOURCE)
            .ref_id(ref_id(index))
            .expr(query.expr)
            .legend_format(query.legend)
        )
        target = target.instant() if instant else target.range()
        made.append(target.format(PromQueryFormat.TABLE) if as_table else target)
    return made


@dataclass
class Thresholds:
    steps: list[tuple[str, float | None]]

    def config(self) -> builders.ThresholdsConfig:
        return (
            builders.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for color, value in self.steps])
        )


def coloured(panel: F, thresholds: Thresholds) -> F:
    """Coloured by the thresholds' steps (a wall panel's main value)."""
    scheme = builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS)
    return panel.color_scheme(scheme).thresholds(thresholds.config())


@dataclass
class Board:
    """A dashboard's panels, numbered and placed on Grafana's 24-column grid."""

    panels: list[Panel]

    def add(self, panel: Any, x: int, y: int, w: int, h: int) -> None:
        self.panels.append(panel.id(len(self.panels) + 1).grid_pos(model.GridPos(h, w, x, y)))


# --- the wall --------------------------------------------------------------------------------


def tv_text() -> options.VizTextDisplayOptions:
    return options.VizTextDisplayOptions().title_size(28).value_size(72)


def last() -> options.ReduceDataOptions:
    return options.ReduceDataOptions().calcs(["last"]).fields("").values(False)


def stat_panel(
    title: str,
    main: list[Query],
    thresholds: Thresholds,
    secondary: tuple[Query, ...] = (),
) -> stat.Panel:
    """Big numbers: the main queries coloured by the thresholds, the secondary ones (margins,
    bounds, counts) beside them in a neutral colour and in their own unit."""
    panel = (
        stat.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(targets([*main, *secondary], instant=True))
        .reduce_options(last())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .justify_mode(common.BigValueJustifyMode.CENTER)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .orientation(common.VizOrientation.HORIZONTAL)
        .text(tv_text())
    )
    panel = coloured(of_kind(panel, main[0].kind), thresholds)
    for index, query in enumerate(secondary, start=len(main)):
        panel = panel.override_by_query(
            ref_id(index),
            [
                model.DynamicConfigValue(
                    id_val="color", value={"mode": "fixed", "fixedColor": "transparent"}
                ),
                *KINDS[query.kind].properties(),
            ],
        )
    return panel


def bars(title: str, query: Query, thresholds: Thresholds) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(targets([query], instant=True))
        .reduce_options(last())
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .show_unfilled(True)
        .text(options.VizTextDisplayOptions().title_size(22).value_size(28))
    )
    return coloured(of_kind(panel, query.kind), thresholds)


def per_team(metric: str, order: str, extra: str = "") -> str:
    """The 10 worst teams, worst first: `order` is "bottomk" (low is bad) or "topk"."""
    sort = "sort" if order == "bottomk" else "sort_desc"
    selector = f'{extra}team!="all", channel="all", priority="all"'
    return f"{sort}({order}(10, {gauge(metric, selector)}))"


# name -> (main metric, its kind, thresholds, secondary (metric, legend, kind))
HEADLINES: dict[str, tuple[str, str, Thresholds, list[tuple[str, str, str]]]] = {
    "NPS": (
        "cx_nps",
        "nps",
        Thresholds([("red", None), ("orange", 0), ("green", 30)]),
        [("cx_nps_margin_of_error", "± margin", "nps"), ("cx_nps_responses", "responses", "count")],
    ),
    "CSAT": (
        "cx_csat_ratio",
        "ratio",
        Thresholds([("red", None), ("orange", 0.75), ("green", 0.85)]),
        [
            ("cx_csat_ratio_lower", "95% low", "ratio"),
            ("cx_csat_ratio_upper", "95% high", "ratio"),
            ("cx_csat_responses", "responses", "count"),
        ],
    ),
}


def headline(name: str, window: str, title: str) -> stat.Panel:
    """NPS or CSAT of the whole organisation, with its uncertainty and response count."""
    metric, kind, thresholds, secondary = HEADLINES[name]
    segment = f'window="{window}", {ORGANISATION}'
    return stat_panel(
        title,
        [Query(gauge(metric, segment), name, kind)],
        thresholds,
        tuple(Query(gauge(m, segment), legend, k) for m, legend, k in secondary),
    )


def quantiles(metric: str, selector: str, legend: str = "") -> list[Query]:
    """The p50 and p90 of a duration, for the wall and the analyst dashboard."""
    return [
        Query(gauge(metric, f'{selector}, quantile="{quantile}"'), name + legend, "seconds")
        for name, quantile in (("p50", "0.5"), ("p90", "0.9"))
    ]


def business_time(metric: str, selector: str) -> list[Query]:
    """A duration's quantiles in business time, to show beside its calendar time: the
    business series exist only when the workers have opening hours (CX_BUSINESS_HOURS)."""
    business = metric.replace("_seconds", "_business_seconds")
    return quantiles(business, selector, " business hours")


def alert_list(title: str, matchers: str) -> Panel:
    """The firing alerts whose labels match. The SDK has no alert-list builder: its generic
    panel builder with the alert list's options (Grafana 11.2's `alertlist` panel) written out."""
    return (
        builders.Panel()
        .type("alertlist")
        .title(title)
        .options(
            {
                "viewMode": "list",
                "groupMode": "default",
                "groupBy": [],
                "maxItems": 20,
                "sortOrder": 1,
                "dashboardAlerts": False,
                "alertName": "",
                "alertInstanceLabelFilter": f"{{{matchers}}}",
                "datasource": DATASOURCE_NAME,
                "showInstances": True,
                "stateFilter": {
                    "firing": True,
                    "pending": False,
                    "noData": False,
                    "normal": False,
                    "error": False,
                },
            }
        )
    )


def wall() -> builders.Dashboard:
    board = Board([])
    board.add(headline("NPS", "1h", "NPS · last hour"), 0, 0, 6, 8)
    board.add(headline("NPS", "24h", "NPS · last 24 hours"), 6, 0, 6, 8)
    board.add(headline("CSAT", "1h", "CSAT · last hour"), 12, 0, 6, 8)
    board.add(headline("CSAT", "24h", "CSAT · last 24 hours"), 18, 0, 6, 8)
    ces = f'window="24h", {ORGANISATION}'
    board.add(
        stat_panel(
            "Customer effort · 24h (1-7)",
            [Query(gauge("cx_ces_score_avg", ces), "CES", "ces_score")],
            Thresholds([("red", None), ("orange", 4), ("green", 5)]),
            (Query(gauge("cx_ces_responses", ces), "responses", "count"),),
        ),
        0,
        8,
        4,
        7,
    )
    board.add(
        stat_panel(
            "First response · last hour",
            quantiles("cx_first_response_seconds", f'window="1h", {ORGANISATION}'),
            Thresholds([("green", None), ("orange", 3600), ("red", 14400)]),
            tuple(business_time("cx_first_response_seconds", f'window="1h", {ORGANISATION}')),
        ),
        4,
        8,
        7,
        7,
    )
    board.add(
        stat_panel(
            "Resolution · last 24 hours",
            quantiles("cx_resolution_seconds", f'window="24h", {ORGANISATION}'),
            Thresholds([("green", None), ("orange", 86400), ("red", 259200)]),
            tuple(business_time("cx_resolution_seconds", f'window="24h", {ORGANISATION}')),
        ),
        11,
        8,
        7,
        7,
    )
    board.add(
        stat_panel(
            "Backlog (open tickets)",
            [Query(gauge("cx_tickets_open", ORGANISATION), "open", "count")],
            Thresholds([("green", None), ("orange", 200), ("red", 500)]),
        ),
        18,
        8,
        3,
        7,
    )
    firing = f'count(ALERTS{{alertstate="firing", {ON_THE_WALL}}}) or vector(0)'
    board.add(
        stat_panel(
            "Alerts firing",
            [Query(firing, "firing", "count")],
            Thresholds([("green", None), ("red", 1)]),
        ),
        21,
        8,
        3,
        7,
    )
    board.add(
        bars(
            "CSAT · 24h · 10 lowest teams",
            Query(per_team("cx_csat_ratio", "bottomk", 'window="24h", '), "{{team}}", "ratio"),
            Thresholds([("red", None), ("orange", 0.75), ("green", 0.85)]),
        ),
        0,
        15,
        8,
        10,
    )
    board.add(
        bars(
            "First response p90 · 24h · 10 slowest teams",
            Query(
                per_team("cx_first_response_seconds", "topk", 'window="24h", quantile="0.9", '),
                "{{team}}",
                "seconds",
            ),
            Thresholds([("green", None), ("orange", 14400), ("red", 28800)]),
        ),
        8,
        15,
        8,
        10,
    )
    board.add(
        bars(
            "Backlog · 10 largest teams",
            Query(per_team("cx_tickets_open", "topk"), "{{team}}", "count"),
            Thresholds([("green", None), ("orange", 50), ("red", 150)]),
        ),
        16,
        15,
        8,
        10,
    )
    board.add(alert_list("Firing alerts", ON_THE_WALL), 0, 25, 24, 6)
    return dashboard(
        "cx-wall", "cx-stream wall", board, "30s", "now-1h", tags=["wall"], hide_time=True
    )


# --- the analyst dashboard -------------------------------------------------------------------

SEGMENT = 'window="$window", $segment'
# Everything except the string "all" (RE2 has no lookahead).
NOT_ALL = "(.{0,2}|[^a].*|a[^l].*|al[^l].*|all.+)"


def segment_query() -> str:
    """One option per exported segment: text "all", "team billing", "channel chat", ...;
    value the segment's label matchers, `channel="all",priority="all",team="billing"`.

    Grafana prints each result as `{_segment="team billing",channel="all",...} value time`
    (labels sorted, so `_segment` first) and the variable's regex takes text and value."""
    expr = "max by (team, channel, priority) (cx_tickets_open)"
    expr = f'label_replace({expr}, "_segment", "all", "team", ".*")'
    for dimension in ("priority", "channel", "team"):
        expr = f'label_replace({expr}, "_segment", "{dimension} $1", "{dimension}", "{NOT_ALL}")'
    return f"query_result({expr})"


SEGMENT_REGEX = '/_segment="(?<text>[^"]*)",(?<value>[^}]*)}/'


def series(title: str, queries: list[Query], description: str = "") -> timeseries.Panel:
    (kind,) = {query.kind for query in queries}  # one kind of quantity, one axis
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries, instant=False))
        .legend(
            options.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            options.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.NONE)
        )
        .line_width(2)
        .fill_opacity(0)
        .show_points(common.VisibilityMode.NEVER)
    )
    return of_kind(panel, kind)


def of_segment(metric: str, legend: str, kind: str) -> Query:
    return Query(gauge(metric, SEGMENT), legend, kind)


def segment_series(title: str, kind: str, *metrics: tuple[str, str]) -> timeseries.Panel:
    """A trend panel of metrics (name, legend) of one kind, for the chosen window and segment."""
    return series(title, [of_segment(metric, legend, kind) for metric, legend in metrics])


def choice(name: str, values: Sequence[str], default: str) -> builders.CustomVariable:
    """A fixed list of values, one chosen."""
    return (
        builders.CustomVariable(name)
        .label(name)
        .hide(model.VariableHide.DONT_HIDE)
        .values(",".join(values))
        .current(model.VariableOption(text=default, value=default))
        .options([model.VariableOption(text=v, value=v, selected=v == default) for v in values])
        .include_all(False)
        .multi(False)
    )


def analyst() -> builders.Dashboard:
    nps = gauge("cx_nps", SEGMENT)
    margin = gauge("cx_nps_margin_of_error", SEGMENT)
    panels = [
        series(
            "NPS with its 95% margin",
            [
                Query(nps, "NPS", "nps"),
                Query(f"{nps} + {margin}", "upper", "nps"),
                Query(f"{nps} - {margin}", "lower", "nps"),
            ],
        ),
        segment_series(
            "CSAT with its Wilson 95% interval",
            "ratio",
            ("cx_csat_ratio", "CSAT"),
            ("cx_csat_ratio_lower", "lower"),
            ("cx_csat_ratio_upper", "upper"),
        ),
        segment_series(
            "Survey responses",
            "count",
            ("cx_nps_responses", "NPS responses"),
            ("cx_nps_promoters", "promoters"),
            ("cx_nps_passives", "passives"),
            ("cx_nps_detractors", "detractors"),
            ("cx_csat_responses", "CSAT responses"),
            ("cx_csat_satisfied", "satisfied"),
            ("cx_ces_responses", "CES responses"),
        ),
        segment_series(
            "CSAT mean score (1-5)",
            "csat_score",
            ("cx_csat_score_avg", "mean score"),
        ),
        segment_series(
            "Customer effort: mean score (1-7)",
            "ces_score",
            ("cx_ces_score_avg", "mean score"),
        ),
        segment_series(
            "Customer effort: low-effort share (5-7)",
            "ratio",
            ("cx_ces_low_effort_ratio", "low-effort share"),
        ),
        series(
            "First response time",
            [
                *quantiles("cx_first_response_seconds", SEGMENT),
                *business_time("cx_first_response_seconds", SEGMENT),
                of_segment("cx_first_response_seconds_avg", "mean", "seconds"),
            ],
            "Calendar time, and business time where opening hours are configured.",
        ),
        series(
            "Time to resolution",
            [
                *quantiles("cx_resolution_seconds", SEGMENT),
                *business_time("cx_resolution_seconds", SEGMENT),
                of_segment("cx_resolution_seconds_avg", "mean", "seconds"),
            ],
            "Calendar time, and business time where opening hours are configured.",
        ),
        series(
            "Full resolution time (latest resolution, resolved tickets)",
            [
                *quantiles("cx_full_resolution_seconds", SEGMENT),
                of_segment("cx_full_resolution_seconds_avg", "mean", "seconds"),
            ],
        ),
        segment_series(
            "Reopen rate and first contact resolution (share of first-resolved tickets)",
            "ratio",
            ("cx_reopened_ratio", "reopened since"),
            ("cx_first_contact_resolution_ratio", "first contact resolution"),
        ),
        segment_series(
            "Reopens and first contact resolutions (count)",
            "count",
            ("cx_tickets_resolved", "first resolved"),
            ("cx_reopened_tickets", "reopened since"),
            ("cx_first_contact_resolutions", "first contact resolutions"),
            ("cx_ticket_reopens", "reopens in window"),
            ("cx_full_resolution_count", "resolved for good"),
        ),
        segment_series(
            "SLA breaches and one-touch resolutions (share)",
            "ratio",
            ("cx_first_response_sla_breach_ratio", "first response breaches"),
            ("cx_resolution_sla_breach_ratio", "resolution breaches"),
            ("cx_one_touch_ratio", "one-touch"),
        ),
        segment_series(
            "SLA breaches and one-touch resolutions (count)",
            "count",
            ("cx_first_response_count", "first responses"),
            ("cx_first_response_sla_breaches", "first response breaches"),
            ("cx_resolution_count", "resolutions"),
            ("cx_resolution_sla_breaches", "resolution breaches"),
            ("cx_one_touch_tickets", "one-touch"),
        ),
        series(
            "Tickets",
            [
                of_segment("cx_tickets_opened", "opened in window", "count"),
                of_segment("cx_tickets_resolved", "resolved in window", "count"),
                Query(gauge("cx_tickets_open", "$segment"), "open now", "count"),
            ],
        ),
        series(
            "Processed records per second, by outcome (5m average)",
            [Query("outcome:cx_events:rate5m", "{{outcome}}", "rate")],
        ),
        series(
            "Dead letters per second, by topic",
            [
                Query(
                    'sum by (topic) (rate(cx_events_total{outcome="invalid"}[$__rate_interval]))',
                    "{{topic}}",
                    "rate",
                )
            ],
        ),
        series(
            "Consumer lag",
            [
                Query("instance:cx_consumer_lag:sum", "{{instance}}", "count"),
                Query("job:cx_consumer_lag:sum", "all workers", "count"),
            ],
            "Input records not yet processed.",
        ),
        series("Workers up", [Query('up{job="cx-stream"}', "{{instance}}", "up")]),
    ]
    board = Board([])
    for index, panel in enumerate(panels):
        board.add(panel, 12 * (index % 2), 8 * (index // 2), 12, 8)
    segment = (
        builders.QueryVariable("segment")
        .label("segment")
        .description(
            "The whole organisation, or one team, channel or priority: the "
            "processor exports one dimension at a time."
        )
        .hide(model.VariableHide.DONT_HIDE)
        .datasource(DATASOURCE)
        .query({"query": segment_query(), "refId": "segment"})
        .regex(SEGMENT_REGEX)
        .current(model.VariableOption(text="all", value='channel="all",priority="all",team="all"'))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
    )
    return dashboard(
        "cx-analyst",
        "cx-stream analyst",
        board,
        "1m",
        "now-7d",
        tags=["analyst"],
        variables=[choice("window", ("1h", "24h", "7d", "28d"), "24h"), segment],
    )


# --- the customer-success dashboard ----------------------------------------------------------

ACCOUNT_WINDOWS = ("30d", "90d", "365d")
"""CX_ACCOUNT_WINDOWS' default (docs/contract.md 7.3): change both together."""
WINDOW = 'window="$window"'
GAINS = (("new", "green"), ("reactivation", "light-green"), ("expansion", "blue"))
LOSSES = (("contraction", "orange"), ("churn", "red"))
BANDS = (("red", "red"), ("yellow", "yellow"), ("green", "green"), ("unknown", "#8e8e8e"))
NRR_COLOURS = Thresholds([("red", None), ("orange", 0.95), ("green", 1)])
"""NRR below 95% (CxNetRevenueRetentionLow's floor) is red, below 100% orange: the accounts
paying at the window's start pay less now."""
NEUTRAL = Thresholds([("blue", None)])


def per_window(metric: str, kind: str) -> list[Query]:
    """One query per account window, in the windows' order (Prometheus returns no set order)."""
    return [Query(gauge(metric, f'window="{w}"'), w, kind) for w in ACCOUNT_WINDOWS]


def lost(metric: str, selector: str) -> str:
    """A loss drawn below 0."""
    return f"-{gauge(metric, selector)}"


def colour(panel: F, ref: str, name: str) -> F:
    """One query's series in a fixed colour."""
    fixed = {"mode": "fixed", "fixedColor": name}
    return panel.override_by_query(ref, [model.DynamicConfigValue(id_val="color", value=fixed)])


def movements() -> list[tuple[Query, str]]:
    """The window's MRR movements, gains above 0 and losses below, with their colours."""
    return [
        *(
            (Query(gauge("cx_mrr_movements", f'{WINDOW}, movement="{kind}"'), kind, "money"), hue)
            for kind, hue in GAINS
        ),
        *(
            (Query(lost("cx_mrr_movements", f'{WINDOW}, movement="{kind}"'), kind, "money"), hue)
            for kind, hue in LOSSES
        ),
    ]


def stacked_movements() -> timeseries.Panel:
    """Stacked bars: per day, the MRR moved in the window up to then, gains up, losses down."""
    moved = movements()
    panel = (
        series(
            "MRR movements over the last $window (gains up, losses down)",
            [query for query, _ in moved],
            "Each bar: the MRR that new, reactivated and expanding accounts added in the "
            "$window up to that day, and what contracting and churned accounts took away.",
        )
        .draw_style(common.GraphDrawStyle.BARS)
        .stacking(options.StackingConfig().mode(common.StackingMode.NORMAL))
        .fill_opacity(80)
        .interval("1d")
    )
    for index, (_, hue) in enumerate(moved):
        panel = colour(panel, ref_id(index), hue)
    return panel


def bridge() -> bargauge.Panel:
    """MRR at the window's start, each movement, MRR now: the start plus the movements is now."""
    steps = [
        (Query(gauge("cx_cohort_mrr", WINDOW), "MRR $window ago", "money"), "blue"),
        *movements(),
        (Query(gauge("cx_mrr"), "MRR now", "money"), "blue"),
    ]
    panel = (
        bargauge.Panel()
        .title("MRR bridge over the last $window")
        .description(
            "MRR at the window's start (the cohort's), plus new, reactivated and expanded MRR, "
            "minus contracted and churned MRR, is MRR now."
        )
        .datasource(DATASOURCE)
        .targets(targets([query for query, _ in steps], instant=True))
        .reduce_options(last())
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .show_unfilled(True)
    )
    panel = coloured(of_kind(panel, "money"), NEUTRAL)
    for index, (_, hue) in enumerate(steps):
        panel = colour(panel, ref_id(index), hue)
    return panel


def by_band(title: str, metric: str, kind: str) -> bargauge.Panel:
    """Paying accounts or their MRR per health band, each band in its colour."""
    queries = [Query(gauge(metric, f'band="{band}"'), band, kind) for band, _ in BANDS]
    panel = (
        bargauge.Panel()
        .title(title)
        .datasource(DATASOURCE)
        .targets(targets(queries, instant=True))
        .reduce_options(last())
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .show_unfilled(True)
    )
    panel = coloured(of_kind(panel, kind), NEUTRAL)
    for index, (_, hue) in enumerate(BANDS):
        panel = colour(panel, ref_id(index), hue)
    return panel


@dataclass
class Column:
    """One column of a table: a per-row query (`max by (row label)`), its heading and kind."""

    metric: str
    selector: str
    heading: str
    kind: str
    red_above: float | None = None
    """Its text red from this value up."""

    def properties(self) -> list[model.DynamicConfigValue]:
        found = [
            model.DynamicConfigValue(id_val="displayName", value=self.heading),
            *KINDS[self.kind].properties(),
        ]
        if self.red_above is not None:
            steps = [{"color": "text", "value": None}, {"color": "red", "value": self.red_above}]
            found += [
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
                model.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
                model.DynamicConfigValue(
                    id_val="thresholds", value={"mode": "absolute", "steps": steps}
                ),
            ]
        return found


def table_of(title: str, row: str, columns: list[Column], description: str) -> table.Panel:
    """Instant queries, one per column, merged into one row per value of the `row` label."""
    queries = [
        Query(f"max by ({row}) ({c.metric}{{{c.selector}}})", c.heading, c.kind) for c in columns
    ]
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries, instant=True, as_table=True))
        .transformations(
            [
                model.DataTransformerConfig(id_val="merge", options={}),
                model.DataTransformerConfig(
                    id_val="organize", options={"excludeByName": {"Time": True}}
                ),
            ]
        )
        .sort_by([options.TableSortByFieldState().display_name(row)])
    )
    panel = of_kind(panel, "ratio")
    for index, column in enumerate(columns):
        # Grafana names the value of table query A "Value #A"
        panel = panel.override_by_name(f"Value #{ref_id(index)}", column.properties())
    return panel


def churn_columns(metric: str, selector: str, group: str) -> list[Column]:
    """A group's cohort size, logo churn and its Wilson 95% interval."""
    return [
        Column(
            metric.replace("cx_account_churn_ratio", "cx_cohort_accounts"),
            selector,
            f"{group}accounts",
            "count",
        ),
        Column(metric, selector, f"{group}churn", "ratio"),
        Column(f"{metric}_lower", selector, f"{group}95% low", "ratio"),
        Column(f"{metric}_upper", selector, f"{group}95% high", "ratio"),
    ]


def drivers() -> table.Panel:
    """Per support driver: churn of the exposed and the others, and the difference."""
    difference = "cx_account_churn_ratio_difference"
    return table_of(
        "Churn by support driver over the last $window: exposed vs not exposed",
        "driver",
        [
            *churn_columns(
                "cx_account_churn_ratio_by_driver", f'{WINDOW}, exposed="true"', "exposed: "
            ),
            *churn_columns(
                "cx_account_churn_ratio_by_driver", f'{WINDOW}, exposed="false"', "not exposed: "
            ),
            Column(difference, WINDOW, "difference", "difference"),
            # above 0: the exposed churn more, beyond doubt
            Column(f"{difference}_lower", WINDOW, "difference 95% low", "difference", 1e-6),
            Column(f"{difference}_upper", WINDOW, "difference 95% high", "difference"),
        ],
        "Of the accounts paying at the window's start, those whose support experience had the "
        "driver then (exposed) and the others: the share of each not paying now, and exposed "
        "minus not exposed. The difference's low bound in red (above 0): exposed accounts "
        "churn more, beyond doubt.",
    )


def bands() -> table.Panel:
    return table_of(
        "Churn by health band over the last $window",
        "band",
        churn_columns("cx_account_churn_ratio_by_health", WINDOW, ""),
        "Of the accounts paying at the window's start, by their health band then: how many, "
        "and the share not paying now, with its Wilson 95% interval. Does the score predict "
        "churn? Red should churn most.",
    )


def at_risk() -> stat.Panel:
    """The MRR of paying accounts in the red health band, red when there is any."""
    red = 'band="red"'
    return stat_panel(
        "MRR at risk (red health band)",
        [Query(gauge("cx_mrr_by_health", red), "MRR at risk", "money")],
        Thresholds([("green", None), ("red", 1e-6)]),
        (
            Query(
                f"max without (instance, band) (cx_mrr_by_health{{{red}}}) / {gauge('cx_mrr')}",
                "of MRR",
                "ratio",
            ),
            Query(gauge("cx_accounts_by_health", red), "accounts", "count"),
        ),
    )


def success() -> builders.Dashboard:
    """Revenue and retention (docs/contract.md 7.3), and what support does to churn (7.4)."""
    board = Board([])
    # what the accounts pay now, and how much of it they keep
    board.add(
        stat_panel(
            "MRR now",
            [Query(gauge("cx_mrr"), "MRR", "money")],
            NEUTRAL,
            (
                Query(gauge("cx_accounts_paying"), "paying accounts", "count"),
                Query(gauge("cx_arpa"), "ARPA", "money"),
            ),
        ),
        0,
        0,
        8,
        7,
    )
    board.add(
        stat_panel(
            "Net revenue retention",
            per_window("cx_net_revenue_retention_ratio", "revenue_retention"),
            NRR_COLOURS,
        ),
        8,
        0,
        6,
        7,
    )
    board.add(
        stat_panel(
            "Gross revenue retention",
            per_window("cx_gross_revenue_retention_ratio", "revenue_retention"),
            NEUTRAL,
        ),
        14,
        0,
        6,
        7,
    )
    board.add(
        stat_panel(
            "Account numbers as of",
            [Query(f"time() - {gauge('cx_account_metrics_as_of_seconds')}", "ago", "seconds")],
            Thresholds([("green", None), ("orange", 300), ("red", 900)]),
        ),
        20,
        0,
        4,
        7,
    )
    # how MRR moved
    board.add(stacked_movements(), 0, 7, 12, 9)
    board.add(bridge(), 12, 7, 12, 9)
    board.add(
        series(
            "MRR",
            [
                Query(gauge("cx_mrr"), "MRR", "money"),
                Query(gauge("cx_cohort_mrr", WINDOW), "MRR $window before", "money"),
            ],
        ),
        0,
        16,
        8,
        8,
    )
    board.add(
        series(
            "Paying accounts",
            [
                Query(gauge("cx_accounts_paying"), "paying", "count"),
                Query(gauge("cx_cohort_accounts", WINDOW), "paying $window before", "count"),
            ],
        ),
        8,
        16,
        8,
        8,
    )
    board.add(
        series(
            "Accounts won and lost over the last $window",
            [
                Query(gauge("cx_account_movements", f'{WINDOW}, movement="{kind}"'), kind, "count")
                for kind in ("new", "reactivation", "churn")
            ],
        ),
        16,
        16,
        8,
        8,
    )
    # retention per window
    board.add(
        stat_panel("Logo churn", per_window("cx_account_churn_ratio", "ratio"), NEUTRAL),
        0,
        24,
        6,
        7,
    )
    board.add(
        stat_panel(
            "Customer retention", per_window("cx_customer_retention_ratio", "ratio"), NEUTRAL
        ),
        6,
        24,
        6,
        7,
    )
    board.add(
        stat_panel(
            "Customer lifetime value",
            per_window("cx_customer_lifetime_value", "money"),
            NEUTRAL,
        ),
        12,
        24,
        6,
        7,
    )
    board.add(
        stat_panel(
            "Cohort: accounts paying at the window's start",
            per_window("cx_cohort_accounts", "count"),
            NEUTRAL,
        ),
        18,
        24,
        6,
        7,
    )
    board.add(
        series(
            "Revenue retention over the last $window",
            [
                Query(gauge("cx_net_revenue_retention_ratio", WINDOW), "NRR", "revenue_retention"),
                Query(
                    gauge("cx_gross_revenue_retention_ratio", WINDOW), "GRR", "revenue_retention"
                ),
            ],
        ),
        0,
        31,
        8,
        8,
    )
    board.add(
        series(
            "Logo churn and customer retention over the last $window",
            [
                Query(gauge("cx_account_churn_ratio", WINDOW), "logo churn", "ratio"),
                Query(gauge("cx_customer_retention_ratio", WINDOW), "retention", "ratio"),
            ],
        ),
        8,
        31,
        8,
        8,
    )
    board.add(
        series(
            "ARPA and customer lifetime value",
            [
                Query(gauge("cx_arpa"), "ARPA", "money"),
                Query(gauge("cx_customer_lifetime_value", WINDOW), "CLV ($window churn)", "money"),
            ],
        ),
        16,
        31,
        8,
        8,
    )
    # what the support experience does to churn
    board.add(drivers(), 0, 39, 24, 8)
    board.add(at_risk(), 0, 47, 6, 8)
    board.add(
        by_band("Paying accounts by health band", "cx_accounts_by_health", "count"), 6, 47, 6, 8
    )
    board.add(by_band("MRR by health band", "cx_mrr_by_health", "money"), 12, 47, 6, 8)
    board.add(bands(), 18, 47, 6, 8)
    board.add(alert_list("Firing customer-success alerts", 'audience="cs-lead"'), 0, 55, 24, 5)
    return dashboard(
        "cx-success",
        "cx-stream customer success",
        board,
        "1m",
        "now-30d",
        tags=["customer-success"],
        variables=[choice("window", ACCOUNT_WINDOWS, ACCOUNT_WINDOWS[0])],
    )


def dashboard(
    uid: str,
    title: str,
    board: Board,
    refresh: str,
    time_from: str,
    tags: list[str],
    variables: Sequence[Builder[model.VariableModel]] = (),
    hide_time: bool = False,
) -> builders.Dashboard:
    made = (
        builders.Dashboard(title)
        .uid(uid)
        .tags(["cx-stream", *tags])
        .timezone("browser")
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh(refresh)
        .version(1)
        .time(time_from, "now")
        .timepicker(builders.TimePicker().hidden(hide_time))
        .links([])
        .annotations([])
        .variables(list(variables))
    )
    for panel in board.panels:
        made = made.with_panel(panel)
    return made


def generate() -> dict[str, str]:
    """File name -> the JSON text Grafana provisions."""
    return {
        name: json.dumps(board.build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"
        for name, board in (
            ("wall.json", wall()),
            ("analyst.json", analyst()),
            ("customer-success.json", success()),
        )
    }


def main() -> None:
    for name, text in generate().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote grafana/dashboards/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
