"""The /metrics text of the series, read back with prometheus-client's own parser."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from stream.exporter import render_series
from tests.helpers import exported, feed, new_pipeline
from tests.scenario import delivery, scenario

NOW = time.time()


def test_every_value_reads_back_with_its_labels_even_odd_ones() -> None:
    events = scenario(31, NOW, tickets=60)
    for _, fields in events:  # label values a producer may send: quotes, backslashes, newlines
        if fields.get("team") == "billing":
            fields["team"] = 'bill "ing"\\\nteam'
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 31), NOW)
    rows = exported(pipeline, NOW)
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(render_series(rows))
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
