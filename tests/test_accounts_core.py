"""The core's book of accounts (`stream._core.AccountBook`, core/src/accounts.rs) beyond what
the oracle tests (tests/test_accounts.py, tests/test_experience.py) compare: an evaluation in
steps, a score halfway at its 7th decimal, forgetting, states that cannot be read, amounts
beyond 64 bits. No Kafka."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.accounts import accounts as bench_accounts
from stream import _core
from stream.accounts import (
    AccountState,
    SubscriptionEvent,
    Totals,
    apply_experience,
    apply_subscription_event,
    evaluation,
)
from stream.experience import AccountObservation, ExperienceUpdate

NOW = 1_800_000_000.0
DAY = 86400.0
PARTITION = 3


def instants() -> st.SearchStrategy[float]:
    """Instants on a coarse grid around NOW, often one of two, so that ties (between events,
    observations, the ends of windows and lookbacks) are common."""
    grid = st.integers(-60, 10).map(lambda step: NOW + step * 5 * DAY)
    return st.sampled_from([NOW - 5 * DAY, NOW]) | grid


def observations(draw: st.DrawFn) -> tuple[AccountObservation, ...]:
    found: list[AccountObservation] = []
    for _ in range(draw(st.integers(0, 6))):
        at = draw(instants())
        kind = draw(st.sampled_from(["frt", "ttr", "reopen", "resolved", "csat", "nps", "ces"]))
        if kind in ("frt", "ttr"):
            found.append((kind, at, draw(st.integers(0, 1))))
        elif kind == "reopen":
            found.append((kind, at))
        elif kind == "resolved":
            days = draw(st.none() | st.integers(0, 20))
            reopened = None if days is None else at + days * DAY
            found.append((kind, at, reopened))
        elif kind == "nps":
            # responses at one instant, even of one event id (re-sent by two slots), are
            # told apart by (at, event_id), then by the order they are held in
            found.append((kind, at, draw(st.integers(0, 10)), draw(st.sampled_from("ab"))))
        else:
            found.append((kind, at, draw(st.integers(1, 7 if kind == "ces" else 5))))
    return tuple(found)


@st.composite
def accounts(draw: st.DrawFn) -> AccountState:
    """An account as the pipeline builds it: subscription events in any order, re-sent ones
    among them, several at one instant; its tickets' and responses' updates, some superseded
    by a later version, some emptied (a ticket that left), some past the horizon."""
    state = AccountState(PARTITION)
    events = [
        SubscriptionEvent(
            draw(instants()),
            draw(st.sampled_from("abcdefgh")),  # the same id twice is a re-sent event
            draw(st.sampled_from(["s1", "s2", "s3"])),
            draw(st.sampled_from([0, 0, 29_000_000, 99_000_000, 249_500_000, 7])),
        )
        for _ in range(draw(st.integers(0, 8)))
    ]
    for event in draw(st.permutations(events)):
        if not state.holds(event.event_id):
            state = apply_subscription_event(state, event)
    for _ in range(draw(st.integers(0, 6))):
        source = draw(st.sampled_from(["ticket:1", "ticket:2", "ticket:3", "survey:9"]))
        update = ExperienceUpdate("acc", source, draw(st.integers(1, 4)), observations(draw))
        horizon = draw(st.sampled_from([float("-inf"), NOW - 200 * DAY]))
        state = apply_experience(state, update, horizon) or state
    return state


def book_of(states: dict[str, AccountState]) -> _core.AccountBook:
    book = _core.AccountBook()
    for account_id, state in states.items():
        book.put(PARTITION, account_id, orjson.dumps(state.to_json()))
    return book


def test_an_evaluation_in_steps_sees_the_accounts_as_they_were_and_adds_up() -> None:
    book = bench_accounts(50, 7, NOW, experience=True)  # (in partition 0)
    rules = _core.AccountRules([30 * DAY, 365 * DAY], 90 * DAY, {})
    accounts = book.accounts(0)
    whole, every = evaluation(accounts, NOW, rules)
    # a batch changes the book between steps: the snapshot does not see it
    book.put(0, "ACC-000000", None)
    late = AccountState(0, (SubscriptionEvent(NOW - DAY, "late", "s", 5),))
    book.put(0, "ACC-999999", orjson.dumps(late.to_json()))
    totals = Totals(2)
    records: list[_core.AccountRecord] = []
    for start in range(0, len(accounts) + 7, 7):
        step, step_records = evaluation(accounts, NOW, rules, start, start + 7)
        totals.add(step)
        records += step_records
    assert (totals.to_json(), records) == (whole.to_json(), every)
    assert len(every) == 50 and whole.paying > 0
    empty, none = evaluation(accounts, NOW, rules, 50, 10)
    assert (empty.to_json(), none) == (Totals(2).to_json(), [])
    assert len(accounts) == 50
    assert len(book.accounts(0)) == 50  # one gone, one new


@pytest.mark.parametrize(
    ("nps_weight", "score"),
    [
        # the mean 100 / (1 + w) is 2.0000045 in its shortest repr (and a little above it in
        # binary: rounding the binary value would give 2.000005): half to the even 4
        (48.99988750025312, 2.000004),
        # 2.0000055 (a little below in binary, which would give 2.000005): to the even 6
        (48.99986250037813, 2.000006),
    ],
)
def test_a_score_halfway_at_the_7th_decimal_rounds_its_decimal_digits_to_even(
    nps_weight: float, score: float
) -> None:
    """csat 100 (weight 1) and an NPS detractor's 0 (weight w)."""
    update = ExperienceUpdate("acc", "survey:1", 1, (("csat", NOW, 5), ("nps", NOW, 0, "r")))
    state = apply_experience(AccountState(PARTITION), update, float("-inf"))
    assert state is not None
    state = apply_subscription_event(state, SubscriptionEvent(NOW, "e", "s", 1))
    rules = _core.AccountRules([DAY], DAY, {"csat": 1.0, "nps": nps_weight})
    _, [record] = evaluation(book_of({"acc": state}).accounts(PARTITION), NOW, rules)
    assert record[1] == score


def mrr_at(events: tuple[SubscriptionEvent, ...], moment: float) -> int:
    """Per subscription, its event with the latest (at, event_id) up to `moment`."""
    latest: dict[str, SubscriptionEvent] = {}
    for event in events:
        held = latest.get(event.subscription_id)
        if event.at <= moment and (held is None or (event.at, event.event_id) > held[:2]):
            latest[event.subscription_id] = event
    return sum(event.contribution for event in latest.values())


@settings(max_examples=200, deadline=None)
@given(accounts(), instants(), instants())
def test_an_account_is_forgettable_when_nothing_is_newer_than_the_horizon_and_it_pays_nothing(
    state: AccountState, horizon: float, now: float
) -> None:
    """7.2: no subscription event nor observation of its tickets and responses newer than the
    horizon, and no MRR at `now`."""
    times = [event.at for event in state.events] + [
        observation[1] for _, kept in state.experience.values() for observation in kept
    ]
    expected = max(times, default=float("-inf")) < horizon and mrr_at(state.events, now) == 0
    stored = orjson.dumps(state.to_json())
    assert _core.account_forgettable(stored, horizon, now) == expected


def test_a_forgotten_account_leaves_and_a_dropped_partition_empties() -> None:
    stored = orjson.dumps(AccountState(PARTITION).to_json())
    book = _core.AccountBook()
    book.put(PARTITION, "a", stored)
    book.put(PARTITION, "b", stored)
    book.put(PARTITION + 1, "a", stored)
    book.put(PARTITION, "b", None)
    assert (len(book.accounts(PARTITION)), len(book.accounts(PARTITION + 1))) == (1, 1)
    book.drop(PARTITION)
    assert (len(book.accounts(PARTITION)), len(book.accounts(PARTITION + 1))) == (0, 1)
    # an account without a subscription event has no record (nor a cohort)
    rules = _core.AccountRules([DAY], DAY, {})
    totals, records = evaluation(book.accounts(PARTITION + 1), NOW, rules)
    assert records == []
    assert totals.to_json() == Totals(1).to_json()


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"{",
        b'{"partition": 1}',
        b'{"partition":1,"subscription_events":[],"seen":[],"latest":null,'
        b'"experience":{"t":[1,[["sla",1.0]]]}}',
    ],
)
def test_a_corrupt_account_is_refused_and_never_forgettable(stored: bytes) -> None:
    book = _core.AccountBook()
    with pytest.raises(ValueError, match="a stored account"):
        book.put(PARTITION, "a", stored)
    assert len(book.accounts(PARTITION)) == 0
    assert not _core.account_forgettable(stored, NOW, NOW)


def test_an_mrr_beyond_64_bits_is_refused() -> None:
    state = AccountState(PARTITION)
    for event in [
        SubscriptionEvent(NOW, "a", "s1", 2**63 - 1),
        SubscriptionEvent(NOW, "b", "s2", 1),
    ]:
        state = apply_subscription_event(state, event)
    with pytest.raises(ValueError, match="beyond 64 bits"):
        _core.AccountBook().put(PARTITION, "a", orjson.dumps(state.to_json()))
