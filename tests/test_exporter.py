"""The /metrics text of the series, read back with prometheus-client's own parser."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from stream._core import Merge
from tests.helpers import LABELS, WINDOW_NAMES, MetricsTopic, Row, feed, new_pipeline, partials_of
from tests.scenario import delivery, scenario

NOW = time.time()

COUNTS = [
    "tickets_opened",
    "first_response_count",
    "first_response_seconds_sum",
    "first_response_sla_breaches",
    "first_response_business_seconds_sum",
    "resolution_count",
    "resolution_seconds_sum",
    "resolution_sla_breaches",
    "resolution_business_seconds_sum",
    "full_resolution_count",
    "full_resolution_seconds_sum",
    "tickets_resolved",
    "one_touch_tickets",
    "reopened_tickets",
    "first_contact_resolutions",
    "ticket_reopens",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "csat_responses",
    "csat_score_sum",
    "csat_satisfied",
    "ces_responses",
    "ces_score_sum",
    "ces_low_effort",
]
SKETCHES = [
    "first_response_seconds",
    "first_response_business_seconds",
    "resolution_seconds",
    "resolution_business_seconds",
    "full_resolution_seconds",
]


def message(*partials: dict[str, Any]) -> bytes:
    return orjson.dumps({"partials": list(partials)})


def partial(source: int, tickets_open: int, windows: dict[str, Any]) -> dict[str, Any]:
    return {
        "dimension": "all",
        "value": "all",
        "source_partition": source,
        "removed": False,
        "tickets_open": tickets_open,
        "windows": windows,
    }


def parsed_page(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = list(text_string_to_metric_families(text))
    assert len({family.name for family in families}) == len(families), "a family split up"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def samples_of(rows: list[Row]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples the snapshots' values make, as docs/contract.md names them."""
    wanted = {}
    for row in rows:
        for name, value in row.metrics.items():
            if value is None:
                continue
            labels = dict(row.labels)
            if name[-4:] in ("_p50", "_p90"):
                labels["quantile"] = {"_p50": "0.5", "_p90": "0.9"}[name[-4:]]
                name = name[:-4]
            wanted[(f"cx_{name}", tuple(sorted(labels.items())))] = float(value)
        segment = {key: row.labels[key] for key in LABELS[1:]}
        wanted[("cx_tickets_open", tuple(sorted(segment.items())))] = float(row.tickets_open)
    return wanted


def test_the_page_and_the_snapshots_say_the_same_even_of_odd_labels() -> None:
    events = scenario(31, NOW, tickets=60)
    for _, fields in events:  # label values a producer may send: quotes, backslashes, newlines
        if fields.get("team") == "billing":
            fields["team"] = 'bill "ing"\\\nteam'
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 31), NOW)
    merge = Merge(50, WINDOW_NAMES)
    merge.apply([(value, 0) for value in partials_of(pipeline, NOW)])
    rows = MetricsTopic().read(merge)
    parsed = parsed_page(merge.exposition([0]).decode())
    assert parsed == samples_of(rows)
    assert any('bill "ing"\\\nteam' in dict(labels).values() for _, labels in parsed)
    assert merge.exposition([1]) == b""  # another worker's partitions


def test_partials_of_source_partitions_add_up_and_a_newer_one_replaces_its_own() -> None:
    """A series is merged again from its stored partials after any one changed: merging must
    neither change nor share them."""
    first = partial(
        0,
        2,
        {
            "1h": {
                "counts": {"tickets_opened": 3, "csat_score_sum": 4.5, "csat_responses": 1},
                "sketches": {"first_response_seconds": [1, [[100, 2], [120, 1]]]},
            }
        },
    )
    second = partial(
        1,
        1,
        {
            "1h": {
                "counts": {"tickets_opened": 1, "csat_responses": 1, "csat_score_sum": 3},
                "sketches": {"first_response_seconds": [0, [[120, 4], [130, 1]]]},
            },
            "24h": {"counts": {"tickets_opened": 1}, "sketches": {}},
        },
    )
    together = partial(
        0,
        3,
        {
            "1h": {
                "counts": {"tickets_opened": 4, "csat_responses": 2, "csat_score_sum": 7.5},
                "sketches": {"first_response_seconds": [1, [[100, 2], [120, 5], [130, 1]]]},
            },
            "24h": {"counts": {"tickets_opened": 1}, "sketches": {}},
        },
    )
    merge, whole = Merge(50, WINDOW_NAMES), Merge(50, WINDOW_NAMES)
    merge.apply([(message(first, second), 0), (message(first), 0)])
    whole.apply([(message(together), 0)])
    snapshots, wanted = MetricsTopic(), MetricsTopic().read(whole)
    rows = snapshots.read(merge)
    assert rows == wanted
    hour = rows[0]
    assert (hour.key, hour.tickets_open) == ("window=1h,team=all,channel=all,priority=all", 3)
    assert (hour.metrics["tickets_opened"], hour.metrics["csat_score_avg"]) == (4, 3.75)
    assert hour.metrics["first_response_seconds_p50"] is not None
    # the second partition's series again, less: merged anew from the stored first
    merge.apply([(message({**second, "tickets_open": 0}), 0)])
    assert [row.tickets_open for row in snapshots.read(merge)] == [2] * len(WINDOW_NAMES)


def test_every_family_has_a_help_sentence() -> None:
    """Every windowed metric (the business-time ones too) and the backlog: 23 of them had their
    own name for HELP."""
    tally = {
        "counts": dict.fromkeys(COUNTS, 1),
        "sketches": {name: [0, [[100, 1]]] for name in SKETCHES},
    }
    merge = Merge(50, ["1h"], business_hours=True)
    merge.apply([(message(partial(0, 1, {"1h": tally})), 0)])
    text = merge.exposition([0]).decode()
    helps = help_lines(text)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert set(helps) == families
    assert len(families) == 42  # 41 windowed families (quantiles share one) and the backlog
    problems = [help_problem(family, helps[family]) for family in sorted(families)]
    assert not [problem for problem in problems if problem], problems


def help_problem(family: str, text: str) -> str | None:
    """What is wrong with a metric family's HELP text, if it is no sentence a person can read
    in Grafana's metric browser: the name again, or hardly a word besides the name's."""
    if text.strip() in (family, family.removesuffix("_total"), ""):
        return f"{family}: the HELP line repeats the name"
    named = set(re.findall(r"[a-z0-9]+", family.lower())) | {"cx", "total"}
    besides = [word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in named]
    if len(besides) < 3:
        return f"{family}: {text!r} says hardly more than the name"
    return None


def help_lines(text: str) -> dict[str, str]:
    """The HELP text of each family of an exposition."""
    return dict(re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE))
