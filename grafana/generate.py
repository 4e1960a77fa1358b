"""Generates the Grafana dashboards in grafana/dashboards/ (for Grafana 11.2).

    .venv/bin/python grafana/generate.py      # rewrites wall.json and analyst.json

The JSON files are what Grafana provisions; edit this file, not them (tests/test_dashboards.py
fails when they differ from what this file generates).

The wall is read from across a room and must only show what is true now: instant queries
reduced with `last`, "no data" when a series is gone, thresholds colouring only the main value
of a panel, per-team bars sorted and capped. The analyst dashboard has one segment choice,
because the processor exports one dimension at a time (no cross products), and one kind of
quantity per panel, so that counts and ratios never share an axis.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "cx-prometheus"}
DATASOURCE_NAME = "Prometheus"  # the alert-list panel filters by name, not uid
ORGANISATION = 'team="all", channel="all", priority="all"'
NO_DATA = "no data"
WATCHDOG = "CxWatchdog"

Json = dict[str, Any]

# Units and axis ranges per kind of quantity; a panel shows one kind.
KINDS: dict[str, Json] = {
    "ratio": {"unit": "percentunit", "min": 0, "max": 1},
    "count": {"unit": "short", "min": 0, "decimals": 0},
    "seconds": {"unit": "s", "min": 0},
    "nps": {"unit": "none", "min": -100, "max": 100, "decimals": 0},
    "csat_score": {"unit": "none", "min": 1, "max": 5, "decimals": 2},
    "ces_score": {"unit": "none", "min": 1, "max": 7, "decimals": 2},
    "rate": {"unit": "ops", "min": 0},
    "up": {"unit": "none", "min": 0, "max": 1, "decimals": 0},
}


def gauge(metric: str, selector: str) -> str:
    """One series per segment, whichever worker exports it (a rebalance can briefly give two)."""
    return f"max without (instance) ({metric}{{{selector}}})"


@dataclass
class Query:
    expr: str
    legend: str
    kind: str


@dataclass
class Thresholds:
    steps: list[tuple[str, float | None]]

    def defaults(self, kind: str) -> Json:
        """Field defaults of a wall panel: its kind's unit and range, coloured by these steps."""
        return {
            **KINDS[kind],
            "noValue": NO_DATA,
            "color": {"mode": "thresholds"},
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": color, "value": value} for color, value in self.steps],
            },
        }


@dataclass
class Board:
    uid: str
    title: str
    panels: list[Json] = field(default_factory=list)

    def add(self, panel: Json, x: int, y: int, w: int, h: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        self.panels.append(panel)


def targets(queries: list[Query], instant: bool) -> list[Json]:
    return [
        {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + index),
            "expr": query.expr,
            "legendFormat": query.legend,
            "instant": instant,
            "range": not instant,
        }
        for index, query in enumerate(queries)
    ]


# --- the wall --------------------------------------------------------------------------------

TV_TEXT = {"titleSize": 28, "valueSize": 72}
LAST = {"calcs": ["last"], "fields": "", "values": False}


def stat(
    title: str,
    main: list[Query],
    thresholds: Thresholds,
    secondary: tuple[Query, ...] = (),
) -> Json:
    """Big numbers: the main queries coloured by the thresholds, the secondary ones (margins,
    bounds, counts) beside them in a neutral colour and in their own unit."""
    queries = [*main, *secondary]
    overrides = [
        {
            "matcher": {"id": "byFrameRefID", "options": target["refId"]},
            "properties": [
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "transparent"}},
                *({"id": key, "value": value} for key, value in KINDS[query.kind].items()),
            ],
        }
        for query, target in zip(
            secondary, targets(queries, instant=True)[len(main) :], strict=True
        )
    ]
    return {
        "type": "stat",
        "title": title,
        "datasource": DATASOURCE,
        "targets": targets(queries, instant=True),
        "options": {
            "reduceOptions": LAST,
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "center",
            "textMode": "value_and_name",
            "orientation": "horizontal",
            "text": TV_TEXT,
        },
        "fieldConfig": {
            "defaults": thresholds.defaults(main[0].kind),
            "overrides": overrides,
        },
    }


def bars(title: str, query: Query, thresholds: Thresholds) -> Json:
    return {
        "type": "bargauge",
        "title": title,
        "datasource": DATASOURCE,
        "targets": targets([query], instant=True),
        "options": {
            "reduceOptions": LAST,
            "orientation": "horizontal",
            "displayMode": "basic",
            "showUnfilled": True,
            "text": {"titleSize": 22, "valueSize": 28},
        },
        "fieldConfig": {
            "defaults": thresholds.defaults(query.kind),
            "overrides": [],
        },
    }


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


def headline(name: str, window: str, title: str) -> Json:
    """NPS or CSAT of the whole organisation, with its uncertainty and response count."""
    metric, kind, thresholds, secondary = HEADLINES[name]
    segment = f'window="{window}", {ORGANISATION}'
    return stat(
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


def wall() -> Json:
    board = Board("cx-wall", "cx-stream wall")
    board.add(headline("NPS", "1h", "NPS · last hour"), 0, 0, 6, 8)
    board.add(headline("NPS", "24h", "NPS · last 24 hours"), 6, 0, 6, 8)
    board.add(headline("CSAT", "1h", "CSAT · last hour"), 12, 0, 6, 8)
    board.add(headline("CSAT", "24h", "CSAT · last 24 hours"), 18, 0, 6, 8)
    ces = f'window="24h", {ORGANISATION}'
    board.add(
        stat(
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
        stat(
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
        stat(
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
        stat(
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
        stat(
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
    board.add(
        {
            "type": "alertlist",
            "title": "Firing alerts",
            "options": {
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
            },
        },
        0,
        25,
        24,
        6,
    )
    return dashboard(board, refresh="30s", time_from="now-1h", tags=["wall"], hide_time=True)


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


def series(title: str, queries: list[Query], description: str = "") -> Json:
    (kind,) = {query.kind for query in queries}  # one kind of quantity, one axis
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets(queries, instant=False),
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "fieldConfig": {
            "defaults": {
                **KINDS[kind],
                "noValue": NO_DATA,
                "custom": {"lineWidth": 2, "fillOpacity": 0, "showPoints": "never"},
            },
            "overrides": [],
        },
    }


def of_segment(metric: str, legend: str, kind: str) -> Query:
    return Query(gauge(metric, SEGMENT), legend, kind)


def segment_series(title: str, kind: str, *metrics: tuple[str, str]) -> Json:
    """A trend panel of metrics (name, legend) of one kind, for the chosen window and segment."""
    return series(title, [of_segment(metric, legend, kind) for metric, legend in metrics])


def analyst() -> Json:
    board = Board("cx-analyst", "cx-stream analyst")
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
    for index, panel in enumerate(panels):
        board.add(panel, 12 * (index % 2), 8 * (index // 2), 12, 8)
    variables = [
        {
            "name": "window",
            "label": "window",
            "type": "custom",
            "hide": 0,
            "query": "1h,24h,7d,28d",
            "current": {"text": "24h", "value": "24h"},
            "options": [
                {"text": name, "value": name, "selected": name == "24h"}
                for name in ("1h", "24h", "7d", "28d")
            ],
            "includeAll": False,
            "multi": False,
        },
        {
            "name": "segment",
            "label": "segment",
            "description": "The whole organisation, or one team, channel or priority: the "
            "processor exports one dimension at a time.",
            "type": "query",
            "hide": 0,
            "datasource": DATASOURCE,
            "query": {"query": segment_query(), "refId": "segment"},
            "definition": segment_query(),
            "regex": SEGMENT_REGEX,
            "current": {"text": "all", "value": 'channel="all",priority="all",team="all"'},
            "refresh": 2,
            "sort": 1,
            "includeAll": False,
            "multi": False,
        },
    ]
    return dashboard(board, refresh="1m", time_from="now-7d", tags=["analyst"], variables=variables)


def dashboard(
    board: Board,
    refresh: str,
    time_from: str,
    tags: list[str],
    variables: list[Json] | None = None,
    hide_time: bool = False,
) -> Json:
    return {
        "uid": board.uid,
        "title": board.title,
        "tags": ["cx-stream", *tags],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": refresh,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"hidden": hide_time},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables or []},
        "panels": board.panels,
    }


def generate() -> dict[str, str]:
    """File name -> the JSON text Grafana provisions."""
    return {
        name: json.dumps(board, indent=2, ensure_ascii=False) + "\n"
        for name, board in (("wall.json", wall()), ("analyst.json", analyst()))
    }


def main() -> None:
    for name, text in generate().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote grafana/dashboards/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
