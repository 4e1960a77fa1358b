"""The merge stage in-process: partials as the publisher sends them, through the series table,
must give the rows a direct merge of every partition's windows gives (read from the snapshots
as a consumer of the compacted cx-metrics topic would)."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

import faust
import orjson
import pytest

from stream._core import Merge
from stream.partials import FULL_REPUBLISH_EVERY, PUBLISH_SHARE, PartialsPublisher
from stream.series import Series
from tests.helpers import (
    WINDOW_NAMES,
    MetricsTopic,
    Row,
    exported,
    feed,
    new_pipeline,
    partials_of,
)
from tests.scenario import delivery, scenario

NOW = time.time()
CX_PARTIALS_PARTITIONS = 3


class RecordingTopic:
    """Keeps what a partials publisher sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def __call__(self, partition: int, messages: list[tuple[bytes, bytes]]) -> None:
        self.sent.extend(messages)


def assert_same_rows(rows: list[Row], wanted: list[Row]) -> None:
    assert [row.labels for row in rows] == [row.labels for row in wanted]
    for row, want in zip(rows, wanted, strict=True):
        assert row.tickets_open == want.tickets_open
        assert row.metrics.keys() == want.metrics.keys()
        for name, value in row.metrics.items():  # sums may be added up in another order
            expected = want.metrics[name]
            assert value == expected or value == pytest.approx(expected, rel=1e-12), name


def partials_in(message: bytes) -> list[dict[str, Any]]:
    partials: list[dict[str, Any]] = orjson.loads(message)["partials"]
    return partials


def test_grouped_partials_through_the_series_table_give_the_merged_rows() -> None:
    records = delivery(scenario(5, NOW, tickets=80), 5)
    pipeline = new_pipeline()
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    table: dict[bytes, bytes] = {}
    owned = set(range(CX_PARTIALS_PARTITIONS))
    series = Series(50, WINDOW_NAMES, lambda: owned)
    snapshots = MetricsTopic()
    for step, start in enumerate(range(0, len(records), len(records) // 3)):
        feed(pipeline, records[start : start + len(records) // 3], NOW)
        asyncio.run(publisher.publish(NOW + 60 * step))
        for key, value in topic.sent:
            carried = partials_in(value)
            assert {item["dimension"].encode() for item in carried} == {key}
            assert len({item["source_partition"] for item in carried}) == 1
        via = [(value, zlib.crc32(key) % CX_PARTIALS_PARTITIONS) for key, value in topic.sent]
        for entries in series.apply(via).values():
            for key, stored in entries.items():
                if stored is None:
                    del table[key]
                else:
                    table[key] = stored
        topic.sent.clear()
        assert_same_rows(
            snapshots.read(series.merge, sorted(owned)), exported(pipeline, NOW + 60 * step)
        )
    restarted = Series(50, WINDOW_NAMES, lambda: owned)
    restarted.restored(table.values())  # read back from the table, as after a recovery
    assert_same_rows(
        MetricsTopic().read(restarted.merge, sorted(owned)), exported(pipeline, NOW + 60 * step)
    )


def test_the_table_keys_are_those_the_faust_table_wrote() -> None:
    """The series table was Faust's with str keys (its JSON codec): a worker upgraded from it
    must find and delete the same keys."""
    series = Series(50, WINDOW_NAMES, lambda: {0})
    value = 'bé "q" \\ \t'
    message = {
        "partials": [
            {
                "dimension": "team",
                "value": value,
                "source_partition": 3,
                "removed": False,
                "tickets_open": 1,
                "windows": {},
            }
        ]
    }
    (key,) = series.apply([(orjson.dumps(message), 0)])[0]
    app = faust.App("keys")
    table = app.Table("series", key_type=str, value_type=bytes)
    store: Any = table.data
    assert key == store._encode_key(orjson.dumps(["team", value, 3]).decode())


class TickingClock:
    """Every reading finds another second of computing."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_cycles_are_skipped_so_that_partials_take_at_most_their_share_of_the_time() -> None:
    records = delivery(scenario(8, NOW, tickets=40), 8)
    pipeline = new_pipeline()
    topic = RecordingTopic()
    clock = TickingClock()
    publisher = PartialsPublisher(pipeline, topic, clock)
    feed(pipeline, records[:100], NOW)
    asyncio.run(publisher.publish(NOW))
    # readings: the skip check, then the start and end of each stretch of computing (the
    # sends between them are not counted), then the one that sets resume_at
    busy = (clock.now - 2) / 2
    assert topic.sent and publisher.resume_at - clock.now == busy * (1 / PUBLISH_SHARE - 1)

    topic.sent.clear()
    feed(pipeline, records[100:], NOW)
    clock.now = publisher.resume_at - 2
    asyncio.run(publisher.publish(NOW + 1))
    assert topic.sent == []  # skipped: the changes wait for the next cycle
    clock.now = publisher.resume_at - 1
    asyncio.run(publisher.publish(NOW + 1))
    assert topic.sent


def test_a_partial_written_before_grouping_is_still_read() -> None:
    pipeline = new_pipeline()
    feed(pipeline, delivery(scenario(6, NOW, tickets=10), 6), NOW)
    grouped = Merge(50, WINDOW_NAMES)
    single = Merge(50, WINDOW_NAMES)
    for message in partials_of(pipeline, NOW):
        grouped.apply([(message, 0)])
        single.apply([(orjson.dumps(item), 0) for item in partials_in(message)])
    assert_same_rows(MetricsTopic().read(single), MetricsTopic().read(grouped))


def test_a_merging_stage_behind_applies_only_the_newest_partial_of_each_series() -> None:
    records = delivery(scenario(9, NOW, tickets=60), 9)
    pipeline = new_pipeline()
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    for step in range(4):  # four cycles' messages waiting in cx-partials
        feed(pipeline, records[step * len(records) // 4 : (step + 1) * len(records) // 4], NOW)
        asyncio.run(publisher.publish(NOW + 60 * step))
    one_by_one = Merge(50, WINDOW_NAMES)
    one_by_one_writes = sum(
        len(entries)
        for _, value in topic.sent
        for entries in one_by_one.apply([(value, 0)])[0].values()
    )
    caught_up = Merge(50, WINDOW_NAMES)
    writes, unreadable = caught_up.apply([(value, 0) for _, value in topic.sent])
    assert unreadable == []
    rows = MetricsTopic().read(caught_up)
    assert_same_rows(rows, MetricsTopic().read(one_by_one))
    assert_same_rows(rows, exported(pipeline, NOW + 180))
    assert len(writes[0]) < one_by_one_writes / 2


def test_a_full_republish_drops_series_whose_removal_was_lost() -> None:
    """A worker stopped between removing a series and sending that: the series table keeps
    the series' last partial until the partition's next full republish says it is gone."""
    pipeline = new_pipeline()
    feed(pipeline, delivery(scenario(10, NOW, tickets=60), 10), NOW)
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    merge = Merge(50, WINDOW_NAMES)
    snapshots = MetricsTopic()

    def merge_sent() -> None:
        merge.apply([(value, 0) for _, value in topic.sent])
        topic.sent.clear()

    asyncio.run(publisher.publish(NOW))
    team_message = next(value for key, value in topic.sent if key == b"team")
    merge_sent()
    partition = min(pipeline.partitions)
    stale = {**partials_in(team_message)[0], "value": "gone"}
    elsewhere = {**stale, "source_partition": 999}  # a partition this worker does not own
    empty = max(pipeline.partitions) + 1  # a partition without a single series
    windows = pipeline.partitions[partition]
    pipeline.partitions[empty] = type(windows)(windows.specs, {})
    lost = [stale, elsewhere, {**stale, "dimension": "priority", "source_partition": empty}]
    merge.apply([(orjson.dumps({"partials": [item]}), 0) for item in lost])

    def labelled_gone() -> set[str]:
        rows = snapshots.read(merge)
        return {name for row in rows for name, value in row.labels.items() if value == "gone"}

    asyncio.run(publisher.publish(NOW))  # an ordinary cycle leaves them
    merge_sent()
    assert labelled_gone() == {"team", "priority"}

    publisher.cycle = FULL_REPUBLISH_EVERY - 1
    asyncio.run(publisher.publish(NOW))
    merge_sent()
    assert labelled_gone() == {"team"}  # from the partition this worker does not own
    del pipeline.partitions[empty]
    rows = [row for row in snapshots.read(merge) if "gone" not in row.labels.values()]
    assert_same_rows(rows, exported(pipeline, NOW))
