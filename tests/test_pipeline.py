"""The pure core (decode, state, windows, merge) against the oracle, with no Kafka."""

from __future__ import annotations

import logging
import random
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.business_hours import parse_schedules
from stream.pipeline import STATE_TABLES, Pipeline
from stream.tickets import DEFAULT_SLA, SlaClock, TicketRules
from stream.windows import parse_windows
from tests.helpers import (
    MemoryStates,
    Row,
    assert_rows_match,
    exported,
    feed,
    new_pipeline,
    partition_of,
    restore,
    states_of,
)
from tests.oracle import Event, expected, outcomes, settled_before
from tests.scenario import delivery, opening_hours, scenario, skewed

NOW = time.time()


def comparable(rows: list[Row]) -> list[tuple[object, ...]]:
    return [(row.key, sorted(row.metrics.items()), row.tickets_open) for row in rows]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), cap=st.sampled_from([2, 3, 50]))
def test_matches_the_oracle_whatever_the_order_and_duplicates(seed: int, cap: int) -> None:
    events = scenario(seed, NOW, tickets=60)
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, seed), NOW)
    assert_rows_match(exported(pipeline, NOW, cap), expected(events, NOW, cap))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 100_000), clock=st.sampled_from(["calendar", "business"]))
def test_business_time_and_its_sla_clock_match_the_oracle(seed: int, clock: SlaClock) -> None:
    text, hours = opening_hours(NOW)
    rules = TicketRules(DEFAULT_SLA, parse_schedules(text), clock)
    events = scenario(seed, NOW, tickets=60)
    pipeline = new_pipeline(rules=rules)
    feed(pipeline, delivery(events, seed), NOW)
    want = expected(events, NOW, hours=hours, sla_clock=clock)
    assert_rows_match(exported(pipeline, NOW, business_hours=True), want)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_two_delivery_orders_give_identical_numbers(seed: int) -> None:
    events = scenario(seed, NOW, tickets=40)
    first, second = new_pipeline(), new_pipeline()
    feed(first, delivery(events, seed), NOW)
    feed(second, delivery(events, seed + 1, duplicates=0.5), NOW)
    assert comparable(exported(first, NOW)) == comparable(exported(second, NOW))


def test_rebuilding_windows_from_the_tables_changes_nothing() -> None:
    events = scenario(7, NOW, tickets=120)
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 7), NOW)
    before = comparable(exported(pipeline, NOW))
    restore(pipeline, NOW)
    assert comparable(exported(pipeline, NOW)) == before


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    # the clock moves on (clear of the scenario's window edges): nothing, past 1h, past 28d
    later=st.sampled_from([0.0, 2 * 3600.0, 30 * 86400.0]),
)
def test_a_restart_loads_the_checkpoint_and_refolds_only_what_changed_since(
    seed: int, later: float
) -> None:
    """The worker's restart: the windows loaded from the last checkpoint, the states changed
    since folded in again, the clock moved on meanwhile (buckets expired, future events due)."""
    events = delivery(scenario(seed, NOW, tickets=80), seed)
    fed_at = NOW - 120  # the youngest events are a minute in the future: waiting, unbucketed
    running = new_pipeline()
    # the last tenth at least comes after the second checkpoint: it changes states (a last
    # event alone may be a duplicate, and change none)
    first, second = sorted(random.Random(seed).sample(range(len(events) * 9 // 10), 2))
    feed(running, events[:first], fed_at)
    states_of(running).save_checkpoints(running)
    feed(running, events[first:second], fed_at)
    states_of(running).save_checkpoints(running)
    feed(running, events[second:], fed_at)  # changed since: in the undo log
    assert any(states_of(running).undo.values())

    restarted = new_pipeline(states_of(running).copy())
    restore(restarted, NOW + later)
    scans = states_of(restarted).scans
    assert scans["tickets"] == scans["surveys"] == 0, "derived from every state, not loaded"
    assert restarted.entries == running.entries
    assert_rows_match(exported(restarted, NOW + later), expected(events, NOW + later))


@pytest.mark.parametrize("other_windows", ["1h,24h", "1h,24h,7d,28d,90d"])
def test_a_checkpoint_of_other_windows_is_replaced_not_loaded(other_windows: str) -> None:
    events = scenario(5, NOW, tickets=60)
    other = Pipeline(parse_windows(other_windows), TicketRules(), MemoryStates())
    feed(other, events, NOW)
    states_of(other).save_checkpoints(other)

    restarted = new_pipeline(states_of(other).copy())
    restore(restarted, NOW)
    assert states_of(restarted).scans["tickets"] > 0
    assert_rows_match(exported(restarted, NOW), expected(events, NOW))
    states_of(restarted).save_checkpoints(restarted)
    # nothing of the other checkpoint is left behind
    fresh = new_pipeline(MemoryStates())
    states_of(fresh).tables = states_of(other).copy().tables
    restore(fresh, NOW)
    states_of(fresh).save_checkpoints(fresh)
    stored = states_of(restarted).checkpoints
    assert {name: set(entries) for name, entries in stored.items()} == {
        name: set(entries) for name, entries in states_of(fresh).checkpoints.items()
    }


def test_replay_after_a_crash_is_exact() -> None:
    """Tables restored to a later point than the committed offsets, then events replayed."""
    events = delivery(scenario(11, NOW, tickets=120), 11)
    crashed = new_pipeline()
    feed(crashed, events[:500], NOW)
    restarted = new_pipeline(states_of(crashed).copy())
    restore(restarted, NOW)
    feed(restarted, events[random.Random(1).randint(0, 500) :], NOW)  # from the last commit
    assert_rows_match(exported(restarted, NOW), expected(events, NOW))


def test_duplicates_are_reported_and_leave_no_trace() -> None:
    events = scenario(3, NOW, tickets=30)
    pipeline = new_pipeline()
    feed(pipeline, events, NOW)
    snapshot = comparable(exported(pipeline, NOW))
    state = states_of(pipeline).copy().tables
    outcomes = feed(pipeline, events, NOW)
    # every kind of event, customer replies and private notes included, is recognised
    assert set(outcomes) == {"duplicate"}
    assert comparable(exported(pipeline, NOW)) == snapshot
    assert states_of(pipeline).tables == state


RETENTION = 35 * 86400.0  # the default: the largest window (28d) + 7 days


def test_forgetting_old_state_changes_no_number_and_keeps_open_tickets() -> None:
    events = scenario(17, NOW, tickets=200)  # ages up to 60 days: older than every window
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 17), NOW)
    before = comparable(exported(pipeline, NOW))
    horizon = NOW - RETENTION
    for partition in range(4):
        for table, entries in list(states_of(pipeline).tables.items()):
            if table[1] == partition:
                keys = [(table[0], key) for key in entries]
                pipeline.forget(partition, keys, dict.fromkeys(STATE_TABLES, horizon), NOW)

    old_tickets, old_slots = settled_before(events, horizon)
    assert old_tickets and old_slots, "the scenario must have something to forget"
    kept = states_of(pipeline).tables
    kept_tickets = {key for (table, _), keys in kept.items() if table == "tickets" for key in keys}
    all_tickets = {fields["ticket_id"] for topic, fields in events if topic != "survey-answered"}
    assert kept_tickets == all_tickets - old_tickets
    kept_slots = sum(len(keys) for (table, _), keys in kept.items() if table == "surveys")
    all_slots = len(settled_before(events, float("inf"))[1])
    assert kept_slots == all_slots - len(old_slots)
    assert sum(pipeline.entries.values()) == len(kept_tickets) + kept_slots

    # the same numbers, long-open tickets still in the backlog, and a rebuild agrees
    assert comparable(exported(pipeline, NOW)) == before
    assert_rows_match(exported(pipeline, NOW), expected(events, NOW))
    restore(pipeline, NOW)
    assert comparable(exported(pipeline, NOW)) == before


def test_a_resent_customer_reply_is_a_duplicate_and_writes_nothing() -> None:
    opened = (
        "ticket-opened",
        {"event_id": "o1", "ticket_id": "T1", "occurred_at": "2026-11-22T08:00:00Z"},
    )
    reply = (
        "ticket-replied",
        {
            "event_id": "c1",
            "ticket_id": "T1",
            "occurred_at": "2026-11-22T08:05:00Z",
            "author": "customer",
        },
    )
    note = (
        "ticket-replied",
        {
            "event_id": "n1",
            "ticket_id": "T1",
            "occurred_at": "2026-11-22T08:06:00Z",
            "author": "agent",
            "public": False,
        },
    )
    pipeline = new_pipeline()
    assert feed(pipeline, [opened, reply, note], NOW) == ["accepted"] * 3
    writes = states_of(pipeline).writes
    assert feed(pipeline, [reply, note, opened], NOW) == ["duplicate"] * 3
    assert states_of(pipeline).writes == writes


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_each_record_has_the_oracles_outcome_in_any_delivery_order(seed: int) -> None:
    """Anomalies (a record that made a duration negative) and duplicates, record by record,
    with clock skew in every arrangement and the numbers still exact."""
    events = scenario(seed, NOW, tickets=40) + skewed(seed, NOW, tickets=40)
    delivered = delivery(events, seed)
    pipeline = new_pipeline()
    got, want = feed(pipeline, delivered, NOW), outcomes(delivered)
    assert "anomaly" in want and "duplicate" in want
    wrong = [(n, got[n], want[n], delivered[n]) for n in range(len(want)) if got[n] != want[n]]
    assert not wrong, f"{len(wrong)} records (index, got, expected, record), first: {wrong[:3]}"
    assert len(got) == len(want)
    assert_rows_match(exported(pipeline, NOW), expected(events, NOW))


def _ticket_event(name: str) -> Event:
    """A record of ticket T from a short name: `opened@08:00`, `reply@07:50` (a public agent
    reply), `customer@07:50`, `note@07:50` (a private agent reply), `resolved@07:30`,
    `reopened@07:35`, three days ago; the name is its event_id."""
    kind, _, at = name.partition("@")
    kinds: dict[str, tuple[str, dict[str, object]]] = {
        "opened": ("ticket-opened", {}),
        "reply": ("ticket-replied", {"author": "agent"}),
        "customer": ("ticket-replied", {"author": "customer"}),
        "note": ("ticket-replied", {"author": "agent", "public": False}),
        "resolved": ("ticket-resolved", {}),
        "reopened": ("ticket-reopened", {}),
    }
    topic, fields = kinds[kind]
    stamp = f"{time.strftime('%Y-%m-%d', time.gmtime(NOW - 3 * 86400))}T{at}:00Z"
    return topic, {"event_id": name, "ticket_id": "T", "occurred_at": stamp, **fields}


@pytest.mark.parametrize(
    ("arrivals", "wanted"),
    [
        # the record that completes a negative duration is the anomaly, whichever comes first
        ("opened@08:00 reply@07:50", "accepted anomaly"),
        ("reply@07:50 opened@08:00", "accepted anomaly"),
        ("resolved@07:30 reply@07:50 opened@08:00", "accepted accepted anomaly"),
        # an earlier reply when the first response is already negative makes nothing negative
        ("opened@08:00 reply@07:50 reply@07:40", "accepted anomaly accepted"),
        # an earlier opening ends the skew; a later one changes nothing
        (
            "opened@08:00 reply@07:50 opened@07:45 opened@07:55",
            "accepted anomaly accepted accepted",
        ),
        (
            "opened@08:00 reply@07:50 opened@07:45 resolved@07:40",
            "accepted anomaly accepted anomaly",
        ),
        # zero is not negative; customer replies and private notes are no first response
        (
            "opened@08:00 reply@08:00 customer@07:00 note@07:00",
            "accepted accepted accepted accepted",
        ),
        # TTR and full resolution at once: one anomaly; a later resolution ends the negative
        # full resolution (TTR stays negative), an earlier one changes nothing new
        (
            "opened@08:00 resolved@07:30 resolved@09:00 resolved@07:20",
            "accepted anomaly accepted accepted",
        ),
        # a reopen ends the full resolution; the next resolution before the opening brings a
        # negative one back
        (
            "opened@08:00 resolved@07:30 reopened@07:35 resolved@07:40",
            "accepted anomaly accepted anomaly",
        ),
        # a reopen before any resolution; then a first resolution (TTR), then a latest one
        # ending the status order (full resolution): each makes its own duration negative
        (
            "opened@08:00 reopened@07:10 resolved@07:00 resolved@07:20",
            "accepted accepted anomaly anomaly",
        ),
        # a re-sent anomalous record is a duplicate, of any kind
        (
            "opened@08:00 reply@07:50 reply@07:50 opened@08:00",
            "accepted anomaly duplicate duplicate",
        ),
    ],
)
def test_anomaly_is_the_record_that_made_a_duration_negative(arrivals: str, wanted: str) -> None:
    """Cases worked out by hand from the contract, for the oracle and the pipeline alike."""
    delivered = [_ticket_event(name) for name in arrivals.split()]
    assert outcomes(delivered) == wanted.split()
    assert feed(new_pipeline(), delivered, NOW) == wanted.split()


def test_a_stored_state_that_cannot_be_read_is_left_out_of_the_windows_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = scenario(5, NOW, tickets=30)
    pipeline = new_pipeline()
    feed(pipeline, delivery(events, 5), NOW)
    states = states_of(pipeline).copy()
    (table, partition), entries = next(
        (place, entries) for place, entries in states.tables.items() if place[0] == "tickets"
    )
    key = next(iter(entries))
    entries[key] = b'{"partition": ' + b"[" * 3  # damaged on disk
    restored = new_pipeline(states)
    restore(restored, NOW)
    [report] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert (vars(report)["table"], vars(report)["states"]) == ("tickets", 1)
    assert restored.entries[(table, partition)] == len(entries)  # (still stored)
    others = [
        (topic, fields)
        for topic, fields in events
        if not (topic.startswith("ticket-") and fields.get("ticket_id") == key)
    ]
    assert_rows_match(exported(restored, NOW), expected(others, NOW))


def test_a_store_that_fails_mid_batch_leaves_nothing_queued_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = scenario(6, NOW, tickets=10)
    pipeline = new_pipeline()
    store = states_of(pipeline)
    records = [(topic, partition_of(f), orjson.dumps(f), NOW, None) for topic, f in events]

    def unreadable(*args: object) -> None:
        raise OSError("the disk went away")

    with monkeypatch.context() as patched:
        patched.setattr(store, "get", unreadable)
        with pytest.raises(OSError):
            pipeline.process(records[:5])
    assert feed(pipeline, events, NOW) == outcomes(events)
    assert_rows_match(exported(pipeline, NOW), expected(events, NOW))
