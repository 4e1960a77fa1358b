"""Per-ticket state and per-survey-slot state, and the observations they contribute.

A state keeps only what the metrics need: the earliest ticket-opened (its segment wins), the
two earliest public agent replies (the first is the first response; the second decides
one-touch), its resolutions and reopens in status order (docs/contract.md section 3: the first
resolution, the latest one, whether it is resolved now, which reopens count), and for a survey
slot the response that currently counts.
It also keeps a digest of every event id applied to it (so that a re-sent event of any kind is
a duplicate) and the latest event time (for retention). Every update is a lattice join (an
earliest / latest pick, a set union), so applying the same event twice, or events in any order,
gives the same state: that is what makes replays after a crash exact.

A state's observations are a pure function of the state. When an event changes a state, the
pipeline retracts the old observations and adds the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from itertools import pairwise
from typing import Any, Literal, NamedTuple, TypeAlias, cast

from .business_hours import Schedule, Schedules
from .events import (
    Segment,
    SurveyAnswered,
    TicketOpened,
    TicketReopened,
    TicketReplied,
    TicketResolved,
)

Stamp = tuple[float, str]
"""(occurred_at, event_id): the order in which competing events are picked."""

StatusEvent = tuple[float, str, Literal["resolved", "reopened"]]
"""A resolution or a reopen, ordered by (occurred_at, event_id)."""

Kind = Literal[
    "opened",
    "backlog",
    "first_response",
    "resolved",
    "resolution",
    "full_resolution",
    "reopen",
    "nps",
    "csat",
    "ces",
]


class Observation(NamedTuple):
    """One contribution of a state to the metrics, at event time `at`, under `segment`.

    `value` is a duration in seconds (first_response, resolution, full_resolution) or a survey
    score; `flag` is the SLA breach (first_response, resolution) or one-touch (resolved);
    `business` the duration in business seconds (with a schedule); `reopened` whether a ticket
    first resolved at `at` was reopened since (resolved).

    Tuples, like the states below: every event makes and compares a few of them.
    """

    kind: Kind
    at: float
    segment: Segment
    value: float = 0.0
    flag: bool = False
    business: float | None = None
    reopened: bool = False


@dataclass(frozen=True, slots=True)
class SlaTargets:
    """Seconds allowed per priority before a first response or resolution breaches its SLA."""

    first_response: dict[str, float]
    resolution: dict[str, float]


DEFAULT_SLA = SlaTargets(
    first_response={"urgent": 3600, "high": 4 * 3600, "normal": 8 * 3600, "low": 24 * 3600},
    resolution={"urgent": 4 * 3600, "high": 24 * 3600, "normal": 72 * 3600, "low": 168 * 3600},
)

SlaClock = Literal["calendar", "business"]


@dataclass(frozen=True)
class TicketRules:
    """What a ticket's durations are judged by: SLA targets, opening hours, which clock."""

    sla: SlaTargets = DEFAULT_SLA
    schedules: Schedules | None = None
    sla_clock: SlaClock = "calendar"
    _business: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a ticket's durations are recomputed with every event it gets: remember recent ones
        object.__setattr__(self, "_business", lru_cache(maxsize=65536)(_business_seconds))

    def business_seconds(self, team: str, start: float, end: float) -> float | None:
        """The business time of [start, end) by `team`'s schedule; None without schedules."""
        if self.schedules is None:
            return None
        seconds: float = self._business(self.schedules.for_team(team), start, end)
        return seconds

    def breached(
        self, targets: dict[str, float], priority: str, seconds: float, business: float | None
    ) -> bool:
        measured = business if self.sla_clock == "business" and business is not None else seconds
        return measured > targets[priority]


def _business_seconds(schedule: Schedule, start: float, end: float) -> float:
    return schedule.business_seconds(start, end)


def event_digest(event_id: str) -> int:
    """A 64-bit digest of an event id: what a state keeps to recognise a re-sent event.

    Ids may be 128 characters; eight bytes each keep a busy ticket's state small. Two ids of one
    ticket colliding is a 1 in 2^64 chance per pair.
    """
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


class TicketState(NamedTuple):
    partition: int
    opened: Stamp | None = None
    segment: Segment | None = None
    agent_replies: tuple[Stamp, ...] = ()
    status: tuple[StatusEvent, ...] = ()
    """Every resolution and reopen, in status order."""
    seen: frozenset[int] = frozenset()
    """Digests of every event id applied to the ticket."""
    latest: float = float("-inf")
    """The latest occurred_at of those events (retention is judged by it)."""
    account: str | None = None
    """The account_id of its earliest ticket-opened, like its segment (docs/contract.md 2)."""

    def holds(self, event_id: str) -> bool:
        return event_digest(event_id) in self.seen

    @property
    def first_resolution(self) -> float | None:
        for at, _, kind in self.status:
            if kind == "resolved":
                return at
        return None

    @property
    def is_resolved(self) -> bool:
        """Resolved now: the last of its resolutions and reopens is a resolution."""
        return bool(self.status) and self.status[-1][2] == "resolved"

    def reopens(self) -> list[float]:
        """When it was reopened: reopens whose previous status event is a resolution."""
        return [
            at
            for (_, _, before), (at, _, kind) in pairwise(self.status)
            if kind == "reopened" and before == "resolved"
        ]

    def to_json(self) -> dict[str, Any]:
        segment = self.segment
        return {
            "partition": self.partition,
            "opened": self.opened,
            "segment": None
            if segment is None
            else [segment.team, segment.channel, segment.priority],
            "agent_replies": self.agent_replies,
            "status": self.status,
            "seen": sorted(self.seen),
            "latest": self.latest,
            "account": self.account,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TicketState:
        segment = data["segment"]
        return cls(
            partition=data["partition"],
            opened=_stamp(data["opened"]),
            segment=None if segment is None else Segment(*segment),
            agent_replies=tuple((at, event_id) for at, event_id in data["agent_replies"]),
            status=tuple((at, event_id, kind) for at, event_id, kind in data["status"]),
            seen=frozenset(data["seen"]),
            latest=data["latest"],
            account=data.get("account"),  # (states stored before accounts had none)
        )


class SurveyResponse(NamedTuple):
    """The response that counts for one survey slot, and the responses the slot has seen."""

    partition: int
    stamp: Stamp
    survey: str
    score: int
    segment: Segment
    seen: frozenset[int] = frozenset()
    account: str | None = None
    """The account_id of the response that counts (its own, not its ticket's)."""

    def holds(self, event_id: str) -> bool:
        return event_digest(event_id) in self.seen

    def to_json(self) -> dict[str, Any]:
        segment = self.segment
        return {
            "partition": self.partition,
            "stamp": self.stamp,
            "survey": self.survey,
            "score": self.score,
            "segment": [segment.team, segment.channel, segment.priority],
            "seen": sorted(self.seen),
            "account": self.account,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SurveyResponse:
        return cls(
            partition=data["partition"],
            stamp=(data["stamp"][0], data["stamp"][1]),
            survey=data["survey"],
            score=data["score"],
            segment=Segment(*data["segment"]),
            seen=frozenset(data["seen"]),
            account=data.get("account"),
        )


def _stamp(value: Any) -> Stamp | None:
    return None if value is None else (value[0], value[1])


TicketEvent: TypeAlias = TicketOpened | TicketReplied | TicketResolved | TicketReopened


def apply_ticket_event(state: TicketState, event: TicketEvent) -> TicketState:
    """The state after an event it does not hold yet (the pipeline checks `holds` first)."""
    seen = state.seen | {event_digest(event.event_id)}
    latest = max(state.latest, event.occurred_at)
    stamp = (event.occurred_at, event.event_id)
    opened, segment, account = state.opened, state.segment, state.account
    status, agent_replies = state.status, state.agent_replies
    if isinstance(event, TicketOpened):
        if opened is None or stamp < opened:
            opened, segment, account = stamp, event.segment, event.account_id
    elif isinstance(event, TicketResolved | TicketReopened):
        kind: Literal["resolved", "reopened"] = (
            "resolved" if isinstance(event, TicketResolved) else "reopened"
        )
        status = tuple(sorted((*status, (*stamp, kind))))
    elif event.author == "agent" and event.public:
        agent_replies = tuple(sorted((*agent_replies, stamp))[:2])
    return TicketState(
        state.partition, opened, segment, agent_replies, status, seen, latest, account
    )


def survey_slot(event: SurveyAnswered) -> str:
    """The table key of the response `event` competes with: one per (ticket, survey kind)."""
    if event.ticket_id is None:
        return f"event:{event.event_id}"
    return f"{event.survey}:{event.ticket_id}"


def apply_survey_event(
    current: SurveyResponse | None, event: SurveyAnswered, partition: int
) -> SurveyResponse:
    """The slot after a response it does not hold yet: the response that counts is the
    latest by occurred_at, then by event_id."""
    seen = frozenset({event_digest(event.event_id)})
    stamp = (event.occurred_at, event.event_id)
    if current is not None and current.stamp >= stamp:
        return current._replace(seen=current.seen | seen)
    earlier = frozenset() if current is None else current.seen
    return SurveyResponse(
        partition, stamp, event.survey, event.score, event.segment, earlier | seen, event.account_id
    )


def is_forgettable(stored: dict[str, Any], horizon: float) -> bool:
    """Whether a stored ticket state or survey response may be forgotten (docs/contract.md,
    section 3, *State retention*): nothing of it is newer than `horizon`, and it is not an
    open ticket."""
    if "score" in stored:  # a survey slot: its response that counts is its latest
        return bool(stored["stamp"][0] < horizon)
    status = stored["status"]
    is_open = stored["opened"] is not None and not (status and status[-1][2] == "resolved")
    return not is_open and bool(stored["latest"] < horizon)


def ticket_observations(state: TicketState, rules: TicketRules) -> list[Observation]:
    if state.opened is None or state.segment is None:
        return []  # the segment comes from ticket-opened: nothing counts before it arrives
    opened_at = state.opened[0]
    segment = state.segment
    sla = rules.sla
    observations = [Observation("opened", opened_at, segment)]
    if state.agent_replies:
        replied_at = state.agent_replies[0][0]
        seconds = replied_at - opened_at
        if seconds >= 0:
            business = rules.business_seconds(segment.team, opened_at, replied_at)
            breached = rules.breached(sla.first_response, segment.priority, seconds, business)
            observations.append(
                Observation("first_response", replied_at, segment, seconds, breached, business)
            )
    if not state.is_resolved:
        observations.append(Observation("backlog", opened_at, segment))
    resolved_at = state.first_resolution
    if resolved_at is None:
        return observations
    reopens = state.reopens()
    replies_before = sum(1 for at, _ in state.agent_replies if at <= resolved_at)
    observations.append(
        Observation(
            "resolved", resolved_at, segment, flag=replies_before <= 1, reopened=bool(reopens)
        )
    )
    seconds = resolved_at - opened_at
    if seconds >= 0:
        business = rules.business_seconds(segment.team, opened_at, resolved_at)
        breached = rules.breached(sla.resolution, segment.priority, seconds, business)
        observations.append(
            Observation("resolution", resolved_at, segment, seconds, breached, business)
        )
    observations.extend(Observation("reopen", at, segment) for at in reopens)
    if state.is_resolved:
        latest_at = state.status[-1][0]
        if latest_at >= opened_at:
            observations.append(
                Observation("full_resolution", latest_at, segment, latest_at - opened_at)
            )
    return observations


def anomalies(state: TicketState) -> int:
    """Negative durations (clock skew) the state holds; they are discarded from the metrics."""
    if state.opened is None:
        return 0
    opened_at = state.opened[0]
    first_resolution = state.first_resolution
    status = state.status
    return (
        (bool(state.agent_replies) and state.agent_replies[0][0] < opened_at)
        + (first_resolution is not None and first_resolution < opened_at)
        + (bool(status) and status[-1][2] == "resolved" and status[-1][0] < opened_at)
    )


def survey_observations(response: SurveyResponse) -> list[Observation]:
    kind = cast(Kind, response.survey)  # nps | csat | ces, as the schema allows
    return [Observation(kind, response.stamp[0], response.segment, float(response.score))]
