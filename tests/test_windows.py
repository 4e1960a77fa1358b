"""Event-time windows: edges, late and future events, expiry, configuration errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream._core import partials_messages
from stream.events import Segment
from stream.tickets import Observation
from stream.windows import PartitionWindows, SegmentKey, parse_duration, parse_windows

NOW = 1_800_000_000.0
HOUR = parse_windows("1h")


def add(windows: PartitionWindows, *observations: Observation) -> None:
    windows.fold([([], list(observations))])


def retract(windows: PartitionWindows, *observations: Observation) -> None:
    windows.fold([(list(observations), [])])


def partial(windows: PartitionWindows, key: SegmentKey) -> dict[str, Any] | None:
    """The series' partial in a full republish of the windows; None when it has none."""
    for _, message in partials_messages([windows], 0, complete=True):
        for item in orjson.loads(message)["partials"]:
            if (item["dimension"], item["value"]) == key:
                return dict(item)
    return None


def opened_in_window(windows: PartitionWindows) -> int:
    found = partial(windows, ("all", "all"))
    assert found is not None
    return int(found["windows"]["1h"]["counts"].get("tickets_opened", 0))


def assert_counted_within_edge_error(windows: PartitionWindows, at: float, now: float) -> None:
    age = now - at
    counted = opened_in_window(windows) == 1
    if 0 <= age < 3600 - 60:
        assert counted, age
    elif age >= 3600 + 60 or age < 0:
        assert not counted, age  # too old, or in the future


@given(age=st.floats(-300, 7200))
def test_lower_edge_error_is_at_most_a_sixtieth_of_the_window(age: float) -> None:
    windows = PartitionWindows(HOUR, NOW)
    at = NOW - age
    add(windows, Observation("opened", at, Segment()))
    assert_counted_within_edge_error(windows, at, NOW)
    windows.advance(NOW + 600)  # the clock moves on: future events come due, old ones expire
    assert_counted_within_edge_error(windows, at, NOW + 600)


def test_future_events_wait_and_old_ones_expire() -> None:
    windows = PartitionWindows(HOUR, NOW)
    add(windows, Observation("opened", NOW + 120, Segment()))
    assert opened_in_window(windows) == 0
    windows.advance(NOW + 150)
    assert opened_in_window(windows) == 1
    windows.advance(NOW + 3600 + 200)
    assert opened_in_window(windows) == 0
    assert windows.series(("all", "all")) == (1, 0, [0])  # referred to, no bucket left
    # the retraction of an expired observation finds nothing and changes nothing
    retract(windows, Observation("opened", NOW + 120, Segment()))
    assert windows.series_keys() == []


def test_retraction_removes_a_series_nobody_refers_to() -> None:
    windows = PartitionWindows(HOUR, NOW)
    add(windows, Observation("csat", NOW - 60, Segment(team="billing"), 5.0))
    assert ("team", "billing") in windows.series_keys()
    windows.take_changed()
    retract(windows, Observation("csat", NOW - 60, Segment(team="billing"), 5.0))
    assert ("team", "billing") not in windows.series_keys()
    assert ("team", "billing") in windows.take_changed()
    assert partial(windows, ("team", "billing")) is None


@pytest.mark.parametrize("text", ["", "1x", "-1h", "0m", "h", "1h,1h"])
def test_bad_windows_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_windows(text)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "15m", "1h", "7d", "2w")] == [
        90,
        900,
        3600,
        604800,
        1209600,
    ]


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["first_response", "csat", "opened"]),
            st.floats(0, 7200),
            st.sampled_from(["billing", "sales"]),
            st.sampled_from([1, -1]),
        ),
        max_size=40,
    )
)
def test_packed_buckets_add_up_like_unpacked_ones(
    steps: list[tuple[str, float, str, int]],
) -> None:
    """Packing a bucket (and unpacking it when it is written again) changes no number."""
    packed, plain = PartitionWindows(HOUR, NOW), PartitionWindows(HOUR, NOW)
    for kind, age, team, sign in steps:
        observation = Observation(kind, NOW - age, Segment(team=team), age / 10)  # type: ignore[arg-type]
        for windows in (packed, plain):
            add(windows, Observation("opened", NOW - age, Segment(team=team)), observation)
            # a retraction, or the same again
            (add if sign == 1 else retract)(windows, observation)
        packed.pack(idle_only=False)
    packed.advance(NOW + 1800)
    plain.advance(NOW + 1800)
    for key in set(plain.series_keys()) | set(packed.series_keys()):
        assert partial(packed, key) == partial(plain, key)


def checkpointed(windows: PartitionWindows, stored: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The stored checkpoint after writing the windows' entries, as the store does."""
    for key, value in windows.checkpoint_entries("test", 0).items():
        if value is None:
            stored.pop(key, None)
        else:
            stored[key] = value
    return stored


def restored(stored: dict[bytes, bytes], now: float) -> PartitionWindows | None:
    loaded = PartitionWindows.restore(HOUR, now, sorted(stored.items()), "test")
    return None if loaded is None else loaded[0]


def test_a_series_gone_leaves_nothing_in_the_checkpoint() -> None:
    windows = PartitionWindows(HOUR, NOW)
    response = Observation("csat", NOW - 60, Segment(team="billing"), 5.0)
    add(windows, response)
    stored = checkpointed(windows, {})
    windows.advance(NOW + 7200)  # its bucket expires, then its state is forgotten
    stored = checkpointed(windows, stored)
    retract(windows, response)
    stored = checkpointed(windows, stored)
    assert not [key for key in stored if b"billing" in key]
    again = restored(stored, NOW + 7200)
    assert again is not None and ("team", "billing") not in again.series_keys()


def test_a_checkpoint_from_a_later_clock_or_unreadable_is_not_loaded() -> None:
    windows = PartitionWindows(HOUR, NOW)
    add(windows, Observation("opened", NOW - 60, Segment()))
    stored = checkpointed(windows, {})
    loaded = restored(stored, NOW)
    assert loaded is not None and opened_in_window(loaded) == 1
    assert restored(stored, NOW - 1) is None  # the clock went back since
    total = next(key for key in stored if key.startswith(b"t"))  # read as it is loaded
    stored[total] = stored[total][:-1]  # cut short
    assert restored(stored, NOW + 60) is None
