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
A worker whose producer was fenced (it stalled past its session and the group moved the
partition on) drops the partition, as Kafka Streams does with a migrated task: PartitionLost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

from .transport import TopicTrackingProducer

log = logging.getLogger("cx_stream")

T = TypeVar("T")

TRANSACTION_TIMEOUT_MS = 60_000
"""How long the broker lets a transaction stay open before it aborts it (a worker that died
in the middle of one, and whose partitions no other worker has taken yet)."""

ABORT_TIMEOUT = 30.0
"""How long an abort may take: a producer whose connection broke can wait for ever, and the
transaction it leaves open is aborted by the broker (TRANSACTION_TIMEOUT_MS) or the next owner."""


class PartitionLost(Exception):
    """The partition's producer was fenced by a newer one, or stopped on revocation: another
    worker owns the partition now, and nothing of this transaction committed."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"input partition {partition} is owned by another worker now")
        self.partition = partition


FENCED = (ProducerFenced, InvalidProducerEpoch)


def _fenced(producer: Any) -> bool:
    """Whether a newer producer with the same transactional id fenced `producer`. aiokafka's
    sender notices it on its own (adding a partition to the transaction, say), and the call
    that fails then is another one (a send: IllegalOperation, "not in transaction"); the fatal
    error is kept on the transaction's waiter (aiokafka 0.14's TransactionManager)."""
    manager = producer._txn_manager
    if not manager.is_fatal_error():
        return False
    waiter = manager.wait_for_transaction_end()
    return bool(waiter is not None and waiter.done() and isinstance(waiter.exception(), FENCED))


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
        aborted, and the error raised, if any of it fails. PartitionLost if the partition's
        producer was fenced or released."""
        producer = self.producers.get(partition)
        if producer is None:
            raise PartitionLost(partition)
        try:
            await producer.begin_transaction()
            written = await write(producer)
            if offsets:
                await producer.send_offsets_to_transaction(dict(offsets), self.app_id)
            await producer.commit_transaction()
        except BaseException as error:
            if isinstance(error, Exception) and (isinstance(error, FENCED) or _fenced(producer)):
                # a fenced producer can do nothing more, not even abort
                if self.producers.get(partition) is producer:
                    await self._stop(partition)
                raise PartitionLost(partition) from error
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT)
            raise
        return written

    async def release(self, partitions: Iterable[int]) -> None:
        """Stop the producers of `partitions` (revoked): nothing is sent for them until a
        new assignment starts fresh ones."""
        for partition in set(partitions) & set(self.producers):
            await self._stop(partition)

    async def _stop(self, partition: int) -> None:
        producer = self.producers.pop(partition)
        try:
            await asyncio.wait_for(producer.stop(), ABORT_TIMEOUT)
        except Exception as error:  # fenced or gone: another worker owns it now
            log.info(
                "transactional producer stopped with an error",
                extra={"partition": partition, "error": type(error).__name__},
            )

    async def stop(self) -> None:
        for partition in list(self.producers):
            await self._stop(partition)
