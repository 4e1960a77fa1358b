"""Metric math against hand-worked and published values, and the sketch's laws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream._core import Merge, partials_messages
from stream.events import Segment
from stream.stats import newcombe_interval, nps, nps_margin_of_error, wilson_interval
from stream.tickets import Observation
from stream.windows import PartitionWindows, parse_windows
from tests.helpers import MetricsTopic, Row


def test_nps_and_margin_by_hand() -> None:
    # 5 promoters, 3 passives, 2 detractors: NPS 30; shares .5 and .2:
    # 1.96 * 100 * sqrt((0.7 - 0.09) / 10) = 48.4078...
    assert nps(5, 3, 2) == pytest.approx(30.0)
    assert nps_margin_of_error(5, 3, 2) == pytest.approx(196 * math.sqrt(0.061))
    assert nps(0, 0, 0) is None and nps_margin_of_error(0, 0, 0) is None
    assert nps_margin_of_error(4, 0, 0) == 0.0  # everyone agrees: no spread


def test_wilson_interval_published_values() -> None:
    # 8 of 10 at 95%: the Wilson interval is [0.4902, 0.9433] (Newcombe 1998, table I style)
    low, high = wilson_interval(8, 10) or (0, 0)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 10) or (1, 1)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize(
    ("groups", "published"),
    [
        # Newcombe 1998 (Statistics in Medicine 17:873-890), table II, method 10
        ((56, 70, 48, 80), (0.2000, 0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.6000, 0.1705, 0.8090)),
        ((5, 56, 0, 29), (0.0893, -0.0381, 0.1926)),
        ((0, 10, 0, 20), (0.0000, -0.1611, 0.2775)),
        ((0, 10, 0, 10), (0.0000, -0.2775, 0.2775)),
        ((10, 10, 0, 20), (1.0000, 0.6791, 1.0000)),
        ((10, 10, 0, 10), (1.0000, 0.6075, 1.0000)),
    ],
)
def test_newcombe_interval_published_values(
    groups: tuple[int, int, int, int], published: tuple[float, float, float]
) -> None:
    found = newcombe_interval(*groups)
    assert found is not None
    assert tuple(round(value, 4) for value in found) == published


def test_newcombe_interval_needs_both_groups() -> None:
    assert newcombe_interval(0, 0, 3, 10) is None
    assert newcombe_interval(3, 10, 0, 0) is None


values = st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=300)
NOW = 1_800_000_000.0


def first_responses(
    values: list[float], retracted: Sequence[float] = (), partition: int = 0
) -> bytes:
    """The cx-partials message (of the whole, "all") of a partition's windows holding a first
    response of each value in 1h (and of each `retracted` value, added and retracted again), of
    one ticket opened (a series is kept while a ticket or response refers to it)."""
    windows = PartitionWindows(parse_windows("1h"), NOW)

    def replies(values: list[float]) -> list[Observation]:
        return [Observation("first_response", NOW - 60, Segment(), x) for x in values]

    opened = Observation("opened", NOW - 60, Segment())
    windows.fold([([], [opened, *replies(values + list(retracted))])])
    windows.fold([(replies(list(retracted)), [])])
    messages = dict(partials_messages([windows], partition, complete=True))
    return messages[b"all"]


def sketch_of(message: bytes) -> Any:
    return orjson.loads(message)["partials"][0]["windows"]["1h"]["sketches"]


def exported(*messages: bytes) -> Row:
    """The 1h row of the whole that the merge stage exports of `messages`."""
    merge = Merge(50, ["1h"])
    merge.apply([(message, 0) for message in messages])
    (row,) = MetricsTopic().read(merge)
    return row


@given(values)
def test_sketch_quantiles_within_two_percent_of_the_order_statistics(xs: list[float]) -> None:
    row = exported(first_responses(xs))
    for q in (0.5, 0.9):
        got = row.metrics[f"first_response_seconds_p{round(q * 100)}"]
        exact = sorted(xs)[math.floor(q * (len(xs) - 1))]
        assert got is not None
        assert abs(got - exact) <= 0.02 * exact + 1e-9


@given(values, values)
def test_sketch_retraction_is_exact(kept: list[float], removed: list[float]) -> None:
    assert sketch_of(first_responses(kept, removed)) == sketch_of(first_responses(kept))


@given(values, values)
def test_partials_of_partitions_add_up_to_every_bucket(
    first: list[float], second: list[float]
) -> None:
    row = exported(
        first_responses(first),
        first_responses(second, partition=1),
        first_responses(second, partition=2),
    )
    together = exported(first_responses(first + second + second))
    assert row.metrics["first_response_count"] == len(first) + 2 * len(second)
    assert row.metrics["tickets_opened"] == 3
    for name in ("first_response_seconds_p50", "first_response_seconds_p90"):
        assert row.metrics[name] == together.metrics[name]
