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
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from ._core import event_digest
from .experience import (
    BANDS,
    DRIVERS,
    NO_EXPERIENCE,
    AccountObservation,
    ExperienceUpdate,
    Snapshot,
    Sources,
    merge_update,
    snapshot_at,
)

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
            # (no event yet, -inf, is stored as null: JSON has no infinity)
            latest=float("-inf") if data["latest"] is None else data["latest"],
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
    return state._replace(events=events, seen=seen, latest=max(state.latest, event.at))


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


def driver_slot(driver: int, exposed: bool) -> int:
    """Where a driver group's cohort count is in a window's driver totals (its churned count
    follows): per driver, exposed then not exposed."""
    return 4 * driver + (0 if exposed else 2)


def band_slot(band: str) -> int:
    """Where a band's count is in band totals (its churned count, or MRR, follows)."""
    return 2 * BANDS.index(band)


class Totals:
    """Sums over accounts at one evaluation instant. At as_of: MRR and paying accounts, and per
    health band the paying accounts and their MRR (`health`, band_slot). Per account window:
    the FIELDS (`windows`); the cohort and its churned accounts per driver group (`drivers`,
    driver_slot) and per band at s (`bands`, band_slot). Adding two partitions' totals gives
    their union's."""

    __slots__ = ("bands", "drivers", "health", "mrr", "paying", "windows")

    def __init__(self, windows: int) -> None:
        self.mrr = 0
        self.paying = 0
        self.health = [0] * (2 * len(BANDS))
        self.windows = [[0] * len(FIELDS) for _ in range(windows)]
        self.drivers = [[0] * (4 * len(DRIVERS)) for _ in range(windows)]
        self.bands = [[0] * (2 * len(BANDS)) for _ in range(windows)]

    def add(self, other: Totals) -> None:
        self.mrr += other.mrr
        self.paying += other.paying
        _add(self.health, other.health)
        for name in ("windows", "drivers", "bands"):
            for mine, theirs in zip(getattr(self, name), getattr(other, name), strict=True):
                _add(mine, theirs)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Totals:
        totals = cls(len(data["windows"]))
        totals.mrr, totals.paying, totals.health = data["mrr"], data["paying"], data["health"]
        for name in ("windows", "drivers", "bands"):
            setattr(totals, name, [list(window) for window in data[name]])
        return totals


def _add(mine: list[int], theirs: Sequence[int]) -> None:
    for position, amount in enumerate(theirs):
        mine[position] += amount


class ExperienceRules(NamedTuple):
    """How an account's support experience is judged: CX_EXPERIENCE_LOOKBACK (seconds) and
    CX_HEALTH_WEIGHTS."""

    lookback: float
    weights: Mapping[str, float]


class AccountView(NamedTuple):
    """What an evaluation reads of an account: its MRR timeline, the observations of its
    experience in time order, and whether it has had a subscription event (only such an
    account is in a cohort or has a health record)."""

    line: Timeline
    observations: Sequence[AccountObservation] = ()
    subscribed: bool = True


def evaluate(
    account: AccountView,
    as_of: float,
    windows: Sequence[float],
    rules: ExperienceRules,
    totals: Totals,
) -> Snapshot:
    """Add what an account contributes at `as_of` to `totals`, for the account windows of
    `windows` seconds; returns its experience at `as_of`."""
    observations = account.observations

    def experience(moment: float) -> Snapshot:
        if not observations:
            return NO_EXPERIENCE
        return snapshot_at(observations, moment, rules.lookback, rules.weights)

    current = experience(as_of)
    times, amounts = account.line
    if not times:
        return current
    end = bisect_right(times, as_of)
    now = amounts[end - 1] if end else 0
    if now:
        totals.mrr += now
        totals.paying += 1
        totals.health[band_slot(current.band)] += 1
        totals.health[band_slot(current.band) + 1] += now
    for seconds, window, drivers, bands in zip(
        windows, totals.windows, totals.drivers, totals.bands, strict=True
    ):
        start = bisect_right(times, as_of - seconds)
        then = amounts[start - 1] if start else 0
        if then:
            window[0] += 1
            window[1] += then
            window[3] += now
            window[4] += min(now, then)
            if now:
                window[2] += 1
            # the cohort split by the experience at s: exposure judged before the churn
            before = experience(as_of - seconds)
            churned = 0 if now else 1
            for index, driver in enumerate(DRIVERS):
                slot = driver_slot(index, before.drivers[driver])
                drivers[slot] += 1
                drivers[slot + 1] += churned
            bands[band_slot(before.band)] += 1
            bands[band_slot(before.band) + 1] += churned
        if start == end:
            continue  # no change in (s, as_of]
        paid_before = any(amounts[:start])
        before_mrr = then
        for index in range(start, end):
            after = amounts[index]
            moved = movement(before_mrr, after, paid_before)
            if moved is not None:
                kind, amount = moved
                window[_MOVEMENT_MRR[kind]] += amount
                counted = _MOVEMENT_ACCOUNTS.get(kind)
                if counted is not None:
                    window[counted] += 1
            paid_before = paid_before or after > 0
            before_mrr = after
    return current


def apply_experience(
    state: AccountState, update: ExperienceUpdate, horizon: float
) -> AccountState | None:
    """The account with a ticket's or response's observations replaced, or None when the
    update is no newer than what it holds; sources with nothing after `horizon` go."""
    merged = merge_update(state.experience, update, horizon)
    return None if merged is None else state._replace(experience=merged)


def is_forgettable(stored: dict[str, Any], horizon: float, now: float) -> bool:
    """Whether an account may be forgotten (7.2): not paying now and no event, nor any
    observation of its tickets and responses, newer than `horizon`."""
    state = AccountState.from_json(stored)
    latest = max(state.latest, state.latest_observation)
    return latest < horizon and mrr_at(timeline(state.events), now) == 0


class AccountBook:
    """What an evaluation reads of every account of the partitions a worker owns, in memory:
    decoding them from the store every interval would cost more than evaluating them. Compact:
    the MRR timelines' instants and amounts in arrays."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, AccountView]] = {}

    def put(self, partition: int, account_id: str, state: AccountState | None) -> None:
        """The account's view from its state (None: forgotten)."""
        accounts = self.partitions.setdefault(partition, {})
        if state is None:
            accounts.pop(account_id, None)
            return
        times, amounts = timeline(state.events)
        line = (array("d", times), array("q", amounts))
        accounts[account_id] = AccountView(line, state.observations(), bool(state.events))

    def drop(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def accounts(self, partition: int) -> list[tuple[str, AccountView]]:
        return list(self.partitions.get(partition, {}).items())
