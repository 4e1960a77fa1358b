"""Generates the Grafana dashboards in grafana/dashboards/ with Grafana's own dashboards-as-code
library, grafana-foundation-sdk, in its build for Grafana 11.2 (the version compose runs).

    .venv/bin/python grafana/generate.py      # rewrites wall.json and analyst.json

The JSON files are what Grafana provisions; edit this file, not them (tests/test_dashboards.py
fails when they differ from what this file generates).

The wall is read from across a room and must only show what is true now: instant queries
reduced with `last`, "no data" when a series is gone, thresholds colouring only the main value
of a panel, per-team bars sorted and capped. The analyst dashboard has one segment choice,
because the processor exports one dimension at a time (no cross products), and one kind of
quantity per panel, so that counts and ratios never share an axis.

The SDK has no builder for the alert-list panel (none of its builds, 10.1 to 11.6 and next, has
one): the wall's alert list is its generic panel builder with the options written out here.
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

HERE = Path(__file__).resolve().parent
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="cx-prometheus")
DATASOURCE_NAME = "Prometheus"  # the alert-list panel filters by name, not uid
ORGANISATION = 'team="all", channel="all", priority="all"'
NO_DATA = "no data"
WATCHDOG = "CxWatchdog"

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


def gauge(metric: str, selector: str) -> str:
    """One series per segment, whichever worker exports it (a rebalance can briefly give two)."""
    return f"max without (instance) ({metric}{{{selector}}})"


@dataclass
class Query:
    expr: str
    legend: str
    kind: str


def ref_id(index: int) -> str:
    return chr(ord("A") + index)


def targets(queries: Sequence[Query], instant: bool) -> list[Builder[Dataquery]]:
    made: list[Builder[Dataquery]] = []
    for index, query in enumerate(queries):
        target = (
            promql.Dataquery()
            .datasource(DATASOURCE)
            .ref_id(ref_id(index))
            .expr(query.expr)
            .legend_format(query.legend)
        )
        made.append(target.instant() if instant else target.range())
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


def alert_list(title: str) -> Panel:
    """The firing alerts but the watchdog. The SDK has no alert-list builder: its generic panel
    builder with the alert list's options (Grafana 11.2's `alertlist` panel) written out."""
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
                "alertInstanceLabelFilter": f'{{alertname!="{WATCHDOG}"}}',
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
    firing = f'count(ALERTS{{alertstate="firing", alertname!="{WATCHDOG}"}}) or vector(0)'
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
    board.add(alert_list("Firing alerts"), 0, 25, 24, 6)
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
        for name, board in (("wall.json", wall()), ("analyst.json", analyst()))
    }


def main() -> None:
    for name, text in generate().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote grafana/dashboards/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
