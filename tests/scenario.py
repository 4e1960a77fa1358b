"""Generated test traffic with the awkward cases of docs/contract.md section 1 in it.

Every event time lies in a 'safe' age range, well away from the edges of the 1h, 24h, 7d and
28d windows (bucketing may blur an edge by W/120, and a test runs for minutes), so an exact
oracle and the bucketed processor must agree.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

from tests.oracle import Event, OpeningHours, owner

SAFE_AGES = [  # seconds before `now`; each range sits inside some windows and clear of edges
    (60.0, 40 * 60.0),  # in every window
    (2 * 3600.0, 20 * 3600.0),  # 24h, 7d, 28d
    (2 * 86400.0, 6 * 86400.0),  # 7d, 28d
    (8 * 86400.0, 26 * 86400.0),  # 28d only
    (30 * 86400.0, 60 * 86400.0),  # older than every window
]
TEAMS = ["billing", "accounts", "technical", "onboarding", "shipping"]
CHANNELS = ["email", "chat", "phone"]
PRIORITIES = ["low", "normal", "high", "urgent"]


def timestamp(moment: float, rng: random.Random) -> str:
    """RFC 3339 in a mix of spellings: Z, +01:00, with and without fractions."""
    zone = rng.choice([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))])
    text = datetime.fromtimestamp(moment, zone).isoformat(
        timespec=rng.choice(["seconds", "milliseconds"])
    )
    return text.replace("+00:00", "Z")


def _kept_safe(age: float) -> float:
    """`age`, or if it lies between two safe ranges (an event derived from a safe one, like a
    reopen some minutes after a resolution, which landed 8 s past the 1h window's edge), the
    oldest age of the younger range: no older than `age`, so a later event stays later."""
    for (_, younger_high), (older_low, _) in pairwise(SAFE_AGES):
        if younger_high < age < older_low:
            return younger_high
    return age


def _ages(rng: random.Random, count: int) -> list[float]:
    """`count` ages, mostly from one range (realistic durations), sometimes across ranges."""
    home = rng.choice(SAFE_AGES)
    ranges = [home if rng.random() < 0.8 else rng.choice(SAFE_AGES) for _ in range(count)]
    return sorted((rng.uniform(low, high) for low, high in ranges), reverse=True)


def scenario(seed: int, now: float, tickets: int = 150) -> list[Event]:
    """Distinct valid events (unique event_ids) for `tickets` tickets and their surveys."""
    rng = random.Random(seed)
    events: list[Event] = []
    serial = 0

    def add(topic: str, at: float, **fields: Any) -> None:
        nonlocal serial
        serial += 1
        events.append(
            (
                topic,
                {
                    "event_id": f"{seed}-{serial:06d}",
                    "occurred_at": timestamp(now - at, rng),
                    **fields,
                },
            )
        )

    for number in range(tickets):
        ticket = f"T{seed}-{number:05d}"
        replies = rng.randint(0, 4)
        ages = _ages(rng, 3 + replies)
        if rng.random() < 0.05:  # clock skew: a reply or resolution stamped before the opening
            rng.shuffle(ages)
        opened_age, resolved_age, *reply_ages = ages[0], ages[-1], *ages[1:-1]
        segment = {
            key: value
            for key, value in (
                ("team", rng.choice(TEAMS)),
                ("channel", rng.choice(CHANNELS)),
                ("priority", rng.choice(PRIORITIES)),
            )
            if rng.random() < 0.9  # sometimes left out: the defaults apply
        }
        if rng.random() < 0.95:
            add("ticket-opened", opened_age, ticket_id=ticket, **segment)
        if rng.random() < 0.05:  # a second opening: the earliest one's segment wins
            add(
                "ticket-opened",
                opened_age + rng.choice([-1, 1]) * rng.uniform(1, 30),
                ticket_id=ticket,
                team=rng.choice(TEAMS),
            )
        for age in reply_ages:
            author = rng.choices(["agent", "customer", "bot"], weights=[5, 3, 1])[0]
            extra = {"public": False} if rng.random() < 0.1 else {}
            add("ticket-replied", age, ticket_id=ticket, author=author, **extra)
        if rng.random() < 0.03:  # a reopen of a ticket not resolved yet changes nothing
            add("ticket-reopened", _kept_safe((opened_age + resolved_age) / 2), ticket_id=ticket)
        if rng.random() < 0.75:
            add("ticket-resolved", resolved_age, ticket_id=ticket)
            if rng.random() < 0.1:  # resolved again later: the first resolution counts
                add("ticket-resolved", _kept_safe(max(resolved_age - 600, 60.0)), ticket_id=ticket)
            age = resolved_age
            while rng.random() < 0.25:  # reopened, some more than once; most resolved again
                age = _kept_safe(max(age - rng.uniform(60, 3000), 60.0))
                add("ticket-reopened", age, ticket_id=ticket)
                if rng.random() < 0.1:  # two reopens in a row: the second changes nothing
                    add("ticket-reopened", age, ticket_id=ticket)
                if rng.random() < 0.3:
                    break  # still open
                age = _kept_safe(max(age - rng.uniform(60, 3000), 60.0))
                add("ticket-resolved", age, ticket_id=ticket)
            for survey, top in (("csat", 5), ("nps", 10), ("ces", 7)):
                if rng.random() < 0.4:
                    score = rng.randint(0 if survey == "nps" else 1, top)
                    answered = _kept_safe(max(resolved_age - rng.uniform(60, 1800), 61.0))
                    answers = [(answered, score)]
                    if rng.random() < 0.2:  # re-rated later: the later response replaces it
                        later = _kept_safe(max(answered - rng.uniform(60, 600), 60.5))
                        answers.append((later, rng.randint(1, top)))
                    for age, value in answers:
                        add(
                            "survey-answered",
                            age,
                            ticket_id=ticket,
                            survey=survey,
                            score=value,
                            **segment,
                        )
    for _ in range(tickets // 5):  # survey responses with no ticket
        add(
            "survey-answered",
            rng.uniform(*rng.choice(SAFE_AGES)),
            survey="nps",
            score=rng.randint(0, 10),
            channel=rng.choice(CHANNELS),
        )
    return events


def skewed(seed: int, now: float, tickets: int = 40) -> list[Event]:
    """Distinct valid events of tickets whose clocks disagree: every event of a ticket at a
    whole second drawn on its own within an hour, so replies, resolutions and reopens land
    before and after the opening in every arrangement (an earlier reply after a negative one,
    a second opening that ends the skew, a later resolution that ends a negative full
    resolution, a reopen before it, a reply at the very second of the opening). With
    `delivery`, this is traffic for the `anomaly` outcome."""
    rng = random.Random(seed)
    events: list[Event] = []
    for number in range(tickets):
        ticket = f"S{seed}-{number:05d}"
        lifecycle: list[tuple[str, dict[str, Any]]] = [
            ("ticket-opened", {"team": rng.choice(TEAMS), "priority": rng.choice(PRIORITIES)})
        ]
        if rng.random() < 0.2:
            lifecycle.append(("ticket-opened", {"team": rng.choice(TEAMS)}))
        for _ in range(rng.randint(0, 3)):
            author = rng.choices(["agent", "customer", "bot"], weights=[6, 2, 1])[0]
            private = {"public": False} if rng.random() < 0.1 else {}
            lifecycle.append(("ticket-replied", {"author": author, **private}))
        lifecycle += [("ticket-resolved", {})] * rng.randint(0, 3)
        lifecycle += [("ticket-reopened", {})] * rng.randint(0, 2)
        low, high = rng.choice(SAFE_AGES[:4])
        span = min(high - low, 3600.0)
        start = now - rng.uniform(low + span, high)
        moments: list[float] = []
        for topic, fields in lifecycle:
            if moments and rng.random() < 0.1:  # at the second of an earlier event
                moment = rng.choice(moments)
            else:
                moment = float(int(start + rng.uniform(0, span)))
            moments.append(moment)
            event_id = f"S{seed}-{number:05d}-{len(moments)}"
            events.append(
                (
                    topic,
                    {
                        "event_id": event_id,
                        "ticket_id": ticket,
                        "occurred_at": timestamp(moment, rng),
                        **fields,
                    },
                )
            )
    return events


def delivery(events: list[Event], seed: int, duplicates: float = 0.15) -> list[Event]:
    """The order a broker might hand them over: shuffled across topics, with duplicates."""
    rng = random.Random(seed)
    delivered = events + [event for event in events if rng.random() < duplicates]
    rng.shuffle(delivered)
    return delivered


def rounds(delivered: list[Event]) -> list[list[Event]]:
    """`delivered` in rounds: round k holds the k-th record of every ticket and survey slot,
    in delivery order. A worker reads its topics in no set order, so a test that needs to know
    in which order each ticket's records arrive (for their outcomes) sends a round only once
    the previous one is processed; the rounds one after another are then that order."""
    seen: dict[tuple[str, ...], int] = {}
    found: list[list[Event]] = []
    for topic, fields in delivered:
        number = seen[owner(topic, fields)] = seen.get(owner(topic, fields), -1) + 1
        if number == len(found):
            found.append([])
        found[number].append((topic, fields))
    return found


def opening_hours(now: float) -> tuple[str, OpeningHours]:
    """The same opening hours as a CX_BUSINESS_HOURS file and for the oracle: Tokyo by default,
    billing in Kolkata with a night shift (zones without daylight saving: the oracle counts day
    by day; daylight saving is tested in test_business_hours against a minute-by-minute walk).
    """
    tokyo = [
        (datetime.fromtimestamp(now - days * 86400, UTC) + timedelta(hours=9)).date()
        for days in (3, 12)
    ]
    kolkata = (datetime.fromtimestamp(now - 5 * 86400, UTC) + timedelta(hours=5.5)).date()
    text = f"""
default:
  timezone: Asia/Tokyo
  hours: {{mon-fri: ["09:00-17:00"], sat: ["10:00-14:00"]}}
  holidays: ["{tokyo[0]}", "{tokyo[1]}"]
teams:
  billing:
    timezone: Asia/Kolkata
    hours:
      mon-fri: ["08:00-12:00", "13:00-18:00"]
      sun: ["22:00-24:00"]
      mon: ["00:00-06:00"]
    holidays: ["{kolkata}"]
"""
    weekdays = {day: [(540, 1020)] for day in range(5)}
    billing = {day: [(480, 720), (780, 1080)] for day in range(5)}
    billing[0] = [(0, 360), *billing[0]]
    billing[6] = [(1320, 1440)]
    oracle = OpeningHours(
        default=(9.0, {**weekdays, 5: [(600, 840)]}, {str(day) for day in tokyo}),
        teams={"billing": (5.5, billing, {str(kolkata)})},
    )
    return text, oracle
