"""Exactly-once processing (CX_PROCESSING_GUARANTEE=exactly_once): Kafka transactions.

Everything the ingest writes for one input partition in one batch (the changelog records of its
states, its dead letters, its record counts) and that partition's input offsets commit in one
Kafka transaction, and the local store takes the changes only once the transaction committed.
A crash before the commit leaves none of it in Kafka (readers with read_committed never see
it) and the offsets where they were: the records are read again, onto a state that does not
hold them, and counted once. Partials go in transactions of their own, so that what the
merging side reads was derived from committed state only.

One transactional producer per input partition, its transactional.id the app id and the
partition (as Kafka Streams' first exactly-once design had a producer per task): aiokafka
commits offsets in a transaction without the consumer group's generation (KIP-447), so a
worker that lost a partition while it was stalled could otherwise still commit for it. A new
owner starting the partition's producer fences the old one, whose open transaction is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition

from .transport import TopicTrackingProducer

log = logging.getLogger("cx_stream")

T = TypeVar("T")

TRANSACTION_TIMEOUT_MS = 60_000
"""How long the broker lets a transaction stay open before it aborts it (a worker that died
in the middle of one, and whose partitions no other worker has taken yet)."""


class Transactions:
    """The transactional producers of the input partitions this worker owns."""

    def __init__(self, app_id: str, producer_options: Mapping[str, Any]) -> None:
        self.app_id = app_id
        """Also the consumer group whose offsets the transactions commit."""
        self.producer_options = dict(producer_options)
        """aiokafka's producer keyword arguments: servers, security, request and batch sizes."""
        self.producers: dict[int, Any] = {}

    def transactional_id(self, partition: int) -> str:
        return f"{self.app_id}-ingest-{partition}"

    async def assign(self, partitions: Iterable[int]) -> None:
        """Hold a started producer for each of `partitions` and none other. Starting one
        initialises its transactions: a previous owner's open transaction is aborted and that
        owner fenced, before this worker reads the partition's changelog."""
        wanted = set(partitions)
        for partition in set(self.producers) - wanted:
            await self._stop(partition)
        started = {
            partition: TopicTrackingProducer(
                **self.producer_options,
                transactional_id=self.transactional_id(partition),
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            )
            for partition in sorted(wanted - set(self.producers))
        }
        await asyncio.gather(*(producer.start() for producer in started.values()))
        self.producers.update(started)

    async def commit(
        self,
        partition: int,
        write: Callable[[Any], Awaitable[T]],
        offsets: Mapping[TopicPartition, int],
    ) -> T:
        """Run `write` (sends with the partition's producer) and commit what it sent with the
        input `offsets` (the next offset to read of each input partition) in one transaction;
        aborted, and the error raised, if any of it fails."""
        producer = self.producers[partition]
        await producer.begin_transaction()
        try:
            written = await write(producer)
            if offsets:
                await producer.send_offsets_to_transaction(dict(offsets), self.app_id)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        return written

    async def _stop(self, partition: int) -> None:
        producer = self.producers.pop(partition)
        try:
            await producer.stop()
        except Exception as error:  # fenced or gone: another worker owns it now
            log.info(
                "transactional producer stopped with an error",
                extra={"partition": partition, "error": type(error).__name__},
            )

    async def stop(self) -> None:
        for partition in list(self.producers):
            await self._stop(partition)
