"""Metric math against hand-worked and published values, and the sketch's laws."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.stats import (
    QuantileSketch,
    newcombe_interval,
    nps,
    nps_margin_of_error,
    sketch_key,
    wilson_interval,
)


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


@given(values)
def test_sketch_quantiles_within_two_percent_of_the_order_statistics(xs: list[float]) -> None:
    sketch = QuantileSketch()
    for x in xs:
        sketch.add(x)
    qs = [0.5, 0.9, 0.0, 1.0, 0.25]
    for q, got in zip(qs, sketch.quantiles(qs), strict=True):
        exact = sorted(xs)[math.floor(q * (len(xs) - 1))]
        assert got is not None
        assert abs(got - exact) <= 0.02 * exact + 1e-9


@given(values, values)
def test_sketch_retraction_and_merge_are_exact(kept: list[float], removed: list[float]) -> None:
    only_kept, both = QuantileSketch(), QuantileSketch()
    for x in kept:
        only_kept.add(x)
        both.add(x)
    for x in removed:
        both.add(x)
    for x in removed:
        both.add(x, -1)
    assert (both.bins, both.zeros) == (only_kept.bins, only_kept.zeros)
    merged = QuantileSketch()
    merged.merge(only_kept)
    merged.merge(QuantileSketch.from_json(only_kept.to_json()))
    merged.merge(only_kept, -1)
    assert (merged.bins, merged.zeros) == (only_kept.bins, only_kept.zeros)
    assert QuantileSketch().quantiles([0.5, 0.9]) == [None, None]


@given(values, values)
def test_adding_sketches_from_json_counts_every_bucket_and_leaves_the_json_alone(
    first: list[float], second: list[float]
) -> None:
    a, b = QuantileSketch(), QuantileSketch()
    for x in first:
        a.add(x)
    for x in second:
        b.add(x)
    expected: dict[int | None, int] = {}  # bucket counts summed by hand
    for x in first + second + second:
        expected[sketch_key(x)] = expected.get(sketch_key(x), 0) + 1
    a_json, b_json = a.to_json(), b.to_json()
    sent = copy.deepcopy([a_json, b_json])
    total = QuantileSketch()
    total.add_json(a_json)  # into an empty sketch
    total.add_json(b_json)  # into a filled one
    total.add_json(b_json)
    assert (total.bins, total.zeros) == (
        {key: n for key, n in expected.items() if key is not None},
        expected.get(None, 0),
    )
    assert [a_json, b_json] == sent
