"""The embedded broker's end-offset bug and the correction that keeps table recovery exact (on
Tansu), and the changelog offset kept with the state (on Apache Kafka)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP
from yarl import URL

from stream.apache_kafka import ApacheKafka
from stream.app import create_app
from stream.broker import EmbeddedBroker
from stream.config import Settings
from stream.ingest import last_offset_of, send_changelog
from stream.pipeline import Entries
from stream.transport import true_end_offsets

pytestmark = pytest.mark.broker
RECORDS = 50


def end_offset_after_producing(
    broker: EmbeddedBroker, topic: str, max_batch_size: int, corrected: bool = False
) -> int:
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
            reported = int(offsets[partition])
        finally:
            await consumer.stop()
        if not corrected:
            return reported
        true_ends = await true_end_offsets([URL(broker.url)], {TP(topic, 0): reported}, {})
        return true_ends[TP(topic, 0)]

    return asyncio.run(run())


def test_corrected_end_offsets_count_every_record(tansu: EmbeddedBroker, prefix: str) -> None:
    """Faust's changelog recovery reads up to the end offset: it must count every record."""
    assert end_offset_after_producing(tansu, prefix + "corrected", 16384, corrected=True) == RECORDS
    assert end_offset_after_producing(tansu, prefix + "single", 1, corrected=True) == RECORDS


def test_tansu_still_miscounts_batched_end_offsets(tansu: EmbeddedBroker, prefix: str) -> None:
    """Documents why the correction exists. When this fails, Tansu reports batched end offsets
    correctly and `transport.true_end_offsets` can go."""
    assert end_offset_after_producing(tansu, prefix + "batched", 16384) < RECORDS


def test_only_the_embedded_broker_gets_corrected_end_offsets() -> None:
    assert not create_app(Settings(embedded_broker=False)).correct_end_offsets
    assert create_app(Settings(embedded_broker=True, topic_prefix="x-")).correct_end_offsets


def test_the_offset_kept_with_the_state_is_the_last_changelog_record(
    broker: ApacheKafka, prefix: str
) -> None:
    """The ingest sends a partition's changes in record batches (several when they do not fit
    in one) and stores, with the states, the changelog offset reached: the last record's.
    Recovery resumes after it, so one too high would skip another worker's changes. Checked
    here against Apache Kafka, with aiokafka's producer as the worker has it."""
    topic = prefix + "changelog"

    async def run() -> tuple[list[int], list[int], list[tuple[int, bytes | None, bytes | None]]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=1024)
        await producer.start()
        try:
            reached, batches = [], []
            for size in (1, 40, 3):  # 40 records of 100 bytes take several record batches
                states: Entries = {f"T{size}-{n}".encode(): b"v" * 100 for n in range(size)}
                states[b"gone"] = None  # a tombstone
                sent = await send_changelog(producer, topic, 0, states)
                reached.append(await last_offset_of(sent))
                batches.append(len(sent))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek(partition, 0)
            records: list[tuple[int, bytes | None, bytes | None]] = []
            while len(records) < 2 + 41 + 4:
                fetched = await consumer.getmany(partition, timeout_ms=2000)
                assert fetched, f"only {len(records)} records"
                records += [
                    (record.offset, record.key, record.value) for record in fetched[partition]
                ]
        finally:
            await consumer.stop()
        return reached, batches, records

    reached, batches, records = asyncio.run(run())
    assert batches[0] == 1 and batches[1] > 1
    by_offset = {offset: (key, value) for offset, key, value in records}
    assert reached == [1, 1 + 41, 1 + 41 + 4]  # the offset of each call's last record
    assert [by_offset[offset] for offset in reached] == [(b"gone", None)] * 3
