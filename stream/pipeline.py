"""One record in: decode it, update the ticket or survey state, fold the change into windows.

No Kafka here: state is reached through `States` (the worker's batch overlay on its RocksDB
tables, a dict in unit tests), and a state is written back only when the event changed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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


@dataclass(slots=True)
class _Touched:
    """A state the current batch reached: as it was before the batch, as it is now."""

    stored: StoredState | None
    original: TicketState | SurveyResponse | None
    current: TicketState | SurveyResponse | None
    tokens: list[object] = field(default_factory=list)
    """One per record that changed it: what the caller passed along (the worker: messages)."""


@dataclass(slots=True)
class Failure:
    """A state whose new observations could not be worked out (a bug): it is left as it was
    before the batch, and the records that changed it are reported through their tokens."""

    tokens: list[object]
    error: Exception


class Pipeline:
    """The processing of the input topics, for every partition a worker owns.

    Records are processed one at a time (`process`: decode, duplicate check, state update), and
    their effect on the windows is settled once per batch (`settle`): a ticket touched by ten
    events of a batch is written once and retracted and re-added in the windows once.
    """

    def __init__(self, specs: Sequence[WindowSpec], rules: TicketRules, states: States) -> None:
        self.specs = tuple(specs)
        self.rules = rules
        self.states = states
        self.partitions: dict[int, PartitionWindows] = {}
        self.entries: Counter[tuple[TableName, int]] = Counter()
        """How many states each (table, partition) keeps."""
        self._touched: dict[tuple[TableName, int, str], _Touched] = {}

    def windows(self, partition: int, now: float) -> PartitionWindows:
        windows = self.partitions.get(partition)
        if windows is None:
            windows = self.partitions[partition] = PartitionWindows(self.specs, now)
        return windows

    def process(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        record_time: float,
        token: object = None,
    ) -> Outcome:
        """Apply one record of input topic `topic` (named without prefix), with its Kafka
        timestamp `record_time`, to the state; `settle` folds the batch into the windows.

        Raises events.InvalidEvent for a record that belongs in the dead-letter topic.
        """
        event = decode(topic, value, record_time)
        if isinstance(event, SurveyAnswered):
            touched = self._reach("surveys", partition, survey_slot(event))
            response = touched.current
            assert not isinstance(response, TicketState)
            if response is not None and response.holds(event.event_id):
                return "duplicate"
            touched.current = apply_survey_event(response, event, partition)
            touched.tokens.append(token)
            return "accepted"
        touched = self._reach("tickets", partition, event.ticket_id)
        state = touched.current
        if state is None:
            state = TicketState(partition)
        assert isinstance(state, TicketState)
        if state.holds(event.event_id):
            return "duplicate"
        touched.current = updated = apply_ticket_event(state, event)
        touched.tokens.append(token)
        return "anomaly" if anomalies(updated) > anomalies(state) else "accepted"

    def _reach(self, table: TableName, partition: int, key: str) -> _Touched:
        """The batch's view of a state, read from the tables when the batch first reaches it."""
        touched = self._touched.get((table, partition, key))
        if touched is None:
            stored = self.states.get(table, partition, key)
            original = None if stored is None else _decoded(stored)
            touched = self._touched[(table, partition, key)] = _Touched(stored, original, original)
        return touched

    def settle(self, now: float) -> list[Failure]:
        """Write each state the batch changed and fold its change into the windows, at
        wall-clock time `now`; returns the states that failed (and were left unchanged)."""
        failures: list[Failure] = []
        for (table, partition, key), touched in self._touched.items():
            current = touched.current
            if not touched.tokens or current is None:
                continue  # reached by duplicates only
            try:
                before = self._observations_of(touched.original)
                after = self._observations_of(current)
            except Exception as error:  # a bug must cost the records involved, no more
                failures.append(Failure(touched.tokens, error))
                continue
            self._store(table, partition, key, touched.stored, current.to_json())
            self._fold(partition, before, after, now)
        self._touched = {}
        for windows in self.partitions.values():
            windows.flush()
        return failures

    def _observations_of(self, state: TicketState | SurveyResponse | None) -> list[Observation]:
        if state is None:
            return []
        if isinstance(state, TicketState):
            return ticket_observations(state, self.rules)
        return survey_observations(state)

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
        # as multisets (two reopens may share a time)
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
            self._fold(partition, self._observations_of(_decoded(stored)), [], now)
            forgotten += 1
        self.windows(partition, now).flush()
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
                    for observation in self._observations_of(_decoded(stored)):
                        windows.observe(observation, 1)
                    done += 1
                    if done % REBUILD_STEP == 0:
                        yield done
            windows.flush(totals=False)
            windows.sum_buckets()
            windows.pack(idle_only=False)  # before the next partition: a lower peak
            self.partitions[partition] = windows  # published only once complete
        yield done

    def drop(self, partition: int) -> None:
        """Forget the derived state of a partition this worker no longer owns."""
        self.partitions.pop(partition, None)
        for table in STATE_TABLES:
            self.entries.pop((table, partition), None)


def _decoded(stored: StoredState) -> TicketState | SurveyResponse:
    """A stored ticket state or survey response (surveys have a score)."""
    if "score" in stored:
        return SurveyResponse.from_json(stored)
    return TicketState.from_json(stored)
