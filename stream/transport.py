"""Faust's Kafka transport with seven changes, each at the depth where its cause lives.

1. **Batches for the input topics.** Faust's consumer loop hands records to streams one at a
   time: `Consumer._drain_messages` awaits `wait_first(callback(message), ...)` per record, and
   the conductor and stream iterator pass it on one by one, about 140 us per record whatever the
   agent does. Records of the topics in `batch_topics` skip that: `getmany` collects them per
   fetch and awaits `batch_handler` once, then acknowledges them, so their offsets are committed
   only after the handler has written and delivered its state. A batch in flight is one Faust
   waits for before a rebalance or a shutdown commits. Records of other topics go
   through Faust's path unchanged. Upstream, a batch callback in the conductor (an agent that
   receives a whole fetch) would make this unnecessary.
2. **Records fetched while paused.** A fetch can return records of a partition that Faust
   paused while it was in flight (Faust pauses newly assigned partitions until their tables are
   restored). Faust skips such records, but the consumer position has already moved past them,
   so they would never be processed: seen here as a worker that took over a dead worker's
   partitions and silently dropped everything produced in between. This consumer seeks back to
   the first skipped record. Processing is idempotent, so reading a record twice is harmless.
3. **The embedded broker's end offsets** (only with CX_EMBEDDED_BROKER): Tansu reports a
   partition's end offset as its last batch's base offset + 1, so changelog recovery would stop
   before the last batch's other records. `highwaters` reads the last batch to find the true end.
4. **The embedded broker's fetch wait** (only with CX_EMBEDDED_BROKER): Faust asks for fetches
   that wait up to 1.5 s for data. Kafka answers such a fetch as soon as a record arrives; Tansu
   does not, so each hop (input, then cx-partials) added up to that wait to an event's way to
   /metrics (measured: a record produced every 0.1 s reached an aiokafka consumer after 0.37 s
   at the median with a 1.5 s wait, 3 ms with 0.1 s). With Tansu the wait is 0.1 s.
5. **Every topic a producer sends to is tracked in its metadata.** aiokafka 0.14's client
   fetches every topic's metadata until it first meets a topic it does not know; from then on
   it asks only for the topics it met so, and the leaders of the others vanish from its view.
   A changelog record batch queued for such a topic then waited for a leader until Faust's
   producer request timeout (20 minutes, with the ingest and so the partition waiting too):
   seen in a three-broker cluster. `Producer` tracks each topic at its first send.
6. **Record batches for the changelogs.** Faust's producer sends a record at a time, and each
   `send` costs aiokafka a future and its accumulator's work (18-26 us of CPU a record, against
   4-7 us in a batch). `App.kafka_producer` gives the ingest the aiokafka producer underneath,
   whose `create_batch`/`send_batch` write a partition's changes as one record batch.
7. **A rebalance's offset questions on a connection of their own** (`offset_reader`): on the
   consumer's, each waited behind the fetch in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from time import monotonic
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

log = logging.getLogger("cx_stream")

BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


EMBEDDED_FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def on_thread_stop(self) -> None:
        """Faust's, except that a consumer call cancelled by the stop (a rebalance's end
        offsets, say) does not end the thread with the consumer unstopped: the worker then
        waited for the thread until it was killed."""
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.warning("a consumer call was cancelled by the stop; stopping on")

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer: AIOKafkaConsumer = super()._create_worker_consumer(transport)
        if isinstance(self.app, App):  # (read when it starts its fetcher)
            if self.app.correct_end_offsets:
                consumer._fetch_max_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS
            if self.app.exactly_once:  # inputs, changelogs and partials: committed records only
                consumer._isolation_level = "read_committed"
        return consumer


class Consumer(faust_aiokafka.Consumer):
    app: App

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        batch: list[Message] = []
        batch_topics = self.app.batch_topics
        async for tp, message in super().getmany(timeout):
            if tp.topic in batch_topics:
                batch.append(message)
            else:
                yield tp, message
        if batch and self.app.batch_handler is not None:
            # in flight until acknowledged: a rebalance or a shutdown waits for it (Faust's
            # wait_empty), and stopping the fetcher does not cut it short, so its offsets are
            # committed with the rest
            for message in batch:
                self._unacked_messages.add(message)
            await asyncio.shield(self._handle(self.app.batch_handler, batch))

    async def _handle(self, handler: BatchHandler, batch: list[Message]) -> None:
        monitor = self.app.monitor
        if monitor is not None:
            # what Faust's streams note per record: without it, its stall check (after
            # stream_processing_timeout) logs an error every few seconds for every input
            # partition of a backlog that takes longer than that
            started = monotonic()
            for tp in {message.tp for message in batch}:
                monitor.stream_inbound_time[tp] = started
        await handler(batch)
        for message in batch:
            self._read_offset[message.tp] = message.offset
            self.ack(message)

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        """Faust's, but under exactly-once the batch topics' offsets are committed by the
        ingest's transactions, not here: their acknowledgements are only noted as committed."""
        if not self.app.exactly_once:
            offsets: dict[TP, int] = super()._filter_committable_offsets(tps)
            return offsets
        batch_topics = self.app.batch_topics
        others = []
        for tp in tps:
            if tp.topic not in batch_topics:
                others.append(tp)
                continue
            offset = self._new_offset(tp)  # acknowledged once its transaction committed
            if offset is not None and self._should_commit(tp, offset):
                self._committed_offset[tp] = offset
        offsets = super()._filter_committable_offsets(others)
        return offsets

    def read_offset(self, tp: TP) -> int | None:
        """The offset of the last record of `tp` processed, if any since the assignment."""
        offset: int | None = self._read_offset.get(tp)
        return offset

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        if records and active is not None:
            for tp, batch in records.items():
                if batch and tp not in active and tp not in self._buffered_partitions:
                    await self._hand_back(tp, batch[0].offset)
        return records, active

    async def _hand_back(self, tp: TP, first_skipped: int) -> None:
        try:
            position = await self.position(tp)
            # never forward: a seek made meanwhile (to the committed offset) may be earlier
            offset = first_skipped if position is None else min(position, first_skipped)
            await self.seek(tp, offset)
        except IllegalStateError:
            return  # revoked meanwhile: its new owner reads it from the committed offset
        log.info("re-reading records fetched while paused", extra={"tp": str(tp), "offset": offset})

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        if not partitions:
            return {}
        async with offset_reader(self.transport.url, partitions, self._reader_options()) as reader:
            starts: Mapping[TP, int] = await reader.beginning_offsets(list(reader.assignment()))
        return starts

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets as Faust's changelog recovery needs them: one past the last record
        there is to read."""
        if not partitions:
            return {}
        options = self._reader_options()
        async with offset_reader(self.transport.url, partitions, options) as reader:
            ends: Mapping[TP, int] = await reader.end_offsets(list(reader.assignment()))
        if self.app.correct_end_offsets:
            return await true_end_offsets(self.transport.url, ends, options)
        return await last_record_ends(self.transport.url, ends, options)

    def _reader_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for a reader of the worker's own topics: the security
        Faust gives its own clients (from broker_credentials), and its isolation."""
        conf = self.app.conf
        auth = faust_aiokafka.credentials_to_aiokafka_auth(
            conf.broker_credentials, conf.ssl_context
        )
        isolation = "read_committed" if self.app.exactly_once else "read_uncommitted"
        return {**auth, "isolation_level": isolation}


@asynccontextmanager
async def offset_reader(
    urls: Sequence[Any], partitions: Iterable[TP | KafkaTopicPartition], options: Mapping[str, Any]
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of its own assigned `partitions`, for the offsets a rebalance asks about.

    Not the worker's consumer: the broker answers a connection's requests in order, and that
    one always has a fetch in flight that waits up to 1.5 s for records, so each question
    waited that long. A rebalance asks several (each table's store, then the recovery of the
    active and the standby tables), and one that outlasted the session (6 s
    in the tests) got its worker dropped from the group, again and again, while it held its
    partitions' producers: seen as two exactly-once workers started at once of which one never
    processed. `options`: aiokafka's security and isolation keyword arguments."""
    servers = ",".join(f"{url.host}:{url.port or 9092}" for url in urls)
    reader = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, **options)
    await reader.start()
    try:  # (some: an aiokafka consumer assigned nothing fails to stop)
        reader.assign([KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions])
        yield reader
    finally:
        await reader.stop()


async def true_end_offsets(
    urls: Sequence[Any], reported: Mapping[TP, int], auth: Mapping[str, Any]
) -> dict[TP, int]:
    """End offsets counted from the records themselves: one past the last record there is.
    `auth`: aiokafka's security keyword arguments."""
    ends = {KafkaTopicPartition(tp.topic, tp.partition): end for tp, end in reported.items() if end}
    if ends:
        async with offset_reader(urls, ends, auth) as reader:
            for partition, end in ends.items():
                reader.seek(partition, end - 1)  # the base offset of the last batch
            while fetched := await reader.getmany(timeout_ms=500):
                for partition, records in fetched.items():
                    ends[partition] = max(ends[partition], records[-1].offset + 1)
    return {
        tp: ends.get(KafkaTopicPartition(tp.topic, tp.partition), end)
        for tp, end in reported.items()
    }


LAST_RECORD_TIMEOUT = 30.0
"""Seconds `last_record_ends` may read before it settles for the ends as reported."""


async def last_record_ends(
    urls: Sequence[Any], reported: Mapping[TP, int], options: Mapping[str, Any]
) -> dict[TP, int]:
    """One past the last record of each partition that a reader can read, the `reported` end
    offsets being Kafka's: a transaction's commit or abort marker takes an offset of its own
    at the end of a log, and an aborted transaction's records are not read under
    read_committed, so the last record can be some way before the end offset. Faust's
    recovery waits for a record at (end offset - 1). Read back from the end, further each
    round, until a record shows; 0 where there is none to read. `options`: aiokafka's
    security and isolation keyword arguments."""
    ends = {KafkaTopicPartition(tp.topic, tp.partition): end for tp, end in reported.items() if end}
    found: dict[KafkaTopicPartition, int] = {}
    if ends:
        async with offset_reader(urls, ends, options) as reader:
            starts = await reader.beginning_offsets(list(ends))
            try:
                await asyncio.wait_for(_read_back(reader, ends, starts, found), LAST_RECORD_TIMEOUT)
            except TimeoutError:
                log.warning("could not find the last records; recovery uses the end offsets")
                return dict(reported)
    return {
        tp: found.get(KafkaTopicPartition(tp.topic, tp.partition), end)
        for tp, end in reported.items()
    }


async def _read_back(
    reader: AIOKafkaConsumer,
    ends: Mapping[KafkaTopicPartition, int],
    starts: Mapping[KafkaTopicPartition, int],
    found: dict[KafkaTopicPartition, int],
) -> None:
    lookback = 2
    pending = dict(ends)
    while pending:
        last: dict[KafkaTopicPartition, int] = {}
        for partition, end in pending.items():
            reader.seek(partition, max(starts[partition], end - lookback))
        while [p for p, end in pending.items() if await reader.position(p) < end]:
            fetched = await reader.getmany(*pending, timeout_ms=200)
            for partition, records in fetched.items():
                if records:
                    last[partition] = max(last.get(partition, -1), records[-1].offset)
        for partition, end in list(pending.items()):
            if partition in last:
                found[partition] = last.pop(partition) + 1
            elif end - lookback <= starts[partition]:
                found[partition] = 0  # nothing to read at all
            else:
                continue
            del pending[partition]
        lookback *= 16


class _TopicTrackingClient(AIOKafkaClient):  # type: ignore[misc]
    async def _wait_on_metadata(self, topic: str) -> Any:
        if topic not in self._topics:
            await self.add_topic(topic)
        return await super()._wait_on_metadata(topic)


class TopicTrackingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """aiokafka's producer, its client tracking every topic it sends to (change 5)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.client.__class__ = _TopicTrackingClient  # the client it made, one method changed


class Producer(faust_aiokafka.Producer):
    @property
    def _producer_type(self) -> type[AIOKafkaProducer]:
        return TopicTrackingProducer


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


class App(faust.App):
    batch_topics: frozenset[str] = frozenset()
    """Topics whose records go to `batch_handler` a fetch at a time, not to streams."""
    batch_handler: BatchHandler | None = None
    correct_end_offsets = False
    """Whether the broker is the embedded one, whose end offsets need correcting."""
    exactly_once = False
    """CX_PROCESSING_GUARANTEE=exactly_once: the ingest commits the input offsets in its
    transactions, and the consumer reads committed records only."""
    before_recovery: Callable[[set[int]], Awaitable[None]] | None = None
    """Called with every partition of the state tables assigned, before their changelogs are
    read (exactly-once: the transactional producers fence their previous owners)."""

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)

    def kafka_producer(self) -> Any:
        """aiokafka's producer under Faust's, for record batches (through Faust's private
        `_ensure_producer`, faust-streaming 0.15); raises NotReady before the app started."""
        producer: Any = self.producer
        return producer._ensure_producer()
