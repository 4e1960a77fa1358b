"""The tables' local store: Faust's RocksDB store (rocksdict driver) with batch access by partition.

Faust's own store API reads and writes through the current stream event (to find the
partition) and remembers every key it touched in an in-memory index. The ingest stage works a
batch of records at a time with no current event, and a year of tickets must not sit in an
index in RAM, so it uses the few methods below: reads by (partition, key), and one atomic
RocksDB write batch per partition and input batch. Recovery, rebalancing, the persisted
changelog offsets and everything else stay Faust's.

Each partition's database also holds, in a column family of its own (so Faust's iteration and
its changelog never see them), the checkpoint of the windows its states add up to and an undo
log: for each state changed since that checkpoint, its value at the checkpoint. Both are written
in the same write batch as the states, so after any crash the two still agree, and a restart
loads the checkpoint and re-folds only the logged states (`pipeline.Pipeline.restore`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import rocksdict
from faust.stores import STORES
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP, EventT

from .pipeline import STATE_TABLES
from .windows import META_KEY

log = logging.getLogger("cx_stream")

STORE_URL = "cxrocksdict://"

WINDOWS_FAMILY = "cx-windows"
"""The column family of the windows' checkpoint and the undo log."""

OUTCOMES_KEY = b"outcomes"
"""In the surveys table of each partition: how many of the partition's input records came to
each outcome, by topic, written with the states they changed (and so exactly once under
exactly-once processing). No survey slot key looks like it: they all hold a colon."""

UNDO_TAG = b"u"
"""Undo log entries: UNDO_TAG + state key -> the state's value at the checkpoint (b"": none)."""

ROCKSDB_OPTIONS: dict[str, Any] = {"driver": "rocksdict", "write_buffer_size": 8 * 1024**2}

ROCKSDB_MEMORY = 64 * 1024**2
"""The memory budget of every RocksDB database of the worker together: blocks read and
memtables written. Faust's defaults (a 2 GiB block cache and three 64 MiB memtables per
partition database) would let 24 databases claim gigabytes; with one budget the worker's
resident memory does not grow with its partitions or its state."""

_block_cache = rocksdict.Cache(ROCKSDB_MEMORY)
_write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
    ROCKSDB_MEMORY // 2, False, _block_cache
)


class _SharedMemoryOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options, with the block cache and the memtables on the worker's one budget."""

    def as_options(self) -> Any:
        options = super().as_options()
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(_block_cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(_write_buffers)
        return options


class Store(faust_rocksdb.Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rocksdb_options = _SharedMemoryOptions(**(self.options or {}), use_rocksdict=True)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Faust's rebalance, then drop local copies that are ahead of their changelog.

        A changelog that ends before the offset the local copy says it holds was deleted and
        recreated (or its cluster lost its data): the copy belongs to a history Kafka no longer
        has, and Faust would stop with a ConsistencyError. Without it, recovery restores what
        the changelog has, and the input, whose committed offsets went with that history, is
        read again. This runs before recovery reads the persisted offsets.
        """
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        mine = {tp for tp in assigned if tp.topic in self.table.changelog_topic.topics}
        before_recovery = getattr(self.app, "before_recovery", None)
        if before_recovery is not None and self.table.name in STATE_TABLES:
            await before_recovery({tp.partition for tp in mine})
        if not mine:
            return
        ends = await self.app.consumer.highwaters(*mine)
        for tp in mine:
            persisted = self.persisted_offset(tp)
            if persisted is not None and persisted >= ends[tp]:
                log.warning(
                    "local state is ahead of its changelog (recreated?): discarding it",
                    extra={"tp": str(tp), "persisted_offset": persisted, "end_offset": ends[tp]},
                )
                self.discard_partition(tp.partition)

    def read(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(partition).get(key)
        return value

    def write(
        self,
        partition: int,
        changes: Mapping[bytes, bytes | None],
        changelog_offset: int | None,
        windows: Mapping[bytes, bytes | None] | None = None,
    ) -> None:
        """Apply puts (and deletes, for None) to one partition atomically: state changes, with
        the offset of the last of them in the changelog (where recovery will resume reading),
        and the windows' checkpoint and undo log entries (the state tables')."""
        db = self._db_for_partition(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        family = self._windows_family(db) if windows else None
        for key, value in (windows or {}).items():
            if value is None:
                batch.delete(key, family)
            else:
                batch.put(key, value, family)
        if changelog_offset is not None:
            batch.put(self.offset_key, str(changelog_offset).encode())
        db.write(batch)

    def windows_entries(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """The windows' checkpoint and undo log entries of one partition."""
        db = self._db_for_partition(partition)
        yield from db.get_column_family(WINDOWS_FAMILY).items() if self._has_family(db) else ()

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Faust's recovery: changelog records into the local copy. Where a windows checkpoint
        exists, each state's value at the checkpoint is logged first, in the same write."""
        batches: dict[int, Any] = {}
        logged: dict[int, set[bytes]] = {}
        """Per partition with a checkpoint: the keys whose value at it is logged already."""
        offsets: dict[TP, int] = {}
        for event in batch:
            message = event.message
            key = message.key
            assert key is not None  # a changelog record always has one
            offsets[message.tp] = max(message.offset, offsets.get(message.tp, -1))
            writes = batches.get(message.partition)
            if writes is None:
                writes = batches[message.partition] = rocksdict.WriteBatch(raw_mode=True)
                db = self._db_for_partition(message.partition)
                if self._has_family(db) and db.get_column_family(WINDOWS_FAMILY).get(META_KEY):
                    logged[message.partition] = set()
            if message.partition in logged:
                self._log_undo(message.partition, key, writes, logged[message.partition])
            if message.value is None:
                writes.delete(key)
            else:
                writes.put(key, message.value)
        for partition, writes in batches.items():
            self._db_for_partition(partition).write(writes)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    def _log_undo(self, partition: int, key: bytes, writes: Any, logged: set[bytes]) -> None:
        """Log the state's value at the checkpoint, unless it is logged already."""
        if key in logged or key == OUTCOMES_KEY:  # (the windows do not depend on the counts)
            return
        logged.add(key)
        db = self._db_for_partition(partition)
        if db.get_column_family(WINDOWS_FAMILY).get(UNDO_TAG + key) is None:
            writes.put(UNDO_TAG + key, db.get(key) or b"", self._windows_family(db))

    @staticmethod
    def _has_family(db: Any) -> bool:
        try:
            db.get_column_family_handle(WINDOWS_FAMILY)
        except Exception:  # rocksdict raises nothing more specific for a missing family
            return False
        return True

    def _windows_family(self, db: Any) -> Any:
        if not self._has_family(db):
            db.create_column_family(WINDOWS_FAMILY, self.rocksdb_options.as_options())
        return db.get_column_family_handle(WINDOWS_FAMILY)

    def discard_partition(self, partition: int) -> None:
        """Delete the local copy of one partition; recovery restores it from the changelog."""
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        self._key_index.clear()  # Faust's key -> partition cache may name the discarded one
        rocksdict.Rdict.destroy(str(self.partition_path(partition)))

    def partition_items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every state of one partition: without Faust's offset bookkeeping key and the record
        counts. The scan leaves the block cache as it was: its blocks, each read once, would
        evict those the batches read and, with an iterator's pinned blocks, hold the cache
        above its budget."""
        scan = rocksdict.ReadOptions()
        scan.fill_cache(False)  # type: ignore[call-arg]  # (its stub omits the argument)
        for key, value in self._db_for_partition(partition).items(read_opt=scan):
            if key != self.offset_key and key != OUTCOMES_KEY:
                yield key, value


STORES.aliases["cxrocksdict"] = f"{__name__}:Store"
