"""Realistic helpdesk traffic: tickets that open, get answered and resolved, and surveys; and
(with accounts) the B2B customers who raise them, with their subscriptions.

Arrivals follow a business-hour rhythm (busy weekdays 9-17 UTC, quiet nights and weekends);
first response and resolution times are log-normal per priority, some teams are slower than
others, and survey scores follow how fast the ticket was handled. A few events are sent twice,
as at-least-once webhooks do. Event times are never in the future: the simulator schedules each
ticket's later events and sends them when the clock reaches them (after a backfill of history).

Accounts join on one of four plans with a trial that converts or lapses, then month by month
upgrade, downgrade, add seats, pause, cancel at the end of a period, and some come back. Their
tickets carry their account_id; a share of them support fails (the first response and the
resolution far past their SLA, an unsatisfied CSAT), and an account failed in the last
FAILURE_MEMORY churns FAILED_CHURN times as often: the effect cx-stream's churn by driver is
there to show.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer

from .tickets import DEFAULT_SLA

TEAMS = {"billing": 1.0, "technical": 1.6, "onboarding": 0.8, "accounts": 1.1, "shipping": 1.3}
"""Team -> how much slower than usual it answers and resolves."""
TEAM_ZONES = {
    "billing": ZoneInfo("America/New_York"),
    "technical": ZoneInfo("Asia/Kolkata"),
    "onboarding": ZoneInfo("Europe/Berlin"),
    "accounts": ZoneInfo("Europe/London"),
    "shipping": ZoneInfo("Asia/Tokyo"),
}
"""Where each team works: its customers write in its business hours."""
TEAMS_SHARE = dict.fromkeys(TEAMS, 1.0)
"""Team -> its share of the tickets."""
REOPENED = 0.06
"""Share of resolved tickets reopened (and of those, reopened again)."""
CHANNELS = {"email": 0.45, "chat": 0.3, "phone": 0.15, "web": 0.07, "social": 0.03}
PRIORITIES = {"low": 0.25, "normal": 0.5, "high": 0.18, "urgent": 0.07}
MEDIAN_FIRST_RESPONSE = {"urgent": 300.0, "high": 900.0, "normal": 2700.0, "low": 3 * 3600.0}
MEDIAN_RESOLUTION = {"urgent": 3600.0, "high": 3 * 3600.0, "normal": 8 * 3600.0, "low": 86400.0}
EVENTS_PER_TICKET = 5.2
"""About how many events one ticket brings (opening, replies, resolution, surveys)."""

DAY = 86400.0
PLANS = {"starter": 29.0, "team": 99.0, "business": 249.0, "enterprise": 1200.0}
"""Plan -> monthly price, in the order of an upgrade."""
PLAN_SHARE = {"starter": 0.35, "team": 0.35, "business": 0.22, "enterprise": 0.08}
SEAT_PRICE = 19.0
"""An add-on subscription: extra seats at this price each."""
ACCOUNT_HISTORY = 455 * DAY
"""How far back the accounts' history goes: the largest account window (365d) and the support
experience's lookback before it (90d), so that every cohort has its drivers."""
MONTH = 30 * DAY
TRIAL = 14 * DAY
CONVERTS = 0.7
"""Share of trials that become paying accounts (the others lapse)."""
MONTHLY_CHURN = 0.03
FAILED_CHURN = 3.0
"""How many times as often an account churns when support failed it in the last
FAILURE_MEMORY."""
FAILURE_MEMORY = 180 * DAY
"""How long customers remember a failure: longer than cx-stream's 90-day lookback, so that an
account exposed at the start of a window is still at risk when it decides within it."""
FAILED = 0.2
"""Share of an account's tickets that support fails."""
ACCOUNT_TICKETS = 0.6
"""Tickets an account raises in a month of its history."""

Record = tuple[str, bytes, bytes]  # (topic without prefix, key, value)


def business_hours_factor(moment: float) -> float:
    """Relative ticket arrival rate at `moment` over all teams: 1.0 if all were at their peak."""
    total = sum(TEAMS_SHARE.values())
    return (
        sum(share * _local_factor(moment, TEAM_ZONES[team]) for team, share in TEAMS_SHARE.items())
        / total
    )


def _local_factor(moment: float, zone: ZoneInfo) -> float:
    """Relative arrival rate of a team in `zone` at `moment`: 1.0 at a weekday's peak."""
    when = datetime.fromtimestamp(moment, zone)
    hour = when.hour + when.minute / 60
    daytime = 0.15 + 0.85 * math.exp(-(((hour - 13.0) / 4.0) ** 2))
    return daytime * (0.35 if when.weekday() >= 5 else 1.0)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count (Knuth's method: the means here are small)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _timestamp(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(order=True)
class _Scheduled:
    at: float
    serial: int
    topic: str = field(compare=False)
    fields: dict[str, Any] = field(compare=False)


class Traffic:
    """Generates tickets for about `events_per_second` at peak hours; yields events when due."""

    def __init__(
        self,
        events_per_second: float,
        seed: int | None = None,
        duplicates: float = 0.01,
        accounts: int = 0,
    ) -> None:
        self.rng = random.Random(seed)
        self.tickets_per_second = events_per_second / EVENTS_PER_TICKET
        self.duplicates = duplicates
        self.account_count = accounts
        """Accounts the backfill gives a history; the tickets after it belong to them."""
        self.accounts: list[str] = []
        self._queue: list[_Scheduled] = []
        self._serial = itertools.count()
        self._tickets = itertools.count(1)
        self._next_arrival: float | None = None

    def _schedule(self, at: float, topic: str, **fields: Any) -> None:
        serial = next(self._serial)
        event = {
            "event_id": f"evt-{serial:09d}-{self.rng.getrandbits(32):08x}",
            "occurred_at": _timestamp(at),
            **fields,
        }
        heapq.heappush(self._queue, _Scheduled(at, serial, topic, event))

    def _open_ticket(
        self, opened_at: float, team: str, account: str | None = None, failed: bool = False
    ) -> None:
        """A ticket and its later events; `failed`: support fails it (a first response past
        its SLA, an unsatisfied CSAT)."""
        rng = self.rng
        ticket_id = f"TCK-{next(self._tickets):07d}"
        channel, priority = _pick(rng, CHANNELS), _pick(rng, PRIORITIES)
        segment = {"team": team, "channel": channel, "priority": priority}
        if account is None and self.accounts and rng.random() < 0.9:
            account = rng.choice(self.accounts)
        customer = {} if account is None else {"account_id": account}
        self._schedule(opened_at, "ticket-opened", ticket_id=ticket_id, **segment, **customer)
        slowness = TEAMS[team]
        if channel in {"chat", "web"} and rng.random() < 0.5:  # an instant bot acknowledgement
            self._schedule(
                opened_at + rng.uniform(1, 5), "ticket-replied", ticket_id=ticket_id, author="bot"
            )
        first_response = rng.lognormvariate(
            math.log(MEDIAN_FIRST_RESPONSE[priority] * slowness), 0.9
        )
        if failed:  # far past both SLA targets
            first_response = DEFAULT_SLA.first_response[priority] * rng.uniform(1.5, 3.0)
        resolution = max(
            first_response + rng.uniform(60, 600),
            rng.lognormvariate(math.log(MEDIAN_RESOLUTION[priority] * slowness), 0.8),
        )
        if failed:
            resolution = max(resolution, DEFAULT_SLA.resolution[priority] * rng.uniform(1.5, 3.0))
        replies = 1 if rng.random() < 0.4 else rng.randint(2, 5)  # 40% solved with one touch
        for number in range(replies):
            at = opened_at + first_response + number * (resolution - first_response) / replies
            self._schedule(
                at,
                "ticket-replied",
                ticket_id=ticket_id,
                author="agent",
                public=number == 0 or rng.random() < 0.85,
            )
            if number < replies - 1:
                self._schedule(
                    at + rng.uniform(120, 3600),
                    "ticket-replied",
                    ticket_id=ticket_id,
                    author="customer",
                )
        if rng.random() < 0.1 and not failed:
            return  # still open when the simulation ends, or abandoned
        resolved_at = opened_at + resolution
        self._schedule(resolved_at, "ticket-resolved", ticket_id=ticket_id)
        reopened_at = resolved_at
        while rng.random() < REOPENED:  # "that did not fix it": reopened, then resolved again
            reopened_at += rng.lognormvariate(math.log(86400), 1.0)
            self._schedule(reopened_at, "ticket-reopened", ticket_id=ticket_id)
            reopened_at += rng.lognormvariate(math.log(MEDIAN_RESOLUTION[priority]), 0.8)
            self._schedule(reopened_at, "ticket-resolved", ticket_id=ticket_id)
        if failed:
            self._schedule(
                resolved_at + rng.lognormvariate(math.log(1800), 1.0),
                "survey-answered",
                ticket_id=ticket_id,
                survey="csat",
                score=rng.randint(1, 2),
                **segment,
                **customer,
            )
        elif rng.random() < 0.35:
            # fast, one-touch tickets make happier customers
            mood = (
                1.0
                - min(resolution / (MEDIAN_RESOLUTION[priority] * 3), 1.0)
                + (0.2 if replies == 1 else 0)
            )
            survey = _pick(rng, {"csat": 0.5, "nps": 0.3, "ces": 0.2})
            top, bottom = {"csat": (5, 1), "nps": (10, 0), "ces": (7, 1)}[survey]
            centre = bottom + (top - bottom) * min(max(0.35 + 0.6 * mood + rng.gauss(0, 0.2), 0), 1)
            score = min(max(round(centre), bottom), top)
            self._schedule(
                resolved_at + rng.lognormvariate(math.log(1800), 1.0),  # most answer within hours
                "survey-answered",
                ticket_id=ticket_id,
                survey=survey,
                score=score,
                **segment,
                **customer,
            )

    def _subscription(
        self, at: float, account: str, subscription: str, status: str, mrr: float, plan: str
    ) -> None:
        self._schedule(
            at,
            "subscription-updated",
            account_id=account,
            subscription_id=subscription,
            status=status,
            mrr=mrr,
            plan=plan,
        )

    def _account_history(self, start: float, now: float) -> None:
        """Each account's subscriptions and the tickets it raises, month by month from a join
        between `start` and a week before `now`."""
        rng = self.rng
        for number in range(self.account_count):
            account = f"ACC-{number:05d}"
            self.accounts.append(account)
            plan = _pick(rng, PLAN_SHARE)
            main, seats = f"{account}-main", f"{account}-seats"
            at = rng.uniform(start, now - 7 * DAY)
            self._subscription(at, account, main, "trialing", PLANS[plan], plan)
            at += TRIAL
            if rng.random() > CONVERTS:
                self._subscription(at, account, main, "canceled", PLANS[plan], plan)
                continue
            self._subscription(at, account, main, "active", PLANS[plan], plan)
            failures: list[float] = []
            paying, extra_seats = True, 0
            while at < now:
                for _ in range(_poisson(rng, ACCOUNT_TICKETS if paying else 0.2)):
                    opened = rng.uniform(at, min(at + MONTH, now))
                    failed = rng.random() < FAILED
                    self._open_ticket(opened, _pick(rng, TEAMS_SHARE), account, failed)
                    if failed:
                        failures.append(opened)
                at += MONTH  # the end of a paid period
                if at >= now:
                    break
                if not paying:
                    if rng.random() < 0.08:  # back
                        self._subscription(at, account, main, "active", PLANS[plan], plan)
                        paying = True
                    continue
                failed_lately = any(at - FAILURE_MEMORY < moment <= at for moment in failures)
                churn = MONTHLY_CHURN * (FAILED_CHURN if failed_lately else 1.0)
                change = rng.random()
                if change < churn:  # cancelled, at the end of the period
                    self._subscription(at, account, main, "canceled", PLANS[plan], plan)
                    if extra_seats:
                        self._subscription(at, account, seats, "canceled", 0, "seats")
                        extra_seats = 0
                    paying = False
                elif change < churn + 0.05 and plan != "enterprise":  # upgrade
                    plan = list(PLANS)[list(PLANS).index(plan) + 1]
                    self._subscription(at, account, main, "active", PLANS[plan], plan)
                elif change < churn + 0.08 and plan != "starter":  # downgrade
                    plan = list(PLANS)[list(PLANS).index(plan) - 1]
                    self._subscription(at, account, main, "active", PLANS[plan], plan)
                elif change < churn + 0.12:  # more seats
                    extra_seats += rng.randint(1, 5)
                    mrr = extra_seats * SEAT_PRICE
                    self._subscription(at, account, seats, "active", mrr, "seats")
                elif change < churn + 0.13:  # a pause of a month
                    self._subscription(at, account, main, "paused", PLANS[plan], plan)
                    self._subscription(at + MONTH, account, main, "active", PLANS[plan], plan)

    def _arrivals_until(self, until: float, tickets_per_second: float | None = None) -> None:
        """Open the tickets that arrive up to `until`: a Poisson process thinned by the hour."""
        rate = tickets_per_second or self.tickets_per_second
        draw_gap = self.rng.expovariate
        if self._next_arrival is None:
            self._next_arrival = until + draw_gap(rate)
        while self._next_arrival <= until:
            team = _pick(self.rng, TEAMS_SHARE)
            if self.rng.random() < _local_factor(self._next_arrival, TEAM_ZONES[team]):
                self._open_ticket(self._next_arrival, team)
            self._next_arrival += draw_gap(rate)

    def backfill(self, start: float, now: float, events_per_second: float | None = None) -> None:
        """Schedule the history between `start` and `now`, at its own rate if given (a long
        history at the live rate would be more than a demo wants to wait for)."""
        if self.account_count:
            self._account_history(now - ACCOUNT_HISTORY, now)
        self._next_arrival = start
        history_rate = None if events_per_second is None else events_per_second / EVENTS_PER_TICKET
        self._arrivals_until(now, history_rate)

    def due(self, now: float) -> Iterator[Record]:
        """Every scheduled event with an event time up to `now`, in time order."""
        self._arrivals_until(now)
        while self._queue and self._queue[0].at <= now:
            item = heapq.heappop(self._queue)
            fields = item.fields
            # keyed as producers key them: by ticket, an account's subscriptions by account
            key = fields.get("ticket_id", fields.get("account_id", fields["event_id"]))
            record = (item.topic, key.encode(), orjson.dumps(fields))
            yield record
            if self.rng.random() < self.duplicates:
                yield record


async def run_simulation(
    kafka: Mapping[str, Any],
    events_per_second: float,
    backfill_seconds: float,
    topic_prefix: str = "",
    duration: float | None = None,
    seed: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    history_events_per_second: float | None = None,
    accounts: int = 0,
) -> int:
    """Send traffic until `duration` seconds passed (None: until cancelled); returns the count.

    `kafka`: the producer's connection keyword arguments (servers, security).
    The backfilled history has `history_events_per_second` at peak (default: the live rate);
    with `accounts`, it also has their subscriptions and tickets over ACCOUNT_HISTORY.
    """
    producer = AIOKafkaProducer(**kafka, linger_ms=20)
    await producer.start()
    # the clock starts once connected: a slow TLS and SASL login must not eat the duration
    # accounts come with a history: without one there is nothing to give them
    traffic = Traffic(events_per_second, seed, accounts=accounts if backfill_seconds else 0)
    started = time.time()
    traffic.backfill(started - backfill_seconds, started, history_events_per_second)
    sent = 0
    try:
        # the history goes out whatever the duration: scheduling a long one may take longer
        while True:
            for topic, key, value in traffic.due(time.time()):
                await producer.send(topic_prefix + topic, key=key, value=value)
                sent += 1
                if sent % 1000 == 0:
                    await asyncio.sleep(0)  # let the progress display breathe during a backfill
            if on_progress:
                on_progress(sent)
            if duration is not None and time.time() - started >= duration:
                break
            await asyncio.sleep(0.2)
        await producer.flush()
    finally:
        await producer.stop()  # sends what is queued, also when cancelled (Ctrl-C, SIGTERM)
        if on_progress:
            on_progress(sent)  # every record counted is then in Kafka
    return sent
