"""The merge stage in-process: partials as the publisher sends them, through the series table,
must give the rows a direct merge of every partition's windows gives."""

from __future__ import annotations

import asyncio
import time
import zlib

import orjson
import pytest

from stream.exporter import SeriesRow
from stream.partials import (
    FULL_REPUBLISH_EVERY,
    PUBLISH_SHARE,
    PartialsPublisher,
    carried_by,
    newest_partials,
    partial,
)
from stream.series import Series
from tests.helpers import WINDOW_NAMES, exported, feed, new_pipeline
from tests.scenario import delivery, scenario

NOW = time.time()
CX_PARTIALS_PARTITIONS = 3


class RecordingTopic:
    """Keeps what a partials publisher sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def __call__(self, partition: int, messages: list[tuple[bytes, bytes]]) -> None:
        self.sent.extend(messages)


def assert_same_rows(rows: list[SeriesRow], wanted: list[SeriesRow]) -> None:
    assert [row.labels for row in rows] == [row.labels for row in wanted]
    for row, want in zip(rows, wanted, strict=True):
        assert row.tickets_open == want.tickets_open
        assert row.metrics.keys() == want.metrics.keys()
        for name, value in row.metrics.items():  # sums may be added up in another order
            expected = want.metrics[name]
            assert value == expected or value == pytest.approx(expected, rel=1e-12), name


def test_grouped_partials_through_the_series_table_give_the_merged_rows() -> None:
    records = delivery(scenario(5, NOW, tickets=80), 5)
    pipeline = new_pipeline()
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    table: dict[str, bytes] = {}
    series = Series(table, 50, WINDOW_NAMES, lambda: set(range(CX_PARTIALS_PARTITIONS)))
    for step, start in enumerate(range(0, len(records), len(records) // 3)):
        feed(pipeline, records[start : start + len(records) // 3], NOW)
        asyncio.run(publisher.publish(NOW + 60 * step))
        for key, value in topic.sent:
            carried = carried_by(value).partials
            assert {item["dimension"].encode() for item in carried} == {key}
            assert len({item["source_partition"] for item in carried}) == 1
            for item in carried:
                series.apply(item, zlib.crc32(key) % CX_PARTIALS_PARTITIONS)
        topic.sent.clear()
        assert_same_rows(series.rows(), exported(pipeline, NOW + 60 * step))
    series.restored()  # read back from the table, as after a recovery
    assert_same_rows(series.rows(), exported(pipeline, NOW + 60 * step))


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
    partition, windows = next(iter(pipeline.partitions.items()))
    single = partial(windows, ("all", "all"), partition)
    assert carried_by(orjson.dumps(single)).partials == [orjson.loads(orjson.dumps(single))]


def test_a_merging_stage_behind_applies_only_the_newest_partial_of_each_series() -> None:
    records = delivery(scenario(9, NOW, tickets=60), 9)
    pipeline = new_pipeline()
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    for step in range(4):  # four cycles' messages waiting in cx-partials
        feed(pipeline, records[step * len(records) // 4 : (step + 1) * len(records) // 4], NOW)
        asyncio.run(publisher.publish(NOW + 60 * step))
    one_by_one = Series({}, 50, WINDOW_NAMES, lambda: {0})
    for _, value in topic.sent:
        for item in carried_by(value).partials:
            one_by_one.apply(item, 0)
    caught_up = Series({}, 50, WINDOW_NAMES, lambda: {0})
    carried = newest_partials([value for _, value in topic.sent])
    for message in carried:
        for item in message.partials:
            caught_up.apply(item, 0)
    assert_same_rows(caught_up.rows(), one_by_one.rows())
    assert_same_rows(caught_up.rows(), exported(pipeline, NOW + 180))
    sent = sum(len(carried_by(value).partials) for _, value in topic.sent)
    assert sum(len(message.partials) for message in carried) < sent / 2


def test_a_full_republish_drops_series_whose_removal_was_lost() -> None:
    """A worker stopped between removing a series and sending that: the series table keeps
    the series' last partial until the partition's next full republish says it is gone."""
    pipeline = new_pipeline()
    feed(pipeline, delivery(scenario(10, NOW, tickets=60), 10), NOW)
    topic = RecordingTopic()
    publisher = PartialsPublisher(pipeline, topic, clock=lambda: 0.0)  # never skips
    series = Series({}, 50, WINDOW_NAMES, lambda: {0})

    def merge_sent() -> None:
        for message in newest_partials([value for _, value in topic.sent]):
            series.apply_message(message, 0)
        topic.sent.clear()

    asyncio.run(publisher.publish(NOW))
    merge_sent()
    partition, windows = sorted(pipeline.partitions.items())[0]
    team = next(value for dimension, value in windows.series_keys() if dimension == "team")
    stale = {**partial(windows, ("team", team), partition), "value": "gone"}
    elsewhere = {**stale, "source_partition": 999}  # a partition this worker does not own
    series.apply(stale, 0)
    series.apply(elsewhere, 0)
    empty = max(pipeline.partitions) + 1  # a partition without a single series
    pipeline.partitions[empty] = type(windows)(windows.specs, {})
    series.apply({**stale, "dimension": "priority", "source_partition": empty}, 0)

    def labelled_gone() -> set[str]:
        return {
            name for row in series.rows() for name, value in row.labels.items() if value == "gone"
        }

    asyncio.run(publisher.publish(NOW))  # an ordinary cycle leaves them
    merge_sent()
    assert labelled_gone() == {"team", "priority"}

    publisher.cycle = FULL_REPUBLISH_EVERY - 1
    asyncio.run(publisher.publish(NOW))
    merge_sent()
    assert labelled_gone() == {"team"}  # from the partition this worker does not own
    del pipeline.partitions[empty]
    rows = [row for row in series.rows() if "gone" not in row.labels.values()]
    assert_same_rows(rows, exported(pipeline, NOW))
