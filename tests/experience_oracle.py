"""Each account's support experience, drivers and health (docs/contract.md 7.4), and churn by
driver and by band, computed straight from the definitions over the raw ticket, survey and
subscription events: the oracle the experience tests compare the processor with. It takes the
section-3 observations from tests/oracle.py's own derivation (per account instead of per
segment) and the MRR from tests/account_oracle.py; it imports nothing of the processor."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from tests.account_oracle import SubscriptionFields, distinct, mrr_at
from tests.oracle import Contribution, Event, OpeningHours, contributions

DRIVERS = ("sla_breached", "reopened", "csat_unsatisfied", "nps_detractor", "high_effort")
BANDS = ("red", "yellow", "green", "unknown")
Z = 1.96


def observations(
    events: list[Event], hours: OpeningHours | None = None, sla_clock: str = "calendar"
) -> dict[str, list[Contribution]]:
    """Per account: what its tickets (by their earliest opening's account_id) and survey
    responses (by their own) contribute, each at its time."""
    found, _ = contributions(
        events, hours, sla_clock, owner_of=lambda fields: fields.get("account_id")
    )
    accounts: dict[str, list[Contribution]] = {}
    for account, contribution in found:
        if account is not None:
            accounts.setdefault(account, []).append(contribution)
    return accounts


def experience(
    contributions_: Iterable[Contribution], u: float, lookback: float, weights: Mapping[str, float]
) -> dict[str, Any]:
    """Drivers, factors, score and band of an account at u, over (u - lookback, u]."""
    inside = [c for c in contributions_ if u - lookback < c.at <= u]

    def named(name: str) -> list[Contribution]:
        return [c for c in inside if c.name == name]

    breaches = named("first_response_sla_breaches") + named("resolution_sla_breaches")
    csat = [c.value for c in named("csat")]
    ces = [c.value for c in named("ces")]
    nps = max(named("nps"), key=lambda c: (c.at, c.event_id), default=None)
    resolved = named("tickets_resolved")
    reopened = [c for c in named("reopened_tickets") if c.value <= u]
    drivers = {
        "sla_breached": bool(breaches),
        "reopened": bool(named("ticket_reopens")),
        "csat_unsatisfied": any(score <= 3 for score in csat),
        "nps_detractor": nps is not None and nps.value <= 6,
        "high_effort": any(score <= 4 for score in ces),
    }
    factors: dict[str, Fraction] = {}
    if csat:
        factors["csat"] = Fraction(100 * sum(1 for s in csat if s >= 4), len(csat))
    if nps is not None:
        factors["nps"] = Fraction(100 if nps.value >= 9 else 50 if nps.value >= 7 else 0)
    if ces:
        factors["ces"] = Fraction(100 * sum(1 for s in ces if s >= 5), len(ces))
    for factor, counted, breached in (
        ("first_response_sla", "first_response", "first_response_sla_breaches"),
        ("resolution_sla", "resolution", "resolution_sla_breaches"),
    ):
        if named(counted):
            factors[factor] = 100 * (1 - Fraction(len(named(breached)), len(named(counted))))
    if resolved:
        factors["reopens"] = 100 * (1 - Fraction(len(reopened), len(resolved)))
    present = {name: Fraction(weights.get(name, 1)) for name in factors}
    total = sum(present.values())
    score = None
    if total:
        mean = sum(present[name] * value for name, value in factors.items()) / total
        exact = Decimal(mean.numerator) / Decimal(mean.denominator)
        score = float(exact.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))
    band = (
        "unknown" if score is None else "red" if score < 50 else "yellow" if score < 75 else "green"
    )
    return {
        "drivers": drivers,
        "factors": {name: float(value) for name, value in factors.items()},
        "score": score,
        "band": band,
    }


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = successes / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def churn_group(churned: int, cohort: int) -> dict[str, float | None]:
    interval = wilson(churned, cohort)
    return {
        "ratio": None if cohort == 0 else churned / cohort,
        "lower": None if interval is None else interval[0],
        "upper": None if interval is None else interval[1],
    }


def expected_experience(
    events: list[Event],
    subscriptions: Iterable[SubscriptionFields],
    as_of: float,
    windows: Mapping[str, float],
    lookback: float,
    weights: Mapping[str, float],
    hours: OpeningHours | None = None,
    sla_clock: str = "calendar",
) -> dict[str, Any]:
    """The 7.4 numbers at `as_of`: per window the cohort by driver and by band at s with their
    churn, the difference per driver with its Newcombe interval; the paying accounts and their
    MRR by band now; and each subscribed account's cx-account-health values."""
    observed = observations(events, hours, sla_clock)
    accounts = distinct(subscriptions)
    now = {account: mrr_at(evs, as_of) for account, evs in accounts.items()}
    result: dict[str, Any] = {"windows": {}, "health": {}, "by_band": {}}
    current = {
        account: experience(observed.get(account, []), as_of, lookback, weights)
        for account in accounts
    }
    for band in BANDS:
        members = [a for a in accounts if now[a] > 0 and current[a]["band"] == band]
        result["by_band"][band] = (len(members), sum(now[a] for a in members) / 10**6)
    for account in accounts:
        values = {"account_id": account, **current[account]}
        values["mrr"] = now[account] / 10**6
        values["paying"] = now[account] > 0
        if values["score"] is None:
            del values["score"]
        result["health"][account] = values
    for name, seconds in windows.items():
        start = as_of - seconds
        cohort = [a for a, evs in accounts.items() if mrr_at(evs, start) > 0]
        then = {a: experience(observed.get(a, []), start, lookback, weights) for a in cohort}
        churned = {a for a in cohort if now[a] == 0}
        by_driver: dict[str, Any] = {}
        for driver in DRIVERS:
            groups = {}
            for exposed in (True, False):
                members = [a for a in cohort if then[a]["drivers"][driver] == exposed]
                lost = sum(1 for a in members if a in churned)
                groups[exposed] = (lost, len(members), churn_group(lost, len(members)))
            (x1, n1, g1), (x2, n2, g2) = groups[True], groups[False]
            difference = None
            if n1 and n2:
                p1, p2 = x1 / n1, x2 / n2
                assert g1["lower"] is not None and g2["lower"] is not None
                assert g1["upper"] is not None and g2["upper"] is not None
                d = p1 - p2
                difference = (
                    d,
                    d - math.sqrt((p1 - g1["lower"]) ** 2 + (g2["upper"] - p2) ** 2),
                    d + math.sqrt((g1["upper"] - p1) ** 2 + (p2 - g2["lower"]) ** 2),
                )
            by_driver[driver] = {"true": g1, "false": g2, "cohort": (n1, n2), "diff": difference}
        by_band = {}
        for band in BANDS:
            members = [a for a in cohort if then[a]["band"] == band]
            lost = sum(1 for a in members if a in churned)
            by_band[band] = {"cohort": len(members), **churn_group(lost, len(members))}
        result["windows"][name] = {"drivers": by_driver, "bands": by_band}
    return result


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(metric, labels) -> value, as /metrics has them; an absent ratio is not in."""


def experience_series(want: dict[str, Any]) -> Series:
    """The 7.4 numbers of expected_experience as the /metrics series of 7.5."""
    found: Series = {}

    def put(name: str, value: float | None, **labels: str) -> None:
        if value is not None:
            found[(name, frozenset(labels.items()))] = float(value)

    for band in BANDS:
        accounts, mrr = want["by_band"][band]
        put("cx_accounts_by_health", accounts, band=band)
        put("cx_mrr_by_health", mrr, band=band)
    bounds = (("ratio", ""), ("lower", "_lower"), ("upper", "_upper"))
    for window, numbers in want["windows"].items():
        for driver in DRIVERS:
            group = numbers["drivers"][driver]
            for exposed, size in zip(("true", "false"), group["cohort"], strict=True):
                labels = {"window": window, "driver": driver, "exposed": exposed}
                put("cx_cohort_accounts_by_driver", size, **labels)
                for bound, suffix in bounds:
                    put(
                        f"cx_account_churn_ratio_by_driver{suffix}", group[exposed][bound], **labels
                    )
            difference = group["diff"] or (None, None, None)
            for value, (_, suffix) in zip(difference, bounds, strict=True):
                put(
                    f"cx_account_churn_ratio_difference{suffix}",
                    value,
                    window=window,
                    driver=driver,
                )
        for band in BANDS:
            of_band = numbers["bands"][band]
            put("cx_cohort_accounts_by_health", of_band["cohort"], window=window, band=band)
            for bound, suffix in bounds:
                put(
                    f"cx_account_churn_ratio_by_health{suffix}",
                    of_band[bound],
                    window=window,
                    band=band,
                )
    return found
