"""The revenue and retention numbers of docs/contract.md 7.3, computed straight from the
definitions over the raw subscription events: the independent oracle the account tests compare
the processor with. Slow and plain on purpose: no timelines, no running sums; every MRR is
worked out from the events each time it is needed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

SubscriptionFields = dict[str, Any]
"""A subscription-updated event as sent, with occurred_at as POSIX seconds (`at`)."""

MOVEMENTS = ("new", "reactivation", "expansion", "contraction", "churn")
COUNTED = ("new", "reactivation", "churn")


def millionths(mrr: float | int) -> int:
    """The contract's rule: mrr x 10^6, rounded half to even, from the number as written."""
    return int((Decimal(str(mrr)) * 10**6).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def distinct(events: Iterable[SubscriptionFields]) -> dict[str, list[SubscriptionFields]]:
    """Each account's distinct events (a re-sent event_id of the account counts once)."""
    accounts: dict[str, dict[str, SubscriptionFields]] = {}
    for event in events:
        accounts.setdefault(event["account_id"], {}).setdefault(event["event_id"], event)
    return {account: list(by_id.values()) for account, by_id in accounts.items()}


def mrr_at(events: list[SubscriptionFields], moment: float, strictly_before: bool = False) -> int:
    """The account's MRR at `moment` (or just before it): per subscription, the event with the
    latest occurred_at up to then, ties to the greater event_id; active ones count."""
    latest: dict[str, SubscriptionFields] = {}
    for event in events:
        if event["at"] > moment or (strictly_before and event["at"] == moment):
            continue
        held = latest.get(event["subscription_id"])
        if held is None or (event["at"], event["event_id"]) > (held["at"], held["event_id"]):
            latest[event["subscription_id"]] = event
    return sum(millionths(e["mrr"]) for e in latest.values() if e["status"] == "active")


def movements(events: list[SubscriptionFields]) -> list[tuple[float, str, int]]:
    """(t, kind, amount) of every movement of one account."""
    found = []
    instants = sorted({event["at"] for event in events})
    for index, moment in enumerate(instants):
        before = mrr_at(events, moment, strictly_before=True)
        after = mrr_at(events, moment)
        paid_before = any(mrr_at(events, earlier) > 0 for earlier in instants[:index])
        if before == after:
            continue
        if before == 0:
            found.append((moment, "reactivation" if paid_before else "new", after))
        elif after == 0:
            found.append((moment, "churn", before))
        elif after > before:
            found.append((moment, "expansion", after - before))
        else:
            found.append((moment, "contraction", before - after))
    return found


def ratio(part: float, whole: float) -> float | None:
    return None if whole == 0 else part / whole


def expected_accounts(
    events: Iterable[SubscriptionFields],
    as_of: float,
    windows: Mapping[str, float],
    gross_margin: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Every number of 7.3 per account window at `as_of`, as a cx-metrics account snapshot
    holds them (amounts in currency units, absent ratios None)."""
    accounts = distinct(events)
    now = {account: mrr_at(evs, as_of) for account, evs in accounts.items()}
    total = sum(now.values())
    paying = sum(1 for amount in now.values() if amount > 0)
    arpa = ratio(total, paying)
    result = {}
    for name, seconds in windows.items():
        start = as_of - seconds
        then = {account: mrr_at(evs, start) for account, evs in accounts.items()}
        cohort = [account for account, amount in then.items() if amount > 0]
        cohort_mrr = sum(then[a] for a in cohort)
        retained = sum(1 for a in cohort if now[a] > 0)
        moved = {kind: 0 for kind in MOVEMENTS}
        counted = {kind: 0 for kind in COUNTED}
        for evs in accounts.values():
            for moment, kind, amount in movements(evs):
                if start < moment <= as_of:
                    moved[kind] += amount
                    if kind in counted:
                        counted[kind] += 1
        retention = ratio(retained, len(cohort))
        churn = None if retention is None else 1 - retention
        clv = None
        if arpa is not None and churn is not None:
            monthly = 1 - (1 - churn) ** (30 * 86400 / seconds)
            clv = None if monthly == 0 else arpa / 10**6 * gross_margin / monthly
        result[name] = {
            "mrr": total / 10**6,
            "accounts_paying": paying,
            "arpa": None if arpa is None else arpa / 10**6,
            "mrr_movements": {kind: amount / 10**6 for kind, amount in moved.items()},
            "account_movements": counted,
            "cohort_accounts": len(cohort),
            "cohort_mrr": cohort_mrr / 10**6,
            "account_churn_ratio": churn,
            "customer_retention_ratio": retention,
            "gross_revenue_retention_ratio": ratio(
                sum(min(now[a], then[a]) for a in cohort), cohort_mrr
            ),
            "net_revenue_retention_ratio": ratio(sum(now[a] for a in cohort), cohort_mrr),
            "customer_lifetime_value": clv,
        }
    return result


def assert_same(got: Mapping[str, Any], want: Mapping[str, Any], where: str) -> None:
    """Equal numbers: counts and amounts exactly (amounts are sums of millionths), ratios and
    values derived from them to 1e-9 relative."""
    assert set(got) >= set(want), f"{where}: missing {set(want) - set(got)}"
    for name, value in want.items():
        mine = got[name]
        if isinstance(value, dict):
            assert_same(mine, value, f"{where}.{name}")
        elif value is None or mine is None:
            assert mine is value, f"{where}.{name}: {mine} != {value}"
        else:
            assert abs(mine - value) <= 1e-9 * max(1.0, abs(value)), (
                f"{where}.{name}: {mine} != {value}"
            )
