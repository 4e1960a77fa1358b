"""The pure core (decode, state, windows, merge) against the oracle, with no Kafka."""

from __future__ import annotations

import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.exporter import SeriesRow
from tests.helpers import assert_rows_match, exported, feed, new_pipeline
from tests.oracle import expected
from tests.scenario import delivery, scenario

NOW = time.time()


def comparable(rows: list[SeriesRow]) -> list[tuple[object, ...]]:
    return [(row.key, sorted(row.metrics.items()), row.tickets_open) for row in rows]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), cap=st.sampled_from([2, 3, 50]))
def test_matches_the_oracle_whatever_the_order_and_duplicates(seed: int, cap: int) -> None:
    events = scenario(seed, NOW, tickets=60)
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, seed), NOW)
    assert_rows_match(exported(pipeline, NOW, cap), expected(events, NOW, cap))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_two_delivery_orders_give_identical_numbers(seed: int) -> None:
    events = scenario(seed, NOW, tickets=40)
    first, second = new_pipeline(), new_pipeline()
    feed(first, delivery(events, seed), NOW)
    feed(second, delivery(events, seed + 1, duplicates=0.5), NOW)
    assert comparable(exported(first, NOW)) == comparable(exported(second, NOW))


def test_rebuilding_windows_from_the_tables_changes_nothing() -> None:
    events = scenario(7, NOW, tickets=120)
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 7), NOW)
    before = comparable(exported(pipeline, NOW))
    pipeline.rebuild(range(4), NOW)
    assert comparable(exported(pipeline, NOW)) == before


def test_replay_after_a_crash_is_exact() -> None:
    """Tables restored to a later point than the committed offsets, then events replayed."""
    events = delivery(scenario(11, NOW, tickets=120), 11)
    crashed = new_pipeline()
    feed(crashed, events[:500], NOW)
    restarted = new_pipeline()
    restarted.tickets.update(crashed.tickets)
    restarted.surveys.update(crashed.surveys)
    restarted.rebuild(range(4), NOW)
    feed(restarted, events[random.Random(1).randint(0, 500) :], NOW)  # from the last commit
    assert_rows_match(exported(restarted, NOW), expected(events, NOW))


def test_duplicates_are_reported_and_leave_no_trace() -> None:
    events = scenario(3, NOW, tickets=30)
    pipeline = new_pipeline()
    feed(pipeline, events, NOW)
    snapshot = comparable(exported(pipeline, NOW))
    tickets, surveys = dict(pipeline.tickets), dict(pipeline.surveys)
    outcomes = feed(pipeline, events, NOW)
    assert set(outcomes) <= {"duplicate", "accepted"}
    assert "duplicate" in outcomes
    assert comparable(exported(pipeline, NOW)) == snapshot
    assert (pipeline.tickets, pipeline.surveys) == (tickets, surveys)
