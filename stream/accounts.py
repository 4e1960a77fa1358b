"""Accounts, their subscriptions and their MRR timeline (docs/contract.md 7.1-7.3). No Kafka.

An account's state keeps every distinct subscription event it was sent (each one the whole
state of one subscription from its `occurred_at` on), so that a late or re-sent event, in any
order, gives the same state: the events form a set, and everything else is derived from it.
Amounts are integer millionths of the currency unit, so that sums and retractions are exact.

From the events comes the account's MRR timeline: the instants at which its MRR changed and
the MRR from then on. Every revenue number of an evaluation instant is a sum over accounts of
what their timelines say about two instants, s = as_of - W and as_of, and about the movements
between them (`evaluate`); the sums of the partitions add up to the organisation's.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from .experience import AccountObservation, ExperienceUpdate, Sources, merge_update
from .tickets import event_digest

Movement = Literal["new", "reactivation", "expansion", "contraction", "churn"]
MOVEMENTS: tuple[Movement, ...] = ("new", "reactivation", "expansion", "contraction", "churn")
COUNTED_MOVEMENTS: tuple[Movement, ...] = ("new", "reactivation", "churn")
"""The movement kinds that also count accounts."""


class SubscriptionEvent(NamedTuple):
    """One subscription's state from `at` on: what it contributes to its account's MRR
    (its mrr in millionths while active, else 0). Ordered by (at, event_id)."""

    at: float
    event_id: str
    subscription_id: str
    contribution: int


NO_SOURCES: Sources = MappingProxyType({})


class AccountState(NamedTuple):
    partition: int
    events: tuple[SubscriptionEvent, ...] = ()
    """Every distinct subscription event, in (at, event_id) order."""
    seen: frozenset[int] = frozenset()
    """Digests of every event id applied to the account (a re-sent one is a duplicate)."""
    latest: float = float("-inf")
    """The latest occurred_at of those events (retention is judged by it)."""
    experience: Sources = NO_SOURCES
    """Its tickets' and survey responses' observations (experience.py), by source."""

    def holds(self, event_id: str) -> bool:
        return event_digest(event_id) in self.seen

    @property
    def latest_observation(self) -> float:
        return max(
            (obs[1] for _, observations in self.experience.values() for obs in observations),
            default=float("-inf"),
        )

    def observations(self) -> tuple[AccountObservation, ...]:
        """Every observation of its experience, in time order."""
        return tuple(
            sorted(
                (obs for _, observations in self.experience.values() for obs in observations),
                key=lambda obs: obs[1],
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "subscription_events": [list(event) for event in self.events],
            "seen": sorted(self.seen),
            "latest": self.latest,
            "experience": {
                source: [version, [list(obs) for obs in observations]]
                for source, (version, observations) in self.experience.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountState:
        return cls(
            partition=data["partition"],
            events=tuple(SubscriptionEvent(*event) for event in data["subscription_events"]),
            seen=frozenset(data["seen"]),
            latest=data["latest"],
            experience={
                source: (version, tuple(tuple(obs) for obs in observations))
                for source, (version, observations) in data.get("experience", {}).items()
            },
        )


def is_account(stored: dict[str, Any]) -> bool:
    """Whether a stored state is an account's (the accounts table holds only those)."""
    return "subscription_events" in stored


def apply_subscription_event(state: AccountState, event: SubscriptionEvent) -> AccountState:
    """The account after an event it does not hold yet (the caller checks `holds` first)."""
    events = tuple(sorted((*state.events, event)))
    seen = state.seen | {event_digest(event.event_id)}
    return AccountState(state.partition, events, seen, max(state.latest, event.at))


Timeline = tuple[Sequence[float], Sequence[int]]
"""An account's MRR timeline: the instants its MRR changed at, ascending, and its MRR from
each on. Before the first, its MRR is 0."""


def timeline(events: Sequence[SubscriptionEvent]) -> Timeline:
    """The MRR timeline of an account's subscription events (in (at, event_id) order): at each
    instant, each subscription's state is its event with the latest occurred_at up to then,
    ties to the greater event_id, which is the last of them in this order."""
    contributions: dict[str, int] = {}
    total = 0
    times: list[float] = []
    amounts: list[int] = []
    for index, event in enumerate(events):
        total += event.contribution - contributions.get(event.subscription_id, 0)
        contributions[event.subscription_id] = event.contribution
        last_at_instant = index + 1 == len(events) or events[index + 1].at != event.at
        if last_at_instant and total != (amounts[-1] if amounts else 0):
            times.append(event.at)
            amounts.append(total)
    return tuple(times), tuple(amounts)


def mrr_at(line: Timeline, moment: float) -> int:
    """The account's MRR at `moment` (the events at `moment` included)."""
    times, amounts = line
    index = bisect_right(times, moment)
    return amounts[index - 1] if index else 0


def movement(before: int, after: int, paid_before: bool) -> tuple[Movement, int] | None:
    """The movement of an MRR change from `before` to `after` (7.2) and its amount."""
    if before == after:
        return None
    if before == 0:
        return ("reactivation" if paid_before else "new"), after
    if after == 0:
        return "churn", before
    if after > before:
        return "expansion", after - before
    return "contraction", before - after


FIELDS = (
    "cohort_accounts",
    "cohort_mrr",
    "retained_accounts",
    "retained_mrr",
    "grr_mrr",
    *(f"{kind}_mrr" for kind in MOVEMENTS),
    *(f"{kind}_accounts" for kind in COUNTED_MOVEMENTS),
)
"""What an account adds to the totals of one account window, in this order:
cohort_accounts and cohort_mrr (paying at s, its MRR at s), retained_accounts (of the cohort,
paying at as_of), retained_mrr (the cohort's MRR at as_of, NRR's numerator), grr_mrr (the
cohort's min(MRR at as_of, MRR at s), GRR's numerator), the movement amounts by kind, and the
accounts of the counted movement kinds."""
_FIELD = {name: position for position, name in enumerate(FIELDS)}
_MOVEMENT_MRR = {kind: _FIELD[f"{kind}_mrr"] for kind in MOVEMENTS}
_MOVEMENT_ACCOUNTS = {kind: _FIELD[f"{kind}_accounts"] for kind in COUNTED_MOVEMENTS}


class Totals:
    """Sums over accounts at one evaluation instant: MRR and paying accounts at as_of, and
    per account window the FIELDS. Adding two partitions' totals gives their union's."""

    __slots__ = ("mrr", "paying", "windows")

    def __init__(self, windows: int) -> None:
        self.mrr = 0
        self.paying = 0
        self.windows = [[0] * len(FIELDS) for _ in range(windows)]

    def add(self, other: Totals) -> None:
        self.mrr += other.mrr
        self.paying += other.paying
        for mine, theirs in zip(self.windows, other.windows, strict=True):
            for position, amount in enumerate(theirs):
                mine[position] += amount

    def to_json(self) -> dict[str, Any]:
        return {"mrr": self.mrr, "paying": self.paying, "windows": self.windows}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Totals:
        totals = cls(len(data["windows"]))
        totals.mrr, totals.paying = data["mrr"], data["paying"]
        totals.windows = [list(window) for window in data["windows"]]
        return totals


def evaluate(line: Timeline, as_of: float, windows: Sequence[float], totals: Totals) -> None:
    """Add what an account with MRR timeline `line` contributes at `as_of` to `totals`, for
    the account windows of `windows` seconds."""
    times, amounts = line
    if not times:
        return
    end = bisect_right(times, as_of)
    now = amounts[end - 1] if end else 0
    if now:
        totals.mrr += now
        totals.paying += 1
    for seconds, window in zip(windows, totals.windows, strict=True):
        start = bisect_right(times, as_of - seconds)
        then = amounts[start - 1] if start else 0
        if then:
            window[0] += 1
            window[1] += then
            window[3] += now
            window[4] += min(now, then)
            if now:
                window[2] += 1
        if start == end:
            continue  # no change in (s, as_of]
        paid_before = any(amounts[:start])
        before = then
        for index in range(start, end):
            after = amounts[index]
            moved = movement(before, after, paid_before)
            if moved is not None:
                kind, amount = moved
                window[_MOVEMENT_MRR[kind]] += amount
                counted = _MOVEMENT_ACCOUNTS.get(kind)
                if counted is not None:
                    window[counted] += 1
            paid_before = paid_before or after > 0
            before = after


def apply_experience(state: AccountState, update: ExperienceUpdate) -> AccountState | None:
    """The account with a ticket's or response's observations replaced, or None when the
    update is no newer than what it holds."""
    merged = merge_update(state.experience, update)
    return None if merged is None else state._replace(experience=merged)


def is_forgettable(stored: dict[str, Any], horizon: float, now: float) -> bool:
    """Whether an account may be forgotten (7.2): not paying now and no event, nor any
    observation of its tickets and responses, newer than `horizon`."""
    state = AccountState.from_json(stored)
    latest = max(state.latest, state.latest_observation)
    return latest < horizon and mrr_at(timeline(state.events), now) == 0


class AccountBook:
    """The MRR timelines of every account of the partitions a worker owns, in memory: an
    evaluation reads each of them, and decoding them from the store every interval would cost
    more than evaluating them. Compact: the instants and amounts in arrays."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, Timeline]] = {}

    def put(self, partition: int, account_id: str, state: AccountState | None) -> None:
        """The account's timeline from its state (None: forgotten)."""
        accounts = self.partitions.setdefault(partition, {})
        if state is None:
            accounts.pop(account_id, None)
            return
        times, amounts = timeline(state.events)
        accounts[account_id] = (array("d", times), array("q", amounts))

    def drop(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def evaluate(self, partition: int, as_of: float, windows: Sequence[float]) -> Totals:
        """The totals of the partition's accounts at `as_of`, for account windows of
        `windows` seconds."""
        totals = Totals(len(windows))
        for line in self.partitions.get(partition, {}).values():
            evaluate(line, as_of, windows, totals)
        return totals
