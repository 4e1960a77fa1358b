"""The windows' checkpoint in the production store (RocksDB), through a crash at the worst
moment: the changelog has a batch that the local store never got. Faust's recovery then
writes it into the store, and the restarted worker must fold exactly that batch into the
checkpointed windows. No broker here: the changelog is a list, recovery is the store's own
`apply_changelog_batch`, as Faust calls it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from faust.types import TP, Message
from prometheus_client import CollectorRegistry, Counter

from stream.ingest import BatchStates, Ingest
from stream.pipeline import STATE_TABLES, TableName
from stream.store import Store
from tests.helpers import PARTITIONS, assert_rows_match, exported, new_pipeline, partition_of
from tests.oracle import Event, expected
from tests.scenario import delivery, scenario
from tests.stores import Changelog, LostBatch, close, open_stores


class Crash(Exception):
    """The worker dies: what was not written yet is lost."""


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


def test_a_revoked_partition_is_forgotten_and_its_windows_unrestored_until_the_next_restore(
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


def stored(ingest: Ingest) -> dict[tuple[str, int], dict[bytes, bytes]]:
    """Every state and changelog offset in the local store, by (table, partition)."""
    stores = ingest.states.stores
    return {
        (table, partition): dict(stores[table]._db_for_partition(partition).items())
        for table in STATE_TABLES
        for partition in range(PARTITIONS)
    }


def test_a_lost_changelog_batch_stops_the_batch_before_the_store_has_any_of_it(
    tmp_path: Path,
) -> None:
    now = time.time()
    events = delivery(scenario(11, now, tickets=60), 11)
    messages = [message(offset, event) for offset, event in enumerate(events)]
    changelog = Changelog()
    ingest = restart(tmp_path, changelog, now)
    run_batches(ingest, [messages[:40]])
    before = stored(ingest)

    # several partitions, several record batches each: the third one sent is lost
    changelog.failing_from = changelog.batches + 3
    with pytest.raises(LostBatch):
        run_batches(ingest, [messages[40:]])
    assert stored(ingest) == before, "the store took changes before Kafka had them all"
    close(ingest.states.stores)  # type: ignore[arg-type]

    # the batch's input was not acknowledged: a restart reads it again, and is exact
    changelog.failing_from = None
    again = restart(tmp_path, changelog, time.time())
    run_batches(again, [messages[40:]])
    assert_rows_match(exported(again.pipeline, time.time()), expected(events, time.time()))
    close(again.states.stores)  # type: ignore[arg-type]


def test_a_revoke_waits_for_the_batch_in_flight(tmp_path: Path) -> None:
    now = time.time()
    events = delivery(scenario(12, now, tickets=20), 12)
    changelog = Changelog()
    ingest = restart(tmp_path, changelog, now)
    changelog.hold = asyncio.Event()

    async def run() -> None:
        assert changelog.hold is not None
        batch = [message(offset, event) for offset, event in enumerate(events)]
        processing = asyncio.create_task(ingest.process(batch))
        while not changelog.batches:  # until it waits for Kafka
            await asyncio.sleep(0)
        revoking = asyncio.create_task(ingest.revoke({0, 1}))
        await asyncio.sleep(0.05)
        assert not processing.done() and not revoking.done()
        assert set(ingest.pipeline.partitions) == set(range(PARTITIONS))
        changelog.hold.set()
        await asyncio.gather(processing, revoking)

    asyncio.run(run())
    assert set(ingest.pipeline.partitions) == set(range(2, PARTITIONS))
    assert not ingest.windows_restored
    close(ingest.states.stores)  # type: ignore[arg-type]
