"""Each account's support experience, churn by driver and by health band (docs/contract.md 7.4)
through the pure core, against tests/experience_oracle.py: tickets and responses in any order
and duplicated, before or after their accounts' subscriptions; their observations carried to
the accounts' partitions as the worker carries them (the cx-account-experience records, here
shuffled and replayed); re-rated surveys, reopens, a ticket whose earliest opening names
another account. No Kafka here."""

from __future__ import annotations

import random
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream._core import AccountBook
from stream.account_health import HealthPublisher
from stream.accounts import AccountState, SubscriptionEvent
from stream.experience import EXPERIENCE_TOPIC, encode_experience, parse_weights
from stream.exporter import rfc3339
from stream.pipeline import STATE_TABLES, Pipeline, TableName
from stream.revenue import revenue_values
from stream.tickets import TicketRules
from stream.windows import parse_windows
from tests.account_oracle import SubscriptionFields
from tests.experience_oracle import BANDS, DRIVERS, expected_experience
from tests.helpers import PARTITIONS, MemoryStates, evaluate_accounts, partition_of, process
from tests.oracle import Event
from tests.scenario import delivery, scenario

NOW = 1_800_000_000.0
DAY = 86400.0
ACCOUNT_WINDOWS = parse_windows("7d,14d")
LOOKBACK = 10 * DAY
WEIGHTS = "csat=2,reopens=0.5,ces=0"
ACCOUNTS = 30


def account_partition(account: str) -> int:
    return zlib.crc32(account.encode()) % PARTITIONS


def with_accounts(events: list[Event], rng: random.Random) -> list[Event]:
    """The scenario's tickets and responses, most with an account_id: a ticket's by its id, a
    second opening of a ticket sometimes naming another account, a response sometimes its own
    account rather than its ticket's, some without any."""
    owned: list[Event] = []
    opened: set[str] = set()
    for topic, fields in events:
        fields = dict(fields)
        key = str(fields.get("ticket_id", fields["event_id"]))
        account = f"ACC-{zlib.crc32(key.encode()) % ACCOUNTS}"
        if topic == "ticket-opened":
            if fields["ticket_id"] in opened and rng.random() < 0.5:
                account = f"ACC-{rng.randrange(ACCOUNTS)}"
            opened.add(fields["ticket_id"])
        elif topic == "survey-answered" and rng.random() < 0.15:
            account = f"ACC-{rng.randrange(ACCOUNTS)}"
        if topic in ("ticket-opened", "survey-answered") and rng.random() < 0.92:
            fields["account_id"] = account
        owned.append((topic, fields))
    return owned


def subscriptions(rng: random.Random, now: float = NOW) -> list[SubscriptionFields]:
    """Each account's subscriptions over the last 30 days, on a grid of days: joins, changes,
    cancellations, pauses and returns, so that cohorts at s and churn after s are common."""
    events = []
    serial = 0
    for account in range(ACCOUNTS):
        for subscription in range(rng.randint(1, 2)):
            for _ in range(rng.randint(1, 4)):
                serial += 1
                events.append(
                    {
                        "event_id": f"sub-{serial}",
                        "account_id": f"ACC-{account}",
                        "subscription_id": f"SUB-{account}-{subscription}",
                        "at": now - rng.randint(0, 30) * DAY,
                        "status": rng.choices(
                            ["active", "canceled", "paused", "trialing"], [6, 3, 1, 1]
                        )[0],
                        "mrr": rng.choice([0, 49, 99.5, 250]),
                    }
                )
    return events


def subscription_record(fields: SubscriptionFields) -> bytes:
    record = {k: v for k, v in fields.items() if k != "at"}
    return orjson.dumps(record | {"occurred_at": rfc3339(fields["at"])})


def run(
    events: list[Event],
    subs: list[SubscriptionFields],
    rng: random.Random,
    pipeline: Pipeline | None = None,
) -> Pipeline:
    """The pipeline (a new one by default) fed as the worker's partitions would be: the records
    in batches; what the tickets and responses send their accounts processed a batch later,
    shuffled, some twice."""
    if pipeline is None:
        pipeline = Pipeline(
            parse_windows("1h,24h,7d,28d"),
            TicketRules(),
            MemoryStates(),
            experience_horizon=max(s.seconds for s in ACCOUNT_WINDOWS) + LOOKBACK,
        )
    records: list[tuple[str, int, bytes]] = [
        (topic, partition_of(fields), orjson.dumps(fields)) for topic, fields in events
    ]
    records += [
        ("subscription-updated", account_partition(s["account_id"]), subscription_record(s))
        for s in subs
    ]
    rng.shuffle(records)
    pending: list[tuple[str, int, bytes]] = []
    while records or pending:
        size = rng.choice([1, 5, 40, 200])
        batch, records = records[:size] + pending, records[size:]
        pending = []
        process(pipeline, [(topic, partition, value, NOW) for topic, partition, value in batch])
        assert pipeline.settle(NOW) == []
        updates, pipeline.experience_updates = pipeline.experience_updates, []
        for _, update in updates:
            key, value = encode_experience(update)
            record = (EXPERIENCE_TOPIC, account_partition(key.decode()), value)
            pending.append(record)
            if rng.random() < 0.2:  # read again after a crash
                pending.append(record)
        rng.shuffle(pending)
    return pipeline


def close(got: Any, want: Any, where: str) -> None:
    if want is None or got is None:
        assert got == want, where
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_churn_by_driver_and_band_and_each_accounts_health_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    events = with_accounts(scenario(seed, NOW, tickets=160), rng)
    subs = subscriptions(rng)
    pipeline = run(delivery(events, seed), subs + rng.sample(subs, len(subs) // 5), rng)

    weights = parse_weights(WEIGHTS)
    totals, health = evaluate_accounts(pipeline.accounts, NOW, ACCOUNT_WINDOWS, LOOKBACK, weights)
    got = revenue_values(totals, ACCOUNT_WINDOWS, 1.0)
    want = expected_experience(
        events, subs, NOW, {s.name: s.seconds for s in ACCOUNT_WINDOWS}, LOOKBACK, weights
    )

    # each subscribed account's health record, and no other account's
    assert set(health) == set(want["health"])
    for account_id, values in want["health"].items():
        mine = health[account_id]
        assert {k: v for k, v in mine.items() if k not in ("score", "factors")} == {
            k: v for k, v in values.items() if k not in ("score", "factors")
        }, account_id
        close(mine.get("score"), values.get("score"), f"{account_id} score")
        assert set(mine["factors"]) == set(values["factors"]), account_id
        for factor, value in values["factors"].items():
            close(mine["factors"][factor], value, f"{account_id} {factor}")
    assert len({values["band"] for values in health.values()}) >= 2  # a varied scenario

    for band in BANDS:
        first = got[ACCOUNT_WINDOWS[0].name]
        assert first["accounts_by_health"][band] == want["by_band"][band][0]
        close(first["mrr_by_health"][band], want["by_band"][band][1], band)
    exposed_somewhere = 0
    for spec in ACCOUNT_WINDOWS:
        mine, theirs = got[spec.name], want["windows"][spec.name]
        for driver in DRIVERS:
            expected = theirs["drivers"][driver]
            sizes = mine["cohort_accounts_by_driver"][driver]
            assert (sizes["true"], sizes["false"]) == expected["cohort"], (spec.name, driver)
            exposed_somewhere += sizes["true"]
            for label in ("true", "false"):
                for bound, name in (("ratio", ""), ("lower", "_lower"), ("upper", "_upper")):
                    close(
                        mine[f"account_churn_ratio_by_driver{name}"][driver][label],
                        expected[label][bound],
                        f"{spec.name} {driver} {label} {bound}",
                    )
            difference = expected["diff"] or (None, None, None)
            for value, name in zip(difference, ("", "_lower", "_upper"), strict=True):
                close(
                    mine[f"account_churn_ratio_difference{name}"][driver],
                    value,
                    f"{spec.name} {driver} difference{name}",
                )
        for band in BANDS:
            expected_band = theirs["bands"][band]
            assert mine["cohort_accounts_by_health"][band] == expected_band["cohort"]
            for bound, name in (("ratio", ""), ("lower", "_lower"), ("upper", "_upper")):
                close(
                    mine[f"account_churn_ratio_by_health{name}"][band],
                    expected_band[bound],
                    f"{spec.name} {band} {bound}",
                )
        assert mine["cohort_accounts"] == sum(theirs["bands"][b]["cohort"] for b in BANDS)
    assert exposed_somewhere > 0  # the scenario does expose accounts


observation_lists = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["frt", "ttr"]), st.integers(0, 200), st.integers(0, 1)),
        st.tuples(st.just("reopen"), st.integers(0, 200)),
        st.tuples(st.just("resolved"), st.integers(0, 200), st.none() | st.integers(0, 200)),
        st.tuples(st.just("csat"), st.integers(0, 200), st.integers(1, 5)),
        st.tuples(st.just("ces"), st.integers(0, 200), st.integers(1, 7)),
        st.tuples(st.just("nps"), st.integers(0, 200), st.integers(0, 10), st.sampled_from("abc")),
    ),
    max_size=30,
)


@given(observation_lists, st.integers(0, 200), st.integers(1, 100))
def test_an_experience_judged_at_s_sees_nothing_after_s(
    observations: list[tuple[Any, ...]], moment: int, lookback: int
) -> None:
    """Exposure is judged before the churn it is compared with (7.4): the drivers, factors and
    band at s are those of the observations up to s alone (a reopen after s included: a ticket
    resolved before s and reopened after it is not reopened at s)."""
    ordered = sorted(observations, key=lambda observation: observation[1])
    weights = parse_weights("csat=2")
    seen = [
        (*observation[:2], None, *observation[3:])
        if observation[0] == "resolved" and (observation[2] or 0) > moment
        else observation
        for observation in ordered
        if observation[1] <= moment
    ]
    book = AccountBook()
    for account_id, kept in (("all", ordered), ("seen", seen)):
        state = AccountState(0, (SubscriptionEvent(0.0, "e", "S", 1),), experience={"t": (1, kept)})
        book.put(0, account_id, orjson.dumps(state.to_json()))
    _, health = evaluate_accounts(book, moment, ACCOUNT_WINDOWS, lookback, weights)
    assert health["all"] == {**health["seen"], "account_id": "all"}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_cohort_split_adds_up_to_the_cohort(seed: int) -> None:
    """For every window and driver, exposed plus not exposed is the cohort; so are the bands."""
    rng = random.Random(seed)
    events = with_accounts(scenario(seed, NOW, tickets=40), rng)
    subs = subscriptions(rng)
    pipeline = run(events, subs, rng)
    totals, _ = evaluate_accounts(pipeline.accounts, NOW, ACCOUNT_WINDOWS, LOOKBACK, {})
    for values in revenue_values(totals, ACCOUNT_WINDOWS, 1.0).values():
        for sizes in values["cohort_accounts_by_driver"].values():
            assert sizes["true"] + sizes["false"] == values["cohort_accounts"]
        assert sum(values["cohort_accounts_by_health"].values()) == values["cohort_accounts"]


def test_the_health_topic_publishes_changes_and_a_tombstone_for_a_forgotten_account() -> None:
    publisher = HealthPublisher()
    first = {"account_id": "A", "band": "green", "paying": True}
    second = {"account_id": "B", "band": "red", "paying": True}
    records, digests = publisher.changes(0, [first, second], NOW)
    assert [key for key, _ in records] == [b"A", b"B"]
    assert orjson.loads(records[0][1] or b"")["as_of"] == rfc3339(NOW)
    publisher.sent(0, digests)
    # the next instant: nothing changed but as_of, so nothing is published
    assert publisher.changes(0, [first, second], NOW + 60)[0] == []
    # B's band changes and A is forgotten
    records, digests = publisher.changes(0, [{**second, "band": "yellow"}], NOW + 120)
    assert records[0][0] == b"B" and orjson.loads(records[0][1] or b"")["band"] == "yellow"
    assert records[1] == (b"A", None)
    # not sent (the partition was lost meanwhile): the next owner's publisher starts afresh
    publisher.drop(0)
    assert len(publisher.changes(0, [first], NOW + 180)[0]) == 1


def evaluated(pipeline: Pipeline) -> dict[str, Any]:
    weights = parse_weights(WEIGHTS)
    totals, health = evaluate_accounts(pipeline.accounts, NOW, ACCOUNT_WINDOWS, LOOKBACK, weights)
    return {"metrics": revenue_values(totals, ACCOUNT_WINDOWS, 1.0), "health": health}


def test_forgetting_tickets_and_resending_their_events_changes_no_account() -> None:
    """Forgetting a ticket or response (section 3's retention) leaves every account's
    experience as it was, and a re-sent event of a forgotten ticket changes none (7.4)."""
    rng = random.Random(21)
    events = with_accounts(scenario(21, NOW, tickets=120), rng)
    pipeline = run(events, subscriptions(rng), rng)
    before = evaluated(pipeline)
    forgotten = 0
    for partition in range(PARTITIONS):
        tables: tuple[TableName, ...] = ("tickets", "surveys")
        for table in tables:
            keys = [(table, key) for key, _ in states_of_table(pipeline, table, partition)]
            horizons = dict.fromkeys(STATE_TABLES, NOW + DAY)
            forgotten += pipeline.forget(partition, keys, horizons, NOW)
    assert forgotten > 100  # every settled ticket and response (open tickets stay)
    assert evaluated(pipeline) == before
    resent = rng.sample(events, len(events) // 3)
    pipeline = run(resent, [], rng, pipeline)
    assert evaluated(pipeline) == before


def states_of_table(pipeline: Pipeline, table: TableName, partition: int) -> list[Any]:
    assert isinstance(pipeline.states, MemoryStates)
    return list(pipeline.states.tables.get((table, partition), {}).items())
