"""Running the pure core the way the worker does, minus Kafka: for unit tests."""

from __future__ import annotations

import random
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stream._core import AccountBook, AccountRules, Merge, partials_messages
from stream.account_health import health_values
from stream.accounts import Totals, evaluation
from stream.pipeline import STATE_TABLES, Checkpoint, Outcome, Pipeline, StoredState, TableName
from stream.tickets import TicketRules
from stream.windows import WindowSpec, parse_windows
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


LABELS = ("window", "team", "channel", "priority")


@dataclass(frozen=True)
class Row:
    """One exported (window, segment) series, as its cx-metrics snapshot tells it."""

    labels: dict[str, str]
    metrics: dict[str, Any]
    tickets_open: int

    @property
    def key(self) -> str:
        return ",".join(f"{name}={self.labels[name]}" for name in LABELS)


def evaluate_accounts(
    book: AccountBook,
    as_of: float,
    windows: Sequence[WindowSpec],
    lookback: float,
    weights: Mapping[str, float],
) -> tuple[Totals, dict[str, dict[str, Any]]]:
    """Every partition's accounts evaluated at `as_of` as the worker's timer does it: their
    totals added up, and each subscribed account's health record (but its as_of)."""
    rules = AccountRules([spec.seconds for spec in windows], lookback, dict(weights))
    totals = Totals(len(windows))
    health: dict[str, dict[str, Any]] = {}
    for partition in range(PARTITIONS):
        step, records = evaluation(book.accounts(partition), as_of, rules)
        totals.add(step)
        health.update((record[0], health_values(record)) for record in records)
    return totals, health


def row_of(value: bytes) -> Row:
    fields = orjson.loads(value)
    labels = {name: fields.pop(name) for name in LABELS}
    tickets_open = fields.pop("tickets_open")
    del fields["as_of"]
    return Row(labels, fields, tickets_open)


class MetricsTopic:
    """cx-metrics as a consumer of the compacted topic reads it: each key's latest value."""

    def __init__(self) -> None:
        self.latest: dict[bytes, bytes] = {}

    def read(self, merge: Merge, owned: Sequence[int] = (0,)) -> list[Row]:
        """What `merge` sends now, taken in; every row, ordered by key."""
        for key, value in merge.snapshots(list(owned), "2026-12-06T00:00:00.000Z"):
            if value is None:
                del self.latest[key]
            else:
                self.latest[key] = value
        return sorted((row_of(value) for value in self.latest.values()), key=lambda row: row.key)


def partials_of(pipeline: Pipeline, now: float) -> list[bytes]:
    """Every partition's cx-partials messages of a full republish at `now`."""
    messages = []
    for partition, windows in sorted(pipeline.partitions.items()):
        windows.advance(now)
        parts = list(windows.parts.values())
        messages += [value for _, value in partials_messages(parts, partition, True)]
    return messages


def exported(
    pipeline: Pipeline, now: float, cap: int = 50, business_hours: bool = False
) -> list[Row]:
    """What the merging worker would export from every partition's current partials."""
    merge = Merge(cap, WINDOW_NAMES, business_hours)
    merge.apply([(message, 0) for message in partials_of(pipeline, now)])
    return MetricsTopic().read(merge)


def row_labels(row: Row) -> tuple[str, str, str, str]:
    labels = row.labels
    return (labels["window"], labels["team"], labels["channel"], labels["priority"])


def assert_rows_match(rows: list[Row], want: Expected) -> None:
    assert {row_labels(row) for row in rows} == set(want.series)
    for row in rows:
        labels = row_labels(row)
        assert_matches(row.metrics, want.series[labels], str(labels))
        assert row.tickets_open == want.tickets_open[labels[1:]], labels
