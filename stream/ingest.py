"""Stage 1 in the worker: a batch of input records -> ticket and survey state, windows.

Per batch, and in this order, so that a crash at any moment loses nothing:
1. every record goes through the pure pipeline against an overlay of the state tables;
2. each state key the batch changed is sent to its changelog once, with the dead letters;
3. once Kafka has them all, the changes go to the local RocksDB in one write per partition,
   with what keeps the windows' checkpoint in step (store.py: an undo log, or a checkpoint);
4. the consumer then acknowledges the records, so their offsets are committed after all this.
A crash before 3 leaves the local store behind the changelog and the records uncommitted:
they are read again and reapplied. The store is never ahead of its changelog, which matters
because a record whose event the state already holds is a duplicate and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import orjson
from aiokafka import TopicPartition
from faust.types import Message
from prometheus_client import Counter as PrometheusCounter

from .events import InvalidEvent
from .experience import EXPERIENCE_TOPIC, ExperienceUpdate, encode_experience
from .pipeline import (
    STATE_TABLES,
    Checkpoint,
    Entries,
    Pipeline,
    StoredState,
    TableName,
    forgettable,
)
from .store import OUTCOMES_KEY, UNDO_TAG, Store
from .transactions import PartitionLost, Transactions

log = logging.getLogger("cx_stream")

MAX_REASON_CHARS = 300
"""cx-error quotes the validator, which may quote the record: keep the header small."""

DEAD_LETTER_MAX_BYTES = 1_048_588 + 4096
"""The largest dead letter the worker sends, and the max.message.bytes of the cx-dead-letter
topic it creates: the largest record batch a Kafka broker accepts by default (message.max.bytes)
plus room for the headers a dead letter adds (at most about 1.6 KB). Faust's own producer limit
(1,000,000 bytes) is below Kafka's default, so an invalid record the broker had accepted could
not be dead-lettered."""

DEAD_LETTER_RETRY_DELAYS = (0.1, 0.5)
"""Seconds before each new attempt at a dead letter that failed. The batch, and so every input
partition of the worker, waits for them: a record that still fails is reported and skipped."""

SWEEP_CHUNK = 2000
"""Keys examined per step of the retention sweep, between which batches get their turn."""

CHECKPOINT_AFTER = 2000
"""States of a (table, partition) changed since its windows' last checkpoint before the next
one. A restart re-folds that many per (table, partition) at most, plus what Faust's recovery
read from the changelog; a checkpoint writes every window bucket changed since the last one,
so a larger figure writes less during a backlog."""


Headers = list[tuple[str, bytes]]
DeadLetter = tuple[Message, Headers, Awaitable[Any]]
"""An invalid record, its dead letter's headers and the dead letter's delivery."""


class Producer(Protocol):
    """Faust's producer: `send` queues a record and returns its delivery."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Headers | None,
    ) -> Awaitable[Any]: ...


class RecordBatch(Protocol):
    """aiokafka's BatchBuilder: records for one partition, sent to Kafka in one piece."""

    def append(self, *, timestamp: float | None, key: bytes, value: bytes | None) -> Any:
        """The record's metadata, or None when the batch is full (never for its first)."""

    def close(self) -> None:
        """No record joins it any more, not even one sent with `send` meanwhile."""

    def record_count(self) -> int: ...


class ChangelogProducer(Protocol):
    """aiokafka's producer, under Faust's: the changelogs are written a record batch at a time.
    Its `send` costs 18-26 us of CPU a record (a future and the accumulator's work each), a
    batch 4-7 us a record, and a backlog writes about one changelog record per event."""

    def create_batch(self) -> RecordBatch: ...

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> Awaitable[Any]: ...


RecordCounts = dict[str, dict[str, int]]
"""Input records by topic and outcome."""

Sent = list[tuple[Awaitable[Any], int]]
"""Record batches sent to one partition, in order: each one's delivery and record count."""


class BatchStates:
    """The state tables as the pipeline sees them during a batch: read through, write back later."""

    def __init__(self, stores: Mapping[TableName, Store]) -> None:
        self.stores = stores
        self.pending: dict[tuple[TableName, int], dict[str, StoredState | None]] = {}
        self.logged: dict[tuple[TableName, int], set[bytes]] = {}
        """The keys in each (table, partition)'s undo log: changed since its checkpoint."""
        self.read: dict[tuple[TableName, int, bytes], bytes | None] = {}
        """The values the batch read from the store, by (table, partition, key)."""
        self.records: dict[int, RecordCounts] = {}
        """Per partition owned: its input records by topic and outcome, ever (as stored)."""
        self.counted: set[int] = set()
        """The partitions whose record counts the batch changed."""

    def get(self, table: TableName, partition: int, key: str) -> StoredState | None:
        pending = self.pending.get((table, partition))
        if pending is not None and key in pending:
            return pending[key]
        encoded = key.encode()
        raw = self.stores[table].read(partition, encoded)
        self.read[(table, partition, encoded)] = raw  # what an undo log entry would hold
        return raw

    def put(self, table: TableName, partition: int, key: str, value: StoredState | None) -> None:
        self.pending.setdefault((table, partition), {})[key] = value

    def count(self, partition: int, topic: str, outcome: str) -> None:
        """One more input record of `partition` came to `outcome`: written with the batch."""
        counts = self.record_counts(partition)
        by_outcome = counts.setdefault(topic, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        self.counted.add(partition)

    def record_counts(self, partition: int) -> RecordCounts:
        """A partition's record counts, read from its store the first time."""
        counts = self.records.get(partition)
        if counts is None:
            raw = self.stores["surveys"].read(partition, OUTCOMES_KEY)
            counts = self.records[partition] = {} if raw is None else orjson.loads(raw)
        return counts

    def items(self, table: TableName, partition: int) -> Iterator[tuple[str, StoredState]]:
        for key, raw in self.stores[table].partition_items(partition):
            yield key.decode(), raw

    def load_checkpoint(self, table: TableName, partition: int) -> Checkpoint:
        """The stored checkpoint and undo log (whose keys are then the ones known as logged)."""
        checkpoint = Checkpoint([], {})
        logged = self.logged[(table, partition)] = set()
        for key, value in self.stores[table].windows_entries(partition):
            if key.startswith(UNDO_TAG):
                logged.add(key[1:])
                checkpoint.changed_since[key[1:].decode()] = value or None
            else:
                checkpoint.windows.append((key, value))
        return checkpoint

    def replacing_undo_log(self, table: TableName, partition: int, windows: Entries) -> Entries:
        """A checkpoint's entries, with the undo log it makes obsolete deleted."""
        logged = self.logged.pop((table, partition), set())
        return {**{UNDO_TAG + key: None for key in logged}, **windows}

    def take(
        self, new_checkpoint: Callable[[TableName, int], Entries]
    ) -> dict[tuple[TableName, int], tuple[Entries, Entries]]:
        """The batch's changes, encoded, per (table, partition): the states, and the windows'
        entries to write with them (`new_checkpoint` gives a checkpoint's when the undo log is
        full); and an empty overlay for the next batch. The caller writes them all or stops
        the worker: the overlay and the undo log keys are not kept for a second attempt."""
        changes = {}
        for (table, partition), entries in self.pending.items():
            states = {key.encode(): value for key, value in entries.items()}
            undo = self._undo(table, partition, states, new_checkpoint)
            changes[(table, partition)] = (states, undo)
        for partition in self.counted:  # (the windows do not depend on them: no undo entry)
            states, _ = changes.setdefault(("surveys", partition), ({}, {}))
            states[OUTCOMES_KEY] = orjson.dumps(self.records[partition])
        self.pending, self.read, self.counted = {}, {}, set()
        return changes

    def _undo(
        self,
        table: TableName,
        partition: int,
        states: Entries,
        new_checkpoint: Callable[[TableName, int], Entries],
    ) -> Entries:
        logged = self.logged.setdefault((table, partition), set())
        new = [key for key in states if key not in logged]
        if len(logged) + len(new) >= CHECKPOINT_AFTER:
            return self.replacing_undo_log(table, partition, new_checkpoint(table, partition))
        logged.update(new)
        # the pipeline reads every state before it changes it: as read before this batch,
        # a key not logged yet holds its value at the checkpoint
        return {UNDO_TAG + key: self.read[(table, partition, key)] or b"" for key in new}

    def drop(self, partition: int) -> None:
        """Forget the undo log keys and record counts of a partition this worker no longer
        owns."""
        for table in STATE_TABLES:
            self.logged.pop((table, partition), None)
        self.records.pop(partition, None)


class Ingest:
    def __init__(
        self,
        pipeline: Pipeline,
        states: BatchStates,
        producer: Producer,
        changelog_producer: Callable[[], ChangelogProducer],
        changelogs: Mapping[TableName, str],
        topic_kinds: Mapping[str, str],
        dead_letter: str,
        outcomes: Any,
        dead_letter_failures: PrometheusCounter,
        transactions: Transactions | None = None,
        experience_topic: str = EXPERIENCE_TOPIC,
    ) -> None:
        self.pipeline = pipeline
        self.states = states
        self.producer = producer
        """Faust's: the dead letters."""
        self.changelog_producer = changelog_producer
        """The producer of the changelog batches (once the app started)."""
        self.changelogs = changelogs
        """The changelog topic of each state table."""
        self.topic_kinds = topic_kinds
        self.dead_letter = dead_letter
        self.outcomes = outcomes
        self.dead_letter_failures = dead_letter_failures
        """Invalid records that could not be sent to the dead-letter topic, by input topic."""
        self.transactions = transactions
        """Exactly-once: the transactional producers; None for at-least-once."""
        self.experience_topic = experience_topic
        """Where tickets and survey slots send their observations to their accounts."""
        self.next_offsets: dict[tuple[str, int], int] = {}
        """Per input topic and partition owned, the offset after the last record processed."""
        self.lock = asyncio.Lock()
        """Held while a batch, a sweep step or a restore changes state; a rebalance waits."""
        self.windows_restored = False
        """Whether the windows of the partitions owned are restored: cleared when partitions
        are revoked, set once a restore after it is done (the worker is not ready before)."""

    async def process(self, messages: Sequence[Message]) -> None:
        async with self.lock:
            messages = self._unread(messages)
            now = time.time()
            outcomes: dict[int, tuple[Message, str]] = {}
            """By id(message): the message and its outcome."""
            invalid: list[tuple[Message, Headers]] = []
            # a record without a timestamp (-1) is judged by the clock that reads it
            records = [
                (
                    self.topic_kinds[message.topic],
                    message.partition,
                    message.value,
                    message.timestamp if message.timestamp > 0 else now,
                    message,
                )
                for message in messages
            ]
            for message, result in zip(messages, self.pipeline.process(records), strict=True):
                outcome: str = "invalid" if isinstance(result, Exception) else result
                if isinstance(result, InvalidEvent):
                    invalid.append((message, _headers(message, str(result))))
                elif isinstance(result, Exception):
                    invalid.append(self._internal_error(message, result))
                outcomes[id(message)] = (message, outcome)
            for failure in self.pipeline.settle(now):
                for token in failure.tokens:
                    assert isinstance(token, Message)
                    outcomes[id(token)] = (token, "invalid")
                    invalid.append(self._internal_error(token, failure.error))
            counted = Counter(
                (message.topic, outcome)
                for message, outcome in outcomes.values()
                if message.topic != self.experience_topic  # (internal: no input records)
            )
            for message, outcome in outcomes.values():
                if message.topic != self.experience_topic:
                    self.states.count(message.partition, message.topic, outcome)
            if self.transactions is None:
                dead_letters = [await self._dead_letter(*letter) for letter in invalid]
                await self._write_back()
                await asyncio.gather(*(self._deliver(*letter) for letter in dead_letters))
            else:
                await self._write_back(messages, invalid)
            for (topic, outcome), count in counted.items():
                self.outcomes.labels(topic, outcome).inc(count)

    def _unread(self, messages: Sequence[Message]) -> list[Message]:
        """The records not processed yet since their partitions were assigned. Faust seeks to
        the committed offsets once a rebalance's recovery is done, while records may already
        flow (and the consumer hands back records fetched while paused): a seek back delivers
        some again, which would count twice and, under exactly-once, commit twice. Under
        exactly-once, also only records of partitions whose producer this worker holds: one
        fenced is another worker's now, read from the committed offsets by its new owner."""
        owned = None if self.transactions is None else self.transactions.producers
        unread = []
        for message in messages:
            source = (message.topic, message.partition)
            if message.offset < self.next_offsets.get(source, 0):
                continue
            if owned is not None and message.partition not in owned:
                continue
            self.next_offsets[source] = message.offset + 1
            unread.append(message)
        return unread

    def record_counts(self) -> RecordCounts:
        """The input records of the partitions owned, by topic and outcome, since the topics
        began: kept with the states (under exactly-once, each record counted once whatever
        crashed; under at-least-once a record read again after a crash counts again)."""
        totals: RecordCounts = {}
        for partition in sorted(self.pipeline.partitions):
            for topic, by_outcome in self.states.record_counts(partition).items():
                for outcome, count in by_outcome.items():
                    mine = totals.setdefault(topic, {})
                    mine[outcome] = mine.get(outcome, 0) + count
        return totals

    async def restore_windows(self, partitions: Iterable[int], now: float) -> None:
        """Once Faust restored the tables (start, crash, rebalance): the windows of
        `partitions` from their checkpoints (or from every state), then checkpointed anew."""
        async with self.lock:
            for _ in self.pipeline.restore(partitions, now):
                await asyncio.sleep(0)  # a long restore still answers heartbeats and scrapes
            self.checkpoint_all()
            # the collector runs rarely (memory.GC_THRESHOLDS): free what restoring left in
            # cycles now, before the worker counts as ready (the caller then hands the free
            # pages back to the system)
            gc.collect()
            self.windows_restored = True

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Forget what was derived for partitions this worker no longer owns; a batch in
        flight finishes first."""
        async with self.lock:
            self.windows_restored = False
            if self.transactions is not None:
                await self.transactions.release(partitions)
            self.lose(partitions)

    def lose(self, partitions: Iterable[int]) -> None:
        """Drop what was derived for `partitions`, revoked or taken by another worker."""
        lost = set(partitions)
        for partition in lost:
            self.pipeline.drop(partition)
            self.states.drop(partition)
        for source in [source for source in self.next_offsets if source[1] in lost]:
            del self.next_offsets[source]

    def _internal_error(self, message: Message, error: Exception) -> tuple[Message, Headers]:
        # where it failed, not the error's message: that may quote the record
        log.error(
            "failed to process a record; sent to the dead-letter topic",
            extra={
                **_source(message),
                "error": type(error).__name__,
                "stack": "".join(traceback.format_tb(error.__traceback__)),
            },
        )
        return message, _headers(message, f"internal error: {type(error).__name__}")

    async def forget_expired(self, retention: Mapping[TableName, float]) -> int:
        """Delete the states past their table's retention (seconds) in every partition owned,
        a chunk at a time; returns how many. None while the windows are not restored (a
        rebalance, or a restore that failed)."""
        if not self.windows_restored:
            return 0
        now = time.time()
        horizons = {table: now - seconds for table, seconds in retention.items()}
        forgotten = 0
        for partition in sorted(self.pipeline.partitions):
            for table in STATE_TABLES:
                candidates = self._expired_keys(table, partition, horizons[table], now)
                while chunk := [next(candidates, None) for _ in range(SWEEP_CHUNK)]:
                    keys = [(table, key) for key in chunk if key is not None]
                    async with self.lock:
                        if partition not in self.pipeline.partitions:
                            break  # revoked meanwhile
                        forgotten += self.pipeline.forget(partition, keys, horizons, time.time())
                        await self._write_back()
                    if len(keys) < SWEEP_CHUNK:
                        break
                    await asyncio.sleep(0)
        return forgotten

    def _expired_keys(
        self, table: TableName, partition: int, horizon: float, now: float
    ) -> Iterator[str]:
        for key, stored in self.states.items(table, partition):
            if forgettable(table, stored, horizon, now):
                yield key

    async def _dead_letter(self, message: Message, headers: Headers) -> DeadLetter:
        """Queue the record for the dead-letter topic; its delivery is awaited with the batch."""
        return message, headers, await self._send_dead_letter(message, headers)

    async def _send_dead_letter(self, message: Message, headers: Headers) -> Awaitable[Any]:
        try:
            return await self.producer.send(
                self.dead_letter, message.key, message.value, None, None, headers
            )
        except Exception as error:  # refused before sending: fails like a delivery
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

    async def _deliver(self, message: Message, headers: Headers, delivery: Awaitable[Any]) -> None:
        """Await a dead letter's delivery, sending it again after each retry delay; a record
        that still cannot be sent is reported, without its content, and skipped."""
        for delay in DEAD_LETTER_RETRY_DELAYS:
            with contextlib.suppress(Exception):
                await delivery
                return
            await asyncio.sleep(delay)
            delivery = await self._send_dead_letter(message, headers)
        try:
            await delivery
        except Exception as error:
            self._report_undeliverable(message, error)

    def _report_undeliverable(self, message: Message, error: Exception) -> None:
        log.error(
            "could not send a record to the dead-letter topic; counted as invalid",
            extra={**_source(message), "error": repr(error)},
        )
        self.dead_letter_failures.labels(message.topic).inc()

    async def _write_back(
        self,
        messages: Sequence[Message] = (),
        invalid: Sequence[tuple[Message, Headers]] = (),
    ) -> None:
        """The batch's changes to their changelogs, then to the local store. Under
        exactly-once, each partition's changes go in one transaction with the dead letters of
        its `invalid` records and the offsets past its `messages`, and the store takes them
        once it committed; otherwise (the dead letters sent by the caller) as soon as Kafka
        has the changelog records."""
        changes = self.states.take(self.pipeline.checkpoint_entries)
        updates, self.pipeline.experience_updates = self.pipeline.experience_updates, []
        if self.transactions is not None:
            await self._commit(changes, updates, messages, invalid)
            return
        # the accounts get their observations first: once the changes are stored, a replay
        # of the batch changes nothing and would send nothing
        deliveries = [
            await self.producer.send(
                self.experience_topic, *encode_experience(update), None, None, None
            )
            for _, update in updates
        ]
        await asyncio.gather(*deliveries)
        if not changes:
            return
        producer = self.changelog_producer()
        # all partitions at once: a partition's second record batch waits for its first to go
        sent = await asyncio.gather(
            *(
                send_changelog(producer, self.changelogs[table], partition, states)
                for (table, partition), (states, _) in changes.items()
            )
        )
        # a changelog that cannot be written must stop the worker before offsets move on, and
        # before the store has anything the changelog may lack
        last_offsets = await asyncio.gather(*map(last_offset_of, sent))
        self._store(changes, dict(zip(changes, last_offsets, strict=True)))

    async def _commit(
        self,
        changes: Mapping[tuple[TableName, int], tuple[Entries, Entries]],
        updates: Sequence[tuple[int, ExperienceUpdate]],
        messages: Sequence[Message],
        invalid: Sequence[tuple[Message, Headers]],
    ) -> None:
        """A transaction per partition the batch reached (all at once); what it wrote to the
        store once every transaction committed. A transaction that fails stops the worker,
        whose records are then read again from the last committed offsets; one whose
        partition another worker took (PartitionLost) drops that partition."""
        assert self.transactions is not None
        offsets: dict[int, dict[TopicPartition, int]] = {}
        for message in messages:
            tp = TopicPartition(message.topic, message.partition)
            by_tp = offsets.setdefault(message.partition, {})
            by_tp[tp] = max(by_tp.get(tp, 0), message.offset + 1)
        letters: dict[int, list[tuple[Message, Headers]]] = {}
        for message, headers in invalid:
            letters.setdefault(message.partition, []).append((message, headers))
        sent_on: dict[int, list[ExperienceUpdate]] = {}
        for partition, update in updates:
            sent_on.setdefault(partition, []).append(update)
        partitions = sorted({partition for _, partition in changes} | set(offsets) | set(sent_on))

        async def transaction(partition: int) -> dict[TableName, int] | None:
            tables = {
                table: states for (table, at), (states, _) in changes.items() if at == partition
            }

            async def write(producer: Any) -> dict[TableName, Sent]:
                for message, headers in letters.get(partition, ()):
                    await self._send_in_transaction(producer, message, headers)
                for update in sent_on.get(partition, ()):
                    key, value = encode_experience(update)
                    await producer.send(self.experience_topic, value, key=key)
                return {
                    table: await send_changelog(producer, self.changelogs[table], partition, states)
                    for table, states in tables.items()
                }

            assert self.transactions is not None
            try:
                sent = await self.transactions.commit(partition, write, offsets.get(partition, {}))
            except PartitionLost:
                return None
            return {table: await last_offset_of(batches) for table, batches in sent.items()}

        results = await asyncio.gather(*map(transaction, partitions))
        committed = dict(zip(partitions, results, strict=True))
        lost = {partition for partition, tables in committed.items() if tables is None}
        if lost:
            log.warning(
                "input partitions taken by another worker; dropped here",
                extra={"partitions": sorted(lost)},
            )
            self.lose(lost)
        self._store(
            {(table, at): change for (table, at), change in changes.items() if at not in lost},
            {
                (table, partition): last
                for partition, offsets_by_table in committed.items()
                for table, last in (offsets_by_table or {}).items()
            },
        )

    async def _send_in_transaction(self, producer: Any, message: Message, headers: Headers) -> None:
        """A dead letter in the partition's transaction. One the producer refuses outright
        (too large, neither key nor value) is reported and skipped, as with at-least-once; one
        that fails later fails the transaction."""
        try:
            await producer.send(self.dead_letter, message.value, key=message.key, headers=headers)
        except Exception as error:
            self._report_undeliverable(message, error)

    def _store(
        self,
        changes: Mapping[tuple[TableName, int], tuple[Entries, Entries]],
        last_offsets: Mapping[tuple[TableName, int], int],
    ) -> None:
        for (table, partition), (states, windows) in changes.items():
            self.states.stores[table].write(
                partition, states, last_offsets.get((table, partition)), windows
            )

    def checkpoint_all(self) -> None:
        """Checkpoint the windows of every (table, partition): after they were restored."""
        for partition in self.pipeline.partitions:
            for table in STATE_TABLES:
                windows = self.pipeline.checkpoint_entries(table, partition)
                entries = self.states.replacing_undo_log(table, partition, windows)
                self.states.stores[table].write(partition, {}, None, entries)


def _headers(message: Message, reason: str) -> Headers:
    """A dead letter's headers: the record's own, then why and where it came from."""
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return [
        *(message.headers or []),
        ("cx-error", reason.encode()),
        ("cx-source-topic", message.topic.encode()),
        ("cx-source-partition", str(message.partition).encode()),
        ("cx-source-offset", str(message.offset).encode()),
    ]


def _source(message: Message) -> dict[str, Any]:
    """Where a record is, for a log line: never what it holds."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


async def send_changelog(
    producer: ChangelogProducer, topic: str, partition: int, states: Entries
) -> Sent:
    """Queue one partition's changed states for its changelog, in as few record batches as
    they fit in."""
    sent: Sent = []

    async def send(batch: RecordBatch) -> None:
        batch.close()  # or a `send` to the partition meanwhile could join it, uncounted
        count = batch.record_count()
        sent.append((await producer.send_batch(batch, topic, partition=partition), count))

    batch = producer.create_batch()
    for key, value in states.items():
        if batch.append(timestamp=None, key=key, value=value) is None:  # full: send it
            await send(batch)
            batch = producer.create_batch()
            first = batch.append(timestamp=None, key=key, value=value)
            assert first is not None, "aiokafka takes any record as a batch's first"
    await send(batch)
    return sent


async def last_offset_of(sent: Sent) -> int:
    """The offset of the last record of record batches sent in this order to one partition,
    once Kafka has them all: a batch's delivery gives the offset of its first. Every delivery
    is awaited, so that a failure is raised and none is left unread."""
    outcomes = await asyncio.gather(*(delivery for delivery, _ in sent), return_exceptions=True)
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failed:
        raise failed[0]
    last: Any = outcomes[-1]
    return int(last.offset) + sent[-1][1] - 1
