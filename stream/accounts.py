"""Accounts, their subscriptions and their MRR (docs/contract.md 7.1-7.3). No Kafka.

An account's state keeps every distinct subscription event it was sent (each one the whole
state of one subscription from its `occurred_at` on), so that a late or re-sent event, in any
order, gives the same state: the events form a set, and everything else is derived from it.
Amounts are integer millionths of the currency unit, so that sums and retractions are exact.

The batches apply events to the states here; the evaluation at each instant is the core's
(core/src/accounts.rs, `_core.AccountBook`): from the stored states it keeps each account's MRR
timeline, and sums over a partition's accounts what their timelines say about two instants,
s = as_of - W and as_of, and about the movements between them, into `Totals`; the sums of the
partitions add up to the organisation's.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from ._core import (
    ACCOUNT_FIELDS,
    BANDS,
    DRIVERS,
    AccountRules,
    PartitionAccounts,
    event_digest,
)
from .experience import ExperienceUpdate, Sources, merge_update

if TYPE_CHECKING:
    from ._core import AccountRecord  # (a type of the stub only)

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


def apply_subscription_event(state: AccountState, event: SubscriptionEvent) -> AccountState:
    """The account after an event it does not hold yet (the caller checks `holds` first)."""
    events = tuple(sorted((*state.events, event)))
    seen = state.seen | {event_digest(event.event_id)}
    return state._replace(events=events, seen=seen, latest=max(state.latest, event.at))


def apply_experience(
    state: AccountState, update: ExperienceUpdate, horizon: float
) -> AccountState | None:
    """The account with a ticket's or response's observations replaced, or None when the
    update is no newer than what it holds; sources with nothing after `horizon` go."""
    merged = merge_update(state.experience, update, horizon)
    return None if merged is None else state._replace(experience=merged)


FIELDS = ACCOUNT_FIELDS
"""What an account adds to the totals of one account window, in the order the core writes them
(core/src/accounts.rs): cohort_accounts and cohort_mrr (paying at s, its MRR at s),
retained_accounts (of the cohort, paying at as_of), retained_mrr (the cohort's MRR at as_of,
NRR's numerator), grr_mrr (the cohort's min(MRR at as_of, MRR at s), GRR's numerator), the
movement amounts by kind, and the accounts of the counted movement kinds."""


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


def _add(mine: list[int], theirs: list[int]) -> None:
    for position, amount in enumerate(theirs):
        mine[position] += amount


def evaluation(
    accounts: PartitionAccounts,
    as_of: float,
    rules: AccountRules,
    start: int = 0,
    stop: int | None = None,
) -> tuple[Totals, list[AccountRecord]]:
    """The core's evaluation of `accounts` [start, stop) at `as_of`: what they add to the
    totals, and the health of each that has had a subscription event (only such an account is
    in a cohort or has a health record)."""
    totals, records = accounts.evaluate(as_of, rules, start, stop)
    return Totals.from_json(orjson.loads(totals)), records
