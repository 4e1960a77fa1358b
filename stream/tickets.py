"""What a ticket's durations are judged by (SLA targets, opening hours, which clock), and the
observations the windows take.

The ticket and survey states themselves, their transitions and the observations they make are
the core's (`core/src/tickets.rs`, `core/src/state.rs`; docs/architecture.md says how a state is
kept). `TicketRules` is the configuration's, handed to the core as `_core.Rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from ._core import Rules
from .business_hours import Schedules
from .events import Segment

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
    """One contribution of a state to the metrics, at event time `at`, under `segment`, as
    PartitionWindows.fold takes it (the core makes its own from the states).

    `value` is a duration in seconds (first_response, resolution, full_resolution) or a survey
    score; `flag` is the SLA breach (first_response, resolution) or one-touch (resolved);
    `business` the duration in business seconds (with a schedule); `reopened` whether a ticket
    first resolved at `at` was reopened since (resolved).
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

    def core(self) -> Rules:
        """The rules as the core takes them."""
        schedules = self.schedules
        return Rules(
            self.sla.first_response,
            self.sla.resolution,
            None if schedules is None else schedules.default.opening_hours,
            []
            if schedules is None
            else [(team, schedule.opening_hours) for team, schedule in schedules.teams.items()],
            self.sla_clock == "business",
        )
