"""The /metrics text of the series, read back with prometheus-client's own parser."""

from __future__ import annotations

import copy
import itertools
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.exporter import (
    MergedSeries,
    SeriesRow,
    render_series,
    series_samples,
    window_metrics,
)
from stream.windows import Tally
from tests.helpers import exported, feed, new_pipeline
from tests.scenario import delivery, scenario

NOW = time.time()


def segment_of(row: SeriesRow) -> tuple[str, ...]:
    return tuple(row.labels[name] for name in ("team", "channel", "priority"))


@pytest.mark.parametrize("rendered", ["at once", "per series"])
def test_every_value_reads_back_with_its_labels_even_odd_ones(rendered: str) -> None:
    events = scenario(31, NOW, tickets=60)
    for _, fields in events:  # label values a producer may send: quotes, backslashes, newlines
        if fields.get("team") == "billing":
            fields["team"] = 'bill "ing"\\\nteam'
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 31), NOW)
    rows = exported(pipeline, NOW)
    if rendered == "at once":
        text = render_series([series_samples(rows)])
    else:  # as the worker keeps them: each series' windows apart
        ordered = sorted(rows, key=segment_of)
        text = render_series(
            series_samples(list(group)) for _, group in itertools.groupby(ordered, segment_of)
        )
    families = list(text_string_to_metric_families(text))
    assert len({family.name for family in families}) == len(families), "a family split up"
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
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
        segment = {key: row.labels[key] for key in ("team", "channel", "priority")}
        wanted[("cx_tickets_open", tuple(sorted(segment.items())))] = float(row.tickets_open)
    assert parsed == wanted
    assert any('bill "ing"\\\nteam' in dict(labels).values() for _, labels in parsed)


def test_partials_add_up_and_stay_as_they_came() -> None:
    """The merge stage adds partials from their JSON; it must neither share nor change them,
    since a series is merged again from the same stored partials after any one changed."""
    first = {
        "tickets_open": 2,
        "windows": {
            "1h": {
                "counts": {"tickets_opened": 3, "csat_score_sum": 4.5},
                "sketches": {"first_response_seconds": [1, [[100, 2], [120, 1]]]},
            }
        },
    }
    second = {
        "tickets_open": 1,
        "windows": {
            "1h": {
                "counts": {"tickets_opened": 1, "csat_responses": 1},
                "sketches": {"first_response_seconds": [0, [[120, 4], [130, 1]]]},
            },
            "24h": {"counts": {"tickets_opened": 1}, "sketches": {}},
        },
    }
    stored = copy.deepcopy([first, second])
    total = MergedSeries()
    for partial in (first, second, first):
        total.add(partial)
    hour = total.windows["1h"]
    assert total.tickets_open == 5
    assert hour.counts == {"tickets_opened": 7, "csat_score_sum": 9.0, "csat_responses": 1}
    zeros, bins = hour.to_json()["sketches"]["first_response_seconds"]
    assert (dict(bins), zeros) == ({100: 4, 120: 6, 130: 1}, 2)
    assert total.windows["24h"].counts == {"tickets_opened": 1}
    assert [first, second] == stored


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


def test_every_family_has_a_help_sentence() -> None:
    """Every windowed metric (the business-time ones too) and the backlog: 23 of them had their
    own name for HELP."""
    names = window_metrics(Tally(), business_hours=True)
    labels = {"window": "1h", "team": "all", "channel": "all", "priority": "all"}
    text = render_series([series_samples([SeriesRow(labels, dict.fromkeys(names, 1.0), 3)])])
    helps = help_lines(text)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert set(helps) == families
    assert len(families) == 42  # 41 windowed families (quantiles share one) and the backlog
    problems = [help_problem(family, helps[family]) for family in sorted(families)]
    assert not [problem for problem in problems if problem], problems
