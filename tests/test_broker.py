"""The embedded broker's end-offset bug, and the setting that keeps table recovery exact."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.app import faust_settings
from stream.broker import EmbeddedBroker
from stream.config import Settings

pytestmark = pytest.mark.broker
RECORDS = 50


def end_offset_after_producing(broker: EmbeddedBroker, topic: str, max_batch_size: int) -> int:
    async def run() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_batch_size=max_batch_size, linger_ms=20
        )
        await producer.start()
        try:
            sent = [await producer.send(topic, b"x" * 10, partition=0) for _ in range(RECORDS)]
            await producer.flush()
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            offsets = await consumer.end_offsets([partition])
            return int(offsets[partition])
        finally:
            await consumer.stop()

    return asyncio.run(run())


def test_one_record_per_batch_gives_true_end_offsets(broker: EmbeddedBroker, prefix: str) -> None:
    """Faust's changelog recovery reads up to the end offset: it must count every record."""
    batch_size = faust_settings(Settings(embedded_broker=True))["producer_max_batch_size"]
    assert end_offset_after_producing(broker, prefix + "one-per-batch", batch_size) == RECORDS


def test_tansu_still_miscounts_batched_end_offsets(broker: EmbeddedBroker, prefix: str) -> None:
    """Documents why the setting above exists. When this fails, Tansu reports batched end
    offsets correctly and one record per batch (slower) is no longer needed."""
    assert end_offset_after_producing(broker, prefix + "batched", 16384) < RECORDS


def test_a_real_cluster_keeps_faust_batching() -> None:
    assert "producer_max_batch_size" not in faust_settings(Settings(embedded_broker=False))
