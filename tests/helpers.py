"""Running the pure core the way the worker does, minus Kafka: for unit tests."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

from stream.exporter import SeriesRow, merge_partials, series_rows
from stream.pipeline import STATE_TABLES, Checkpoint, Outcome, Pipeline, StoredState, TableName
from stream.tickets import TicketRules
from stream.windows import parse_windows
from tests.oracle import Event, Expected, assert_matches

WINDOW_NAMES = ["1h", "24h", "7d", "28d"]
PARTITIONS = 4


def partition_of(fields: dict[str, Any]) -> int:
    """Like Kafka's partitioner: by the record key, the ticket_id (or a survey's event_id)."""
    key = fields.get("ticket_id", fields["event_id"])
    return zlib.crc32(key.encode()) % PARTITIONS


class MemoryStates:
    """The pipeline's state as plain dicts: {(table, partition): {key: state}}, with each
    (table, partition)'s windows checkpoint and an undo log like the worker's store keeps."""

    def __init__(self) -> None:
        self.tables: dict[tuple[TableName, int], dict[str, StoredState]] = {}
        self.writes = 0
        self.checkpoints: dict[tuple[TableName, int], dict[bytes, bytes]] = {}
        self.undo: dict[tuple[TableName, int], dict[str, StoredState | None]] = {}
        self.scans: Counter[TableName] = Counter()
        """How many times every state of a (table, partition) was read, by table (the
        accounts are always read: their timelines are kept in memory)."""

    def get(self, table: TableName, partition: int, key: str) -> StoredState | None:
        return self.tables.get((table, partition), {}).get(key)

    def put(self, table: TableName, partition: int, key: str, value: StoredState | None) -> None:
        self.writes += 1
        entries = self.tables.setdefault((table, partition), {})
        self.undo.setdefault((table, partition), {}).setdefault(key, entries.get(key))
        if value is None:
            del entries[key]
        else:
            entries[key] = value

    def items(self, table: TableName, partition: int) -> Iterator[tuple[str, StoredState]]:
        self.scans[table] += 1
        yield from list(self.tables.get((table, partition), {}).items())

    def load_checkpoint(self, table: TableName, partition: int) -> Checkpoint:
        stored = self.checkpoints.get((table, partition), {})
        return Checkpoint(sorted(stored.items()), dict(self.undo.get((table, partition), {})))

    def save_checkpoints(self, pipeline: Pipeline) -> None:
        """Store every (table, partition)'s checkpoint, as the worker does with its states."""
        for partition in pipeline.partitions:
            for table in STATE_TABLES:
                stored = self.checkpoints.setdefault((table, partition), {})
                for key, value in pipeline.checkpoint_entries(table, partition).items():
                    if value is None:
                        stored.pop(key, None)
                    else:
                        stored[key] = value
                self.undo.pop((table, partition), None)

    def copy(self) -> MemoryStates:
        copied = MemoryStates()
        copied.tables = {name: dict(entries) for name, entries in self.tables.items()}
        copied.checkpoints = {name: dict(entries) for name, entries in self.checkpoints.items()}
        copied.undo = {name: dict(entries) for name, entries in self.undo.items()}
        return copied


def new_pipeline(states: MemoryStates | None = None, rules: TicketRules | None = None) -> Pipeline:
    windows = parse_windows(",".join(WINDOW_NAMES))
    return Pipeline(windows, rules or TicketRules(), MemoryStates() if states is None else states)


def states_of(pipeline: Pipeline) -> MemoryStates:
    assert isinstance(pipeline.states, MemoryStates)
    return pipeline.states


def feed(pipeline: Pipeline, events: list[Event], now: float) -> list[Outcome]:
    """Process the events in batches of 1 to 300 records, as the worker does."""
    sizes = random.Random(len(events))
    outcomes: list[Outcome] = []
    while len(outcomes) < len(events):
        batch = events[len(outcomes) : len(outcomes) + sizes.choice([1, 2, 5, 40, 300])]
        outcomes += process(
            pipeline,
            [(topic, partition_of(fields), orjson.dumps(fields), now) for topic, fields in batch],
        )
        assert pipeline.settle(now) == []
    return outcomes


def process(pipeline: Pipeline, records: list[tuple[str, int, bytes, float]]) -> list[Outcome]:
    """A batch's outcomes, where every record is expected to be valid: an error is raised."""
    outcomes = []
    for outcome in pipeline.process([(*record, None) for record in records]):
        if isinstance(outcome, Exception):
            raise outcome
        outcomes.append(outcome)
    return outcomes


def restore(pipeline: Pipeline, now: float) -> None:
    """Restore the windows of every partition, as the worker does after recovery."""
    for _ in pipeline.restore(range(PARTITIONS), now):
        pass


def exported(
    pipeline: Pipeline, now: float, cap: int = 50, business_hours: bool = False
) -> list[SeriesRow]:
    """What the merging worker would export from every partition's current partials."""
    entries = []
    for windows in pipeline.partitions.values():
        windows.advance(now)
        for dimension, value in windows.series_keys():
            partial = windows.partial((dimension, value))
            assert partial is not None
            entries.append({"dimension": dimension, "value": value, **partial})
    return series_rows(merge_partials(entries, cap), WINDOW_NAMES, business_hours)


def row_labels(row: SeriesRow) -> tuple[str, str, str, str]:
    labels = row.labels
    return (labels["window"], labels["team"], labels["channel"], labels["priority"])


def assert_rows_match(rows: list[SeriesRow], want: Expected) -> None:
    assert {row_labels(row) for row in rows} == set(want.series)
    for row in rows:
        labels = row_labels(row)
        assert_matches(row.metrics, want.series[labels], str(labels))
        assert row.tickets_open == want.tickets_open[labels[1:]], labels
