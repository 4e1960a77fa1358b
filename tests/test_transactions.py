"""Exactly-once on Apache Kafka: a worker whose partition another worker took (its producer
fenced) loses the partition instead of crashing, and nothing it sent after the takeover is read
by a read_committed consumer; workers started together keep their place in the group."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.apache_kafka import ApacheKafka
from stream.broker import _create_topics
from stream.transactions import PartitionLost, Transactions
from tests.conftest import WorkerFactory
from tests.kafka import event_records, produce, split, wait_for, wait_until_exact, worker_log
from tests.scenario import delivery, scenario

pytestmark = pytest.mark.broker


def sending(topic: str, value: bytes) -> Any:
    async def write(producer: Any) -> None:
        await (await producer.send(topic, value, partition=0))

    return write


async def committed_values(broker: ApacheKafka, topic: str, partitions: int = 1) -> list[bytes]:
    """What a read_committed consumer reads of `topic`, partition by partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        for number in range(partitions):
            partition = TopicPartition(topic, number)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            while await consumer.position(partition) < end:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                values.extend(record.value for record in batch.get(partition, ()))
        return values
    finally:
        await consumer.stop()


def test_a_fenced_worker_loses_the_partition_and_its_late_transaction_is_never_read(
    broker: ApacheKafka, prefix: str
) -> None:
    topic = f"{prefix}out"

    async def run() -> list[bytes]:
        await _create_topics({"bootstrap_servers": broker.bootstrap}, {topic: {}}, 1, 1)
        options = {"bootstrap_servers": broker.bootstrap}
        old, new = Transactions(f"{prefix}app", options), Transactions(f"{prefix}app", options)
        try:
            await old.assign([0])
            await old.commit(0, sending(topic, b"before"), {})
            await new.assign([0])  # the group gave partition 0 to the new worker
            with pytest.raises(PartitionLost):
                await old.commit(0, sending(topic, b"fenced"), {})
            assert old.producers == {}  # nothing more is sent for it
            with pytest.raises(PartitionLost):
                await old.commit(0, sending(topic, b"after"), {})
            await new.commit(0, sending(topic, b"taken over"), {})
            await new.release([0])
            with pytest.raises(PartitionLost):
                await new.commit(0, sending(topic, b"released"), {})
        finally:
            await old.stop()
            await new.stop()
        return await committed_values(broker, topic)

    assert asyncio.run(asyncio.wait_for(run(), 120)) == [b"before", b"taken over"]


def test_a_takeover_in_the_middle_of_a_transaction_loses_the_partition(
    broker: ApacheKafka, prefix: str
) -> None:
    """The group moves the partition while a transaction is open (a worker that stalled in the
    middle of a batch): the old owner's sender notices the fence on its own, and its next send
    fails for not being in a transaction. That too is PartitionLost, not a crash (seen in CI),
    and nothing of the transaction is read."""
    topic = f"{prefix}out"

    async def run() -> list[bytes]:
        await _create_topics({"bootstrap_servers": broker.bootstrap}, {topic: {}}, 2, 1)
        options = {"bootstrap_servers": broker.bootstrap}
        old, new = Transactions(f"{prefix}app", options), Transactions(f"{prefix}app", options)

        async def across_a_takeover(producer: Any) -> None:
            await (await producer.send(topic, b"before the takeover", partition=0))
            await new.assign([0])
            for _ in range(50):  # until the old producer's sender has met the fence
                await asyncio.sleep(0.1)
                with contextlib.suppress(Exception):
                    await (await producer.send(topic, b"after the takeover", partition=1))

        try:
            await old.assign([0])
            with pytest.raises(PartitionLost):
                await old.commit(0, across_a_takeover, {})
            assert old.producers == {}
            await new.commit(0, sending(topic, b"new owner"), {})
        finally:
            await old.stop()
            await new.stop()
        return await committed_values(broker, topic, 2)

    assert asyncio.run(asyncio.wait_for(run(), 120)) == [b"new owner"]


@pytest.mark.parametrize("attempt", range(3))
def test_two_exactly_once_workers_started_at_once_keep_their_place_in_the_group(
    broker: ApacheKafka, prefix: str, workers: WorkerFactory, attempt: int
) -> None:
    """A worker whose rebalance (its tables' recovery, its producers) outlasts the session is
    dropped from the group and rejoins, while its partitions wait: with 6 s sessions the two
    workers used to drop each other in turn, and one was once left ready but idle for good."""
    config = {"CX_MAX_SEGMENT_VALUES": "3", "CX_PROCESSING_GUARANTEE": "exactly_once"}
    first, second = workers("first", **config), workers("second", **config)
    events = scenario(attempt, time.time(), tickets=500)
    produce(broker.bootstrap, event_records(delivery(events, attempt), prefix))
    wait_for(lambda: split(first, second), 90, "the partitions to split between the two workers")
    wait_until_exact([first, second], events)
    for worker in (first, second):
        dropped = [
            line["message"]
            for line in worker_log(worker)
            if "member_id was not recognized" in line["message"]
        ]
        assert not dropped, f"{worker.log_path.name} was dropped from the group: {dropped}"
