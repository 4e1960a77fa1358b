"""Accounts, MRR movements and revenue retention (docs/contract.md 7.1-7.3) through the pure core,
against the oracle in tests/account_oracle.py: any order of arrival, re-sent and duplicated
events, several subscriptions changing at one instant, ties broken by event_id, churn and
reactivation, cohort edge cases. No Kafka here (tests/test_accounts_pipeline.py runs workers)."""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream._core import AccountBook, AccountRules
from stream.accounts import AccountState, SubscriptionEvent, evaluation
from stream.events import InvalidEvent, SubscriptionUpdated, decode
from stream.experience import parse_weights
from stream.pipeline import STATE_TABLES, Pipeline, TableName
from stream.revenue import revenue_values
from stream.windows import parse_windows
from tests.account_oracle import SubscriptionFields, assert_same, expected_accounts
from tests.helpers import PARTITIONS, evaluate_accounts, new_pipeline, process, states_of

NOW = 1_800_000_000.0
DAY = 86400.0
WINDOWS = parse_windows("30d,90d,365d")
WINDOW_SECONDS = {spec.name: spec.seconds for spec in WINDOWS}
STATUSES = ("active", "trialing", "paused", "canceled")
LOOKBACK = 90 * DAY


def rfc3339(moment: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        + f".{round(moment % 1 * 1000):03d}Z"
    )


def send(pipeline: Pipeline, events: list[SubscriptionFields], batch: int = 7) -> list[str]:
    """Feed events (with `at`) to the pipeline as subscription-updated records, in batches."""
    outcomes: list[str] = []
    for start in range(0, len(events), batch):
        records = []
        for fields in events[start : start + batch]:
            record = {k: v for k, v in fields.items() if k != "at"} | {
                "occurred_at": rfc3339(fields["at"])
            }
            partition = zlib.crc32(fields["account_id"].encode()) % PARTITIONS
            records.append(("subscription-updated", partition, orjson.dumps(record), NOW + 600))
        outcomes += process(pipeline, records)
        assert pipeline.settle(NOW) == []
    return outcomes


def evaluated(pipeline: Pipeline, as_of: float) -> dict[str, dict[str, Any]]:
    """What the merging worker would publish: every partition's totals at `as_of`, added up."""
    totals, _ = evaluate_accounts(pipeline.accounts, as_of, WINDOWS, LOOKBACK, parse_weights(""))
    return revenue_values(totals, WINDOWS, 1.0)


@st.composite
def subscription_histories(draw: st.DrawFn) -> list[SubscriptionFields]:
    """A few accounts with one to three subscriptions each, changing over 400 days on a coarse
    grid (so that instants, and so ties between subscriptions and events, are common)."""
    events = []
    serial = 0
    for account in range(draw(st.integers(1, 8))):
        for subscription in range(draw(st.integers(1, 3))):
            for _ in range(draw(st.integers(1, 6))):
                serial += 1
                at = NOW - draw(st.integers(0, 40)) * 10 * DAY  # a grid of 10 days
                events.append(
                    {
                        "event_id": draw(st.sampled_from(["a", "b", "c"])) + f"-{serial}",
                        "account_id": f"ACC-{account}",
                        "subscription_id": f"SUB-{account}-{subscription}",
                        "at": at,
                        "status": draw(st.sampled_from(STATUSES)),
                        "mrr": draw(st.sampled_from([0, 49, 99.5, 250, 1000.25, 0.000001])),
                    }
                )
    return events


@settings(max_examples=150, deadline=None)
@given(subscription_histories(), st.randoms(use_true_random=False), st.integers(0, 30))
def test_any_order_with_duplicates_gives_the_oracles_numbers(
    events: list[SubscriptionFields], rng: random.Random, later: int
) -> None:
    delivered = events + [event for event in events if rng.random() < 0.3]
    rng.shuffle(delivered)
    pipeline = new_pipeline()
    outcomes = send(pipeline, delivered, batch=rng.choice([1, 3, 50]))
    assert outcomes.count("duplicate") == len(delivered) - len(events)
    as_of = NOW - later * 5 * DAY  # also between the grid's instants, and before the last event
    got = evaluated(pipeline, as_of)
    want = expected_accounts(events, as_of, WINDOW_SECONDS)
    for name in WINDOW_SECONDS:
        assert_same(got[name], want[name], name)


def test_movements_of_one_account_by_hand() -> None:
    """Trial, conversion, a second subscription, a downgrade, a pause (churn: the only paying
    subscription), resumption (reactivation), cancellation, and two changes at one instant
    that cancel out (no movement)."""

    def day(n: int) -> float:
        return NOW - 300 * DAY + n * DAY

    events = [
        {"event_id": "e1", "subscription_id": "S1", "at": day(0), "status": "trialing", "mrr": 100},
        {"event_id": "e2", "subscription_id": "S1", "at": day(14), "status": "active", "mrr": 100},
        {"event_id": "e3", "subscription_id": "S2", "at": day(40), "status": "active", "mrr": 50},
        {"event_id": "e4", "subscription_id": "S1", "at": day(70), "status": "active", "mrr": 80},
        {"event_id": "e5", "subscription_id": "S2", "at": day(90), "status": "canceled", "mrr": 50},
        {"event_id": "e6", "subscription_id": "S1", "at": day(100), "status": "paused", "mrr": 80},
        {"event_id": "e7", "subscription_id": "S1", "at": day(130), "status": "active", "mrr": 80},
        # at day 150, S1 goes to 60 and S2 comes back at 20: 80 -> 80, no movement
        {"event_id": "e8", "subscription_id": "S1", "at": day(150), "status": "active", "mrr": 60},
        {"event_id": "e9", "subscription_id": "S2", "at": day(150), "status": "active", "mrr": 20},
        # a tie at one instant for S2: the greater event_id wins (canceled)
        {
            "event_id": "z1",
            "subscription_id": "S2",
            "at": day(200),
            "status": "canceled",
            "mrr": 20,
        },
        {"event_id": "y1", "subscription_id": "S2", "at": day(200), "status": "active", "mrr": 99},
    ]
    for event in events:
        event["account_id"] = "ACC"
    pipeline = new_pipeline()
    send(pipeline, events)
    got = evaluated(pipeline, NOW)["365d"]
    assert got["mrr_movements"] == {
        "new": 100.0,
        "reactivation": 80.0,
        "expansion": 50.0,
        "contraction": 20.0 + 50.0 + 20.0,  # 150 -> 130 -> 80 ... 80 -> 60
        "churn": 80.0,
    }
    assert got["account_movements"] == {"new": 1, "reactivation": 1, "churn": 1}
    assert got["mrr"] == 60.0 and got["accounts_paying"] == 1
    assert_same(got, expected_accounts(events, NOW, WINDOW_SECONDS)["365d"], "365d")


def test_cohort_edge_cases() -> None:
    """Joined and left within the window: not in the cohort. Left and came back within it:
    retained. Paying at s exactly (an event at s counts at s)."""
    start = NOW - 30 * DAY

    def account(name: str, *changes: tuple[float, str, float]) -> list[SubscriptionFields]:
        return [
            {
                "event_id": f"{name}-{n}",
                "account_id": name,
                "subscription_id": name,
                "at": at,
                "status": status,
                "mrr": mrr,
            }
            for n, (at, status, mrr) in enumerate(changes)
        ]

    events = [
        *account("joined-left", (start + DAY, "active", 10), (start + 2 * DAY, "canceled", 10)),
        *account(
            "left-back",
            (start - DAY, "active", 10),
            (start + DAY, "canceled", 10),
            (start + 5 * DAY, "active", 30),
        ),
        *account("at-s", (start, "active", 40)),
        *account("churned", (start - 50 * DAY, "active", 20), (start + 3 * DAY, "paused", 20)),
    ]
    pipeline = new_pipeline()
    send(pipeline, events)
    got = evaluated(pipeline, NOW)["30d"]
    assert got["cohort_accounts"] == 3  # left-back, at-s, churned
    assert got["cohort_mrr"] == 70.0
    assert got["account_churn_ratio"] == pytest.approx(1 / 3)
    assert got["net_revenue_retention_ratio"] == pytest.approx(70 / 70)  # 30 + 40 + 0
    assert got["gross_revenue_retention_ratio"] == pytest.approx(50 / 70)  # 10 + 40 + 0
    assert got["account_movements"] == {"new": 1, "reactivation": 1, "churn": 3}
    assert_same(got, expected_accounts(events, NOW, WINDOW_SECONDS)["30d"], "30d")


def test_ratios_are_absent_without_a_cohort_and_counts_are_zero() -> None:
    got = evaluated(new_pipeline(), NOW)
    for values in got.values():
        assert values["cohort_accounts"] == 0 and values["mrr"] == 0.0
        assert values["account_churn_ratio"] is None and values["customer_lifetime_value"] is None
        assert values["net_revenue_retention_ratio"] is None and values["arpa"] is None
        assert values["account_movements"] == {"new": 0, "reactivation": 0, "churn": 0}


@pytest.mark.parametrize(
    ("mrr", "expected"),
    [
        (b"99.5", 99_500_000),
        (b"0.0000005", 0),
        (b"0.0000015", 2),
        (b"0.0000025", 2),
        (b"999999999.999999", 999999999999999),
        (b"12", 12_000_000),
        (b"1.2e1", 12_000_000),
    ],
)
def test_amounts_are_integer_millionths_rounded_half_to_even(mrr: bytes, expected: int) -> None:
    value = (
        b'{"event_id": "e", "account_id": "A", "subscription_id": "S", "status": "active",'
        b' "occurred_at": "2026-01-01T00:00:00Z", "mrr": ' + mrr + b"}"
    )
    [event] = decode([("subscription-updated", value, NOW)])
    assert isinstance(event, SubscriptionUpdated) and event.contribution == expected


def test_a_currency_other_than_the_configured_one_is_invalid() -> None:
    fields = {
        "event_id": "e",
        "account_id": "A",
        "subscription_id": "S",
        "occurred_at": "2026-01-01T00:00:00Z",
        "status": "active",
        "mrr": 10,
    }
    [euro, dollar] = decode(
        [
            ("subscription-updated", orjson.dumps(fields | {"currency": "EUR"}), NOW),
            ("subscription-updated", orjson.dumps(fields | {"currency": "USD"}), NOW),
        ],
        "EUR",
    )
    assert isinstance(euro, SubscriptionUpdated) and euro.contribution == 10_000_000
    assert isinstance(dollar, InvalidEvent) and "currency USD is not CX_CURRENCY" in str(dollar)
    [negative] = decode([("subscription-updated", orjson.dumps(fields | {"mrr": -1}), NOW)])
    assert isinstance(negative, InvalidEvent) and "schema" in str(negative)


def test_events_at_one_instant_count_once_and_an_unchanged_mrr_is_no_movement() -> None:
    """Two subscriptions changing at one instant, and an event that leaves the MRR as it was:
    the account's MRR timeline keeps only its changes."""
    events = (
        SubscriptionEvent(1.0, "a", "S1", 5),
        SubscriptionEvent(1.0, "b", "S2", 0),
        SubscriptionEvent(2.0, "c", "S1", 5),
        SubscriptionEvent(3.0, "d", "S1", 0),
    )
    book = AccountBook()
    book.put(0, "A", orjson.dumps(AccountState(0, events).to_json()))
    totals, _ = evaluation(book.accounts(0), 2.5, AccountRules([10.0], LOOKBACK, {}))
    # paying 5 at 2.5, new in (-7.5, 2.5]: one new account, no other movement
    assert (totals.mrr, totals.paying, totals.windows[0][-3:]) == (5, 1, [1, 0, 0])
    assert totals.windows[0][5:10] == [5, 0, 0, 0, 0]
    totals, _ = evaluation(book.accounts(0), 3.5, AccountRules([10.0], LOOKBACK, {}))
    assert (totals.mrr, totals.paying, totals.windows[0][-3:]) == (0, 0, [1, 0, 1])


def test_forgetting_changes_no_number_and_a_return_after_it_counts_new() -> None:
    """An account not paying and silent for CX_ACCOUNT_RETENTION is forgotten (7.2): no number
    of any window within the retention moves; when it comes back, it is new, not reactivated."""
    retention = 400 * DAY  # more than the largest window (365d)
    old = NOW - 500 * DAY

    def event(account: str, n: int, at: float, status: str) -> SubscriptionFields:
        return {
            "event_id": f"{account}-{n}",
            "account_id": account,
            "subscription_id": account,
            "at": at,
            "status": status,
            "mrr": 50,
        }

    events = [
        event("gone", 0, old, "active"),
        event("gone", 1, old + DAY, "canceled"),
        event("paying", 0, old, "active"),  # paying: never forgotten, however old
        event("recent", 0, NOW - 100 * DAY, "active"),
        event("recent", 1, NOW - 90 * DAY, "canceled"),
    ]
    pipeline = new_pipeline()
    send(pipeline, events)
    before = evaluated(pipeline, NOW)
    states = states_of(pipeline)
    for partition in range(PARTITIONS):
        keys: list[tuple[TableName, str]] = [
            ("accounts", key) for key in states.tables.get(("accounts", partition), {})
        ]
        horizons = dict.fromkeys(STATE_TABLES, NOW - retention)
        pipeline.forget(partition, keys, horizons, NOW)
    kept = {
        key
        for (table, _), entries in states.tables.items()
        if table == "accounts"
        for key in entries
    }
    assert kept == {"paying", "recent"}
    assert evaluated(pipeline, NOW) == before

    back = [event("gone", 2, NOW - DAY, "active")]
    send(pipeline, back)
    got = evaluated(pipeline, NOW)["30d"]
    assert got["account_movements"]["new"] == 1 and got["account_movements"]["reactivation"] == 0
    remembered = expected_accounts([*events, *back], NOW, WINDOW_SECONDS)["30d"]
    assert remembered["account_movements"]["reactivation"] == 1  # had it been kept
