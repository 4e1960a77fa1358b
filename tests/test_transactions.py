"""Exactly-once's producers on Apache Kafka: a worker whose partition another worker took (its
producer fenced) loses the partition instead of crashing, and nothing it sent after the
takeover is read by a read_committed consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.apache_kafka import ApacheKafka
from stream.broker import _create_topics
from stream.transactions import PartitionLost, Transactions

pytestmark = pytest.mark.broker


def sending(topic: str, value: bytes) -> Any:
    async def write(producer: Any) -> None:
        await (await producer.send(topic, value, partition=0))

    return write


async def committed_values(broker: ApacheKafka, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
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
