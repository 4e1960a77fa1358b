"""One record in: decode it, update the ticket or survey state, fold the change into windows.

No Kafka here: state is reached through `States` (the worker's batch overlay on its RocksDB
tables, a dict in unit tests), and a state is written back only when the event changed it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .accounts import (
    AccountBook,
    AccountState,
    SubscriptionEvent,
    apply_experience,
    apply_subscription_event,
    is_account,
)
from .accounts import is_forgettable as account_forgettable
from .events import Event, SubscriptionUpdated, SurveyAnswered, decode
from .experience import (
    EXPERIENCE_TOPIC,
    ExperienceUpdate,
    account_observations,
    decode_experience,
    experience_updates,
)
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
from .windows import CombinedWindows, PartitionWindows, WindowSpec

Outcome = Literal["accepted", "duplicate", "anomaly"]
TableName = Literal["tickets", "surveys", "accounts"]
STATE_TABLES: tuple[TableName, ...] = ("tickets", "surveys", "accounts")
StoredState = dict[str, Any]

RESTORE_STEP = 5000

State = TicketState | SurveyResponse | AccountState

InputRecord = tuple[str, int, bytes | None, float, object]
"""A record for `Pipeline.process`: its topic (without prefix), partition, value, Kafka
timestamp, and what the caller wants back with a failure (the worker: the message)."""

Change = tuple[list[Observation], list[Observation]]
"""A state's observations before and after a change, for PartitionWindows.fold."""

Entries = dict[bytes, bytes | None]
"""Store entries to write; None deletes."""


@dataclass(slots=True)
class Checkpoint:
    """The windows of one (table, partition) as last checkpointed with its states, and the
    states changed since: each as it was at the checkpoint (None: it did not exist)."""

    windows: list[tuple[bytes, bytes]]
    changed_since: dict[str, StoredState | None]


class States(Protocol):
    """Ticket states and survey slots by (table, partition, key); None deletes. Each
    (table, partition) also keeps its windows' checkpoint."""

    def get(self, table: TableName, partition: int, key: str) -> StoredState | None: ...

    def put(
        self, table: TableName, partition: int, key: str, value: StoredState | None
    ) -> None: ...

    def items(self, table: TableName, partition: int) -> Iterator[tuple[str, StoredState]]: ...

    def load_checkpoint(self, table: TableName, partition: int) -> Checkpoint: ...


@dataclass(slots=True)
class _Touched:
    """A state the current batch reached: as it was before the batch, as it is now."""

    stored: StoredState | None
    original: State | None
    current: State | None
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

    The windows of each (table, partition) are what its states add up to; `checkpoint_entries` gives
    what to store with the states so that `restore` can load them instead of deriving them.
    """

    def __init__(
        self,
        specs: Sequence[WindowSpec],
        rules: TicketRules,
        states: States,
        currency: str = "USD",
        experience_horizon: float = (365 + 90) * 86400.0,
    ) -> None:
        self.specs = tuple(specs)
        self.rules = rules
        self.states = states
        self.currency = currency
        """CX_CURRENCY: a subscription event in another currency is invalid."""
        self.experience_horizon = experience_horizon
        """How long an account keeps its tickets' observations (Settings.experience_horizon)."""
        self.accounts = AccountBook()
        """The MRR timelines of the accounts of every partition owned, kept with their states."""
        self.experience_updates: list[tuple[int, ExperienceUpdate]] = []
        """What the tickets and survey slots settled so far send their accounts, with the
        partition of each ticket or slot: the caller takes them and sends them to the
        accounts' partitions (experience.py) with the batch's changes."""
        self.partitions: dict[int, CombinedWindows] = {}
        self.entries: Counter[tuple[TableName, int]] = Counter()
        """How many states each (table, partition) keeps."""
        self._touched: dict[tuple[TableName, int, str], _Touched] = {}
        self.restored: Counter[str] = Counter()
        """What the last `restore` did: checkpoints loaded, states refolded, states read."""
        self._derived_with = repr((self.specs, rules))
        """What the windows depend on besides the states: a checkpoint made with other
        windows or ticket rules is not loaded."""

    def windows(self, table: TableName, partition: int, now: float) -> PartitionWindows:
        combined = self.partitions.get(partition)
        if combined is None:
            combined = self.partitions[partition] = CombinedWindows(
                self.specs, {name: PartitionWindows(self.specs, now) for name in STATE_TABLES}
            )
        return combined.parts[table]

    def process(self, records: Sequence[InputRecord]) -> list[Outcome | Exception]:
        """Apply a batch of records (topics named without prefix) to the state, decoded in
        one call into the core; `settle` folds the batch into the windows.

        Each record's outcome, or the error that makes it a dead letter: events.InvalidEvent
        for an invalid record, any other exception for a bug, which costs that record only.
        """
        decoded = iter(
            decode(
                [
                    (topic, value, time)
                    for topic, _, value, time, _ in records
                    if topic != EXPERIENCE_TOPIC
                ],
                self.currency,
            )
        )
        outcomes: list[Outcome | Exception] = []
        for topic, partition, value, record_time, token in records:
            try:
                if topic == EXPERIENCE_TOPIC:
                    outcomes.append(self._experience(partition, value, record_time, token))
                    continue
                event = next(decoded)
                if isinstance(event, Exception):
                    outcomes.append(event)
                    continue
                outcomes.append(self._apply(partition, event, token))
            except Exception as error:  # a bug must cost one record, never the batch
                outcomes.append(error)
        return outcomes

    def _apply(self, partition: int, event: Event, token: object) -> Outcome:
        """One valid event of an input topic."""
        if isinstance(event, SubscriptionUpdated):
            touched = self._reach("accounts", partition, event.account_id)
            account = touched.current
            if account is None:
                account = AccountState(partition)
            assert isinstance(account, AccountState)
            if account.holds(event.event_id):
                return "duplicate"
            change = SubscriptionEvent(
                event.occurred_at, event.event_id, event.subscription_id, event.contribution
            )
            touched.current = apply_subscription_event(account, change)
            touched.tokens.append(token)
            return "accepted"
        if isinstance(event, SurveyAnswered):
            touched = self._reach("surveys", partition, survey_slot(event))
            response = touched.current
            assert response is None or isinstance(response, SurveyResponse)
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

    def _experience(
        self, partition: int, value: bytes | None, record_time: float, token: object
    ) -> Outcome:
        """A ticket's or response's observations for an account of this partition."""
        update = decode_experience(value)
        touched = self._reach("accounts", partition, update.account_id)
        account = touched.current
        if account is None:
            account = AccountState(partition)
        assert isinstance(account, AccountState)
        changed = apply_experience(account, update, record_time - self.experience_horizon)
        if changed is None:
            return "duplicate"  # an older (or the same) version of what it holds
        touched.current = changed
        touched.tokens.append(token)
        return "accepted"

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
        changes: dict[tuple[TableName, int], list[Change]] = {}
        for (table, partition, key), touched in self._touched.items():
            current = touched.current
            if not touched.tokens or current is None:
                continue  # reached by duplicates only
            try:
                before = self._observations_of(touched.original)
                after = self._observations_of(current)
                updates = _experience_updates(table, key, touched.original, before, current, after)
            except Exception as error:  # a bug must cost the records involved, no more
                failures.append(Failure(touched.tokens, error))
                continue
            self._store(table, partition, key, touched.stored, current.to_json())
            changes.setdefault((table, partition), []).append((before, after))
            self.experience_updates.extend((partition, update) for update in updates)
            if isinstance(current, AccountState):
                self.accounts.put(partition, key, current)
        self._touched = {}
        for (table, partition), folded in changes.items():
            self.windows(table, partition, now).fold(folded)  # one call per table and partition
        return failures

    def _observations_of(self, state: State | None) -> list[Observation]:
        if state is None or isinstance(state, AccountState):
            return []  # (an account's numbers are evaluated at instants, not windowed)
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

    def forget(
        self,
        partition: int,
        candidates: Iterable[tuple[TableName, str]],
        horizons: Mapping[TableName, float],
        now: float,
    ) -> int:
        """Delete the candidate states that are (still) forgettable by their table's horizon;
        returns how many.

        Their observations are older than every window, so retracting them changes no number;
        it only drops the segment references they held.
        """
        retracted: dict[TableName, list[Change]] = {}
        for table, key in candidates:
            stored = self.states.get(table, partition, key)
            if stored is None or not forgettable(table, stored, horizons[table], now):
                continue
            self._store(table, partition, key, stored, None)
            if table == "accounts":
                self.accounts.put(partition, key, None)
            retracted.setdefault(table, []).append((self._observations_of(_decoded(stored)), []))
        for table, changes in retracted.items():
            self.windows(table, partition, now).fold(changes)
        return sum(map(len, retracted.values()))

    def checkpoint_entries(self, table: TableName, partition: int) -> Entries:
        """The entries that bring the stored checkpoint of the (table, partition)'s windows
        up to date; to be written with its states, as they are now."""
        windows = self.partitions[partition].parts[table]
        return windows.checkpoint_entries(self._derived_with, self.entries[(table, partition)])

    def restore(self, partitions: Iterable[int], now: float) -> Iterator[int]:
        """Load the windows and entry counts of `partitions` from their checkpoints, or derive
        them from the states where there is none (a new disk, other windows or rules);
        partitions not named are dropped.

        Called after Faust restored the tables (start-up, crash recovery, rebalance): the
        tables are the truth, windows are what they add up to. Afterwards every (table,
        partition) is to be checkpointed. A generator, to be run to its end: it yields the
        states read so far every RESTORE_STEP states, so that a worker deriving a large state
        (or re-folding a long undo log) can still answer heartbeats and scrapes.
        """
        self.partitions = {}
        self.entries.clear()
        self.restored.clear()
        self.accounts = AccountBook()
        done = 0
        for partition in partitions:
            parts: dict[str, PartitionWindows] = {}
            for table in STATE_TABLES:
                checkpoint = self.states.load_checkpoint(table, partition)
                loaded = PartitionWindows.restore(
                    self.specs, now, checkpoint.windows, self._derived_with
                )
                changes: list[Change] = []
                if loaded is not None:
                    windows, self.entries[(table, partition)] = loaded
                    self.restored["checkpoints_loaded"] += 1
                    self.restored["states_refolded"] += len(checkpoint.changed_since)
                    for key, old in checkpoint.changed_since.items():
                        new = self.states.get(table, partition, key)
                        before, after = (None if v is None else _decoded(v) for v in (old, new))
                        changes.append(
                            (self._observations_of(before), self._observations_of(after))
                        )
                        self.entries[(table, partition)] += (new is not None) - (old is not None)
                        done += 1
                        if done % RESTORE_STEP == 0:
                            windows.fold(changes)
                            changes = []
                            yield done
                    windows.fold(changes)
                else:
                    windows = PartitionWindows(self.specs, now)
                    windows.supersede([key for key, _ in checkpoint.windows])
                    for _, stored in self.states.items(table, partition):
                        self.entries[(table, partition)] += 1
                        self.restored["states_read"] += 1
                        changes.append(([], self._observations_of(_decoded(stored))))
                        done += 1
                        if done % RESTORE_STEP == 0:
                            windows.fold(changes, totals=False)
                            changes = []
                            yield done
                    windows.fold(changes, totals=False)
                    windows.finish_rebuild()  # before the next partition: a lower peak
                parts[table] = windows
            for key, stored in self.states.items("accounts", partition):
                self.accounts.put(partition, key, AccountState.from_json(stored))
                done += 1
                if done % RESTORE_STEP == 0:
                    yield done
            # published only once complete
            self.partitions[partition] = CombinedWindows(self.specs, parts)
        yield done

    def drop(self, partition: int) -> None:
        """Forget the derived state of a partition this worker no longer owns."""
        self.partitions.pop(partition, None)
        self.accounts.drop(partition)
        for table in STATE_TABLES:
            self.entries.pop((table, partition), None)


def _experience_updates(
    table: TableName,
    key: str,
    original: State | None,
    before: list[Observation],
    current: State,
    after: list[Observation],
) -> list[ExperienceUpdate]:
    """What a changed ticket or survey slot sends its account (experience.py)."""
    if isinstance(current, AccountState):
        return []
    assert original is None or not isinstance(original, AccountState)
    old = (
        (None, ())
        if original is None
        else (original.account, account_observations(original, before))
    )
    new = (current.account, account_observations(current, after))
    source = f"{'ticket' if table == 'tickets' else 'survey'}:{key}"
    return experience_updates(source, old, new, len(current.seen))


def forgettable(table: TableName, stored: StoredState, horizon: float, now: float) -> bool:
    """Whether a stored state may be forgotten: its table's retention (docs/contract.md 3,
    *State retention*, and 7.2) has passed `horizon`."""
    if table == "accounts":
        return account_forgettable(stored, horizon, now)
    return is_forgettable(stored, horizon)


def _decoded(stored: StoredState) -> State:
    """A stored ticket state, survey response (surveys have a score) or account."""
    if "score" in stored:
        return SurveyResponse.from_json(stored)
    if is_account(stored):
        return AccountState.from_json(stored)
    return TicketState.from_json(stored)
