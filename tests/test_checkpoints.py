"""The windows' checkpoint in the production store (RocksDB), through a crash at the worst
moment: the changelog has a batch that the local store never got. Faust's recovery then
writes it into the store, and the restarted worker must fold exactly that batch into the
checkpointed windows. No broker here: the changelog is a list, recovery is the store's own
`apply_changelog_batch`, as Faust calls it."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import orjson
import pytest
from faust.types import TP, Message
from prometheus_client import CollectorRegistry, Counter

from stream.ingest import BatchStates, Ingest, RecordBatch
from stream.pipeline import STATE_TABLES, TableName
from stream.store import ROCKSDB_OPTIONS, STORE_URL, Store
from tests.helpers import PARTITIONS, assert_rows_match, exported, new_pipeline, partition_of
from tests.oracle import Event, expected
from tests.scenario import delivery, scenario


class Crash(Exception):
    """The worker dies: what was not written yet is lost."""


class Changelog:
    """A producer that keeps the records sent to each changelog partition, with their offsets."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = defaultdict(list)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]:
        assert key is not None and partition is not None
        records = self.records[(topic, partition)]
        records.append((key, value))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(SimpleNamespace(offset=len(records) - 1))
        return delivery

    def create_batch(self) -> RecordBatch:
        return Batch()

    async def send_batch(
        self, batch: RecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        assert isinstance(batch, Batch)
        records = self.records[(topic, partition)]
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(SimpleNamespace(offset=len(records)))  # of its first record
        records.extend(batch.records)
        return delivery


class Batch:
    """Like aiokafka's BatchBuilder: full at RECORDS_PER_BATCH, so that a partition's changes
    take several batches now and then."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, *, timestamp: float | None, key: bytes, value: bytes | None) -> Any:
        if len(self.records) == RECORDS_PER_BATCH:
            return None
        self.records.append((key, value))
        return SimpleNamespace(offset=len(self.records) - 1)

    def record_count(self) -> int:
        return len(self.records)


RECORDS_PER_BATCH = 3


def open_stores(datadir: Path) -> dict[TableName, Store]:
    app = faust.App("cx-checkpoints", datadir=str(datadir), store=STORE_URL)
    tables = {
        name: app.Table(
            name,
            partitions=PARTITIONS,
            key_type=bytes,
            value_type=bytes,
            options=ROCKSDB_OPTIONS,
        )
        for name in STATE_TABLES
    }
    stores = {name: table.data for name, table in tables.items()}
    assert all(isinstance(store, Store) for store in stores.values())
    return stores  # type: ignore[return-value]


def close(stores: dict[TableName, Store]) -> None:
    for store in stores.values():
        for partition in list(store._dbs):
            store._dbs.pop(partition).close()


def ingest_for(stores: dict[TableName, Store], changelog: Changelog) -> Ingest:
    states = BatchStates(stores)
    registry = CollectorRegistry()
    return Ingest(
        new_pipeline(states),  # type: ignore[arg-type]
        states,
        changelog,
        lambda: changelog,
        {name: f"{name}-changelog" for name in STATE_TABLES},
        {topic: topic for topic in ("ticket-opened", "ticket-replied", "ticket-resolved")}
        | {topic: topic for topic in ("ticket-reopened", "survey-answered")},
        "cx-dead-letter",
        Counter("cx_events", "", ["topic", "outcome"], registry=registry),
        Counter("cx_dead_letter_failures", "", ["topic"], registry=registry),
    )


def message(offset: int, event: Event) -> Message:
    topic, fields = event
    return Message(
        topic, partition_of(fields), offset, time.time(), 0, None, None, orjson.dumps(fields), None
    )


def recover(stores: dict[TableName, Store], changelog: Changelog) -> None:
    """What Faust's recovery does: the changelog past each persisted offset into the store."""
    for (topic, partition), records in changelog.records.items():
        store = stores[topic.removesuffix("-changelog")]  # type: ignore[index]
        tp = TP(topic, partition)
        persisted = store.persisted_offset(tp)
        start = 0 if persisted is None else persisted + 1
        events = [
            SimpleNamespace(
                message=SimpleNamespace(
                    tp=tp, partition=partition, offset=offset, key=key, value=value
                )
            )
            for offset, (key, value) in enumerate(records)
            if offset >= start
        ]
        store.apply_changelog_batch(events, None, None)  # type: ignore[arg-type]


def restart(datadir: Path, changelog: Changelog, now: float) -> Ingest:
    stores = open_stores(datadir)
    recover(stores, changelog)
    ingest = ingest_for(stores, changelog)
    asyncio.run(ingest.restore_windows(range(PARTITIONS), now))
    assert ingest.windows_restored
    return ingest


def run_batches(ingest: Ingest, batches: list[list[Message]]) -> None:
    async def run() -> None:
        for batch in batches:
            await ingest.process(batch)

    asyncio.run(run())


@pytest.mark.parametrize("checkpoint_after", [7, 10_000])
def test_a_batch_in_the_changelog_but_not_on_disk_is_folded_in_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_after: int
) -> None:
    # every few states a checkpoint, or never one between restarts: both paths of the store
    monkeypatch.setattr("stream.ingest.CHECKPOINT_AFTER", checkpoint_after)
    now = time.time()
    events = delivery(scenario(23, now, tickets=80), 23)
    messages = [message(offset, event) for offset, event in enumerate(events)]
    batches = [messages[start : start + 25] for start in range(0, len(messages), 25)]
    half = len(batches) // 2
    changelog = Changelog()

    first = restart(tmp_path, changelog, now)
    run_batches(first, batches[:half])
    close(first.states.stores)  # type: ignore[arg-type]

    # the second life dies after its changelog records of a batch were delivered, before the
    # store write: the store is behind its changelog, with that batch's states unlogged
    second = restart(tmp_path, changelog, now)
    run_batches(second, batches[half : half + 3])
    stores = second.states.stores
    monkeypatch.setattr(Store, "write", lambda *args: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        run_batches(second, [batches[half + 3]])
    monkeypatch.undo()
    monkeypatch.setattr("stream.ingest.CHECKPOINT_AFTER", checkpoint_after)
    close(stores)  # type: ignore[arg-type]

    third = restart(tmp_path, changelog, time.time())
    assert third.states.logged == {}, "restored windows are checkpointed at once"
    # the input of the lost batch was not committed: it is read again, and is all duplicates
    run_batches(third, batches[half + 3 :])
    assert_rows_match(exported(third.pipeline, time.time()), expected(events, time.time()))
    close(third.states.stores)  # type: ignore[arg-type]


def test_a_revoked_partition_is_forgotten_and_the_worker_unready_until_the_next_restore(
    tmp_path: Path,
) -> None:
    now = time.time()
    events = delivery(scenario(5, now, tickets=40), 5)
    changelog = Changelog()
    ingest = restart(tmp_path, changelog, now)
    run_batches(ingest, [[message(offset, event) for offset, event in enumerate(events)]])
    assert {partition for _, partition in ingest.states.logged} == set(range(PARTITIONS))

    asyncio.run(ingest.revoke({0, 1}))
    assert not ingest.windows_restored
    assert set(ingest.pipeline.partitions) == set(range(2, PARTITIONS))
    assert {partition for _, partition in ingest.states.logged} == set(range(2, PARTITIONS))
    assert {partition for _, partition in ingest.pipeline.entries} == set(range(2, PARTITIONS))

    # a new assignment restores what the worker owns now, from the store it kept
    asyncio.run(ingest.restore_windows(range(PARTITIONS), time.time()))
    assert ingest.windows_restored
    assert_rows_match(exported(ingest.pipeline, time.time()), expected(events, time.time()))
    close(ingest.states.stores)
