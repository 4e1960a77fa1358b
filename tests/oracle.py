"""An independent reading of docs/contract.md: the expected numbers, computed from raw event dicts.

Nothing here imports the processor. It works on the whole set of events at once (no state
machines, no buckets, no sketches): exact windows, exact order statistics, and its own
algebraic forms of the Wilson interval and the NPS margin of error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOWS = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "28d": 28 * 86400.0}
FIRST_RESPONSE_TARGET = {"urgent": 3600.0, "high": 4 * 3600.0, "normal": 8 * 3600.0, "low": 86400.0}
RESOLUTION_TARGET = {
    "urgent": 4 * 3600.0,
    "high": 86400.0,
    "normal": 3 * 86400.0,
    "low": 7 * 86400.0,
}
Z = 1.96

Event = tuple[str, dict[str, Any]]  # (topic, fields)


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class OpeningHours:
    """Opening hours in zones without daylight saving, counted day by day: per team (else
    `default`) a UTC offset in hours, per weekday (0 = Monday) intervals in local minutes, and
    closed local dates. Independent of stream.business_hours, which it checks."""

    default: tuple[float, dict[int, list[tuple[int, int]]], set[str]]
    teams: dict[str, tuple[float, dict[int, list[tuple[int, int]]], set[str]]]

    def business_seconds(self, team: str, start: float, end: float) -> float:
        offset, week, holidays = self.teams.get(team, self.default)
        shift = offset * 3600
        total = 0.0
        day = math.floor((start + shift) / 86400) * 86400  # local midnight, as UTC-shifted time
        while day <= end + shift:
            date = datetime.fromtimestamp(day, UTC).date()
            if date.isoformat() not in holidays:
                for opens, closes in week.get(date.weekday(), []):
                    low = max(start, day + opens * 60 - shift)
                    high = min(end, day + closes * 60 - shift)
                    total += max(high - low, 0.0)
            day += 86400
        return total


@dataclass
class Contribution:
    """What one ticket or survey response adds to a segment's window, at event time `at`."""

    at: float
    name: str
    value: float = 1.0
    event_id: str = ""
    """A survey response's (NPS ties between accounts' responses go to the greater)."""


@dataclass
class Expected:
    """Expected metrics per (window, team, channel, priority), and backlog per segment."""

    series: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    tickets_open: dict[tuple[str, str, str], int] = field(default_factory=dict)


def _segment(fields: dict[str, Any]) -> tuple[str, str, str]:
    return (
        fields.get("team", "unassigned"),
        fields.get("channel", "unknown"),
        fields.get("priority", "normal"),
    )


def contributions(
    events: list[Event],
    hours: OpeningHours | None = None,
    sla_clock: str = "calendar",
    owner_of: Callable[[dict[str, Any]], Any] | None = None,
) -> tuple[list[tuple[Any, Contribution]], list[Any]]:
    """Every contribution with the segment it counts under, and the segments of open tickets.
    (`owner_of`: what a ticket's earliest opening or a survey response counts under instead of
    its segment, its account_id say.)"""
    distinct = {fields["event_id"]: (topic, fields) for topic, fields in events}
    by_ticket: dict[str, dict[str, list[dict[str, Any]]]] = {}
    surveys: dict[tuple[Any, ...], dict[str, Any]] = {}
    for topic, fields in distinct.values():
        if topic == "survey-answered":
            slot = (
                ("ticket", fields["ticket_id"], fields["survey"])
                if "ticket_id" in fields
                else ("event", fields["event_id"])
            )
            best = surveys.get(slot)
            mine = (seconds(fields["occurred_at"]), fields["event_id"])
            if best is None or mine > (seconds(best["occurred_at"]), best["event_id"]):
                surveys[slot] = fields
        else:
            by_ticket.setdefault(fields["ticket_id"], {}).setdefault(topic, []).append(fields)

    found: list[tuple[tuple[str, str, str], Contribution]] = []
    open_segments = []

    def earliest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
        return min(items, key=lambda f: (seconds(f["occurred_at"]), f["event_id"]), default=None)

    def key(fields: dict[str, Any]) -> tuple[float, str]:
        return (seconds(fields["occurred_at"]), fields["event_id"])

    for lifecycle in by_ticket.values():
        opened = earliest(lifecycle.get("ticket-opened", []))
        if opened is None:
            continue
        segment = _segment(opened)
        under = segment if owner_of is None else owner_of(opened)
        opened_at = seconds(opened["occurred_at"])
        found.append((under, Contribution(opened_at, "tickets_opened")))
        agent_replies = [
            f
            for f in lifecycle.get("ticket-replied", [])
            if f["author"] == "agent" and f.get("public", True)
        ]

        def duration(
            name: str,
            at: float,
            targets: dict[str, float],
            segment: Any = segment,
            under: Any = under,
            start: float = opened_at,
        ) -> None:
            """A first response or resolution at `at`: calendar and business time, SLA."""
            calendar = at - start
            found.append((under, Contribution(at, name, calendar)))
            business = None if hours is None else hours.business_seconds(segment[0], start, at)
            if business is not None:
                found.append((under, Contribution(at, f"{name}_business", business)))
            judged = business if sla_clock == "business" and business is not None else calendar
            if judged > targets[segment[2]]:
                found.append((under, Contribution(at, f"{name}_sla_breaches")))

        first_reply = earliest(agent_replies)
        if first_reply is not None:
            at = seconds(first_reply["occurred_at"])
            if at >= opened_at:
                duration("first_response", at, FIRST_RESPONSE_TARGET)
        # status order: resolutions and reopens by (occurred_at, event_id)
        status = sorted(
            [(key(f), "resolved") for f in lifecycle.get("ticket-resolved", [])]
            + [(key(f), "reopened") for f in lifecycle.get("ticket-reopened", [])]
        )
        if not status or status[-1][1] != "resolved":
            open_segments.append(under)
        reopens = [
            stamp[0]
            for (_, before), (stamp, kind) in itertools.pairwise(status)
            if kind == "reopened" and before == "resolved"
        ]
        for at in reopens:
            found.append((under, Contribution(at, "ticket_reopens")))
        resolution = earliest(lifecycle.get("ticket-resolved", []))
        if resolution is None:
            continue
        at = seconds(resolution["occurred_at"])
        found.append((under, Contribution(at, "tickets_resolved")))
        one_touch = sum(1 for f in agent_replies if seconds(f["occurred_at"]) <= at) <= 1
        if one_touch:
            found.append((under, Contribution(at, "one_touch_tickets")))
        if reopens:  # (the first reopen's time: an account judges "reopened by u")
            found.append((under, Contribution(at, "reopened_tickets", reopens[0])))
        elif one_touch:
            found.append((under, Contribution(at, "first_contact_resolutions")))
        if at >= opened_at:
            duration("resolution", at, RESOLUTION_TARGET)
        if status[-1][1] == "resolved":
            latest = status[-1][0][0]
            if latest >= opened_at:
                found.append((under, Contribution(latest, "full_resolution", latest - opened_at)))

    for fields in surveys.values():
        found.append(
            (
                _segment(fields) if owner_of is None else owner_of(fields),
                Contribution(
                    seconds(fields["occurred_at"]),
                    fields["survey"],
                    float(fields["score"]),
                    fields["event_id"],
                ),
            )
        )
    return found, open_segments


def _labels(
    segment: tuple[str, str, str], folded: dict[str, dict[str, str]]
) -> list[tuple[str, str, str]]:
    team, channel, priority = segment
    return [
        ("all", "all", "all"),
        (folded["team"][team], "all", "all"),
        ("all", folded["channel"][channel], "all"),
        ("all", "all", folded["priority"][priority]),
    ]


def fold(values: set[str], cap: int) -> dict[str, str]:
    """Values over the cap, and values spelled 'all' or 'other', are exported as 'other'."""
    named = sorted(value for value in values if value not in ("all", "other"))
    kept = set(named[:cap])
    return {value: value if value in kept else "other" for value in values}


def expected(
    events: list[Event],
    now: float,
    cap: int = 50,
    hours: OpeningHours | None = None,
    sla_clock: str = "calendar",
) -> Expected:
    found, open_segments = contributions(events, hours, sla_clock)
    known = [segment for segment, c in found if c.name in {"tickets_opened", "nps", "csat", "ces"}]
    folded = {
        dimension: fold({segment[position] for segment in known}, cap)
        for position, dimension in enumerate(("team", "channel", "priority"))
    }
    result = Expected()
    labels_seen = {labels for segment in known for labels in _labels(segment, folded)}
    for labels in labels_seen:
        result.tickets_open[labels] = 0
        for window, width in WINDOWS.items():
            inside = [
                c
                for segment, c in found
                if labels in _labels(segment, folded) and now - width < c.at <= now
            ]
            result.series[(window, *labels)] = summarise(inside, hours is not None)
    for segment in open_segments:
        for labels in _labels(segment, folded):
            result.tickets_open[labels] += 1
    return result


def summarise(inside: list[Contribution], business_hours: bool = False) -> dict[str, Any]:
    def values(name: str) -> list[float]:
        return [c.value for c in inside if c.name == name]

    def count(name: str) -> int:
        return len(values(name))

    nps_scores = values("nps")
    promoters = sum(1 for s in nps_scores if s >= 9)
    detractors = sum(1 for s in nps_scores if s <= 6)
    csat = values("csat")
    satisfied = sum(1 for s in csat if s >= 4)
    ces = values("ces")
    first = sorted(values("first_response"))
    resolution = sorted(values("resolution"))
    resolved = count("tickets_resolved")
    full = sorted(values("full_resolution"))
    # NPS margin from the variance of per-response values +1 / 0 / -1
    signs = [1.0 if s >= 9 else -1.0 if s <= 6 else 0.0 for s in nps_scores]
    mean = sum(signs) / len(signs) if signs else 0.0
    variance = sum(x * x for x in signs) / len(signs) - mean * mean if signs else 0.0
    return {
        "nps": 100 * mean if signs else None,
        "nps_margin_of_error": Z * 100 * math.sqrt(variance / len(signs)) if signs else None,
        "nps_responses": len(nps_scores),
        "nps_promoters": promoters,
        "nps_passives": len(nps_scores) - promoters - detractors,
        "nps_detractors": detractors,
        "csat_ratio": satisfied / len(csat) if csat else None,
        "csat_ratio_lower": wilson(satisfied, len(csat), -1),
        "csat_ratio_upper": wilson(satisfied, len(csat), 1),
        "csat_responses": len(csat),
        "csat_satisfied": satisfied,
        "csat_score_avg": sum(csat) / len(csat) if csat else None,
        "ces_score_avg": sum(ces) / len(ces) if ces else None,
        "ces_low_effort_ratio": sum(1 for s in ces if s >= 5) / len(ces) if ces else None,
        "ces_responses": len(ces),
        "first_response_seconds_p50": first or None,
        "first_response_seconds_p90": first or None,
        "first_response_seconds_avg": sum(first) / len(first) if first else None,
        "first_response_count": len(first),
        "resolution_seconds_p50": resolution or None,
        "resolution_seconds_p90": resolution or None,
        "resolution_seconds_avg": sum(resolution) / len(resolution) if resolution else None,
        "resolution_count": len(resolution),
        "tickets_opened": count("tickets_opened"),
        "tickets_resolved": resolved,
        "first_response_sla_breach_ratio": (
            count("first_response_sla_breaches") / len(first) if first else None
        ),
        "resolution_sla_breach_ratio": (
            count("resolution_sla_breaches") / len(resolution) if resolution else None
        ),
        "one_touch_ratio": count("one_touch_tickets") / resolved if resolved else None,
        "first_response_sla_breaches": count("first_response_sla_breaches"),
        "resolution_sla_breaches": count("resolution_sla_breaches"),
        "one_touch_tickets": count("one_touch_tickets"),
        "full_resolution_seconds_p50": full or None,
        "full_resolution_seconds_p90": full or None,
        "full_resolution_seconds_avg": sum(full) / len(full) if full else None,
        "full_resolution_count": len(full),
        "ticket_reopens": count("ticket_reopens"),
        "reopened_ratio": count("reopened_tickets") / resolved if resolved else None,
        "reopened_tickets": count("reopened_tickets"),
        "first_contact_resolution_ratio": (
            count("first_contact_resolutions") / resolved if resolved else None
        ),
        "first_contact_resolutions": count("first_contact_resolutions"),
    } | (business_summary(values) if business_hours else {})


def business_summary(values: Any) -> dict[str, Any]:
    summary = {}
    for name in ("first_response", "resolution"):
        durations = sorted(values(f"{name}_business"))
        summary[f"{name}_business_seconds_p50"] = durations or None
        summary[f"{name}_business_seconds_p90"] = durations or None
        summary[f"{name}_business_seconds_avg"] = (
            sum(durations) / len(durations) if durations else None
        )
    return summary


def wilson(successes: int, n: int, side: int) -> float | None:
    """Wilson bound in the (2np + z^2 +- z sqrt(z^2 + 4np(1-p))) / (2(n + z^2)) form."""
    if n == 0:
        return None
    p = successes / n
    return (2 * n * p + Z * Z + side * Z * math.sqrt(Z * Z + 4 * n * p * (1 - p))) / (
        2 * (n + Z * Z)
    )


QUANTILE_OF = {"_p50": 0.5, "_p90": 0.9}


def assert_matches(actual: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    """Counts exactly, ratios and averages to 1e-9, quantiles within 2% of an order statistic."""
    for name, want in wanted.items():
        got = actual.get(name)
        label = f"{where} {name}: got {got!r}, expected {want!r}"
        if want is None:
            assert got is None, label
        elif isinstance(want, list):
            assert got is not None, label
            rank = QUANTILE_OF[name[-4:]] * (len(want) - 1)
            candidates = {want[math.floor(rank)], want[math.ceil(rank)]}
            assert any(abs(got - c) <= 0.02 * abs(c) + 1e-9 for c in candidates), label
        elif isinstance(want, int):
            assert got == want, label
        else:
            assert got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), label


def settled_before(events: list[Event], horizon: float) -> tuple[set[str], set[tuple[str, ...]]]:
    """The oracle's view of retention: tickets resolved or never opened whose events are all
    older than `horizon`, and survey slots whose latest response is older."""
    tickets: dict[str, list[tuple[str, float]]] = {}
    slots: dict[tuple[str, ...], float] = {}
    for topic, fields in events:
        at = seconds(fields["occurred_at"])
        if topic == "survey-answered":
            slot = (
                (fields["survey"], fields["ticket_id"])
                if "ticket_id" in fields
                else ("event", fields["event_id"])
            )
            slots[slot] = max(slots.get(slot, at), at)
        else:
            tickets.setdefault(fields["ticket_id"], []).append((topic, at))
    old_tickets = {
        ticket
        for ticket, seen in tickets.items()
        if max(at for _, at in seen) < horizon
        and (
            any(topic == "ticket-resolved" for topic, _ in seen)
            or all(topic != "ticket-opened" for topic, _ in seen)
        )
    }
    return old_tickets, {slot for slot, at in slots.items() if at < horizon}


def negative_durations(events: list[Event]) -> set[str]:
    """The durations of one ticket's distinct events that are negative (contract section 3:
    FRT, TTR and, while its status is resolved, full resolution; each from the earliest
    opening). None exists before the ticket is opened."""
    opened = [seconds(f["occurred_at"]) for topic, f in events if topic == "ticket-opened"]
    if not opened:
        return set()
    opened_at = min(opened)
    replies = [
        seconds(f["occurred_at"])
        for topic, f in events
        if topic == "ticket-replied" and f["author"] == "agent" and f.get("public", True)
    ]
    status = sorted(
        (seconds(f["occurred_at"]), f["event_id"], topic)
        for topic, f in events
        if topic in ("ticket-resolved", "ticket-reopened")
    )
    resolutions = [at for at, _, topic in status if topic == "ticket-resolved"]
    durations = {
        "first_response": min(replies) - opened_at if replies else None,
        "resolution": min(resolutions) - opened_at if resolutions else None,
        "full_resolution": (
            status[-1][0] - opened_at if status and status[-1][2] == "ticket-resolved" else None
        ),
    }
    return {name for name, value in durations.items() if value is not None and value < 0}


def owner(topic: str, fields: dict[str, Any]) -> tuple[str, ...]:
    """What a record belongs to (contract section 3, Outcomes): its ticket, or its survey slot
    (ticket and survey kind; the event itself for a survey without a ticket)."""
    if topic != "survey-answered":
        return ("ticket", fields["ticket_id"])
    if "ticket_id" in fields:
        return ("survey", fields["ticket_id"], fields["survey"])
    return ("survey", fields["event_id"])


def outcomes(delivered: list[Event]) -> list[str]:
    """The outcome of each valid record, replaying the delivery order (contract section 3,
    Outcomes): `duplicate` if its event_id was already applied to its ticket or survey slot,
    whatever the kind; `anomaly` if it made a duration negative, one that was not negative
    (or did not exist) before it; else `accepted`. Only a record's own ticket or slot matters,
    so any interleaving of the tickets (partitions, batches) gives the same outcomes."""
    applied: dict[tuple[str, ...], list[Event]] = {}
    result = []
    for topic, fields in delivered:
        so_far = applied.setdefault(owner(topic, fields), [])
        if any(f["event_id"] == fields["event_id"] for _, f in so_far):
            result.append("duplicate")
            continue
        before = negative_durations(so_far)
        so_far.append((topic, fields))
        result.append("anomaly" if negative_durations(so_far) - before else "accepted")
    return result
