"""One record in: decode it, update the ticket or survey state, fold the change into windows.

No Kafka here: state is reached through `States` (the worker's batch overlay on its RocksDB
tables, a dict in unit tests), and a state is written back only when the event changed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

from .events import SurveyAnswered, decode
from .tickets import (
    Observation,
    SurveyResponse,
    TicketRules,
    TicketState,
    anomalies,
    apply_survey_event,
    apply_ticket_event,
    is_forgettable,
    survey_observations,
    survey_slot,
    ticket_observations,
)
from .windows import PartitionWindows, WindowSpec

Outcome = Literal["accepted", "duplicate", "anomaly"]
TableName = Literal["tickets", "surveys"]
STATE_TABLES: tuple[TableName, ...] = ("tickets", "surveys")
StoredState = dict[str, Any]

REBUILD_STEP = 5000


class States(Protocol):
    """Ticket states and survey slots by (table, partition, key); None deletes."""

    def get(self, table: TableName, partition: int, key: str) -> StoredState | None: ...

    def put(
        self, table: TableName, partition: int, key: str, value: StoredState | None
    ) -> None: ...

    def items(self, table: TableName, partition: int) -> Iterator[tuple[str, StoredState]]: ...


class Pipeline:
    """The processing of the input topics, for every partition a worker owns."""

    def __init__(self, specs: Sequence[WindowSpec], rules: TicketRules, states: States) -> None:
        self.specs = tuple(specs)
        self.rules = rules
        self.states = states
        self.partitions: dict[int, PartitionWindows] = {}
        self.entries: Counter[tuple[TableName, int]] = Counter()
        """How many states each (table, partition) keeps."""

    def windows(self, partition: int, now: float) -> PartitionWindows:
        windows = self.partitions.get(partition)
        if windows is None:
            windows = self.partitions[partition] = PartitionWindows(self.specs, now)
        return windows

    def process(
        self, topic: str, partition: int, value: bytes | None, record_time: float, now: float
    ) -> Outcome:
        """Apply one record of input topic `topic` (named without prefix), with its Kafka
        timestamp `record_time`, at wall-clock time `now`.

        Raises events.InvalidEvent for a record that belongs in the dead-letter topic.
        """
        event = decode(topic, value, record_time)
        if isinstance(event, SurveyAnswered):
            slot = survey_slot(event)
            stored = self.states.get("surveys", partition, slot)
            response = None if stored is None else SurveyResponse.from_json(stored)
            if response is not None and response.holds(event.event_id):
                return "duplicate"
            updated = apply_survey_event(response, event, partition)
            self._store("surveys", partition, slot, stored, updated.to_json())
            if response is None or updated.stamp != response.stamp:
                old = [] if response is None else survey_observations(response)
                self._fold(partition, old, survey_observations(updated), now)
            return "accepted"
        stored = self.states.get("tickets", partition, event.ticket_id)
        state = TicketState(partition) if stored is None else TicketState.from_json(stored)
        if state.holds(event.event_id):
            return "duplicate"
        updated_state = apply_ticket_event(state, event)
        self._store("tickets", partition, event.ticket_id, stored, updated_state.to_json())
        self._fold(
            partition,
            ticket_observations(state, self.rules),
            ticket_observations(updated_state, self.rules),
            now,
        )
        return "anomaly" if anomalies(updated_state) > anomalies(state) else "accepted"

    def _store(
        self,
        table: TableName,
        partition: int,
        key: str,
        old: StoredState | None,
        new: StoredState | None,
    ) -> None:
        self.states.put(table, partition, key, new)
        self.entries[(table, partition)] += (new is not None) - (old is not None)

    def _fold(
        self, partition: int, old: list[Observation], new: list[Observation], now: float
    ) -> None:
        windows = self.windows(partition, now)
        # as multisets (two reopens may share a time); adds first, so a series that keeps a
        # reference is never dropped and re-created
        retracted = list(old)
        for observation in new:
            if observation in retracted:
                retracted.remove(observation)  # unchanged
            else:
                windows.observe(observation, 1)
        for observation in retracted:
            windows.observe(observation, -1)

    def forget(
        self,
        partition: int,
        candidates: Iterable[tuple[TableName, str]],
        horizon: float,
        now: float,
    ) -> int:
        """Delete the candidate states that are (still) forgettable; returns how many.

        Their observations are older than every window, so retracting them changes no number;
        it only drops the segment references they held.
        """
        forgotten = 0
        for table, key in candidates:
            stored = self.states.get(table, partition, key)
            if stored is None or not is_forgettable(stored, horizon):
                continue
            self._store(table, partition, key, stored, None)
            self._fold(partition, self._observations(stored), [], now)
            forgotten += 1
        return forgotten

    def rebuild(self, partitions: Iterable[int], now: float) -> Iterator[int]:
        """Derive the windows and entry counts of `partitions` from the state, dropping others.

        Called after Faust restored the tables (start-up, crash recovery, rebalance): the
        tables are the truth, windows are a cache of what they add up to. A generator, to be
        run to its end: it yields the states read so far every REBUILD_STEP states, so that a
        worker rebuilding a large state can still answer heartbeats and scrapes.
        """
        self.partitions = {}
        self.entries.clear()
        done = 0
        for partition in partitions:
            windows = PartitionWindows(self.specs, now)
            for table in STATE_TABLES:
                for _, stored in self.states.items(table, partition):
                    self.entries[(table, partition)] += 1
                    for observation in self._observations(stored):
                        windows.observe(observation, 1, totals=False)
                    done += 1
                    if done % REBUILD_STEP == 0:
                        yield done
            windows.sum_buckets()
            self.partitions[partition] = windows  # published only once complete
        yield done

    def drop(self, partition: int) -> None:
        """Forget the derived state of a partition this worker no longer owns."""
        self.partitions.pop(partition, None)
        for table in STATE_TABLES:
            self.entries.pop((table, partition), None)

    def _observations(self, stored: StoredState) -> list[Observation]:
        """Observations of a stored ticket state or survey response (surveys have a score)."""
        if "score" in stored:
            return survey_observations(SurveyResponse.from_json(stored))
        return ticket_observations(TicketState.from_json(stored), self.rules)
