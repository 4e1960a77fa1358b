"""The worker's production store (RocksDB, through Faust's tables) and a changelog producer that
keeps what it is sent: the ingest stage in tests without a broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust

from stream.ingest import RecordBatch
from stream.pipeline import STATE_TABLES, TableName
from stream.store import ROCKSDB_OPTIONS, STORE_URL, Store
from tests.helpers import PARTITIONS


class LostBatch(Exception):
    """Kafka did not take a record batch."""


class Changelog:
    """A producer that keeps the records sent to each changelog partition, with their offsets
    (and the dead letters, sent a record at a time). It can lose record batches from a given
    one on, or hold every delivery until told."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self.batches = 0
        self.failing_from: int | None = None
        """The number of the first record batch lost (and every one after it)."""
        self.hold: asyncio.Event | None = None
        """When set, deliveries wait for it."""

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
        assert isinstance(batch, Batch) and batch.closed
        self.batches += 1
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failing_from is not None and self.batches >= self.failing_from:
            delivery.set_exception(LostBatch())
            return delivery
        records = self.records[(topic, partition)]
        metadata = SimpleNamespace(offset=len(records))  # of its first record
        records.extend(batch.records)
        if self.hold is None:
            delivery.set_result(metadata)
        else:
            asyncio.get_running_loop().create_task(self._deliver(delivery, metadata))
        return delivery

    async def _deliver(self, delivery: asyncio.Future[Any], metadata: Any) -> None:
        assert self.hold is not None
        await self.hold.wait()
        delivery.set_result(metadata)


class Batch:
    """Like aiokafka's BatchBuilder: full at RECORDS_PER_BATCH, so that a partition's changes
    take several batches now and then."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.closed = False

    def append(self, *, timestamp: float | None, key: bytes, value: bytes | None) -> Any:
        if self.closed or len(self.records) == RECORDS_PER_BATCH:
            return None
        self.records.append((key, value))
        return SimpleNamespace(offset=len(self.records) - 1)

    def close(self) -> None:
        self.closed = True

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
