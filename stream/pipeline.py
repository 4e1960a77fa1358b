"""A batch of records in: decode them, update the ticket, survey and account states, fold the
changes into the windows.

The tickets and surveys are the core's (`core/src/state.rs`): a batch's records go in with one
call, the states they reach are read in one pass, and one call settles the batch. The events
of accounts are applied in Python (accounts.py); what their evaluation reads is the core's
(`AccountBook`), fed with the states as stored. No Kafka here: state is reached through
`States` (the worker's batch overlay on its RocksDB tables, a dict in unit tests), as the
bytes the tables store, and a state is written back only when an event changed it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import orjson

from ._core import AccountBook, StateBatch, account_forgettable, fold_stored
from ._core import forgettable as ticket_or_survey_forgettable
from .accounts import (
    AccountState,
    SubscriptionEvent,
    apply_experience,
    apply_subscription_event,
)
from .events import InvalidEvent, Segment, SubscriptionUpdated
from .experience import EXPERIENCE_TOPIC, ExperienceUpdate, decode_experience
from .tickets import TicketRules
from .windows import CombinedWindows, PartitionWindows, WindowSpec

Outcome = Literal["accepted", "duplicate", "anomaly"]
TableName = Literal["tickets", "surveys", "accounts"]
STATE_TABLES: tuple[TableName, ...] = ("tickets", "surveys", "accounts")
StoredState = bytes
"""A state as its table stores it (JSON)."""

RESTORE_STEP = 5000

log = logging.getLogger("cx_stream")


InputRecord = tuple[str, int, bytes | None, float, object]
"""A record for `Pipeline.process`: its topic (without prefix), partition, value, Kafka
timestamp, and what the caller wants back with a failure (the worker: the message)."""

StoredChange = tuple[StoredState | None, StoredState | None]
"""A state's stored form before and after a change (None: there was none), for fold_stored."""

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
    """An account the current batch reached: as it was before the batch, as it is now."""

    stored: StoredState | None
    current: AccountState | None
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

    A batch's records are applied to their states (`process`: decode, duplicate check, state
    update), and their effect on the windows is settled once per batch (`settle`): a ticket
    touched by ten events of a batch is written once and retracted and re-added in the windows
    once.

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
        """What evaluating the accounts of every partition owned reads (their MRR timelines and
        experience), kept with their states."""
        self.experience_updates: list[tuple[int, ExperienceUpdate]] = []
        """What the tickets and survey slots settled so far send their accounts, with the
        partition of each ticket or slot: the caller takes them and sends them to the
        accounts' partitions (experience.py) with the batch's changes."""
        self.partitions: dict[int, CombinedWindows] = {}
        self.entries: Counter[tuple[TableName, int]] = Counter()
        """How many states each (table, partition) keeps."""
        self._touched: dict[tuple[int, str], _Touched] = {}
        """The accounts the batch reached, by (partition, account_id)."""
        self._batch = StateBatch()
        """The tickets and survey slots the batch reached, in the core."""
        self._rules = rules.core()
        self._tokens: list[object] = []
        """What the caller passed with each record the core took since the last settle."""
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
        """Apply a batch of records (topics named without prefix) to the state; `settle` folds
        the batch into the windows.

        The records go into the core in one call, the ticket and survey states they reach are
        read in one pass and handed over in one call, and one more applies them. Each record's
        outcome, or the error that makes it a dead letter: events.InvalidEvent for an invalid
        record, any other exception for a bug, which costs that record only.
        """
        first = len(self._tokens)
        core = [
            (topic, partition, value, time)
            for topic, partition, value, time, _ in records
            if topic != EXPERIENCE_TOPIC
        ]
        self._tokens += [token for topic, *_, token in records if topic != EXPERIENCE_TOPIC]
        try:
            decoded = iter(self._batch.decode(core, first, self.currency, Segment))
            needed = self._batch.needed()
            self._batch.load(
                [self.states.get(table, partition, key) for table, partition, key in needed]
            )
        except BaseException:
            # (a store that cannot be read): the batch goes, as its records are not committed;
            # events left queued would be taken for the next call's
            self._batch, self._tokens, self._touched = StateBatch(), [], {}
            raise
        outcomes: list[Outcome | Exception | None] = []
        for topic, partition, value, record_time, token in records:
            try:
                if topic == EXPERIENCE_TOPIC:
                    outcomes.append(self._experience(partition, value, record_time, token))
                    continue
                item = next(decoded)
                if item is None:
                    outcomes.append(None)  # a ticket or survey event: applied below
                elif isinstance(item, str):
                    outcomes.append(InvalidEvent(item))
                elif isinstance(item, SubscriptionUpdated):
                    outcomes.append(self._subscription(partition, item, token))
                else:
                    outcomes.append(item)
            except Exception as error:  # a bug must cost one record, never the batch
                outcomes.append(error)
        at = [index for index, outcome in enumerate(outcomes) if outcome is None]
        for index, (_, outcome) in zip(at, self._batch.apply(), strict=True):
            outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _subscription(self, partition: int, event: SubscriptionUpdated, token: object) -> Outcome:
        touched = self._reach(partition, event.account_id)
        account = touched.current
        if account is None:
            account = AccountState(partition)
        if account.holds(event.event_id):
            return "duplicate"
        change = SubscriptionEvent(
            event.occurred_at, event.event_id, event.subscription_id, event.contribution
        )
        touched.current = apply_subscription_event(account, change)
        touched.tokens.append(token)
        return "accepted"

    def _experience(
        self, partition: int, value: bytes | None, record_time: float, token: object
    ) -> Outcome:
        """A ticket's or response's observations for an account of this partition."""
        update = decode_experience(value)
        touched = self._reach(partition, update.account_id)
        account = touched.current
        if account is None:
            account = AccountState(partition)
        changed = apply_experience(account, update, record_time - self.experience_horizon)
        if changed is None:
            return "duplicate"  # an older (or the same) version of what it holds
        touched.current = changed
        touched.tokens.append(token)
        return "accepted"

    def _reach(self, partition: int, key: str) -> _Touched:
        """The batch's view of an account, read from its table when the batch first reaches it."""
        touched = self._touched.get((partition, key))
        if touched is None:
            stored = self.states.get("accounts", partition, key)
            original = None if stored is None else AccountState.from_json(orjson.loads(stored))
            touched = self._touched[(partition, key)] = _Touched(stored, original)
        return touched

    def settle(self, now: float) -> list[Failure]:
        """Write each state the batch changed and fold its change into the windows, at
        wall-clock time `now`; returns the states that failed (and were left unchanged)."""
        windows = {
            (table, partition): self.windows(table, partition, now)
            for table, partition in self._batch.partitions()
        }
        writes, updates, failed = self._batch.settle(self._rules, list(windows.items()))
        for table, partition, key, value, existed in writes:
            self.states.put(table, partition, key, value)
            self.entries[(table, partition)] += not existed
        self.experience_updates += [
            (partition, ExperienceUpdate(account, source, version, observations))
            for partition, account, source, version, observations in updates
        ]
        failures = [
            Failure([self._tokens[record] for record in records], RuntimeError(reason))
            for records, reason in failed
        ]
        self._tokens = []
        for (partition, key), touched in self._touched.items():
            current = touched.current
            if not touched.tokens or current is None:
                continue  # reached by duplicates only
            stored = orjson.dumps(current.to_json())
            self._store("accounts", partition, key, touched.stored, stored)
            self.accounts.put(partition, key, stored)
        self._touched = {}
        return failures

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
        retracted: dict[TableName, list[StoredChange]] = {}
        for table, key in candidates:
            stored = self.states.get(table, partition, key)
            if stored is None or not forgettable(table, stored, horizons[table], now):
                continue
            self._store(table, partition, key, stored, None)
            if table == "accounts":
                self.accounts.put(partition, key, None)
            retracted.setdefault(table, []).append((stored, None))
        for table, changes in retracted.items():
            if table != "accounts":  # (an account's numbers are evaluated, not windowed)
                self._fold_stored(self.windows(table, partition, now), table, changes)
        return sum(map(len, retracted.values()))

    def _fold_stored(
        self,
        windows: PartitionWindows,
        table: TableName,
        changes: list[StoredChange],
        totals: bool = True,
    ) -> None:
        """Fold stored states' changes into the windows; a state that cannot be read is left
        out of them, and counted in the log (not what it holds: it may quote personal data)."""
        unreadable = fold_stored(windows, table, changes, self._rules, totals)
        if unreadable:
            log.error(
                "stored states could not be read; left out of the windows",
                extra={"table": table, "states": len(unreadable)},
            )

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
                windowed = table != "accounts"  # (an account's numbers are not windowed)
                changes: list[StoredChange] = []
                if loaded is not None:
                    windows, self.entries[(table, partition)] = loaded
                    self.restored["checkpoints_loaded"] += 1
                    self.restored["states_refolded"] += len(checkpoint.changed_since)
                    for key, old in checkpoint.changed_since.items():
                        new = self.states.get(table, partition, key)
                        changes.append((old, new))
                        self.entries[(table, partition)] += (new is not None) - (old is not None)
                        done += 1
                        if done % RESTORE_STEP == 0:
                            if windowed:
                                self._fold_stored(windows, table, changes)
                            changes = []
                            yield done
                    if windowed:
                        self._fold_stored(windows, table, changes)
                else:
                    windows = PartitionWindows(self.specs, now)
                    windows.supersede([key for key, _ in checkpoint.windows])
                    for _, stored in self.states.items(table, partition):
                        self.entries[(table, partition)] += 1
                        self.restored["states_read"] += 1
                        changes.append((None, stored))
                        done += 1
                        if done % RESTORE_STEP == 0:
                            if windowed:
                                self._fold_stored(windows, table, changes, totals=False)
                            changes = []
                            yield done
                    if windowed:
                        self._fold_stored(windows, table, changes, totals=False)
                    windows.finish_rebuild()  # before the next partition: a lower peak
                parts[table] = windows
            for key, stored in self.states.items("accounts", partition):
                self.accounts.put(partition, key, stored)
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


def forgettable(table: TableName, stored: StoredState, horizon: float, now: float) -> bool:
    """Whether a stored state may be forgotten: its table's retention (docs/contract.md 3,
    *State retention*, and 7.2) has passed `horizon`."""
    if table == "accounts":
        return account_forgettable(stored, horizon, now)
    return ticket_or_survey_forgettable(table, stored, horizon)
